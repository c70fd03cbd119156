/**
 * The masker m: a decoder over the classifier's five feature maps (spec section 1), optionally with
 * an encoder of its own (the non-shared ablation). With the shared encoder the masker owns only the
 * decoder; the features it reads are stop-gradient, so the masker loss never trains the classifier.
 */
import * as tf from '@tensorflow/tfjs';
import { stopGradient } from '../util/stopGradient.js';
import { buildResNet, featureChannels, heNormalFanOut, Seeds, type ResNetConfig } from './resnet.js';

export type Upsample = 'nearest' | 'bilinear' | 'deconv';

export interface MaskerConfig {
  /** Channels each stage is projected to before concatenation (64 in the reference). */
  decoderWidth: number;
  /** How the decoder goes up in resolution: fixed nearest/bilinear, or learned transposed convs. */
  upsample: Upsample;
  /** false: the masker owns a second ResNet encoder (ablation). */
  shareEncoder: boolean;
  /**
   * Output stride: the mask is made at H/stride and upsampled (4 in the reference). A coarser one
   * leaves out the feature maps finer than it, so the mask is decided by deeper features alone.
   */
  stride: MaskStride;
}

export const MASK_STRIDES = [4, 8, 16, 32] as const;
export type MaskStride = (typeof MASK_STRIDES)[number];

export const DEFAULT_MASKER: MaskerConfig = { decoderWidth: 64, upsample: 'nearest', shareEncoder: true, stride: 4 };

/** Stride of each of the five feature maps (stem pool, stages 1-4). */
const FEATURE_STRIDES = [4, 4, 8, 16, 32];

/**
 * Builds the decoder: inputs are the five feature maps, output the mask N x H x W x 1 in [0, 1].
 * Stage k (1..4) goes 1x1 conv -> BN -> ReLU -> up by 2^(k-1) to H/4; the stem pool features pass
 * unchanged; the concatenation goes 3x3 conv (bias) -> sigmoid -> up x4 to H x W. The stage
 * upsampling is bilinear (reference); `upsample` picks the final x4 (nearest by default, bilinear),
 * or 'deconv' replaces every fixed upsampling by a learned transposed convolution. With a stride
 * above 4 the same runs at H/stride over the maps no finer than it (the others stay unconnected
 * inputs, so every decoder takes the same five).
 */
export function buildDecoder(cls: ResNetConfig, cfg: MaskerConfig, name = 'decoder', seed = 0): tf.LayersModel {
  const seeds = new Seeds(seed);
  // The reference initialises every decoder conv like the ResNet's: N(0, sqrt(2 / (k*k*out))).
  const he = (kernel: number, out: number) => heNormalFanOut(kernel, out, seeds);
  const channels = featureChannels(cls);
  if (!Number.isInteger(cls.inputSize / 32)) throw new Error(`input size ${cls.inputSize} must be a multiple of 32`);
  const stride = cfg.stride;
  const inputs = channels.map((c, k) => {
    const side = cls.inputSize / FEATURE_STRIDES[k];
    return tf.input({ shape: [side, side, c], name: `${name}_in${k}` });
  });
  // The stem pool features join as they are, at the reference stride only.
  const branches: tf.SymbolicTensor[] = FEATURE_STRIDES[0] === stride ? [inputs[0]] : [];
  for (let k = 1; k <= 4; k++) {
    if (FEATURE_STRIDES[k] < stride) continue;
    let y = tf.layers
      .conv2d({ name: `${name}_proj${k}`, filters: cfg.decoderWidth, kernelSize: 1, useBias: false, kernelInitializer: he(1, cfg.decoderWidth) })
      .apply(inputs[k]) as tf.SymbolicTensor;
    y = tf.layers.batchNormalization({ name: `${name}_bn${k}`, epsilon: 1e-5, momentum: 0.9 }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.reLU({ name: `${name}_relu${k}` }).apply(y) as tf.SymbolicTensor;
    const factor = FEATURE_STRIDES[k] / stride;
    if (factor > 1) {
      y = up(y, `${name}_up${k}`, factor, cfg.upsample === 'deconv' ? 'deconv' : 'bilinear', cfg.decoderWidth, () => he(factor, cfg.decoderWidth));
    }
    branches.push(y);
  }
  const cat = branches.length === 1 ? branches[0] : (tf.layers.concatenate({ name: `${name}_concat`, axis: -1 }).apply(branches) as tf.SymbolicTensor);
  let m = tf.layers
    .conv2d({ name: `${name}_out`, filters: 1, kernelSize: 3, padding: 'same', useBias: true, kernelInitializer: he(3, 1) })
    .apply(cat) as tf.SymbolicTensor;
  if (cfg.upsample === 'deconv') {
    // Learned upsampling before the sigmoid, so the output stays a probability.
    m = up(m, `${name}_upout`, stride, 'deconv', 1, () => he(stride, 1));
    m = tf.layers.activation({ name: `${name}_sigmoid`, activation: 'sigmoid' }).apply(m) as tf.SymbolicTensor;
  } else {
    m = tf.layers.activation({ name: `${name}_sigmoid`, activation: 'sigmoid' }).apply(m) as tf.SymbolicTensor;
    m = up(m, `${name}_upout`, stride, cfg.upsample, 1, () => he(stride, 1));
  }
  return tf.model({ inputs, outputs: m, name });
}

function up(
  x: tf.SymbolicTensor,
  name: string,
  factor: number,
  mode: Upsample,
  filters: number,
  init: () => ReturnType<typeof heNormalFanOut>,
): tf.SymbolicTensor {
  if (mode === 'deconv') {
    return tf.layers
      .conv2dTranspose({ name, filters, kernelSize: factor, strides: factor, padding: 'same', useBias: false, kernelInitializer: init() })
      .apply(x) as tf.SymbolicTensor;
  }
  return tf.layers.upSampling2d({ name, size: [factor, factor], interpolation: mode }).apply(x) as tf.SymbolicTensor;
}

/** The mask network: decoder plus, in the non-shared ablation, an encoder of its own. */
export class Masker {
  readonly decoder: tf.LayersModel;
  /** null: the encoder is the classifier's own trunk (default). */
  readonly encoder: tf.LayersModel | null;

  constructor(
    cls: ResNetConfig,
    readonly config: MaskerConfig,
    seed = 0,
  ) {
    this.decoder = buildDecoder(cls, config, 'decoder', seed);
    this.encoder = config.shareEncoder ? null : buildResNet(cls, 'masker_encoder', seed + 1000);
  }

  /** Weights the masker loss trains. */
  get trainableWeights(): tf.LayerVariable[] {
    return [...(this.encoder?.trainableWeights ?? []), ...this.decoder.trainableWeights];
  }

  /** Every weight (BN statistics too), in a fixed order: what checkpoints and export save. */
  get models(): tf.LayersModel[] {
    return this.encoder ? [this.encoder, this.decoder] : [this.decoder];
  }

  /**
   * Masks for images x. `sharedFeatures` are the classifier's feature maps of x (used, with
   * stop-gradient, when the encoder is shared); the non-shared masker encodes x itself.
   */
  apply(x: tf.Tensor4D, sharedFeatures: tf.Tensor[], training: boolean): tf.Tensor4D {
    const features = this.encoder ? (this.encoder.apply(x, { training }) as tf.Tensor[]).slice(0, 5) : sharedFeatures.map((f) => stopGradient(f));
    return this.decoder.apply(features, { training }) as tf.Tensor4D;
  }
}
