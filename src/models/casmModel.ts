/**
 * A CASM model: the classifier (a ResNet whose apply gives the five feature maps and the logits)
 * and the masker that decodes masks from those features (sharing the classifier's encoder, or
 * with its own). What inference needs; the trainer adds optimisers, the pool and the iteration.
 */
import * as tf from '@tensorflow/tfjs';
import { Masker, type MaskerConfig } from './masker.js';
import { buildResNet, type ResNetConfig } from './resnet.js';

export class CasmModel {
  readonly classifier: tf.LayersModel;
  readonly masker: Masker;

  /** Weights initialised from `seed`, the classifier's first (a trainer's runs depend on this order). */
  constructor(
    readonly arch: ResNetConfig,
    maskerConfig: MaskerConfig,
    seed: number,
  ) {
    this.classifier = buildResNet(arch, 'classifier', seed * 10_000);
    this.masker = new Masker(arch, maskerConfig, seed * 10_000 + 5_000);
  }

  /** The classifier on x: its five feature maps (stem to stage 4) and its logits. */
  classify(x: tf.Tensor4D, training: boolean): { features: tf.Tensor4D[]; logits: tf.Tensor2D } {
    const out = this.classifier.apply(x, { training }) as tf.Tensor[];
    return { features: out.slice(0, 5) as tf.Tensor4D[], logits: out[5] as tf.Tensor2D };
  }

  /** Inference mode: the classifier's logits of x and the masks decoded from its features. */
  inference(x: tf.Tensor4D): { masks: tf.Tensor4D; logits: tf.Tensor2D } {
    const [masks, logits] = tf.tidy(() => {
      const { features, logits } = this.classify(x, false);
      return [this.masker.apply(x, features, false), logits];
    });
    return { masks: masks as tf.Tensor4D, logits: logits as tf.Tensor2D };
  }

  dispose(): void {
    this.classifier.dispose();
    for (const m of this.masker.models) m.dispose();
  }
}
