/**
 * Grad-CAM (Selvaraju et al., arXiv 1610.02391), spec section 3: A = a layer's activation (default:
 * the model's last spatial layer, stage 4 of the ResNet), alpha_k = mean_ij dy_c/dA_ij^k,
 * L = ReLU(sum_k alpha_k A^k), bilinear upsampling to the input size (half-pixel centres, as
 * tf.image.resize and cv2.resize), then min-max scaling to [0, 1].
 *
 * Like pytorch-grad-cam's BaseCAM, one hook decides the channel weights (`camWeights`); Grad-CAM's
 * is the default, the counterfactual variant overrides it.
 */
import * as tf from '@tensorflow/tfjs';
import type { Classifier } from './classifier.js';
import { unitScale } from './display.js';
import { Explainer, targetsOr, type Attribution } from './explainer.js';
import type { GraphCut } from './graphCut.js';

/** Every intermediate of one Grad-CAM computation (the caller owns all of them). */
export interface CamParts {
  /** A: N x h x w x K. */
  activations: tf.Tensor4D;
  /** dy_c/dA, same shape. */
  gradients: tf.Tensor4D;
  /** N x K channel weights. */
  weights: tf.Tensor2D;
  /** ReLU(sum_k w_k A^k) upsampled to the input size: N x H x W x 1. */
  cam: tf.Tensor4D;
  targets: tf.Tensor1D;
}

export class GradCam extends Explainer {
  readonly name: string = 'gradcam';
  readonly layer: string;
  private readonly cut: GraphCut;

  /** layer: a spatial layer's name (an unknown one is an error listing the valid ones). */
  constructor(classifier: Classifier, layer?: string) {
    super(classifier);
    this.layer = layer ?? classifier.lastSpatialLayer;
    this.cut = classifier.cutAt(this.layer);
  }

  /** alpha_k: the spatial mean of the gradients. */
  protected camWeights(_activations: tf.Tensor4D, gradients: tf.Tensor4D): tf.Tensor2D {
    return tf.mean(gradients, [1, 2]) as tf.Tensor2D;
  }

  parts(x: tf.Tensor4D, targets: tf.Tensor1D | null): CamParts {
    const [activations, gradients, weights, cam, used] = tf.tidy(() => {
      const { activation, output, boundary } = this.cut.forward(x);
      const used = targetsOr(targets, output as tf.Tensor2D);
      const a = activation as tf.Tensor4D;
      const g = tf.grad((act) => this.classifier.targetScore(this.cut.head(act, boundary) as tf.Tensor2D, used))(a) as tf.Tensor4D;
      const alpha = this.camWeights(a, g);
      const small = tf.relu(tf.sum(tf.mul(a, alpha.reshape([alpha.shape[0], 1, 1, -1])), 3, true)) as tf.Tensor4D;
      const [h, w] = this.classifier.inputShape;
      return [a, g, alpha, tf.image.resizeBilinear(small, [h, w], false, true), used];
    });
    return {
      activations: activations as tf.Tensor4D,
      gradients: gradients as tf.Tensor4D,
      weights: weights as tf.Tensor2D,
      cam: cam as tf.Tensor4D,
      targets: used as tf.Tensor1D,
    };
  }

  attribute(x: tf.Tensor4D, targets: tf.Tensor1D | null): Attribution {
    const { activations, gradients, weights, cam, targets: used } = this.parts(x, targets);
    tf.dispose([activations, gradients, weights]);
    return { raw: cam, targets: used };
  }

  display(raw: tf.Tensor4D): tf.Tensor3D {
    return unitScale(raw);
  }
}

/** Counterfactual Grad-CAM: negated gradients, the regions whose removal would raise the class score. */
export class CounterfactualGradCam extends GradCam {
  override readonly name: string = 'gradcam-counterfactual';

  protected override camWeights(activations: tf.Tensor4D, gradients: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => super.camWeights(activations, tf.neg(gradients)));
  }
}
