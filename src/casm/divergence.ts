/**
 * Divergence that a finite loss does not show: weights that run away, and masks stuck at all-0 or
 * all-1 (a masker that has collapsed or whose learning rate is far too high). Non-finite weights
 * stop the run before they reach a checkpoint; the rest is warned about, once per episode, in the
 * log and as TensorBoard scalars.
 */
import * as tf from '@tensorflow/tfjs';
import type { CasmTrainer, StepStats } from './trainer.js';

/** Weights no longer numbers: the run stops, the last checkpoint stays as it was. */
export class DivergenceError extends Error {}

export interface HealthLimits {
  /** Largest |weight| before a warning (trained ResNets and decoders stay far below it). */
  maxAbsWeight: number;
  /** Mask area mean below this, or above 1 minus it, is saturated. */
  saturatedArea: number;
  /** Consecutive checks with saturated masks before a warning. */
  saturatedChecks: number;
}

export const DEFAULT_HEALTH_LIMITS: HealthLimits = { maxAbsWeight: 1e4, saturatedArea: 0.02, saturatedChecks: 4 };

export interface HealthReport {
  classifierMaxAbs: number;
  maskerMaxAbs: number;
  warnings: string[];
}

/** Largest |w| over the weights, NaN if any is not finite (reductions need not propagate NaN). */
function maxAbs(weights: tf.LayerVariable[]): number {
  const [max, bad] = tf.tidy(() => {
    const per = weights.map((w) => w.read());
    const m = tf.max(tf.stack(per.map((w) => tf.max(tf.abs(w)))));
    const nonFinite = tf.addN(per.map((w) => tf.sum(tf.cast(tf.logicalNot(tf.isFinite(w)), 'float32'))));
    return tf.stack([m, nonFinite]).dataSync();
  });
  return bad! > 0 ? Number.NaN : max!;
}

export class HealthWatch {
  private saturated = 0;
  private warned = new Set<string>();

  constructor(private readonly limits: HealthLimits = DEFAULT_HEALTH_LIMITS) {}

  /** Checks the trainer's weights and the latest step's masks; throws DivergenceError on non-finite weights. */
  check(trainer: CasmTrainer, last: StepStats | null): HealthReport {
    const report = {
      classifierMaxAbs: maxAbs(trainer.classifier.trainableWeights),
      maskerMaxAbs: maxAbs(trainer.masker.trainableWeights),
      warnings: [] as string[],
    };
    for (const [who, v] of [
      ['classifier', report.classifierMaxAbs],
      ['masker', report.maskerMaxAbs],
    ] as const) {
      // NaN compares false with everything: test for finiteness, not for size.
      if (!Number.isFinite(v))
        throw new DivergenceError(`step ${trainer.step}: ${who} weights are no longer finite; stopping (the last checkpoint is untouched)`);
      this.episode(
        `${who}-weights`,
        v > this.limits.maxAbsWeight,
        `${who} weights have diverged (max |w| = ${v.toExponential(2)} > ${this.limits.maxAbsWeight}): its learning rate is likely too high`,
        report,
      );
    }
    if (last !== null && !Number.isNaN(last.areaMean)) {
      const a = last.areaMean;
      this.saturated = a < this.limits.saturatedArea || a > 1 - this.limits.saturatedArea ? this.saturated + 1 : 0;
      this.episode(
        'masks',
        this.saturated >= this.limits.saturatedChecks,
        `masks have been all-0 or all-1 for ${this.saturated} checks (area ${a.toFixed(4)}): the masker has collapsed or diverged (lambda, learning rate?)`,
        report,
      );
    }
    return report;
  }

  /** Warns when a condition starts, and again only after it has cleared. */
  private episode(key: string, on: boolean, message: string, report: HealthReport): void {
    if (!on) this.warned.delete(key);
    else if (!this.warned.has(key)) {
      this.warned.add(key);
      report.warnings.push(message);
    }
  }
}
