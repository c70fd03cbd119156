import * as tf from '@tensorflow/tfjs';

/**
 * An identity op that measures memory from inside a backward pass: when its gradient runs, it
 * records the bytes tfjs holds beyond those held at `start()`. Placed at the loss it sees what the
 * forward pass left for the backward pass; at the input of a chain, what the backward pass still
 * holds at its end.
 */
export function memoryProbe(): { op: (t: tf.Tensor) => tf.Tensor; start(): void; held(): number } {
  let base = 0;
  let held = 0;
  const op = tf.customGrad((t) => ({
    value: tf.mul(t as tf.Tensor, 1),
    gradFunc: (dy: tf.Tensor) => {
      held = tf.memory().numBytes - base;
      return tf.mul(dy, 1);
    },
  }));
  return {
    op: (t) => op(t),
    start: () => {
      base = tf.memory().numBytes;
    },
    held: () => held,
  };
}
