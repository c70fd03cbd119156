/**
 * Backend selection (src/engine/engine.ts). The native engine is built by scripts/setup.sh, which runs
 * before the tests in CI, so these tests require it: a missing native backend is a failure.
 * Tests run in order within this file and share one process (and one tfjs engine).
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from '../src/engine/engine.js';
import { checkTfjsVersion, EngineVersionError, PATCHED_TFJS } from '../src/engine/patches.js';
import { Rng } from '../src/util/rng.js';

function collect(): { lines: string[]; log: (line: string) => void } {
  const lines: string[] = [];
  return { lines, log: (line) => lines.push(line) };
}

test('the engine patches are for the pinned tfjs: package.json pins it, another version is refused by name', () => {
  const pkg = createRequire(import.meta.url)('../../package.json') as { dependencies: Record<string, string> };
  for (const name of ['@tensorflow/tfjs', '@tensorflow/tfjs-layers', '@tensorflow/tfjs-node']) assert.equal(pkg.dependencies[name], PATCHED_TFJS, name);
  assert.equal(tf.version.tfjs, PATCHED_TFJS);
  checkTfjsVersion();
  assert.throws(
    () => checkTfjsVersion({ ...tf.version, 'tfjs-layers': '4.23.0' }),
    (e: unknown) =>
      e instanceof EngineVersionError && /written for tfjs 4\.22\.0; this process has tfjs-layers 4\.23\.0\. Install the pinned one: npm ci/.test(e.message),
  );
});

test('BACKEND_CHOICES lists the four choices', () => {
  assert.deepEqual([...BACKEND_CHOICES], ['auto', 'tensorflow', 'tensorflow-gpu', 'cpu']);
});

test("initEngine('cpu') selects the pure-JS cpu backend", async () => {
  const { lines, log } = collect();
  const info = await initEngine('cpu', log);
  assert.equal(info.backend, 'cpu');
  assert.equal(info.native, false);
  assert.equal(info.tensorflowVersion, null);
  assert.equal(info.warning, null);
  assert.equal(tf.getBackend(), 'cpu');
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^engine: backend=cpu /);
});

test("initEngine('tensorflow') selects native libtensorflow in the engine '@tensorflow/tfjs' uses", async () => {
  const { lines, log } = collect();
  const info = await initEngine('tensorflow', log);
  assert.equal(info.backend, 'tensorflow');
  assert.equal(info.native, true);
  assert.match(info.tensorflowVersion ?? '', /^2\.\d+/);
  assert.equal(info.warning, null);
  assert.equal(tf.getBackend(), 'tensorflow');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.startsWith(`engine: backend=tensorflow native libtensorflow ${info.tensorflowVersion}`), true);
  // Ops really run there: a tensor made through '@tensorflow/tfjs' lives on the native backend.
  const t = tf.tensor1d([1, 2, 3]).square();
  assert.deepEqual(Array.from(await t.data()), [1, 4, 9]);
  assert.equal(tf.engine().backendName, 'tensorflow');
  t.dispose();
});

interface ConvCase {
  name: string;
  x: [number, number, number, number];
  w: [number, number, number, number];
  strides: [number, number];
  pad: 'same' | 'valid';
  dilations: [number, number];
}

const CASES: ConvCase[] = [
  { name: '3x3 stride 1 same', x: [2, 9, 9, 3], w: [3, 3, 3, 5], strides: [1, 1], pad: 'same', dilations: [1, 1] },
  { name: '3x3 stride 2x1 same', x: [2, 8, 7, 4], w: [3, 3, 4, 6], strides: [2, 1], pad: 'same', dilations: [1, 1] },
  { name: '5x5 stride 2 valid', x: [1, 11, 10, 2], w: [5, 5, 2, 3], strides: [2, 2], pad: 'valid', dilations: [1, 1] },
  { name: '4x4 stride 2 same (uneven padding)', x: [1, 9, 8, 3], w: [4, 4, 3, 2], strides: [2, 2], pad: 'same', dilations: [1, 1] },
];

/** conv2d output, and d/dx, d/dw of sum(conv2d(x, w) * g) (g fixed), on the current backend. */
function convAndGrads(c: ConvCase, xv: Float32Array, wv: Float32Array, gv: Float32Array): Float32Array[] {
  return tf.tidy(() => {
    const x = tf.tensor4d(xv, c.x);
    const w = tf.tensor4d(wv, c.w);
    const conv = (a: tf.Tensor4D, b: tf.Tensor4D) => tf.conv2d(a, b, c.strides, c.pad, 'NHWC', c.dilations);
    const y = conv(x, w);
    const g = tf.tensor(gv, y.shape);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      conv(a as tf.Tensor4D, b as tf.Tensor4D)
        .mul(g)
        .sum(),
    );
    const [gx, gw] = grads([x, w]);
    return [y, gx!, gw!].map((t) => t.dataSync() as Float32Array);
  });
}

function outSize(c: ConvCase): number {
  const y = tf.tidy(() => tf.conv2d(tf.zeros(c.x) as tf.Tensor4D, tf.zeros(c.w) as tf.Tensor4D, c.strides, c.pad, 'NHWC', c.dilations));
  const n = y.size;
  y.dispose();
  return n;
}

test('conv2d forward and gradients on the native backend equal the cpu backend (1e-4)', async () => {
  const rng = new Rng(20240611);
  const fill = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
  for (const c of CASES) {
    await initEngine('cpu', () => {});
    const xv = fill(c.x.reduce((a, b) => a * b));
    const wv = fill(c.w.reduce((a, b) => a * b));
    const gv = fill(outSize(c));
    const ref = convAndGrads(c, xv, wv, gv);
    const info = await initEngine('tensorflow', () => {});
    assert.equal(info.backend, 'tensorflow');
    const nat = convAndGrads(c, xv, wv, gv);
    ['y', 'dx', 'dw'].forEach((what, k) => {
      assert.equal(nat[k]!.length, ref[k]!.length, `${c.name} ${what}: size`);
      let worst = 0;
      for (let i = 0; i < ref[k]!.length; i++) {
        const err = Math.abs(nat[k]![i]! - ref[k]![i]!) / Math.max(1, Math.abs(ref[k]![i]!));
        worst = Math.max(worst, err);
      }
      assert.ok(worst <= 1e-4, `${c.name} ${what}: native differs from cpu by ${worst}`);
    });
    // Something non-trivial was compared.
    assert.ok(
      ref[2]!.some((v) => Math.abs(v) > 1e-3),
      `${c.name}: degenerate gradient`,
    );
  }
});

test("initEngine('auto') picks the native engine (it is built by setup.sh)", async () => {
  const { lines, log } = collect();
  const info = await initEngine('auto', log);
  assert.equal(info.native, true, `auto fell back: ${info.warning}`);
  assert.equal(info.backend, 'tensorflow');
  assert.equal(info.warning, null);
  assert.match(lines.join('\n'), /^engine: backend=tensorflow native libtensorflow 2\.\d+/m);
});

test('an unknown choice rejects, listing the valid choices', async () => {
  await assert.rejects(
    initEngine('gpu' as BackendChoice, () => {}),
    (err: Error) => {
      assert.match(err.message, /'gpu'/);
      for (const c of BACKEND_CHOICES) assert.ok(err.message.includes(c), `message lacks '${c}': ${err.message}`);
      return true;
    },
  );
});

test("initEngine('tensorflow-gpu') without the GPU package rejects with how to build it", async (t) => {
  const require = createRequire(import.meta.url);
  try {
    require.resolve('@tensorflow/tfjs-node-gpu/package.json');
    t.skip('@tensorflow/tfjs-node-gpu is installed here');
    return;
  } catch {
    // not installed: the normal case
  }
  const before = tf.getBackend();
  await assert.rejects(
    initEngine('tensorflow-gpu', () => {}),
    /CASM_GPU=1 bash scripts\/setup\.sh/,
  );
  // The failed request left the current backend in place.
  assert.equal(tf.getBackend(), before);
});
