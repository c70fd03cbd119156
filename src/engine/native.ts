/**
 * The part of tfjs-node's backend the engine patches use: run any TensorFlow op by name, the way
 * tfjs-node's own kernels do, and, one level down, its binding on TensorFlow tensor handles.
 */
import * as tf from '@tensorflow/tfjs';

export interface TfeAttr {
  name: string;
  type: number;
  value: number | string | boolean | number[];
}

/** What the binding returns for an op's output: a TensorFlow handle and what it holds. */
export interface HandleInfo {
  id: number;
  shape: number[];
  dtype: number;
}

export interface NativeBackend {
  binding: Record<string, number> & {
    executeOp(name: string, attrs: TfeAttr[], inputIds: number[], outputs: number): HandleInfo[];
    deleteTensor(id: number): void;
  };
  executeSingleOutput(name: string, attrs: TfeAttr[], inputs: tf.Tensor[]): tf.Tensor;
  executeMultipleOutputs(name: string, attrs: TfeAttr[], inputs: tf.Tensor[], outputs: number): tf.Tensor[];
  /** The handles of tfjs tensors (writing values still held in JavaScript into one first). */
  getInputTensorIds(tensors: tf.Tensor[]): number[];
  /** A tfjs tensor owning a float32 / int32 / bool handle. */
  createOutputTensor(info: HandleInfo): tf.Tensor;
}

/** The native backend, when it is the current one. */
export function nativeBackend(): NativeBackend | null {
  const b = tf.backend() as unknown as Partial<NativeBackend>;
  return tf.getBackend() === 'tensorflow' && typeof b.executeMultipleOutputs === 'function' ? (b as NativeBackend) : null;
}
