/**
 * npm run bench [-- --backend tensorflow --batch 8 --size 224 --steps 3 --depths 3,4,6,3]
 * Throughput of one full CASM iteration (thinning L100, entropy score) for ResNet-50 at 224 on the
 * chosen backend, after warm-up iterations; next to it the plain classifier training step, so the
 * CASM overhead is visible. Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { crossEntropy } from '../src/casm/score.js';
import { measure, setupBench } from './common.js';

const { trainer, arch, batch, size, steps, warmup } = await setupBench('bench', { batch: 8, warmup: 1 });
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const y = tf.randomUniform([batch], 0, arch.classes, 'int32', 2) as tf.Tensor1D;

function time(label: string, fn: () => void): number {
  const ms = measure(fn, warmup, steps);
  const rate = (1000 * batch) / ms;
  console.log(`${label}: ${rate.toFixed(3)} img/s (${ms.toFixed(0)} ms/iteration)`);
  return rate;
}

const sgd = tf.train.momentum(1e-3, 0.9);
const classifierStep = () =>
  tf.tidy(() => {
    sgd.minimize(() => crossEntropy((trainer.classifier.apply(x, { training: true }) as tf.Tensor[])[5] as tf.Tensor2D, y));
  });

const plain = time('plain classifier step (SGD on clean CE)', classifierStep);
const casm = time('CASM iteration (eq. 8 classifier step + L100 pool + masker step)', () => trainer.iteration(x, y));
console.log(`CASM iteration / plain step time ratio: ${(plain / casm).toFixed(2)}`);
