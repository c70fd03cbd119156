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
import { parseArgs } from 'node:util';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { normalize } from '../src/data/normalize.js';
import { initEngine, type BackendChoice } from '../src/engine.js';
import { Classifier } from '../src/explain/classifier.js';
import { GradCam } from '../src/explain/gradCam.js';
import { SmoothGrad, SMOOTHGRAD_DEFAULTS } from '../src/explain/smoothGrad.js';
import { VanillaGradient } from '../src/explain/vanilla.js';
import { buildMaskNetwork, loadMaskNetwork, writeLayersModel } from '../src/export/exportMasker.js';
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
const dir = mkdtempSync(join(tmpdir(), 'casm-bench-export-'));
try {
  const built = await buildMaskNetwork(trainer);
  await writeLayersModel(built, dir);
  built.dispose();
  // The masker.json loadMaskNetwork wants; only its format fields matter here.
  writeFileSync(join(dir, 'masker.json'), JSON.stringify({ format: 'casm-ts-masker', version: 1 }));
  const { model } = await loadMaskNetwork(dir);

  // The exported network takes pixel values 0..255; the explainers the same images normalised.
  const pixels = tf.tidy(() => tf.floor(tf.randomUniform([batch, size, size, 3], 0, 256, 'float32', 1))) as tf.Tensor4D;
  const x = tf.tidy(() => normalize(tf.div(pixels, 255) as tf.Tensor4D));
  const classifier = new Classifier(trainer.classifier);
  const targets = Array.from({ length: batch }, (_, i) => (i * 397) % arch.classes);
  console.log(
    `bench export: backend ${engine.backend}${engine.tensorflowVersion ? ` (libtensorflow ${engine.tensorflowVersion})` : ''}, ` +
      `ResNet depths [${arch.depths}] width ${arch.width} at ${size}px, batch ${batch}, ${warmup} warm-up + ${steps} timed calls each`,
  );

  const measure = (fn: () => void, warm = warmup, calls = steps): number => {
    for (let i = 0; i < warm; i++) fn();
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    return (performance.now() - t0) / calls;
  };
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
  console.log(`${'exported masker (model.json, predict)'.padEnd(40)} ${perSec(exported).toFixed(3).padStart(9)} masks/s  ${exported.toFixed(0).padStart(7)} ms/batch`);
  row(`Grad-CAM (${cam.layer})`, gradcam);
  row(`SmoothGrad(vanilla), n=${samples}`, smooth);
  tf.dispose([pixels, x]);
  model.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
