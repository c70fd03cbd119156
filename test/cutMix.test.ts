/**
 * CutMix for the warm-up (src/casm/cutMix.ts): the paper's box and area weight against a hand
 * computation, the pasted pixels and labels, the mixed loss, and the trainer drawing nothing
 * from its random stream when CutMix is off (so runs without it are unchanged).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { defaultTrainConfig } from '../src/casm/config.js';
import { cutMix, cutMixBox, mixedCrossEntropy } from '../src/casm/cutMix.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { Rng } from '../src/util/rng.js';
import { useTestBackend } from './helpers/backend.js';

await useTestBackend();

/** An Rng answering from a script: next() and int(n) in the order they are asked. */
function scripted(values: number[]): Rng {
  const q = [...values];
  const take = () => {
    if (q.length === 0) throw new Error('script exhausted');
    return q.shift()!;
  };
  const rng = { next: take, int: (n: number) => Math.min(n - 1, take()) } as unknown as Rng;
  rng.permutation = Rng.prototype.permutation.bind(rng);
  return rng;
}

test('cutMixBox: sides sqrt(1 - lambda) of the image, centred where drawn, clipped; kept = 1 - box area', () => {
  // lambda 0.36: sides 0.8 x (10, 8) = 8 x 6; centre (row 1, column 7); clipped to rows 0-4, columns 4-7.
  const { box, kept } = cutMixBox(10, 8, scripted([0.36, 1, 7]));
  assert.deepEqual(box, { y0: 0, y1: 5, x0: 4, x1: 8 });
  assert.equal(kept, 1 - 20 / 80);
});

test('cutMix: the box comes from the permuted image, the rest is the own image; labels follow', () => {
  const x = tf.stack([tf.fill([10, 8, 3], 1), tf.fill([10, 8, 3], 2)]) as tf.Tensor4D;
  const y = tf.tensor1d([3, 7], 'int32');
  // The box above, then the permutation: j = 0 for i = 1, a swap.
  const mix = cutMix(x, y, scripted([0.36, 1, 7, 0]));
  assert.equal(mix.kept, 0.75);
  assert.deepEqual(Array.from(mix.other.dataSync()), [7, 3]);
  const v = mix.x.arraySync() as number[][][][];
  for (let b = 0; b < 2; b++)
    for (let r = 0; r < 10; r++)
      for (let c = 0; c < 8; c++) {
        const inBox = r < 5 && c >= 4;
        assert.equal(v[b]![r]![c]![1], inBox ? 2 - b : 1 + b, `image ${b} pixel (${r}, ${c})`);
      }
  // The loss: 0.75 CE(own label) + 0.25 CE(the pasted image's), by hand from log-softmax.
  const logits = tf.tensor2d([
    [0, 0, 0, 2, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 3],
  ]);
  const logp = (row: number[], k: number) => row[k]! - Math.log(row.reduce((s, z) => s + Math.exp(z), 0));
  const rows = logits.arraySync();
  const ce = (labels: number[]) => -(logp(rows[0]!, labels[0]!) + logp(rows[1]!, labels[1]!)) / 2;
  const expected = 0.75 * ce([3, 7]) + 0.25 * ce([7, 3]);
  assert.ok(Math.abs(mixedCrossEntropy(logits, y, mix).dataSync()[0]! - expected) < 1e-5);
  tf.dispose([x, y, mix.x, mix.other, logits]);
});

test('the warm-up draws CutMix only when asked, and leaks nothing either way', () => {
  const arch = { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 };
  const x = tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const y = tf.tensor1d([0, 1, 2, 3], 'int32');
  for (const p of [0, 1]) {
    const trainer = new CasmTrainer(defaultTrainConfig({ arch, batchSize: 4, warmupSteps: 5, cutMix: p }));
    trainer.iteration(x, y);
    const [state, tensors] = [trainer.rng.state, tf.memory().numTensors];
    const stats = trainer.iteration(x, y);
    assert.ok(Number.isFinite(stats.classifierLoss));
    assert.equal(trainer.rng.state !== state, p > 0, `cutMix ${p}: random draws`);
    trainer.iteration(x, y);
    assert.equal(tf.memory().numTensors, tensors, `cutMix ${p}: no tensors left behind`);
    trainer.dispose();
  }
  tf.dispose([x, y]);
});
