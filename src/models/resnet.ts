/**
 * The classifier f: ResNet with bottleneck v1.5 blocks in the torchvision layout (stride on the
 * 3x3 conv, bias-free convs, BatchNorm eps 1e-5). Layer names mirror torchvision's state-dict keys
 * with '.' replaced by '_' (`layer1_0_conv1` <-> `layer1.0.conv1`) so weights map one to one.
 *
 * Strided convs and the max-pool use explicit symmetric zero padding + 'valid', as PyTorch does:
 * tfjs 'same' pads asymmetrically on even inputs and would shift every feature map by a pixel.
 * Zero padding before the max-pool equals PyTorch's -inf padding because its input is post-ReLU.
 */
import * as tf from '@tensorflow/tfjs';

export interface ResNetConfig {
  /** Bottleneck blocks per stage; [3, 4, 6, 3] is ResNet-50. */
  depths: number[];
  /** Stem width; stage k has width * 2^k planes and 4x that many output channels. */
  width: number;
  classes: number;
  inputSize: number;
}

export const RESNET50: ResNetConfig = { depths: [3, 4, 6, 3], width: 64, classes: 1000, inputSize: 224 };

/** Names of the five feature maps the classifier exposes besides its logits (spec section 1). */
export const FEATURE_NAMES = ['pool', 'stage1', 'stage2', 'stage3', 'stage4'] as const;

const EXPANSION = 4;

/**
 * Hands each initializer its own seed, so a model built from one seed is reproducible. Seeds start
 * at first + 1: tfjs takes a seed of 0 as "no seed" and draws from Math.random.
 */
export class Seeds {
  constructor(private next: number) {}
  take(): number {
    return ++this.next;
  }
}

/** N(0, sqrt(2 / (k*k*out))): torchvision's kaiming_normal_(mode='fan_out'), untruncated. */
export function heNormalFanOut(kernel: number, out: number, seeds: Seeds) {
  return tf.initializers.randomNormal({ mean: 0, stddev: Math.sqrt(2 / (kernel * kernel * out)), seed: seeds.take() });
}

function conv(x: tf.SymbolicTensor, name: string, filters: number, kernel: number, stride: number, seeds: Seeds): tf.SymbolicTensor {
  const pad = (kernel - 1) >> 1;
  let input = x;
  // Stride 1 'same' is symmetric already; stride 2 needs PyTorch's explicit padding.
  if (pad > 0 && stride > 1) {
    input = tf.layers.zeroPadding2d({ padding: pad, name: `${name}_pad` }).apply(x) as tf.SymbolicTensor;
  }
  return tf.layers
    .conv2d({
      name,
      filters,
      kernelSize: kernel,
      strides: stride,
      padding: pad > 0 && stride === 1 ? 'same' : 'valid',
      useBias: false,
      kernelInitializer: heNormalFanOut(kernel, filters, seeds),
    })
    .apply(input) as tf.SymbolicTensor;
}

function bn(x: tf.SymbolicTensor, name: string): tf.SymbolicTensor {
  // PyTorch momentum 0.1 == Keras/tfjs momentum 0.9.
  return tf.layers.batchNormalization({ name, axis: -1, epsilon: 1e-5, momentum: 0.9 }).apply(x) as tf.SymbolicTensor;
}

function relu(x: tf.SymbolicTensor, name: string): tf.SymbolicTensor {
  return tf.layers.reLU({ name }).apply(x) as tf.SymbolicTensor;
}

function bottleneck(x: tf.SymbolicTensor, name: string, planes: number, stride: number, seeds: Seeds): tf.SymbolicTensor {
  const inChannels = x.shape[3] as number;
  let y = relu(bn(conv(x, `${name}_conv1`, planes, 1, 1, seeds), `${name}_bn1`), `${name}_relu1`);
  y = relu(bn(conv(y, `${name}_conv2`, planes, 3, stride, seeds), `${name}_bn2`), `${name}_relu2`);
  y = bn(conv(y, `${name}_conv3`, planes * EXPANSION, 1, 1, seeds), `${name}_bn3`);
  let shortcut = x;
  if (stride !== 1 || inChannels !== planes * EXPANSION) {
    shortcut = bn(conv(x, `${name}_downsample_0`, planes * EXPANSION, 1, stride, seeds), `${name}_downsample_1`);
  }
  const sum = tf.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as tf.SymbolicTensor;
  return relu(sum, `${name}_out`);
}

/**
 * Builds the classifier. Outputs, in order: the five feature maps of FEATURE_NAMES, then logits.
 * `name` prefixes nothing inside (layer names must stay torchvision-like); it names the model.
 * `seed` makes the initial weights reproducible.
 */
export function buildResNet(cfg: ResNetConfig, name = 'classifier', seed = 0): tf.LayersModel {
  const seeds = new Seeds(seed);
  if (cfg.depths.length !== 4) throw new Error(`ResNet needs 4 stage depths, got [${cfg.depths.join(', ')}]`);
  const input = tf.input({ shape: [cfg.inputSize, cfg.inputSize, 3], name: 'image' });
  let x = relu(bn(conv(input, 'conv1', cfg.width, 7, 2, seeds), 'bn1'), 'relu');
  x = tf.layers.zeroPadding2d({ padding: 1, name: 'maxpool_pad' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid', name: 'maxpool' }).apply(x) as tf.SymbolicTensor;
  const features: tf.SymbolicTensor[] = [x];
  for (let s = 0; s < 4; s++) {
    const planes = cfg.width * 2 ** s;
    for (let b = 0; b < cfg.depths[s]; b++) {
      x = bottleneck(x, `layer${s + 1}_${b}`, planes, b === 0 && s > 0 ? 2 : 1, seeds);
    }
    features.push(x);
  }
  const pooled = tf.layers.globalAveragePooling2d({ name: 'avgpool' }).apply(x) as tf.SymbolicTensor;
  const fanIn = cfg.width * 8 * EXPANSION;
  // torchvision's nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
  const bound = 1 / Math.sqrt(fanIn);
  const logits = tf.layers
    .dense({
      name: 'fc',
      units: cfg.classes,
      kernelInitializer: tf.initializers.randomUniform({ minval: -bound, maxval: bound, seed: seeds.take() }),
      biasInitializer: tf.initializers.randomUniform({ minval: -bound, maxval: bound, seed: seeds.take() }),
    })
    .apply(pooled) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: [...features, logits], name });
}

/** Number of trainable parameters (what torchvision reports; BN running stats excluded). */
export function countTrainableParams(model: tf.LayersModel): number {
  return model.trainableWeights.reduce((n, w) => n + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
}

/** Channels of the five feature maps, for building a decoder without running the model. */
export function featureChannels(cfg: ResNetConfig): number[] {
  return [cfg.width, ...[0, 1, 2, 3].map((s) => cfg.width * 2 ** s * EXPANSION)];
}
