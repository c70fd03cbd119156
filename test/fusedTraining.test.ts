/**
 * The fused training path (src/engine/fusedTraining.ts: TensorFlow's FusedBatchNormV3 / ...GradV3 and
 * ReluGrad) against tfjs's own composed ops: same loss, gradients, moving statistics and CASM
 * iteration within float32 rounding, far fewer kernels, no leaked tensors. On the pure-JS
 * backend the switch must change nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { fusedTraining, setFusedTraining } from '../src/engine/fusedTraining.js';
import { buildResNet } from '../src/models/resnet.js';
import { useTestBackend } from './helpers/backend.js';
import { memoryProbe } from './helpers/memoryProbe.js';

const backend = await useTestBackend();
const native = backend === 'tensorflow';
const ARCH = { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 };
const x = tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
const labels = tf.tensor1d([0, 3, 5, 9], 'int32');

/** Loss, gradients of every trainable weight, and BN moving statistics after one training pass. */
function pass(model: tf.LayersModel) {
  const stats0 = model.weights.filter((w) => /moving/.test(w.name)).map((w) => w.read().clone());
  const f = () => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 10), (model.apply(x, { training: true }) as tf.Tensor[])[5]!) as tf.Scalar;
  const { value, grads } = tf.variableGrads(f);
  const moving = model.weights.filter((w) => /moving/.test(w.name));
  const out = {
    loss: value.dataSync()[0]!,
    grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array])),
    moving: moving.map((w) => w.read().dataSync() as Float32Array),
  };
  moving.forEach((w, i) => w.write(stats0[i]!));
  tf.dispose([value, ...Object.values(grads), ...stats0]);
  return out;
}

/** max |a - b| / max |b|. */
function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 1e-12;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

test('fused BatchNorm + ReluGrad: loss, every gradient and the moving statistics match the plain path', () => {
  const model = buildResNet(ARCH, 'classifier', 4);
  setFusedTraining(false);
  const plain = pass(model);
  setFusedTraining(true);
  assert.equal(fusedTraining(), native, 'active exactly on the native engine');
  const fused = pass(model);
  setFusedTraining(false);
  assert.ok(Math.abs(fused.loss - plain.loss) <= 1e-5 * Math.abs(plain.loss), `loss ${fused.loss} vs ${plain.loss}`);
  assert.equal(Object.keys(fused.grads).length, Object.keys(plain.grads).length);
  let worst = 0;
  for (const [k, g] of Object.entries(plain.grads)) worst = Math.max(worst, relErr(fused.grads[k]!, g));
  assert.ok(worst < 1e-4, `gradients: max relative error ${worst}`);
  const movingErr = Math.max(...plain.moving.map((m, i) => relErr(fused.moving[i]!, m)));
  assert.ok(movingErr < 1e-5, `moving statistics: ${movingErr}`);
  if (!native) assert.equal(worst, 0, 'on the pure-JS backend the switch changes nothing');
  model.dispose();
});

test('the fused path runs far fewer kernels and frees what it makes', async () => {
  const model = buildResNet(ARCH, 'classifier', 4);
  const kernels = async () => (await tf.profile(() => void pass(model))).kernels.length;
  setFusedTraining(false);
  const plainKernels = await kernels();
  setFusedTraining(true);
  const fusedKernels = await kernels();
  pass(model);
  const before = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) pass(model);
  assert.equal(tf.memory().numTensors, before);
  setFusedTraining(false);
  if (native) assert.ok(fusedKernels < 0.6 * plainKernels, `${fusedKernels} kernels fused vs ${plainKernels} plain`);
  else assert.equal(fusedKernels, plainKernels);
  model.dispose();
});

test('a CASM iteration with the fused path: losses and updated weights as the plain one', () => {
  const config = defaultTrainConfig({
    arch: ARCH,
    masker: { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride: 4 },
    batchSize: 4,
    warmupSteps: 0,
    seed: 2,
  });
  const run = (on: boolean) => {
    setFusedTraining(on);
    const t = new CasmTrainer(config);
    const s = t.iteration(x, labels);
    const w = t.classifier.getWeights().map((v) => v.dataSync() as Float32Array);
    const d = t.masker.decoder.getWeights().map((v) => v.dataSync() as Float32Array);
    t.dispose();
    setFusedTraining(false);
    return { s, w, d };
  };
  const [plain, fused] = [run(false), run(true)];
  for (const k of ['classifierLoss', 'maskerLoss', 'entropy', 'areaMean'] as const) {
    assert.ok(Math.abs(fused.s[k] - plain.s[k]) <= 1e-4 * Math.max(1, Math.abs(plain.s[k])), `${k}: ${fused.s[k]} vs ${plain.s[k]}`);
  }
  const worst = Math.max(...plain.w.map((w, i) => relErr(fused.w[i]!, w)));
  const worstD = Math.max(...plain.d.map((w, i) => relErr(fused.d[i]!, w)));
  // BN betas start at 0: after one step they are lr times a batch sum that mostly cancels, so
  // float32 summation order shows at ~1e-4 of their (tiny) size; every other weight agrees to ~1e-6.
  assert.ok(worst < 1e-3, `classifier weights after one iteration: max relative error ${worst}`);
  assert.ok(worstD < 1e-4, `decoder weights after one iteration: max relative error ${worstD}`);
});

/** Kernel names and counts of fn's run. */
async function kernelCounts(fn: () => void): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const k of (await tf.profile(fn)).kernels) counts.set(k.name, (counts.get(k.name) ?? 0) + 1);
  return counts;
}

test('convolutions compute only the gradients the backward pass needs, with the same values', async () => {
  const model = buildResNet(ARCH, 'classifier', 4);
  const convs = model.layers.filter((l) => l.getClassName() === 'Conv2D').length;
  // The masker step: d(loss)/d(input) through f' in both modes, no weight gradient wanted.
  const inputGrad = (training: boolean) => tf.grad((img: tf.Tensor) => tf.sum(tf.square((model.apply(img, { training }) as tf.Tensor[])[5]!)))(x);
  const initial = model.getWeights().map((w) => w.clone());
  const run = async (on: boolean) => {
    setFusedTraining(on);
    model.setWeights(initial); // training-mode passes move the BN statistics the inference pass uses
    const dx = [true, false].map((training) => tf.tidy(() => inputGrad(training).dataSync() as Float32Array));
    const masker = await kernelCounts(() => tf.dispose([inputGrad(true), inputGrad(false)]));
    const classifier = await kernelCounts(() => void pass(model));
    setFusedTraining(false);
    return { dx, masker, classifier };
  };
  const [plain, fused] = [await run(false), await run(true)];
  for (const i of [0, 1]) assert.ok(relErr(fused.dx[i]!, plain.dx[i]!) < 1e-4, `input gradient (training ${i === 0}): ${relErr(fused.dx[i]!, plain.dx[i]!)}`);
  if (native) {
    assert.equal(plain.masker.get('Conv2DBackpropFilter'), 2 * convs, 'tfjs-layers computes filter gradients nobody asked for');
    assert.equal(fused.masker.get('Conv2DBackpropFilter') ?? 0, 0);
    assert.equal(fused.masker.get('Conv2DBackpropInput'), 2 * convs);
    assert.equal(plain.classifier.get('Conv2DBackpropInput'), convs, "and the stem's input gradient");
    assert.equal(fused.classifier.get('Conv2DBackpropInput'), convs - 1);
    assert.equal(fused.classifier.get('Conv2DBackpropFilter'), convs);
    assert.equal(fused.masker.get('Tile') ?? 0, 0, 'no full-size Tile in the inference BatchNorm gradient');
  } else {
    assert.deepEqual(fused.masker, plain.masker, 'on the pure-JS backend the switch changes nothing');
  }
  model.dispose();
  tf.dispose(initial);
});

test("inference-mode batchNorm: each input's gradient as tfjs's own", () => {
  const c = 6;
  const xs = tf.randomNormal([2, 3, 4, c], 1, 2, 'float32', 5) as tf.Tensor4D;
  const stats = [
    tf.randomNormal([c], 0, 1, 'float32', 6),
    tf.randomUniform([c], 0.5, 2, 'float32', 7),
    tf.randomNormal([c], 1, 0.3, 'float32', 8),
    tf.randomNormal([c], 0, 1, 'float32', 9),
  ];
  const w = tf.randomNormal(xs.shape, 0, 1, 'float32', 10);
  const f = (a: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) =>
    tf.sum(tf.mul(tf.batchNorm(a as tf.Tensor4D, mean as tf.Tensor1D, variance as tf.Tensor1D, offset as tf.Tensor1D, scale as tf.Tensor1D, 1e-3), w));
  const grads = (on: boolean) => {
    setFusedTraining(on);
    const g = tf.tidy(() =>
      tf
        .grads(f)([xs, ...stats])
        .map((t) => t.dataSync() as Float32Array),
    );
    setFusedTraining(false);
    return g;
  };
  const [plain, fused] = [grads(false), grads(true)];
  ['x', 'mean', 'variance', 'scale', 'offset'].forEach((name, i) => {
    const e = relErr(fused[i]!, plain[i]!);
    assert.ok(e < 1e-5, `d/d${name}: ${e}`);
    if (!native) assert.equal(e, 0);
  });
  assert.ok(
    plain.every((g) => g.some((v) => v !== 0)),
    'every gradient is non-trivial',
  );
  tf.dispose([xs, ...stats, w]);
});

test('Add layers hold nothing for their gradient: the same gradients, two tensors fewer into the backward pass', () => {
  const add = tf.layers.add();
  const [a, b] = [tf.randomNormal([2, 8, 8, 16], 0, 1, 'float32', 7), tf.randomNormal([2, 8, 8, 16], 0, 1, 'float32', 8)];
  const bytes = a.size * 4;
  // At the loss: what the forward pass leaves for the backward pass.
  const probe = memoryProbe();
  const run = (on: boolean) => {
    setFusedTraining(on);
    probe.start();
    // The Add layer's inputs are intermediates (2a, 3b), as a residual join's are.
    const grads = tf.grads((p: tf.Tensor, q: tf.Tensor) => probe.op(tf.sum(add.apply([tf.mul(p, 2), tf.mul(q, 3)]) as tf.Tensor)))([a, b]);
    const out = grads.map((g) => g.dataSync() as Float32Array);
    tf.dispose(grads);
    setFusedTraining(false);
    return { held: probe.held(), out };
  };
  const [plain, fused] = [run(false), run(true)];
  assert.deepEqual(fused.out, plain.out);
  assert.ok(plain.out[0]!.every((v) => v === 2) && plain.out[1]!.every((v) => v === 3), 'd/da = 2, d/db = 3');
  if (native) assert.equal(plain.held - fused.held, 2 * bytes, `held ${plain.held} bytes plain, ${fused.held} fused`);
  else assert.equal(fused.held, plain.held);
  tf.dispose([a, b]);
});
