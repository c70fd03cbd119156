/**
 * Training through TensorFlow's own fused kernels when the native engine runs (issue 7). tfjs
 * composes a BatchNorm layer's training forward (moments, then batchNorm) and both gradients
 * from elementwise kernels (Mean, Sub, Square, Multiply, Reshape, Sum... a few dozen per layer),
 * and ReLU's gradient from Step, Cast and Multiply. libtensorflow has one kernel for each:
 * FusedBatchNormV3 / FusedBatchNormGradV3 and ReluGrad. `setFusedTraining(true)` routes
 * BatchNorm layers in training mode and the ReLU gradient through them; off (or on the pure-JS
 * backend) everything runs as tfjs writes it. Numerics: same formulas, float32 rounding differs
 * (test/fusedTraining.test.ts compares the gradients of both paths).
 */
import * as tf from '@tensorflow/tfjs';

interface TfeAttr {
  name: string;
  type: number;
  value: number | string | boolean;
}

/** The part of tfjs-node's backend used here: run any TensorFlow op by name. */
interface NativeBackend {
  binding: Record<string, number>;
  executeSingleOutput(name: string, attrs: TfeAttr[], inputs: tf.Tensor[]): tf.Tensor;
  executeMultipleOutputs(name: string, attrs: TfeAttr[], inputs: tf.Tensor[], outputs: number): tf.Tensor[];
}

function nativeBackend(): NativeBackend | null {
  const b = tf.backend() as unknown as Partial<NativeBackend>;
  return tf.getBackend() === 'tensorflow' && typeof b.executeMultipleOutputs === 'function' ? (b as NativeBackend) : null;
}

function batchNormAttrs(b: NativeBackend, epsilon: number): TfeAttr[] {
  const { TF_ATTR_TYPE, TF_ATTR_FLOAT, TF_ATTR_STRING, TF_ATTR_BOOL, TF_FLOAT } = b.binding as Record<string, number>;
  return [
    { name: 'T', type: TF_ATTR_TYPE!, value: TF_FLOAT! },
    { name: 'U', type: TF_ATTR_TYPE!, value: TF_FLOAT! },
    { name: 'epsilon', type: TF_ATTR_FLOAT!, value: epsilon },
    { name: 'data_format', type: TF_ATTR_STRING!, value: 'NHWC' },
    { name: 'is_training', type: TF_ATTR_BOOL!, value: true },
  ];
}

/**
 * Batch normalisation of NHWC x with batch statistics, as one FusedBatchNormV3 (gradient:
 * FusedBatchNormGradV3). Returns y and the batch mean and biased variance (what tfjs's moments
 * give, so the moving statistics move exactly as on the plain path's formula).
 */
export function fusedBatchNormTraining(x: tf.Tensor4D, gamma: tf.Tensor1D, beta: tf.Tensor1D, epsilon: number): { y: tf.Tensor4D; mean: tf.Tensor1D; variance: tf.Tensor1D } {
  const b = nativeBackend();
  if (b === null) throw new Error('fusedBatchNormTraining needs the native engine');
  const attrs = batchNormAttrs(b, epsilon);
  const empty = tf.tensor1d([]);
  let stats: tf.Tensor[] = [];
  const op = tf.customGrad((xs, g, bt, save) => {
    const [y, mean, variance, r1, r2, r3] = b.executeMultipleOutputs(
      'FusedBatchNormV3',
      [...attrs, { name: 'exponential_avg_factor', type: b.binding['TF_ATTR_FLOAT']!, value: 1 }],
      [xs as tf.Tensor, g as tf.Tensor, bt as tf.Tensor, empty, empty],
      6,
    );
    (save as tf.GradSaveFunc)([xs as tf.Tensor, g as tf.Tensor, r1!, r2!, r3!]);
    // tfjs disposes what a custom op makes besides its value: keep the statistics, freed below.
    stats = [tf.keep(mean!), tf.keep(variance!)];
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [dx, dgamma, dbeta] = b.executeMultipleOutputs('FusedBatchNormGradV3', attrs, [dy, ...saved], 5);
        return [dx!, dgamma!, dbeta!];
      },
    };
  });
  const y = op(x, gamma, beta) as tf.Tensor4D;
  empty.dispose();
  // TensorFlow's batch variance is Bessel-corrected; tfjs's moments (the moving-variance update) are not.
  const n = x.shape[0] * x.shape[1] * x.shape[2];
  const mean = tf.clone(stats[0]!) as tf.Tensor1D;
  const variance = tf.mul(stats[1]!, (n - 1) / n) as tf.Tensor1D;
  tf.dispose(stats);
  return { y, mean, variance };
}

interface BatchNormLayer {
  axis: number;
  momentum: number;
  epsilon: number;
  scale: boolean;
  center: boolean;
  gamma: { read(): tf.Tensor1D };
  beta: { read(): tf.Tensor1D };
  movingMean: { read(): tf.Tensor1D; write(v: tf.Tensor): void };
  movingVariance: { read(): tf.Tensor1D; write(v: tf.Tensor): void };
}
type Call = (this: BatchNormLayer, inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }) => tf.Tensor;

const bnPrototype = Object.getPrototypeOf(tf.layers.batchNormalization({})) as { call: Call };
const plainBatchNormCall = bnPrototype.call;
const plainReluGrad = tf.getGradient('Relu')!;

const fusedBatchNormCall: Call = function (inputs, kwargs) {
  const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor;
  const lastAxis = this.axis === -1 || this.axis === x.rank - 1;
  if (!kwargs.training || x.rank !== 4 || !lastAxis || !this.scale || !this.center || nativeBackend() === null) {
    return plainBatchNormCall.call(this, inputs, kwargs);
  }
  return tf.tidy(() => {
    const { y, mean, variance } = fusedBatchNormTraining(x as tf.Tensor4D, this.gamma.read(), this.beta.read(), this.epsilon);
    // The moving averages exactly as tfjs-layers updates them: v - (v - value) * (1 - momentum).
    for (const [v, value] of [[this.movingMean, mean], [this.movingVariance, variance]] as const) {
      tf.tidy(() => {
        const old = v.read();
        v.write(tf.sub(old, tf.mul(tf.sub(old, value), 1 - this.momentum)));
      });
    }
    return y;
  });
};

const nativeReluGrad: tf.GradConfig = {
  kernelName: 'Relu',
  outputsToSave: [true],
  gradFunc: (dy, saved) => {
    const b = nativeBackend();
    if (b === null) return plainReluGrad.gradFunc(dy, saved, {});
    const attr = { name: 'T', type: b.binding['TF_ATTR_TYPE']!, value: b.binding['TF_FLOAT']! };
    // ReluGrad(gradients, features) takes the ReLU's output as well as its input.
    return { x: () => b.executeSingleOutput('ReluGrad', [attr], [dy as tf.Tensor, saved[0]!]) };
  },
};

let fused = false;

/** Routes training-mode BatchNorm and the ReLU gradient through the fused kernels (native engine only). */
export function setFusedTraining(on: boolean): void {
  fused = on;
  bnPrototype.call = on ? fusedBatchNormCall : plainBatchNormCall;
  tf.registerGradient(on ? nativeReluGrad : plainReluGrad);
}

export function fusedTraining(): boolean {
  return fused && nativeBackend() !== null;
}
