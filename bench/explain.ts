/**
 * node dist/bench/explain.js [--backend tensorflow --batch 2 --size 224 --samples 25 --steps 3 --warmup 2]
 * Maps per second of each explainer on ResNet-50 (random weights; speed does not depend on them)
 * next to one forward pass of the CASM masker (classifier trunk + decoder) on the same images.
 * Targets are given (as with labelled evaluation data), so no method pays for an argmax pass.
 * SmoothGrad is n gradient passes; --samples sets n (25 by default, the spec's value).
 * Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { CasmMasks } from '../src/explain/casmMasks.js';
import { Classifier } from '../src/explain/classifier.js';
import type { Explainer } from '../src/explain/explainer.js';
import { GradCam } from '../src/explain/gradCam.js';
import { SmoothGrad } from '../src/explain/smoothGrad.js';
import { GradientTimesInput, VanillaGradient } from '../src/explain/vanilla.js';
import { measure as measureCalls, setupBench } from './common.js';

const { trainer, arch, batch, size, samples, steps, warmup } = await setupBench('bench explain', { batch: 2, warmup: 2 });
const classifier = new Classifier(trainer.classifier);
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const targets = Array.from({ length: batch }, (_, i) => (i * 397) % arch.classes);

const measure = (fn: () => void, warm = warmup, calls = steps) => measureCalls(fn, warm, calls);

function report(label: string, ms: number, extra = ''): void {
  console.log(`${label.padEnd(42)} ${((1000 * batch) / ms).toFixed(3).padStart(8)} maps/s  ${ms.toFixed(0).padStart(6)} ms/batch${extra}`);
}

const forward = measure(() => {
  const { masks, logits } = trainer.model.inference(x);
  tf.dispose([masks, logits]);
});
report('CASM masker forward (classifier + decoder)', forward);
const rows: [string, Explainer][] = [
  ['casm (explainer interface)', new CasmMasks(trainer.model)],
  ['vanilla gradient', new VanillaGradient(classifier)],
  ['gradient x input', new GradientTimesInput(classifier)],
  [`Grad-CAM (${classifier.lastSpatialLayer})`, new GradCam(classifier)],
  [`SmoothGrad(vanilla), n=${samples}`, new SmoothGrad(new VanillaGradient(classifier), { samples })],
];
for (const [label, e] of rows) {
  const run = () => e.explain(x, targets).maps.dispose();
  // One SmoothGrad call is n gradient passes, warmed up by the vanilla row: one timed call.
  const ms = e instanceof SmoothGrad ? measure(run, 0, 1) : measure(run);
  report(label, ms, `  ${(ms / forward).toFixed(1).padStart(5)} x the masker forward`);
}
