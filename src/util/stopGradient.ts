import * as tf from '@tensorflow/tfjs';

/**
 * tfjs has no stop_gradient op. A customGrad node with no inputs is a constant to the tape: the
 * clone runs inside the kernel (not recorded), so backprop neither reaches x nor spends work on
 * the graph that produced it.
 */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  return tf.customGrad(() => ({ value: x.clone(), gradFunc: () => [] }))() as T;
}
