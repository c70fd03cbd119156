/**
 * node dist/bench/export.js [--backend auto --batch 2 --size 224 --samples 25 --steps 3 --warmup 2 --depths 3,4,6,3 --width 64]
 * Masks per second of an exported mask network (written with `casm export`'s writer, loaded back
 * from its files as `casm mask` does) next to SmoothGrad (n = --samples, 25 by default) and
 * Grad-CAM on the same images and the same ResNet (random weights; speed does not depend on them),
 * with the ratio. Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeBytes } from '../src/data/preprocess.js';
import { Classifier } from '../src/explain/classifier.js';
import { GradCam } from '../src/explain/gradCam.js';
import { SmoothGrad } from '../src/explain/smoothGrad.js';
import { VanillaGradient } from '../src/explain/vanilla.js';
import { buildMaskNetwork, loadMaskNetwork, writeLayersModel } from '../src/export/exportMasker.js';
import { measure as measureCalls, setupBench } from './common.js';

const { trainer, arch, batch, size, samples, steps, warmup } = await setupBench('bench export', { batch: 2, warmup: 2 });
const dir = mkdtempSync(join(tmpdir(), 'casm-bench-export-'));
try {
  const built = await buildMaskNetwork(trainer.model);
  await writeLayersModel(built, dir);
  built.dispose();
  // The masker.json loadMaskNetwork wants; only its format fields matter here.
  writeFileSync(join(dir, 'masker.json'), JSON.stringify({ format: 'casm-ts-masker', version: 1 }));
  const { model } = await loadMaskNetwork(dir);

  // The exported network takes pixel values 0..255; the explainers the same images normalised.
  const pixels = tf.tidy(() => tf.floor(tf.randomUniform([batch, size, size, 3], 0, 256, 'float32', 1))) as tf.Tensor4D;
  const x = tf.tensor4d(normalizeBytes(Uint8Array.from(pixels.dataSync()), 3), pixels.shape);
  const classifier = new Classifier(trainer.classifier);
  const targets = Array.from({ length: batch }, (_, i) => (i * 397) % arch.classes);
  const measure = (fn: () => void, warm = warmup, calls = steps) => measureCalls(fn, warm, calls);
  const perSec = (ms: number) => (1000 * batch) / ms;
  const exported = measure(() => (model.predict(pixels) as tf.Tensor).dataSync());
  const cam = new GradCam(classifier);
  const gradcam = measure(() => {
    const m = cam.explain(x, targets).maps;
    m.dataSync();
    m.dispose();
  });
  const sg = new SmoothGrad(new VanillaGradient(classifier), { samples });
  // One SmoothGrad call is n gradient passes, warmed up by one call at n = 1.
  const sgWarm = new SmoothGrad(new VanillaGradient(classifier), { samples: 1 });
  sgWarm.explain(x, targets).maps.dispose();
  const smooth = measure(
    () => {
      const m = sg.explain(x, targets).maps;
      m.dataSync();
      m.dispose();
    },
    0,
    1,
  );
  const row = (label: string, ms: number) =>
    console.log(
      `${label.padEnd(40)} ${perSec(ms).toFixed(3).padStart(9)} masks/s  ${ms.toFixed(0).padStart(7)} ms/batch  ` +
        `exported masker / this: ${(ms / exported).toFixed(2).padStart(7)} x the masks/s`,
    );
  console.log(
    `${'exported masker (model.json, predict)'.padEnd(40)} ${perSec(exported).toFixed(3).padStart(9)} masks/s  ${exported.toFixed(0).padStart(7)} ms/batch`,
  );
  row(`Grad-CAM (${cam.layer})`, gradcam);
  row(`SmoothGrad(vanilla), n=${samples}`, smooth);
  tf.dispose([pixels, x]);
  model.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
