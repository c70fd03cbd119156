/**
 * npm run bench [-- --backend tensorflow --batch 8 --size 224 --steps 3 --depths 3,4,6,3]
 * Throughput of one full CASM iteration (thinning L100, entropy score) for ResNet-50 at 224 on the
 * chosen backend, after warm-up iterations; next to it the plain classifier training step, so the
 * CASM overhead is visible. Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { defaultTrainConfig } from '../src/casm/config.js';
import { crossEntropy } from '../src/casm/score.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { initEngine, type BackendChoice } from '../src/engine.js';
import { RESNET50 } from '../src/models/resnet.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' },
    batch: { type: 'string', default: '8' },
    size: { type: 'string', default: '224' },
    steps: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    depths: { type: 'string', default: RESNET50.depths.join(',') },
    width: { type: 'string', default: String(RESNET50.width) },
  },
});
const batch = Number(values.batch);
const size = Number(values.size);
const steps = Number(values.steps);
const warmup = Number(values.warmup);
const arch = { depths: values.depths!.split(',').map(Number), width: Number(values.width), classes: 1000, inputSize: size };

const engine = await initEngine(values.backend as BackendChoice);
const trainer = new CasmTrainer(defaultTrainConfig({ arch, thinning: 'L100', batchSize: batch }));
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const y = tf.randomUniform([batch], 0, arch.classes, 'int32', 2) as tf.Tensor1D;

function time(label: string, fn: () => void): number {
  for (let i = 0; i < warmup; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) fn();
  const seconds = (performance.now() - t0) / 1000;
  const rate = (steps * batch) / seconds;
  console.log(`${label}: ${rate.toFixed(3)} img/s (${((seconds / steps) * 1000).toFixed(0)} ms/iteration)`);
  return rate;
}

const sgd = tf.train.momentum(1e-3, 0.9);
const classifierStep = () =>
  tf.tidy(() => {
    sgd.minimize(() => crossEntropy((trainer.classifier.apply(x, { training: true }) as tf.Tensor[])[5] as tf.Tensor2D, y));
  });

console.log(
  `bench: backend ${engine.backend}${engine.tensorflowVersion ? ` (libtensorflow ${engine.tensorflowVersion})` : ''}, ` +
    `ResNet depths [${arch.depths}] width ${arch.width} at ${size}px, batch ${batch}, ${warmup} warm-up + ${steps} timed iterations`,
);
const plain = time('plain classifier step (SGD on clean CE)', classifierStep);
const casm = time('CASM iteration (eq. 8 classifier step + L100 pool + masker step)', () => trainer.iteration(x, y));
console.log(`CASM iteration / plain step time ratio: ${(plain / casm).toFixed(2)}`);
