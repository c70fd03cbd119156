/**
 * The baseline explainers against an independent computation: test/helpers/explain_oracle.py
 * writes the same small CNN with tf.nn ops in Python TensorFlow, loads our weights and computes
 * every map with tf.GradientTape and numpy (PAIR-code/saliency's display). The CNN has a residual
 * shortcut over conv_b, so Grad-CAM on conv_b exercises the graph cut's boundary. SmoothGrad uses
 * the noise samples we draw (written to a file). Errors: raw maps relative to the largest |value|,
 * display maps absolute; both must stay under 1e-4. KEEP_ORACLE_DIR=1 keeps the exchange directory
 * (its path is printed) for inspection.
 */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Classifier } from '../src/explain/classifier.js';
import { CounterfactualGradCam, GradCam } from '../src/explain/gradCam.js';
import { SmoothGrad } from '../src/explain/smoothGrad.js';
import { GradientTimesInput, VanillaGradient } from '../src/explain/vanilla.js';
import { buildResNet } from '../src/models/resnet.js';
import { Rng } from '../src/util/rng.js';
import { useTestBackend } from './helpers/backend.js';
import { runPython } from './helpers/python.js';

const SIZE = 32;
const N = 2;
const CLASSES = 5;
const SAMPLES = 4;
const TOL = 1e-4;

/** The oracle's CNN in tfjs layers (names = the oracle's activation names). */
function smallCnn(): tf.LayersModel {
  const input = tf.input({ shape: [SIZE, SIZE, 3], name: 'image' });
  const conv = (x: tf.SymbolicTensor, name: string, filters: number, strides: number) =>
    tf.layers.conv2d({ name, filters, kernelSize: 3, strides, padding: 'same' }).apply(x) as tf.SymbolicTensor;
  const relu = (x: tf.SymbolicTensor, name: string) => tf.layers.reLU({ name }).apply(x) as tf.SymbolicTensor;
  const a = relu(tf.layers.batchNormalization({ name: 'bn_a', epsilon: 1e-3 }).apply(conv(input, 'conv_a', 8, 2)) as tf.SymbolicTensor, 'relu_a');
  const b = relu(conv(a, 'conv_b', 8, 1), 'relu_b');
  const skip = tf.layers.add({ name: 'skip' }).apply([b, a]) as tf.SymbolicTensor;
  const pool = tf.layers.maxPooling2d({ name: 'pool', poolSize: 2 }).apply(skip) as tf.SymbolicTensor;
  const c = relu(conv(pool, 'conv_c', 16, 2), 'relu_c');
  const gap = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(c) as tf.SymbolicTensor;
  const logits = tf.layers.dense({ name: 'fc', units: CLASSES }).apply(gap) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: logits, name: 'small_cnn' });
}

/** Fixed random weights, BatchNorm far from identity (positive variances and scales). */
function randomize(model: tf.LayersModel, rng: Rng): void {
  const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  for (const w of model.weights) {
    const shape = w.shape as number[];
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.length > 1 ? n / shape[shape.length - 1] : 1;
    const values = Float32Array.from({ length: n }, () =>
      /moving_variance|gamma/.test(w.originalName) ? rng.uniform(0.5, 1.5) : shape.length > 1 ? normal() * Math.sqrt(2 / fanIn) : 0.1 * normal(),
    );
    tf.tidy(() => {
      w.write(tf.tensor(values, shape));
    });
  }
}

function writeF32(path: string, t: tf.Tensor | Float32Array): void {
  const data = t instanceof Float32Array ? t : (t.dataSync() as Float32Array);
  writeFileSync(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

let dir = '';
let model: tf.LayersModel;
let classifier: Classifier;
let x: tf.Tensor4D;
// Not the argmax ([2, 2]), and classes whose CAM at relu_c is not zeroed everywhere by the ReLU.
const targets = [4, 3];
let oracle: { outputs: Record<string, number[]>; argmax: number[] };
const smooth = () => new SmoothGrad(new VanillaGradient(classifier), { samples: SAMPLES, seed: 7 });

before(async () => {
  await useTestBackend();
  dir = mkdtempSync(join(tmpdir(), 'casm-explain-'));
  model = smallCnn();
  randomize(model, new Rng(11));
  classifier = new Classifier(model);
  x = tf.randomNormal([N, SIZE, SIZE, 3], 0, 1, 'float32', 5) as tf.Tensor4D;

  let offset = 0;
  const weights = model.weights.map((w) => {
    const e = { name: w.originalName, shape: w.shape, offset };
    offset += w.shape.reduce((a: number, b) => a * (b as number), 1);
    return e;
  });
  const flat = new Float32Array(offset);
  for (const [i, w] of model.weights.entries()) flat.set(w.read().dataSync() as Float32Array, weights[i].offset);
  writeF32(join(dir, 'weights.f32'), flat);
  writeF32(join(dir, 'x.f32'), x);
  const sg = smooth();
  const noise = tf.tidy(() => tf.stack(Array.from({ length: SAMPLES }, (_, i) => sg.noise(x, i))));
  writeF32(join(dir, 'noise.f32'), noise);
  noise.dispose();
  const manifest = {
    weights_file: 'weights.f32',
    weights,
    input: { file: 'x.f32', shape: x.shape },
    targets,
    noise: { file: 'noise.f32', shape: [SAMPLES, ...x.shape] },
    cam_layers: ['relu_c', 'conv_b'],
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  if (process.env.KEEP_ORACLE_DIR) console.log(`oracle dir ${dir}`);
  oracle = JSON.parse(runPython('explain_oracle.py', [dir]).trim().split('\n').pop()!);
});

after(() => {
  tf.dispose([x]);
  model.dispose();
  if (!process.env.KEEP_ORACLE_DIR) rmSync(dir, { recursive: true, force: true });
});

function reference(name: string): { data: Float32Array; shape: number[] } {
  const shape = oracle.outputs[name];
  assert.ok(shape, `the oracle has no output '${name}'`);
  const buf = readFileSync(join(dir, `${name}.f32`));
  return { data: new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)), shape };
}

/** max |ours - ref| (relative: divided by max |ref|); asserts the shapes match and the error is under TOL. Disposes ours. */
function check(ours: tf.Tensor, name: string, relative: boolean): number {
  const ref = reference(name);
  assert.deepEqual(ours.shape, ref.shape, `${name}: shape`);
  const v = ours.dataSync();
  ours.dispose();
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < v.length; i++) {
    diff = Math.max(diff, Math.abs(v[i] - ref.data[i]));
    scale = Math.max(scale, Math.abs(ref.data[i]));
  }
  assert.ok(scale > 0, `${name}: the reference is all zeros, the comparison would prove nothing`);
  const err = relative ? diff / scale : diff;
  console.log(`${name}: max ${relative ? 'relative ' : ''}error ${err.toExponential(2)}`);
  assert.ok(err <= TOL, `${name}: error ${err} > ${TOL}`);
  return err;
}

describe('explainers against TensorFlow-Python on a small CNN', () => {
  test('the oracle runs the same network (logits)', () => {
    check(classifier.logitsOf(x), 'logits', true);
  });

  test('vanilla gradient: dS_c/dx for given targets and for the argmax', () => {
    const given = new VanillaGradient(classifier).explain(x, targets, { raw: true });
    assert.deepEqual(given.targets, targets);
    check(given.raw!, 'vanilla_given', true);
    check(given.maps, 'vanilla_given_map', false);
    const argmax = new VanillaGradient(classifier).explain(x, undefined, { raw: true });
    assert.deepEqual(argmax.targets, oracle.argmax);
    check(argmax.raw!, 'vanilla_argmax', true);
    check(argmax.maps, 'vanilla_argmax_map', false);
  });

  test('gradient x input', () => {
    const e = new GradientTimesInput(classifier).explain(x, tf.tensor1d(targets, 'int32'), { raw: true });
    check(e.raw!, 'gxi', true);
    check(e.maps, 'gxi_map', false);
  });

  for (const layer of ['relu_c', 'conv_b']) {
    test(`Grad-CAM on ${layer}: activations, gradients, alpha = spatial mean of the gradients, map`, () => {
      const cam = new GradCam(classifier, layer === 'relu_c' ? undefined : layer);
      assert.equal(cam.layer, layer);
      const t = tf.tensor1d(targets, 'int32');
      const parts = cam.parts(x, t);
      t.dispose();
      check(parts.activations, `cam_${layer}_activations`, true);
      check(parts.gradients, `cam_${layer}_gradients`, true);
      // The oracle's alpha is np.mean of its own gradients over (h, w).
      check(parts.weights, `cam_${layer}_alpha`, true);
      check(parts.cam, `cam_${layer}`, true);
      parts.targets.dispose();
      const e = cam.explain(x, targets);
      check(e.maps, `cam_${layer}_map`, false);
      const cf = new CounterfactualGradCam(classifier, layer).explain(x, targets, { raw: true });
      check(cf.raw!, `cf_${layer}`, true);
      check(cf.maps, `cf_${layer}_map`, false);
    });
  }

  test('SmoothGrad over the vanilla gradient, with the same noise samples: mean, magnitude, absolute, times input', () => {
    const plain = smooth().explain(x, targets, { raw: true });
    check(plain.raw!, 'sg_mean', true);
    check(plain.maps, 'sg_mean_map', false);
    const opts = { samples: SAMPLES, seed: 7 };
    const sq = new SmoothGrad(new VanillaGradient(classifier), { ...opts, magnitude: true }).explain(x, targets, { raw: true });
    check(sq.raw!, 'sg_square', true);
    check(sq.maps, 'sg_square_map', false);
    const abs = new SmoothGrad(new VanillaGradient(classifier), { ...opts, absolute: true }).explain(x, targets, { raw: true });
    check(abs.raw!, 'sg_abs', true);
    abs.maps.dispose();
    const times = new SmoothGrad(new VanillaGradient(classifier), { ...opts, multiplyByInput: true }).explain(x, targets, { raw: true });
    check(times.raw!, 'sg_times_input', true);
    times.maps.dispose();
  });

  test('SmoothGrad over Grad-CAM', () => {
    const e = new SmoothGrad(new GradCam(classifier), { samples: SAMPLES, seed: 7 }).explain(x, targets, { raw: true });
    check(e.raw!, 'sg_cam', true);
    check(e.maps, 'sg_cam_map', false);
  });
});

describe('SmoothGrad noise', () => {
  test('sigma = spread * (max(x) - min(x)) per image; samples differ; a seed reproduces them', () => {
    const scaled = tf.concat([x.slice([0], [1]), tf.mul(x.slice([1], [1]), 3)]) as tf.Tensor4D;
    const sg = new SmoothGrad(new VanillaGradient(classifier), { spread: 0.2, samples: 2, seed: 3 });
    const [n0, n1] = [sg.noise(scaled, 0), sg.noise(scaled, 1)];
    const again = new SmoothGrad(new VanillaGradient(classifier), { spread: 0.2, samples: 2, seed: 3 }).noise(scaled, 0);
    const range = tf.tidy(() => tf.sub(tf.max(scaled, [1, 2, 3]), tf.min(scaled, [1, 2, 3])).arraySync()) as number[];
    const std = tf.tidy(() => tf.sqrt(tf.moments(n0, [1, 2, 3]).variance).arraySync()) as number[];
    for (let b = 0; b < 2; b++) {
      const sigma = 0.2 * range[b];
      assert.ok(Math.abs(std[b] / sigma - 1) < 0.05, `image ${b}: noise std ${std[b]} vs sigma ${sigma}`);
    }
    assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(n0, n1))).dataSync()[0]) > 0.1, 'samples 0 and 1 are the same');
    assert.equal(
      tf.tidy(() => tf.max(tf.abs(tf.sub(n0, again))).dataSync()[0]),
      0,
    );
    tf.dispose([scaled, n0, n1, again]);
  });
});

describe('explainer contract', () => {
  test('maps are N x H x W in [0, 1]; calling every explainer leaves no tensor behind', () => {
    const explainers = [
      new VanillaGradient(classifier),
      new GradientTimesInput(classifier),
      new GradCam(classifier),
      new GradCam(classifier, 'conv_b'),
      new CounterfactualGradCam(classifier),
      smooth(),
      new SmoothGrad(new GradCam(classifier), { samples: 2 }),
    ];
    const before = tf.memory().numTensors;
    for (let round = 0; round < 3; round++) {
      for (const e of explainers) {
        const out = e.explain(x, round === 0 ? undefined : targets, { raw: round === 2 });
        assert.deepEqual(out.maps.shape, [N, SIZE, SIZE], e.name);
        const [lo, hi] = tf.tidy(() => [tf.min(out.maps).dataSync()[0], tf.max(out.maps).dataSync()[0]]);
        assert.ok(lo >= 0 && hi <= 1 && hi > 0, `${e.name}: maps span [${lo}, ${hi}]`);
        tf.dispose([out.maps, out.raw ?? []]);
      }
    }
    assert.equal(tf.memory().numTensors, before);
  });

  test('bad input: unknown layer lists the valid ones; a target out of range is named; counts must match', () => {
    assert.throws(
      () => new GradCam(classifier, 'conv_z'),
      /unknown layer 'conv_z' for model 'small_cnn': valid layers are conv_a, bn_a, relu_a, conv_b, relu_b, skip, pool, conv_c, relu_c$/,
    );
    const v = new VanillaGradient(classifier);
    const before = tf.memory().numTensors;
    assert.throws(() => v.explain(x, [3, 5]), /target class 5 is outside the model's range 0\.\.4/);
    assert.throws(() => v.explain(x, [-1, 0]), /target class -1 is outside/);
    assert.throws(() => v.explain(x, [1]), /1 target classes for 2 images/);
    assert.throws(
      () => new SmoothGrad(new GradCam(classifier), { samples: 1, multiplyByInput: true }).explain(x),
      /multiplyByInput needs maps shaped like the input/,
    );
    assert.equal(tf.memory().numTensors, before);
  });

  test('a model whose last output is a softmax is refused', () => {
    const input = tf.input({ shape: [8, 8, 3] });
    const flat = tf.layers.flatten().apply(input) as tf.SymbolicTensor;
    const probs = tf.layers.dense({ units: 3, activation: 'softmax', name: 'probs' }).apply(flat) as tf.SymbolicTensor;
    const m = tf.model({ inputs: input, outputs: probs, name: 'probs_model' });
    assert.throws(() => new Classifier(m), /last output 'probs' applies softmax; explainers need the logits/);
    m.dispose();
  });
});

describe('Grad-CAM on the CASM classifier (ResNet)', () => {
  test('default layer is stage 4; alpha = fc column / (h*w), since logits = fc(mean_ij A)', () => {
    const resnet = buildResNet({ depths: [1, 1, 1, 1], width: 4, classes: 7, inputSize: 64 }, 'classifier', 3);
    const c = new Classifier(resnet);
    const cam = new GradCam(c);
    assert.equal(cam.layer, 'layer4_0_out');
    const img = tf.randomNormal([2, 64, 64, 3], 0, 1, 'float32', 9) as tf.Tensor4D;
    const parts = cam.parts(img, null);
    const [h, w] = parts.activations.shape.slice(1);
    assert.deepEqual([h, w], [2, 2]);
    const predicted = c.predict(img);
    assert.deepEqual(Array.from(parts.targets.dataSync()), Array.from(predicted.dataSync()));
    // fc kernel [K, classes]: alpha[b, k] = W[k, t_b] / (h w).
    const expected = tf.tidy(() => tf.div(tf.transpose(tf.gather(resnet.getLayer('fc').getWeights()[0], parts.targets, 1)), h * w));
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(parts.weights, expected))).dataSync()[0] / tf.max(tf.abs(expected)).dataSync()[0]);
    assert.ok(err < 1e-5, `alpha vs fc column / (h*w): relative error ${err}`);
    tf.dispose([img, predicted, expected, parts.activations, parts.gradients, parts.weights, parts.cam, parts.targets]);
    resnet.dispose();
  });
});
