/**
 * ClassifierPool and thinning (spec section 2, step 3): which earlier classifiers the masker is
 * scored against. Snapshots are weights only, as plain Float32Arrays off the accelerator; they
 * travel in checkpoints so a resumed run continues with the same pool.
 */
import type { Rng } from '../util/rng.js';

export const THINNINGS = ['F', 'L', 'FL', 'L100', 'L1000'] as const;
export type Thinning = (typeof THINNINGS)[number];

export interface Snapshot {
  /** Iteration whose classifier update produced these weights (-1: the initial classifier). */
  step: number;
  weights: Float32Array[];
}

/** The classifier that sees the masked-out image in the masker step. */
export type PoolChoice = { kind: 'current' } | { kind: 'snapshot'; index: number };

export interface PoolOptions {
  /** Snapshot period for the L<N> strategies. */
  every: number;
  /** Most snapshots kept; when full, a uniformly random one is replaced. */
  maxSize: number;
}

export function poolOptions(thinning: Thinning): PoolOptions {
  if (thinning === 'L100') return { every: 100, maxSize: 30 };
  if (thinning === 'L1000') return { every: 1000, maxSize: 30 };
  return { every: 0, maxSize: 1 };
}

export class ClassifierPool {
  snapshots: Snapshot[] = [];
  readonly options: PoolOptions;

  constructor(
    readonly thinning: Thinning,
    options?: PoolOptions,
  ) {
    this.options = options ?? poolOptions(thinning);
  }

  /** F never updates its classifier: the pool is f_0, taken once before training. */
  initialize(take: () => Float32Array[]): void {
    if (this.thinning === 'F' && this.snapshots.length === 0) this.snapshots.push({ step: -1, weights: take() });
  }

  /**
   * After the classifier update of iteration `step` (0-based). `take` copies the current weights;
   * it is called only when a snapshot is due, since copying ResNet-50 costs 100 MB.
   */
  update(step: number, take: () => Float32Array[], rng: Rng): void {
    switch (this.thinning) {
      case 'F':
      case 'L':
        return;
      case 'FL':
        if (this.snapshots.length === 0) this.snapshots.push({ step, weights: take() });
        return;
      case 'L100':
      case 'L1000': {
        if (step % this.options.every !== 0) return;
        const snapshot = { step, weights: take() };
        if (this.snapshots.length < this.options.maxSize) this.snapshots.push(snapshot);
        else this.snapshots[rng.int(this.snapshots.length)] = snapshot;
        return;
      }
    }
  }

  /**
   * Draws the classifier for the masker step. FL and L<N> take the current classifier with
   * probability 1/2, else a uniformly random snapshot (the current one while the pool is empty).
   */
  choose(rng: Rng): PoolChoice {
    switch (this.thinning) {
      case 'F':
        return { kind: 'snapshot', index: 0 };
      case 'L':
        return { kind: 'current' };
      default: {
        const pickSnapshot = rng.next() >= 0.5;
        if (!pickSnapshot || this.snapshots.length === 0) return { kind: 'current' };
        return { kind: 'snapshot', index: rng.int(this.snapshots.length) };
      }
    }
  }
}
