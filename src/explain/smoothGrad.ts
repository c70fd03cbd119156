/**
 * SmoothGrad (Smilkov et al., arXiv 1706.03825) around any explainer M:
 * 1/n sum_i M(x + e_i), e_i ~ N(0, sigma^2), sigma = spread * (max(x) - min(x)) per image.
 * Options: magnitude (average M^2, PAIR-code/saliency's magnitude=True), absolute (average |M|),
 * multiplyByInput (x times the average, for gradient-shaped M; wrapping GradientTimesInput
 * instead multiplies each sample by its own noisy input). The target classes are fixed on the
 * clean image, so every sample explains the same class.
 *
 * Noise is seeded: sample i is drawn from its own seed, derived from `seed`, so `noise(x, i)`
 * reproduces exactly the samples `attribute` uses (the oracle test relies on that).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../util/rng.js';
import { Explainer, type Attribution } from './explainer.js';

export interface SmoothGradOptions {
  /** n, noisy samples per image (default 25). */
  samples?: number;
  /** Noise level: sigma = spread * (max(x) - min(x)) (default 0.15). */
  spread?: number;
  magnitude?: boolean;
  absolute?: boolean;
  multiplyByInput?: boolean;
  seed?: number;
}

export const SMOOTHGRAD_DEFAULTS = { samples: 25, spread: 0.15 };

export class SmoothGrad extends Explainer {
  readonly name: string;
  readonly samples: number;
  readonly spread: number;
  private readonly seeds: number[];

  constructor(
    readonly inner: Explainer,
    private readonly opts: SmoothGradOptions = {},
  ) {
    super(inner.classifier);
    this.samples = opts.samples ?? SMOOTHGRAD_DEFAULTS.samples;
    this.spread = opts.spread ?? SMOOTHGRAD_DEFAULTS.spread;
    if (!Number.isInteger(this.samples) || this.samples < 1) throw new Error(`SmoothGrad: samples must be a positive integer, got ${this.samples}`);
    if (!(this.spread >= 0)) throw new Error(`SmoothGrad: spread must be >= 0, got ${this.spread}`);
    if (opts.magnitude && opts.absolute) throw new Error('SmoothGrad: magnitude (squares) and absolute are exclusive');
    this.name = `smoothgrad(${inner.name})`;
    const rng = new Rng(opts.seed ?? 0);
    this.seeds = Array.from({ length: this.samples }, () => rng.seed());
  }

  /** Noise sample i for images x: N(0, sigma_b^2) per image b. */
  noise(x: tf.Tensor4D, i: number): tf.Tensor4D {
    if (!(Number.isInteger(i) && i >= 0 && i < this.samples)) throw new RangeError(`SmoothGrad: noise sample ${i} of ${this.samples}`);
    return tf.tidy(() => {
      const sigma = tf.mul(this.spread, tf.sub(tf.max(x, [1, 2, 3], true), tf.min(x, [1, 2, 3], true)));
      return tf.mul(tf.randomNormal(x.shape, 0, 1, 'float32', this.seeds[i]), sigma) as tf.Tensor4D;
    });
  }

  attribute(x: tf.Tensor4D, targets: tf.Tensor1D | null): Attribution {
    const used = targets ? targets.clone() : this.classifier.predict(x);
    let sum: tf.Tensor4D | null = null;
    try {
      for (let i = 0; i < this.samples; i++) {
        const noisy = tf.tidy(() => tf.add(x, this.noise(x, i)) as tf.Tensor4D);
        let sample: Attribution;
        try {
          sample = this.inner.attribute(noisy, used);
        } finally {
          noisy.dispose();
        }
        const { raw, targets: t } = sample;
        const next: tf.Tensor4D = tf.tidy(() => {
          const m = this.opts.magnitude ? tf.square(raw) : this.opts.absolute ? tf.abs(raw) : raw;
          return sum ? tf.add(sum, m) : m.clone();
        });
        tf.dispose([raw, t, sum ?? []]);
        sum = next;
      }
      const mean = sum!;
      const raw = tf.tidy(() => {
        if (this.opts.multiplyByInput && mean.shape[3] !== x.shape[3]) {
          throw new Error(`SmoothGrad: multiplyByInput needs maps shaped like the input; ${this.inner.name} gives ${mean.shape[3]} channel(s)`);
        }
        const avg = tf.div(mean, this.samples) as tf.Tensor4D;
        return this.opts.multiplyByInput ? (tf.mul(avg, x) as tf.Tensor4D) : avg;
      });
      return { raw, targets: used };
    } catch (e) {
      used.dispose();
      throw e;
    } finally {
      sum?.dispose();
    }
  }

  display(raw: tf.Tensor4D): tf.Tensor3D {
    return this.inner.display(raw);
  }
}
