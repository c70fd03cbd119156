/** The masker: output shape and range for every upsampling mode; features reach it stop-gradient. */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { Masker, type Upsample } from '../src/models/masker.js';
import { buildResNet, featureChannels, type ResNetConfig } from '../src/models/resnet.js';
import { useTestBackend } from './helpers/backend.js';

before(async () => {
  await useTestBackend();
});

const ARCH: ResNetConfig = { depths: [1, 1, 1, 1], width: 4, classes: 3, inputSize: 64 };

test('feature maps have the spec channels and strides', () => {
  const f = buildResNet(ARCH, 'shapes');
  const shapes = f.outputs.map((o) => o.shape.slice(1));
  assert.deepEqual(shapes.slice(0, 5), [
    [16, 16, 4],
    [16, 16, 16],
    [8, 8, 32],
    [4, 4, 64],
    [2, 2, 128],
  ]);
  assert.deepEqual(featureChannels(ARCH), [4, 16, 32, 64, 128]);
  f.dispose();
});

for (const upsample of ['nearest', 'bilinear', 'deconv'] as Upsample[]) {
  test(`decoder (${upsample}) maps the five features to an H x W x 1 mask in [0, 1]`, () => {
    const f = buildResNet(ARCH, `cls_${upsample}`);
    const masker = new Masker(ARCH, { decoderWidth: 8, upsample, shareEncoder: true, stride: 4 });
    const x = tf.randomNormal([2, 64, 64, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    const m = tf.tidy(() => masker.apply(x, (f.apply(x) as tf.Tensor[]).slice(0, 5), false));
    assert.deepEqual(m.shape, [2, 64, 64, 1]);
    const v = m.dataSync();
    assert.ok(v.every((p) => p >= 0 && p <= 1));
    if (upsample === 'nearest') {
      // The last x4 is nearest: every 4x4 block is constant.
      for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) assert.equal(v[i * 64 + j], v[0]);
    }
    tf.dispose([x, m]);
    f.dispose();
  });
}

test('the shared encoder is read stop-gradient: the masker output has no gradient to the features', () => {
  const masker = new Masker(ARCH, { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride: 4 });
  const x = tf.randomNormal([1, 64, 64, 3]) as tf.Tensor4D;
  const feats = featureChannels(ARCH).map((c, k) => {
    const side = k === 0 ? 16 : 16 / 2 ** (k - 1);
    return tf.randomNormal([1, side, side, c]);
  });
  assert.throws(() => tf.grad((f: tf.Tensor) => tf.sum(masker.apply(x, [f, ...feats.slice(1)], true)))(feats[0]), /Cannot compute gradient/);
  // The decoder's own weights do get gradients.
  const { grads } = tf.variableGrads(
    () => tf.sum(masker.apply(x, feats, true)) as tf.Scalar,
    masker.trainableWeights.map((w) => w.read() as tf.Variable),
  );
  assert.equal(Object.keys(grads).length, masker.trainableWeights.length);
  tf.dispose([x, ...feats, ...Object.values(grads)]);
});

test('the non-shared masker owns a ResNet encoder and trains it', () => {
  const masker = new Masker(ARCH, { decoderWidth: 8, upsample: 'nearest', shareEncoder: false, stride: 4 });
  assert.ok(masker.encoder);
  assert.equal(masker.models.length, 2);
  const encoderWeights = masker.encoder.trainableWeights.length;
  assert.equal(masker.trainableWeights.length, encoderWeights + masker.decoder.trainableWeights.length);
  const x = tf.randomNormal([1, 64, 64, 3]) as tf.Tensor4D;
  // Shared features are ignored: the encoder computes its own.
  const { grads } = tf.variableGrads(
    () => tf.sum(masker.apply(x, [], true)) as tf.Scalar,
    masker.trainableWeights.map((w) => w.read() as tf.Variable),
  );
  const first = grads[(masker.encoder.trainableWeights[0].read() as tf.Variable).name];
  assert.ok(tf.tidy(() => tf.max(tf.abs(first)).dataSync()[0]) > 0, 'no gradient reaches the masker encoder');
  tf.dispose([x, ...Object.values(grads)]);
});

test('seed 0 builds the same classifier and masker every time (tfjs would take a 0 seed as Math.random)', () => {
  const weights = (models: tf.LayersModel[]) => models.flatMap((m) => m.getWeights().map((w) => Array.from(w.dataSync())));
  const build = (seed: number) => {
    const classifier = buildResNet(ARCH, 'classifier', seed);
    const masker = new Masker(ARCH, { decoderWidth: 8, upsample: 'nearest', shareEncoder: false, stride: 4 }, seed + 5000);
    const w = weights([classifier, ...masker.models]);
    classifier.dispose();
    for (const m of masker.models) m.dispose();
    return w;
  };
  const [a, b, other] = [build(0), build(0), build(1)];
  assert.deepEqual(a, b);
  // Every kernel is drawn (conv1's is the first initializer, the one seed 0 used to leave unseeded).
  assert.notDeepEqual(a[0], other[0]);
});

for (const stride of [8, 16, 32] as const) {
  test(`decoder stride ${stride}: a mask constant on ${stride}x${stride} blocks, decided by the feature maps no finer than that`, () => {
    const masker = new Masker(ARCH, { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride }, 3);
    const sides = [16, 16, 8, 4, 2];
    const feats = featureChannels(ARCH).map((c, k) => tf.randomNormal([2, sides[k]!, sides[k]!, c], 0, 1, 'float32', 10 + k));
    const x = tf.zeros([2, 64, 64, 3]) as tf.Tensor4D;
    const mask = (f: tf.Tensor[]) => tf.tidy(() => masker.apply(x, f, false).dataSync());
    const m = mask(feats);
    assert.equal(m.length, 2 * 64 * 64);
    assert.ok(m.every((p) => p >= 0 && p <= 1));
    for (let i = 0; i < stride; i++) for (let j = 0; j < stride; j++) assert.equal(m[i * 64 + j], m[0]);
    assert.notEqual(m[stride], m[0], 'neighbouring blocks should differ');
    // One projection per stage used: stages 2-4 at stride 8, 3-4 at 16, 4 at 32.
    const projections = masker.decoder.layers
      .filter((l) => l.name.startsWith('decoder_proj'))
      .map((l) => l.name)
      .sort();
    assert.deepEqual(
      projections,
      [2, 3, 4].filter((k) => sides[k]! <= 64 / stride).map((k) => `decoder_proj${k}`),
    );
    // Changing the finer maps leaves the mask as it is; changing a used map does not.
    const noise = (k: number) => tf.randomNormal(feats[k]!.shape, 0, 1, 'float32', 50 + k);
    const finer = [noise(0), noise(1), ...feats.slice(2)];
    assert.deepEqual(Array.from(mask(finer)), Array.from(m));
    const deeper = [...feats.slice(0, 4), noise(4)];
    assert.ok(
      mask(deeper).some((v, i) => Math.abs(v - m[i]!) > 1e-6),
      'the deepest map should change the mask',
    );
    tf.dispose([x, ...feats, finer[0]!, finer[1]!, deeper[4]!]);
  });
}
