/**
 * The losses of one CASM iteration (spec section 2): the classifier's eq. 8 and the masker's
 * score with the reference code's adaptive lambda.
 */
import * as tf from '@tensorflow/tfjs';
import { stopGradient } from '../util/stopGradient.js';
import type { Thinning } from './pool.js';

export const SCORES = ['entropy', 'classification'] as const;
export type Score = (typeof SCORES)[number];

/** lambda_R presets per thinning strategy, [entropy, classification] (spec section 2, step 4). */
const LAMBDA_PRESETS: Record<Thinning, [number, number]> = {
  F: [2.5, 9],
  L: [14, 18],
  FL: [7.5, 11],
  L100: [10, 17],
  L1000: [10, 17],
};

/**
 * lambda_R preset for `classes` classes. The presets were set on ImageNet, where both scores live
 * on a scale of log(1000) (the largest entropy; the cross-entropy at chance); with K classes they
 * are log(K) large, so the preset is scaled by log(K) / log(1000) to keep the same balance against
 * the area term. At 1000 classes this is the spec's table exactly.
 */
export function defaultLambda(thinning: Thinning, score: Score, classes = 1000): number {
  return (LAMBDA_PRESETS[thinning][score === 'entropy' ? 0 : 1] * Math.log(classes)) / Math.log(1000);
}

/** Mean cross-entropy of integer labels under logits. */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => tf.mean(pickedCrossEntropy(tf.logSoftmax(logits), labels)) as tf.Scalar);
}

/** Classifier loss, paper eq. 8: the mean of the clean and the masked-out cross-entropies. */
export function classifierLoss(cleanLogits: tf.Tensor2D, maskedLogits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => tf.mul(0.5, tf.add(crossEntropy(cleanLogits, labels), crossEntropy(maskedLogits, labels))));
}

/** 1 where the argmax of the logits equals the label, else 0: a 0/1 constant to gradients. */
export function correct(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => stopGradient(tf.cast(tf.equal(tf.argMax(logits, 1), tf.cast(labels, 'int32')), 'float32')) as tf.Tensor1D);
}

/**
 * Mask terms of later CASM work, each weighted (0 = off: the paper's objective, the default).
 * - `tv`: total variation, the mean squared difference of neighbouring mask pixels (Dabkowski &
 *   Gal's smoothness term; lambda_tv of the saliency_investigation fork of casme). Scattered
 *   blotches pay for their edges; one region over the object pays once.
 * - `maskedIn`: the cross-entropy of f' on the masked-in image m * x, on images the classifier
 *   gets right (the fork's mask-in objective, Dabkowski & Gal's preserver). Masking out rewards
 *   hiding the few pixels that break the classifier; this rewards keeping every pixel it needs to
 *   recognise the object, so the mask grows over the object rather than over its most telling part.
 */
export interface MaskTerms {
  tv: number;
  maskedIn: number;
}

export const NO_MASK_TERMS: MaskTerms = { tv: 0, maskedIn: 0 };

/** Per image: (sum of squared vertical and horizontal neighbour differences) / (H W). */
export function totalVariation(masks: tf.Tensor4D): tf.Tensor1D {
  return tf.tidy(() => {
    const [, h, w] = masks.shape;
    const dy = tf.sub(tf.slice(masks, [0, 1, 0, 0], [-1, h - 1, -1, -1]), tf.slice(masks, [0, 0, 0, 0], [-1, h - 1, -1, -1]));
    const dx = tf.sub(tf.slice(masks, [0, 0, 1, 0], [-1, -1, w - 1, -1]), tf.slice(masks, [0, 0, 0, 0], [-1, -1, w - 1, -1]));
    return tf.div(tf.add(tf.sum(tf.square(dy), [1, 2, 3]), tf.sum(tf.square(dx), [1, 2, 3])), h * w) as tf.Tensor1D;
  });
}

export interface MaskerLoss {
  loss: tf.Scalar;
  /** Mean entropy H(p) of the masked-out predictions over the batch. */
  entropy: tf.Scalar;
  /** Per-image mask area mean(m_b). */
  area: tf.Tensor1D;
  /** Fraction of the batch under the area penalty (g_b = 1). */
  gated: tf.Scalar;
  /** Mean total variation of the masks. */
  tv: tf.Scalar;
  /** mean_b[c_b * CE(f'(m_b * x_b), y_b)] (0 without masked-in logits). */
  maskedIn: tf.Scalar;
}

/**
 * L_m = mean_b[c_b * (-S_b)] + lambda * mean_b[g_b * mean(m_b)], with S_b the score of image b:
 * the entropy H(p_b) of the masked-out prediction, or its cross-entropy for 'classification'.
 * c_b: the clean image is classified correctly by the current classifier (`cleanCorrect`);
 * g_b = c_b * [the masked-out image is misclassified by the pool's classifier]: only images that
 * were "non-trivially confused" pay for their mask area (adaptive lambda, reference code).
 * With `terms`: + tv * mean_b TV(m_b) + maskedIn * mean_b[c_b * CE(maskedInLogits_b, y_b)].
 */
export function maskerLoss(
  maskedLogits: tf.Tensor2D,
  labels: tf.Tensor1D,
  cleanCorrect: tf.Tensor1D,
  masks: tf.Tensor4D,
  lambda: number,
  score: Score,
  terms: MaskTerms = NO_MASK_TERMS,
  maskedInLogits: tf.Tensor2D | null = null,
): MaskerLoss {
  return tf.tidy(() => {
    const logp = tf.logSoftmax(maskedLogits);
    const entropyPerImage = tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), 1));
    const scorePerImage = score === 'entropy' ? entropyPerImage : pickedCrossEntropy(logp, labels);
    const gate = tf.mul(cleanCorrect, tf.sub(1, correct(maskedLogits, labels)));
    const area = tf.mean(masks, [1, 2, 3]) as tf.Tensor1D;
    let loss = tf.add(tf.mean(tf.mul(cleanCorrect, tf.neg(scorePerImage))), tf.mul(lambda, tf.mean(tf.mul(gate, area))));
    const tv = tf.mean(totalVariation(masks)) as tf.Scalar;
    if (terms.tv > 0) loss = tf.add(loss, tf.mul(terms.tv, tv));
    if (terms.maskedIn > 0 && maskedInLogits === null) throw new Error('the masked-in term needs the masked-in logits');
    const maskedIn = (
      maskedInLogits === null ? tf.scalar(0) : tf.mean(tf.mul(cleanCorrect, pickedCrossEntropy(tf.logSoftmax(maskedInLogits), labels)))
    ) as tf.Scalar;
    if (terms.maskedIn > 0) loss = tf.add(loss, tf.mul(terms.maskedIn, maskedIn));
    return { loss: loss as tf.Scalar, entropy: tf.mean(entropyPerImage) as tf.Scalar, area, gated: tf.mean(gate) as tf.Scalar, tv, maskedIn };
  });
}

/** Per image: -log p(y) from log-probabilities. */
function pickedCrossEntropy(logp: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.neg(tf.sum(tf.mul(logp, tf.oneHot(labels, logp.shape[1])), 1)) as tf.Tensor1D;
}
