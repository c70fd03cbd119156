/**
 * node dist/bench/profile.js [--batch 16 --size 224 --depths 3,4,6,3 --warmup 3]
 * Where the time of one CASM iteration goes (after warm-up iterations), two ways:
 * - per oneDNN primitive (kind, implementation, pass), from oneDNN's own verbose timing: this sees
 *   inside the fused BatchNorm custom gradients, which tf.profile shows as no kernel at all;
 * - per tfjs kernel (tf.profile): every kernel tfjs dispatches, oneDNN's or not.
 * Not part of `npm run bench`'s timings; its tables go into bench/results.md by hand with this
 * command. ONEDNN_VERBOSE is read once when TensorFlow starts, so the oneDNN table comes from a
 * child process of this script.
 */
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { setupBench } from './common.js';

const CHILD = 'CASM_PROFILE_ONEDNN';
const [BEGIN, END] = ['PROFILE_BEGIN', 'PROFILE_END'];

/** Total ms and calls per key, largest first, and the sum of all ms. */
function tally(items: [key: string, ms: number][]): { rows: [string, { ms: number; calls: number }][]; total: number } {
  const byKey = new Map<string, { ms: number; calls: number }>();
  for (const [key, ms] of items) {
    const e = byKey.get(key) ?? { ms: 0, calls: 0 };
    e.ms += ms;
    e.calls++;
    byKey.set(key, e);
  }
  const rows = [...byKey.entries()].sort((a, b) => b[1].ms - a[1].ms);
  return { rows, total: rows.reduce((a, [, e]) => a + e.ms, 0) };
}

if (process.env[CHILD] !== '1') {
  const child = spawnSync(process.execPath, process.argv.slice(1), {
    env: { ...process.env, ONEDNN_VERBOSE: '1', [CHILD]: '1' },
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  if (child.status !== 0) throw new Error(`profile: the oneDNN child failed (exit ${child.status}): ${child.stderr.slice(-2000)}`);
  const lines = child.stdout.split('\n');
  const timed = lines.slice(lines.indexOf(BEGIN) + 1, lines.indexOf(END));
  // onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,<pass>,...,<ms>
  const execs = timed.filter((l) => l.startsWith('onednn_verbose') && l.includes(',exec,cpu,')).map((l) => l.split(','));
  const { rows, total } = tally(execs.map((f) => [`${f[5]} | ${f[6]} | ${f[7]}`, Number(f[f.length - 1])]));
  console.log(`one CASM iteration, oneDNN primitives: ${total.toFixed(0)} ms in ${execs.length} primitive executions (ONEDNN_VERBOSE=1, child process)`);
  console.log('| primitive | implementation | pass | calls | ms |\n|---|---|---|---|---|');
  for (const [key, e] of rows) console.log(`| ${key} | ${e.calls} | ${e.ms.toFixed(0)} |`);
}

const { trainer, arch, batch, size, warmup } = await setupBench('profile', { batch: 16, warmup: 3 });
const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const y = tf.randomUniform([batch], 0, arch.classes, 'int32', 2) as tf.Tensor1D;
for (let i = 0; i < warmup; i++) trainer.iteration(x, y);

if (process.env[CHILD] === '1') {
  console.log(BEGIN);
  const t0 = performance.now();
  trainer.iteration(x, y);
  console.log(END);
  console.error(`oneDNN child: ${(performance.now() - t0).toFixed(0)} ms wall`);
  process.exit(0);
}

const t0 = performance.now();
const info = await tf.profile(() => void trainer.iteration(x, y));
const wall = performance.now() - t0;
// Kernel times nest (fusedConv2d__op contains FusedConv2D): the total counts both.
const { rows, total } = tally(info.kernels.map((k) => [k.name, typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0]));
console.log(
  `one CASM iteration, tfjs kernels: ${info.kernels.length} kernels, ${total.toFixed(0)} ms in kernels, ${wall.toFixed(0)} ms wall (profiling adds overhead)`,
);
console.log('| kernel | calls | ms | share |\n|---|---|---|---|');
for (const [name, e] of rows.slice(0, 25)) {
  console.log(`| ${name} | ${e.calls} | ${e.ms.toFixed(0)} | ${((100 * e.ms) / total).toFixed(1)}% |`);
}
