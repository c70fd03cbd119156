/**
 * Input-gradient explainers. Vanilla gradient (Simonyan et al. 2014): dS_c/dx, S_c the target's
 * logit before the softmax. Gradient x input: that gradient times x, elementwise. Both display
 * like PAIR-code/saliency (gradientMap).
 */
import * as tf from '@tensorflow/tfjs';
import { gradientMap } from './display.js';
import { Explainer, targetsOr, type Attribution } from './explainer.js';

export class VanillaGradient extends Explainer {
  readonly name: string = 'vanilla';

  attribute(x: tf.Tensor4D, targets: tf.Tensor1D | null): Attribution {
    let used!: tf.Tensor1D;
    const raw = tf.tidy(() =>
      tf.grad((input) => {
        const logits = this.classifier.logitsOf(input as tf.Tensor4D);
        // The argmax of the same forward pass: no extra pass to find the class.
        used = tf.keep(targetsOr(targets, logits));
        return this.classifier.targetScore(logits, used);
      })(x),
    ) as tf.Tensor4D;
    return { raw: this.finish(raw, x), targets: used };
  }

  /** Hook for variants that post-process the gradient (takes ownership of grad). */
  protected finish(grad: tf.Tensor4D, _x: tf.Tensor4D): tf.Tensor4D {
    return grad;
  }

  display(raw: tf.Tensor4D): tf.Tensor3D {
    return gradientMap(raw);
  }
}

export class GradientTimesInput extends VanillaGradient {
  override readonly name: string = 'gradxinput';

  protected override finish(grad: tf.Tensor4D, x: tf.Tensor4D): tf.Tensor4D {
    const raw = tf.mul(grad, x) as tf.Tensor4D;
    grad.dispose();
    return raw;
  }
}
