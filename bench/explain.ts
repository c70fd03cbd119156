/**
 * node dist/bench/explain.js [--backend tensorflow --batch 2 --size 224 --samples 25 --steps 3 --warmup 2]
 * Maps per second of each explainer on ResNet-50 (random weights; speed does not depend on them)
 * next to one forward pass of the CASM masker (classifier trunk + decoder) on the same images.
 * Targets are given (as with labelled evaluation data), so no method pays for an argmax pass.
 * SmoothGrad is n gradient passes; --samples sets n (25 by default, the spec's value).
 * Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { initEngine, type BackendChoice } from '../src/engine.js';
import { CasmMasks } from '../src/explain/casmMasks.js';
import { Classifier } from '../src/explain/classifier.js';
import type { Explainer } from '../src/explain/explainer.js';
import { GradCam } from '../src/explain/gradCam.js';
import { SmoothGrad, SMOOTHGRAD_DEFAULTS } from '../src/explain/smoothGrad.js';
import { GradientTimesInput, VanillaGradient } from '../src/explain/vanilla.js';
import { RESNET50 } from '../src/models/resnet.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' },
    batch: { type: 'string', default: '2' },
    size: { type: 'string', default: '224' },
    samples: { type: 'string', default: String(SMOOTHGRAD_DEFAULTS.samples) },
    steps: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '2' },
    depths: { type: 'string', default: RESNET50.depths.join(',') },
    width: { type: 'string', default: String(RESNET50.width) },
  },
});
const batch = Number(values.batch);
const size = Number(values.size);
const samples = Number(values.samples);
const steps = Number(values.steps);
const warmup = Number(values.warmup);
const arch = { depths: values.depths!.split(',').map(Number), width: Number(values.width), classes: 1000, inputSize: size };

const engine = await initEngine(values.backend as BackendChoice);
const trainer = new CasmTrainer(defaultTrainConfig({ arch }));
const classifier = new Classifier(trainer.classifier);
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const targets = Array.from({ length: batch }, (_, i) => (i * 397) % arch.classes);

console.log(
  `bench explain: backend ${engine.backend}${engine.tensorflowVersion ? ` (libtensorflow ${engine.tensorflowVersion})` : ''}, ` +
    `ResNet depths [${arch.depths}] width ${arch.width} at ${size}px, batch ${batch}, ${warmup} warm-up + ${steps} timed calls each`,
);

/** Milliseconds per call of fn (one call = `batch` maps), after warm-up calls. */
function measure(fn: () => void, warm = warmup, calls = steps): number {
  for (let i = 0; i < warm; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return (performance.now() - t0) / calls;
}

function report(label: string, ms: number, extra = ''): void {
  console.log(`${label.padEnd(42)} ${((1000 * batch) / ms).toFixed(3).padStart(8)} maps/s  ${ms.toFixed(0).padStart(6)} ms/batch${extra}`);
}

const forward = measure(() => {
  const { masks, logits } = trainer.inference(x);
  tf.dispose([masks, logits]);
});
report('CASM masker forward (classifier + decoder)', forward);
const rows: [string, Explainer][] = [
  ['casm (explainer interface)', new CasmMasks(trainer)],
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
