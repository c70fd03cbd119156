/**
 * node dist/bench/profile.js [--batch 16 --size 224 --depths 3,4,6,3]
 * Where the time of one CASM iteration goes, per tfjs kernel (tf.profile, after a warm-up
 * iteration): total ms and calls per kernel name, largest first. Not part of `npm run bench`'s
 * timings; its table goes into bench/results.md by hand with the command that made it.
 */
import * as tf from '@tensorflow/tfjs';
import { setupBench } from './common.js';

const { trainer, arch, batch, size, warmup } = await setupBench('profile', { batch: 16, warmup: 1 });
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const y = tf.randomUniform([batch], 0, arch.classes, 'int32', 2) as tf.Tensor1D;
for (let i = 0; i < warmup; i++) trainer.iteration(x, y);

const t0 = performance.now();
const info = await tf.profile(() => void trainer.iteration(x, y));
const wall = performance.now() - t0;
const byName = new Map<string, { ms: number; calls: number }>();
for (const k of info.kernels) {
  const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
  e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
  e.calls++;
  byName.set(k.name, e);
}
const total = [...byName.values()].reduce((a, e) => a + e.ms, 0);
console.log(`one CASM iteration: ${info.kernels.length} kernels, ${total.toFixed(0)} ms in kernels, ${wall.toFixed(0)} ms wall (profiling adds overhead)`);
console.log('| kernel | calls | ms | share |\n|---|---|---|---|');
for (const [name, e] of [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25)) {
  console.log(`| ${name} | ${e.calls} | ${e.ms.toFixed(0)} | ${((100 * e.ms) / total).toFixed(1)}% |`);
}
