/**
 * Model weights as plain named arrays, the form checkpoints store: `k/i/originalName` for weight i
 * of model k, in model order (BatchNorm statistics too). Setting them checks every name and shape
 * before writing anything.
 */
import * as tf from '@tensorflow/tfjs';
import type { TensorToWrite } from '../io/safetensors.js';

/** A copy of every weight of the models, off the accelerator. */
export function weightArrays(models: readonly tf.LayersModel[]): TensorToWrite[] {
  return models.flatMap((m, k) =>
    m.weights.map((w, i) => ({ name: `${k}/${i}/${w.originalName}`, shape: w.shape as number[], data: Float32Array.from(w.read().dataSync()) })),
  );
}

/** Writes `arrays` (as weightArrays names them) into the models; `what` starts every error message. */
export function setWeightArrays(models: readonly tf.LayersModel[], arrays: readonly TensorToWrite[], what: string): void {
  const byName = new Map(arrays.map((a) => [a.name, a]));
  const weights = models.flatMap((m, k) => m.weights.map((w, i) => ({ w, key: `${k}/${i}/${w.originalName}` })));
  if (byName.size !== weights.length) throw new Error(`${what}: ${byName.size} tensors, the model has ${weights.length} weights`);
  const values = weights.map(({ w, key }) => {
    const a = byName.get(key);
    if (!a) throw new Error(`${what}: no tensor ${key}`);
    if (a.shape.join(',') !== w.shape.join(',')) throw new Error(`${what}: ${key} has shape [${a.shape}], the model expects [${w.shape}]`);
    return a.data;
  });
  tf.tidy(() => weights.forEach(({ w }, i) => w.write(tf.tensor(values[i], w.shape as number[]))));
}
