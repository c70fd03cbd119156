/**
 * The backward pass that frees as it goes (src/engine/backprop.ts) against tfjs-core's own
 * Engine.gradients: bit-identical gradients (same kernels, same order), a peak memory that no
 * longer grows with the depth of the graph, nothing leaked, and tfjs's behaviour kept for
 * higher-order gradients, gradients passed through as is, and errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { releasingBackprop, setReleasingBackprop } from '../src/engine/backprop.js';
import { buildResNet } from '../src/models/resnet.js';
import { useTestBackend } from './helpers/backend.js';
import { memoryProbe } from './helpers/memoryProbe.js';

await useTestBackend();

/** Runs fn with the releasing backward pass on or off, and leaves it off. */
function withReleasing<T>(on: boolean, fn: () => T): T {
  setReleasingBackprop(on);
  try {
    return fn();
  } finally {
    setReleasingBackprop(false);
  }
}

test('a ResNet training step: every gradient bit-identical to tfjs, nothing leaked', () => {
  const model = buildResNet({ depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 }, 'classifier', 4);
  const x = tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', 5);
  const labels = tf.oneHot(tf.tensor1d([1, 2, 7, 9], 'int32'), 10);
  const step = () => {
    const { value, grads } = tf.variableGrads(
      () => tf.losses.softmaxCrossEntropy(labels, (model.apply(x, { training: true }) as tf.Tensor[])[5]!) as tf.Scalar,
    );
    const out = { loss: value.dataSync()[0]!, grads: Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array] as const) };
    tf.dispose([value, ...Object.values(grads)]);
    return out;
  };
  const stock = withReleasing(false, step);
  const ours = withReleasing(true, step);
  assert.equal(ours.loss, stock.loss);
  assert.equal(ours.grads.length, stock.grads.length);
  assert.ok(ours.grads.length > 20, `${ours.grads.length} gradients`);
  ours.grads.forEach(([k, g], i) => {
    assert.equal(k, stock.grads[i]![0]);
    assert.deepEqual(g, stock.grads[i]![1], `gradient of ${k}`);
  });
  const before = tf.memory().numTensors;
  withReleasing(true, () => {
    for (let i = 0; i < 5; i++) step();
  });
  assert.equal(tf.memory().numTensors, before, 'tensors leaked over 5 steps');
  assert.equal(releasingBackprop(), false);
  model.dispose();
  tf.dispose([x, labels]);
});

test('peak memory of a deep chain: constant with the releasing pass, growing with depth in tfjs', () => {
  const n = 64;
  const size = 4096; // floats: 16 KiB a tensor
  const x = tf.randomUniform([size], -1, 1, 'float32', 9);
  // At the bottom of the chain: what is still held of the saved inputs and gradients of the n ops above it.
  const probe = memoryProbe();
  const peak = (on: boolean) =>
    withReleasing(on, () => {
      probe.start();
      const g = tf.grad((v: tf.Tensor) => {
        let h = probe.op(v);
        for (let i = 0; i < n; i++) h = tf.sin(h); // Sin saves its input for cos(x) * dy
        return tf.sum(h);
      })(x);
      g.dispose();
      return probe.held() / (4 * size);
    });
  const [stock, ours] = [peak(false), peak(true)];
  // tfjs: n saved inputs plus n + 1 gradients; here: a few tensors whatever n is.
  assert.ok(stock >= 2 * n, `tfjs held ${stock} tensors' worth of bytes`);
  assert.ok(ours <= 6, `the releasing pass held ${ours} tensors' worth of bytes`);
  x.dispose();
});

test('higher-order gradients, a gradient passed through as is, accumulation: values as tfjs', () => {
  const x = tf.tensor1d([0.5, -1.5, 2]);
  // A custom op whose gradient hands dy on unchanged (the same tensor object), used twice.
  const passThrough = tf.customGrad((t) => ({ value: tf.mul(t as tf.Tensor, 1), gradFunc: (dy: tf.Tensor) => dy }));
  const v = [0.5, -1.5, 2];
  // [what, gradient, hand-derived value at v]
  const cases: [string, () => tf.Tensor, (a: number) => number][] = [
    ['d2/dx2 x^3 = 6x', () => tf.grad(tf.grad((t: tf.Tensor) => tf.sum(tf.pow(t, 3))))(x), (a) => 6 * a],
    [
      'pass-through used twice: d/dx (x^2 + sin x)',
      () =>
        tf.grad((t: tf.Tensor) => {
          const p = passThrough(t);
          return tf.sum(tf.add(tf.mul(p, p), tf.sin(p)));
        })(x),
      (a) => 2 * a + Math.cos(a),
    ],
  ];
  for (const [what, f, oracle] of cases) {
    const stock = withReleasing(false, () => tf.tidy(() => f().arraySync() as number[]));
    const before = tf.memory().numTensors;
    const ours = withReleasing(true, () => tf.tidy(() => f().arraySync() as number[]));
    assert.deepEqual(ours, stock, what);
    ours.forEach((g, i) => assert.ok(Math.abs(g - oracle(v[i]!)) < 1e-5, `${what} at ${v[i]}: ${g}`));
    assert.equal(tf.memory().numTensors, before, `${what}: tensors leaked`);
  }
  x.dispose();
});

test('errors as tfjs: no path from x to y, empty xs', () => {
  const x = tf.scalar(2);
  const unrelated = tf.scalar(3);
  withReleasing(true, () => {
    assert.throws(() => tf.grad(() => tf.square(unrelated))(x), /Cannot compute gradient of y=f\(x\) with respect to x/);
    assert.throws(() => tf.engine().gradients(() => tf.square(x), []), /empty list of xs/);
  });
  tf.dispose([x, unrelated]);
});
