/**
 * Faster training paths when the native engine runs, each measured in bench/results.md.
 * - tfjs composes a BatchNorm layer's training forward (moments, then batchNorm) and both
 *   gradients from elementwise kernels (Mean, Sub, Square, Multiply, Reshape, Sum... a few dozen
 *   per layer), and ReLU's gradient from Step, Cast and Multiply. libtensorflow has one kernel for
 *   each: FusedBatchNormV3 / FusedBatchNormGradV3 and ReluGrad.
 * - tfjs computes some gradients nobody asked for: both of a Conv2D layer's (input and filter),
 *   and the full-size intermediates of an inference-mode batchNorm's. Here each input's gradient
 *   is computed only when the backward pass needs it.
 * - tfjs saves tensors some gradients never read: an Add layer's two inputs, for their shapes.
 * - tfjs keeps every saved tensor and intermediate gradient until a backward pass ends; the
 *   backward pass of backprop.ts frees them as it goes (any backend).
 * `setFusedTraining(true)` switches all of it on; off (or, but for the backward pass, on the
 * pure-JS backend) everything runs as tfjs writes it. Numerics: same formulas, float32 rounding
 * differs (test/fusedTraining.test.ts compares the gradients of both paths).
 */
import * as tf from '@tensorflow/tfjs';
import { setReleasingBackprop } from './backprop.js';
import { conv2dBf16, convPrecision } from './mixedPrecision.js';
import { nativeBackend, type NativeBackend, type TfeAttr } from './native.js';

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
export function fusedBatchNormTraining(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  epsilon: number,
): { y: tf.Tensor4D; mean: tf.Tensor1D; variance: tf.Tensor1D } {
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
    for (const [v, value] of [
      [this.movingMean, mean],
      [this.movingVariance, variance],
    ] as const) {
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

const plainBatchNormGrad = tf.getGradient('FusedBatchNorm')!;

/**
 * The gradient of an inference-mode batchNorm (a snapshot f' in the masker step, the explainers).
 * tfjs's computes x - mean and dy * scale over the whole tensor before it knows which inputs are
 * asked for, and dx through a full-size Tile: five full-size kernels where dx needs one multiply.
 * Here each input's gradient is computed only when asked, with per-channel algebra:
 * y = (x - mean) * g + offset, g = scale / sqrt(variance + eps).
 */
const lazyBatchNormGrad: tf.GradConfig = {
  ...plainBatchNormGrad, // kernel name and saved inputs as tfjs's
  gradFunc: (dy, saved, attrs) => {
    const [x, mean, variance, scale] = saved as [tf.Tensor, tf.Tensor1D, tf.Tensor1D, tf.Tensor1D | undefined];
    if (mean.rank !== 1 || nativeBackend() === null) return plainBatchNormGrad.gradFunc(dy, saved, attrs);
    const eps = (attrs as unknown as { varianceEpsilon: number }).varianceEpsilon;
    const axes = [...Array(x.rank - 1).keys()];
    const inv = () => tf.rsqrt(tf.add(variance, eps));
    const g = () => (scale === undefined ? inv() : tf.mul(inv(), scale));
    const sumDy = () => tf.sum(dy as tf.Tensor, axes);
    const sumDyCentred = () => tf.sum(tf.mul(dy as tf.Tensor, tf.sub(x, mean)), axes);
    return {
      x: () => tf.mul(dy as tf.Tensor, g()),
      mean: () => tf.neg(tf.mul(sumDy(), g())),
      variance: () => tf.mul(tf.mul(sumDyCentred(), g()), tf.mul(-0.5, tf.square(inv()))),
      scale: () => tf.mul(sumDyCentred(), inv()),
      offset: sumDy,
    };
  },
};

interface Conv2DLayer {
  dataFormat: string;
  padding: string;
  strides: [number, number];
  dilationRate: [number, number];
  kernel: { read(): tf.Tensor4D };
  bias: { read(): tf.Tensor1D } | null | undefined;
  activation: { apply(x: tf.Tensor): tf.Tensor };
}
type ConvCall = (this: Conv2DLayer, inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>) => tf.Tensor;

const conv2dPrototype = Object.getPrototypeOf(tf.layers.conv2d({ filters: 1, kernelSize: 1 })) as { call: ConvCall };
const plainConv2dCall = conv2dPrototype.call;

/**
 * tfjs-layers runs Conv2D as tf.fused.conv2d, whose custom gradient computes the input AND the
 * filter gradient whether the backward pass needs them or not. The masker step differentiates
 * through f' to its input only, so that wasted a Conv2DBackpropFilter per classifier convolution
 * (and the classifier step an input gradient of the stem). tf.conv2d's registered gradient
 * computes only what the tape asks for; forward, the kernels are the ones tfjs-node's
 * FusedConv2D runs (convolution, bias add, activation). Under --precision bf16 the convolution
 * and its gradients run in bfloat16 (mixedPrecision.ts).
 */
const lazyGradConv2dCall: ConvCall = function (inputs, kwargs) {
  if (this.dataFormat !== 'channelsLast' || this.padding === 'causal' || nativeBackend() === null) {
    return plainConv2dCall.call(this, inputs, kwargs);
  }
  return tf.tidy(() => {
    const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
    const pad = this.padding as 'same' | 'valid';
    const conv =
      convPrecision() === 'bf16'
        ? conv2dBf16(x, this.kernel.read(), this.strides, pad, this.dilationRate)
        : tf.conv2d(x, this.kernel.read(), this.strides, pad, 'NHWC', this.dilationRate);
    return this.activation.apply(this.bias == null ? conv : tf.add(conv, this.bias.read()));
  });
};

type Merge = (this: unknown, inputs: tf.Tensor[]) => tf.Tensor;

const addPrototype = Object.getPrototypeOf(tf.layers.add({})) as { mergeFunction: Merge };
const plainAddMerge = addPrototype.mergeFunction;

/** a + b of one shape, saving nothing: the gradient is dy for both (a distinct tensor each). */
const sumOfTwo = tf.customGrad((a, b) => ({
  value: tf.add(a as tf.Tensor, b as tf.Tensor),
  gradFunc: (dy: tf.Tensor) => [dy, tf.clone(dy)],
}));

/**
 * tfjs's Add gradient saves both inputs, for their shapes alone. At a residual join one of them
 * (the last BatchNorm's output, or the projection shortcut's) is saved by nothing else, so each
 * training forward pass of ResNet-50 kept 20 full-size tensors alive until its backward pass.
 */
const savingNothingAddMerge: Merge = function (inputs) {
  if (nativeBackend() === null || !inputs.every((t) => tf.util.arraysEqual(t.shape, inputs[0]!.shape))) {
    return plainAddMerge.call(this, inputs);
  }
  return inputs.slice(1).reduce((sum, t) => sumOfTwo(sum, t), inputs[0]!);
};

let fused = false;

/**
 * Routes training-mode BatchNorm and the ReLU gradient through the fused kernels, Conv2D layers
 * through tf.conv2d, inference-mode batchNorm through lazy gradients and Add layers through a sum
 * that saves nothing (native engine only), and gradients through the backward pass that frees as
 * it goes.
 */
export function setFusedTraining(on: boolean): void {
  fused = on;
  bnPrototype.call = on ? fusedBatchNormCall : plainBatchNormCall;
  conv2dPrototype.call = on ? lazyGradConv2dCall : plainConv2dCall;
  addPrototype.mergeFunction = on ? savingNothingAddMerge : plainAddMerge;
  tf.registerGradient(on ? nativeReluGrad : plainReluGrad);
  tf.registerGradient(on ? lazyBatchNormGrad : plainBatchNormGrad);
  setReleasingBackprop(on);
}

export function fusedTraining(): boolean {
  return fused && nativeBackend() !== null;
}

/** The training path in words, for the engine's log line and the bench's header. */
export function trainingPath(): string {
  if (!fused) return 'tfjs composed ops';
  return fusedTraining()
    ? 'fused TensorFlow kernels (BatchNorm, ReluGrad), gradients only where needed (Conv2D, inference BatchNorm), nothing saved for Add, backward pass freeing as it goes'
    : 'tfjs composed ops, backward pass freeing as it goes';
}
