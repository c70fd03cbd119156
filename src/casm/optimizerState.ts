/**
 * An optimiser's state as plain named arrays, as checkpoints store it: tfjs's getWeights() order
 * (the iteration count, then the slots) with the index in each name, since the optimisers restore
 * their slots by position.
 */
import * as tf from '@tensorflow/tfjs';
import type { TensorToWrite } from '../io/safetensors.js';

/**
 * Adam's bias-correction powers beta^t live outside getWeights(); setWeights() recomputes them with
 * pow(), which differs from the running product in the last bits, enough to make a resumed run
 * drift from a straight one. They are saved and restored as they are.
 */
const ADAM_POWERS = ['accBeta1', 'accBeta2'] as const;
type AdamPowers = Partial<Record<(typeof ADAM_POWERS)[number], tf.Variable>>;

export async function optimizerArrays(opt: tf.Optimizer): Promise<TensorToWrite[]> {
  const weights = await opt.getWeights();
  const arrays = weights.map((w, i) => ({ name: `${i}/${w.name}`, shape: w.tensor.shape, data: Float32Array.from(w.tensor.dataSync()) }));
  // Entry 0 is a fresh scalar of the iteration count (tfjs's saveIterations); the rest are the optimiser's own variables.
  weights[0]?.tensor.dispose();
  for (const key of ADAM_POWERS) {
    const v = (opt as unknown as AdamPowers)[key];
    if (v) arrays.push({ name: key, shape: v.shape, data: Float32Array.from(v.dataSync()) });
  }
  return arrays;
}

export async function setOptimizerArrays(opt: tf.Optimizer, arrays: readonly TensorToWrite[]): Promise<void> {
  const slots = arrays
    .filter((a) => !(ADAM_POWERS as readonly string[]).includes(a.name))
    .map((a) => ({ index: Number(a.name.split('/')[0]), name: a.name.slice(a.name.indexOf('/') + 1), a }))
    .sort((p, q) => p.index - q.index);
  if (slots.length === 0) return; // saved before the first update
  const named = slots.map(({ name, a }) => ({ name, tensor: tf.tensor(a.data, a.shape as number[]) }));
  await opt.setWeights(named);
  for (const n of named) n.tensor.dispose();
  for (const key of ADAM_POWERS) {
    const saved = arrays.find((a) => a.name === key);
    const v = (opt as unknown as AdamPowers)[key];
    if (saved && v) tf.tidy(() => v.assign(tf.tensor(saved.data, v.shape)));
  }
}
