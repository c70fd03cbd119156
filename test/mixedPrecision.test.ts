/**
 * --precision bf16 (src/engine/mixedPrecision.ts): the bfloat16 convolution against a float64
 * convolution computed here by hand on bfloat16-rounded inputs; the gradients of a ResNet and
 * a CASM iteration against the float32 path within a stated tolerance; nothing leaked; and the
 * refusal, with its reason, where the CPU would only emulate bfloat16.
 * Runs on any x86 CPU: where it lacks AMX-BF16 / AVX512-BF16, TensorFlow emulates the same
 * rounding (slowly), so the numerics are checked everywhere CI runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { initEngine } from '../src/engine/engine.js';
import { bf16Route, bf16Support, conv2dBf16, EMULATION_ENV, PrecisionUnavailable, setPrecision } from '../src/engine/mixedPrecision.js';
import { buildResNet } from '../src/models/resnet.js';
import { useTestBackend } from './helpers/backend.js';

const native = (await useTestBackend()) === 'tensorflow';

const ZEN3 = 'model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2 sha_ni vaes\n';
const SAPPHIRE = 'model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n';
const GENOA = 'model name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n';

test('bf16Support reads AMX-BF16 / AVX512-BF16 from the CPU flags', () => {
  assert.deepEqual(bf16Support(SAPPHIRE), { ok: true, reason: 'Intel(R) Xeon(R) Platinum 8480+ has amx_bf16 and avx512_bf16' });
  assert.deepEqual(bf16Support(GENOA), { ok: true, reason: 'AMD EPYC 9654 has avx512_bf16' });
  const zen3 = bf16Support(ZEN3);
  assert.equal(zen3.ok, false);
  assert.match(zen3.reason, /^AMD EPYC has neither AMX-BF16 nor AVX512-BF16/);
  assert.equal(bf16Support(null).ok, false);
  // avx512f alone is not bfloat16 arithmetic (TensorFlow's oneDNN check accepts it, and emulates).
  assert.equal(bf16Support('flags\t: avx512f avx512bw\n').ok, false);
});

test('bf16Route: refuses an emulating CPU with the reason and the way out, unless asked to emulate', () => {
  assert.match(bf16Route('cpu', bf16Support(SAPPHIRE), {}), /bfloat16.*amx_bf16/);
  assert.throws(
    () => bf16Route('cpu', bf16Support(ZEN3), {}),
    (e: Error) =>
      e instanceof PrecisionUnavailable &&
      /neither AMX-BF16 nor AVX512-BF16/.test(e.message) &&
      /--precision fp32/.test(e.message) &&
      e.message.includes(EMULATION_ENV),
  );
  assert.match(bf16Route('cpu', bf16Support(ZEN3), { [EMULATION_ENV]: '1' }), /EMULATED/);
  assert.match(bf16Route('gpu', bf16Support(ZEN3), {}), /GPU/);
});

test('initEngine --precision bf16: refused on the pure-JS backend; on this CPU as bf16Route says', async () => {
  await assert.rejects(
    initEngine('cpu', () => {}, 'fused', 'bf16'),
    (e: Error) => e instanceof PrecisionUnavailable && /native engine/.test(e.message),
  );
  assert.equal(tf.getBackend(), native ? 'tensorflow' : 'cpu', 'a refusal switches no backend');
  if (!native) return;
  await assert.rejects(
    initEngine('tensorflow', () => {}, 'composed', 'bf16'),
    /fused training path/,
  );
  const lines: string[] = [];
  const saved = process.env[EMULATION_ENV];
  delete process.env[EMULATION_ENV];
  try {
    if (bf16Support().ok) {
      const info = await initEngine('tensorflow', (l) => lines.push(l), 'fused', 'bf16');
      assert.equal(info.precision, 'bf16');
      assert.match(lines.join('\n'), /precision bf16 \(convolutions and their gradients in bfloat16/);
    } else {
      await assert.rejects(
        initEngine('tensorflow', (l) => lines.push(l), 'fused', 'bf16'),
        /neither AMX-BF16 nor AVX512-BF16/,
      );
    }
  } finally {
    if (saved !== undefined) process.env[EMULATION_ENV] = saved;
    setPrecision('fp32');
  }
});

/** Round-to-nearest-even of float32 values to bfloat16 (kept in float32), on their bits. */
function bf16Round(v: Float32Array): Float32Array {
  const out = new Float32Array(v);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) bits[i] = (((bits[i]! + 0x7fff + ((bits[i]! >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return out;
}

/**
 * y = conv(x, f) of NHWC x and HWIO f in float64 (zero padding `pad` on top/left, what fits
 * bottom/right), and for L = sum(y * w) the gradients dx and df; with each output, the sum of the
 * magnitudes of its terms (what bounds float32 accumulation error).
 */
function conv64(x: Float32Array, xs: number[], f: Float32Array, fs: number[], w: Float32Array, stride: number, pad: number, outHW: number) {
  const [n, h, wd, c] = xs as [number, number, number, number];
  const [kh, kw, , o] = fs as [number, number, number, number];
  const out = { y: new Float64Array(w.length), dx: new Float64Array(x.length), df: new Float64Array(f.length) };
  const mag = { y: new Float64Array(w.length), dx: new Float64Array(x.length), df: new Float64Array(f.length) };
  for (let b = 0; b < n; b++)
    for (let i = 0; i < outHW; i++)
      for (let j = 0; j < outHW; j++)
        for (let k = 0; k < o; k++) {
          const yi = ((b * outHW + i) * outHW + j) * o + k;
          for (let di = 0; di < kh; di++)
            for (let dj = 0; dj < kw; dj++) {
              const r = i * stride + di - pad;
              const q = j * stride + dj - pad;
              if (r < 0 || q < 0 || r >= h || q >= wd) continue;
              for (let ch = 0; ch < c; ch++) {
                const xi = ((b * h + r) * wd + q) * c + ch;
                const fi = ((di * kw + dj) * c + ch) * o + k;
                for (const [key, idx, u, v] of [
                  ['y', yi, x[xi]!, f[fi]!],
                  ['dx', xi, w[yi]!, f[fi]!],
                  ['df', fi, x[xi]!, w[yi]!],
                ] as const) {
                  out[key][idx] += u * v;
                  mag[key][idx] += Math.abs(u * v);
                }
              }
            }
        }
  return { out, mag };
}

/** The largest distance of `got` from `oracle`, in bfloat16 steps at |oracle| (float32 accumulation error allowed for). */
function bf16Steps(got: Float32Array, oracle: Float64Array, mag: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const step = 2 ** (Math.floor(Math.log2(Math.abs(oracle[i]!) || 1e-30)) - 7);
    worst = Math.max(worst, Math.max(0, Math.abs(got[i]! - oracle[i]!) - 1e-6 * mag[i]!) / step);
  }
  return worst;
}

/** max |got - oracle| / (sum of the magnitudes of its terms). */
function worstOfSum(got: Float32Array, oracle: Float64Array, mag: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - oracle[i]!) / mag[i]!);
  return worst;
}

/**
 * The gradients' tolerance, 4 bfloat16 steps (2^-6) of the summed magnitudes of their terms.
 * TensorFlow's bfloat16 gradient kernels where the CPU only emulates bfloat16 (Eigen's) round
 * partial sums to bfloat16: errors up to 0.009 of the summed magnitudes were seen on an AMD EPYC
 * (Zen 3), against 0.002 for the forward convolution, which accumulates in float32.
 */
const GRADIENT_TOLERANCE = 2 ** -6;

test(
  'conv2dBf16: bfloat16-rounded inputs and result around float32 accumulation; both gradients within 2^-6 of their terms (hand oracle)',
  { skip: !native && 'native engine only' },
  () => {
    for (const { stride, pad, tfPad, hw, outHW } of [
      { stride: 1, pad: 1, tfPad: 'same' as const, hw: 7, outHW: 7 },
      { stride: 2, pad: 0, tfPad: 'valid' as const, hw: 9, outHW: 4 },
    ]) {
      const x = tf.randomNormal([2, hw, hw, 5], 0, 1, 'float32', 11) as tf.Tensor4D;
      const f = tf.randomNormal([3, 3, 5, 6], 0, 0.3, 'float32', 12) as tf.Tensor4D;
      const w = tf.randomNormal([2, outHW, outHW, 6], 0, 1, 'float32', 13);
      const y = conv2dBf16(x, f, [stride, stride], tfPad, [1, 1]);
      const [dx, df] = tf.grads((a, b) => tf.sum(tf.mul(conv2dBf16(a as tf.Tensor4D, b as tf.Tensor4D, [stride, stride], tfPad, [1, 1]), w)))([x, f]);
      const plain = tf.conv2d(x, f, stride, tfPad);
      assert.deepEqual(y.shape, plain.shape);
      assert.equal(y.dtype, 'float32');
      const r = (t: tf.Tensor) => bf16Round(t.dataSync() as Float32Array);
      const { out, mag } = conv64(r(x), x.shape, r(f), f.shape, r(w), stride, pad, outHW);
      for (const [name, got, key] of [
        ['forward', y, 'y'],
        ['input gradient', dx!, 'dx'],
        ['filter gradient', df!, 'df'],
      ] as const) {
        const g = got.dataSync() as Float32Array;
        if (key === 'y') {
          const steps = bf16Steps(g, out.y, mag.y);
          assert.ok(steps <= 1, `stride ${stride}, forward: ${steps} bfloat16 steps from the oracle`);
        } else {
          const err = worstOfSum(g, out[key], mag[key]);
          assert.ok(err <= GRADIENT_TOLERANCE, `stride ${stride}, ${name}: error ${err} of the summed magnitudes`);
        }
      }
      const gap = tf.max(tf.abs(tf.sub(plain, y))).dataSync()[0]!;
      assert.ok(gap > 1e-3, `stride ${stride}: the float32 convolution is ${gap} away: bfloat16 did not run`);
      tf.dispose([x, f, w, y, dx!, df!, plain]);
    }
  },
);

const ARCH = { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 64 };

/** The gradient of the loss of one training pass, every trainable weight's, as one vector. */
function gradient(model: tf.LayersModel, x: tf.Tensor4D, labels: tf.Tensor1D): Float32Array {
  const vars = model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val);
  const { value, grads } = tf.variableGrads(
    () => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 10), (model.apply(x, { training: true }) as tf.Tensor[])[5]!) as tf.Scalar,
    vars,
  );
  const flat = tf.concat(Object.values(grads).map((g) => g.flatten()));
  const out = flat.dataSync() as Float32Array;
  tf.dispose([value, flat, ...Object.values(grads)]);
  return out;
}

/** ||a - b|| / ||b||. */
function relL2(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 1e-30;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

/**
 * A ResNet's gradients at initialisation are ill-conditioned: rounding the input image alone to
 * bfloat16 moves the float32 gradient by tens of percent (BatchNorm over a small batch, ReLUs
 * near their kinks), so no fixed tolerance on the whole gradient would be meaningful. The stated
 * one is relative to that sensitivity: bf16 convolutions move the gradient at most twice as far
 * as rounding the input does (a wrong gradient anywhere moves it by 100% or more).
 */
const SENSITIVITY_FACTOR = 2;

test(
  `bf16 gradient of a ResNet: within ${SENSITIVITY_FACTOR}x of how far rounding the input to bfloat16 moves the float32 one`,
  { skip: !native && 'native engine only' },
  () => {
    const model = buildResNet(ARCH, 'classifier', 4);
    const x = tf.randomNormal([8, 64, 64, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    const xRounded = tf.tensor(bf16Round(x.dataSync() as Float32Array), x.shape) as tf.Tensor4D;
    const labels = tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], 'int32');
    const fp32 = gradient(model, x, labels);
    const sensitivity = relL2(gradient(model, xRounded, labels), fp32);
    setPrecision('bf16');
    let bf16: Float32Array;
    try {
      bf16 = gradient(model, x, labels);
    } finally {
      setPrecision('fp32');
    }
    const err = relL2(bf16, fp32);
    assert.ok(sensitivity > 0.01, `rounding the input moved the gradient by ${sensitivity} only`);
    assert.ok(err <= SENSITIVITY_FACTOR * sensitivity, `bf16 moved the gradient by ${err}, rounding the input by ${sensitivity}`);
    assert.ok(err > 1e-4, 'bfloat16 changed nothing: it did not run');
    model.dispose();
    tf.dispose([x, xRounded, labels]);
  },
);

test('bf16 CASM iterations: losses near the float32 path, and no tensor leaks', { skip: !native && 'native engine only' }, () => {
  const config = defaultTrainConfig({ arch: { ...ARCH, inputSize: 32 }, batchSize: 4, thinning: 'L100', warmupSteps: 0 });
  const x = tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
  const y = tf.tensor1d([1, 2, 3, 4], 'int32');
  const run = (p: 'fp32' | 'bf16') => {
    const trainer = new CasmTrainer(config);
    setPrecision(p);
    try {
      const first = trainer.iteration(x, y);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 4; i++) trainer.iteration(x, y);
      const leaked = tf.memory().numTensors - before;
      return { first, leaked, dispose: () => trainer.dispose() };
    } finally {
      setPrecision('fp32');
    }
  };
  const a = run('fp32');
  const b = run('bf16');
  assert.equal(b.leaked, 0, 'bf16 iterations leave no tensors behind');
  for (const k of ['classifierLoss', 'maskerLoss'] as const) {
    const [u, v] = [a.first[k], b.first[k]];
    assert.ok(Number.isFinite(v) && Math.abs(u - v) <= 0.02 * Math.abs(u) + 1e-3, `${k}: bf16 ${v} vs fp32 ${u}`);
  }
  a.dispose();
  b.dispose();
  tf.dispose([x, y]);
});
