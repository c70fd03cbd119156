/**
 * One interface for every explainer (spec section 3): images + target classes in, maps in [0, 1]
 * out, and the method's raw map on request. A method is two steps, kept apart so SmoothGrad can
 * average the first and reuse the second: `attribute` (the raw map: signed input gradients, a CAM)
 * and `display` (raw map -> [0, 1]).
 */
import * as tf from '@tensorflow/tfjs';
import type { Classifier, Targets } from './classifier.js';

export interface Explanation {
  /** N x H x W, in [0, 1], at the input's size. */
  maps: tf.Tensor3D;
  /** The raw map (N x H x W x C: gradients shaped like the input; a CAM has C = 1), when asked for. */
  raw?: tf.Tensor4D;
  /** The class each map explains. */
  targets: number[];
}

export interface Attribution {
  raw: tf.Tensor4D;
  /** The targets given, or the argmax classes. */
  targets: tf.Tensor1D;
}

export abstract class Explainer {
  abstract readonly name: string;

  constructor(readonly classifier: Classifier) {}

  /**
   * The raw maps of x for the target classes (argmax of x's logits when null). Returns new
   * tensors the caller owns (`targets` too, even when it is the tensor passed in).
   */
  abstract attribute(x: tf.Tensor4D, targets: tf.Tensor1D | null): Attribution;

  /** Raw maps -> N x H x W maps in [0, 1]. */
  abstract display(raw: tf.Tensor4D): tf.Tensor3D;

  /** Maps for images x (NHWC, normalised) and their targets (default: the argmax class). */
  explain(x: tf.Tensor4D, targets?: Targets, opts: { raw?: boolean } = {}): Explanation {
    const given = this.classifier.checkTargets(targets, x.shape[0]);
    try {
      const { raw, targets: used } = this.attribute(x, given);
      const maps = this.display(raw);
      const classes = Array.from(used.dataSync());
      used.dispose();
      if (opts.raw) return { maps, raw, targets: classes };
      raw.dispose();
      return { maps, targets: classes };
    } finally {
      given?.dispose();
    }
  }
}

/** The targets to use: a copy of those given, or the argmax of the logits. */
export function targetsOr(given: tf.Tensor1D | null, logits: tf.Tensor2D): tf.Tensor1D {
  return given ? given.clone() : (tf.argMax(logits, 1) as tf.Tensor1D);
}
