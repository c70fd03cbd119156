/**
 * Where a training run's batches and held-out images come from: the built-in cluttered digits
 * (in memory) or a user's shards (spec section 5) streamed through the DataLoader's workers.
 * The loop asks for the batch of iteration `step`; both sources give the same batches to a
 * resumed run as to an uninterrupted one.
 */
import * as tf from '@tensorflow/tfjs';
import { loadCluttered, type ClutteredSet } from './clutteredMnist.js';
import { toBatch } from './batches.js';
import { normalizeBytes } from './preprocess.js';
import { countShard, openDataset, type DatasetOptions } from './dataset.js';
import { DataLoader, type HostBatch } from './loader.js';
import type { Problem, Problems } from './samples.js';
import type { Augmentation } from './decode.js';
import type { Box } from '../boxes.js';
import { Rng, seedFrom } from '../util/rng.js';

export interface TrainBatch {
  x: tf.Tensor4D;
  y: tf.Tensor1D;
  /** Milliseconds the loop waited for this batch. */
  waitMs: number;
}

/** Held-out images in memory, for the mask figures and the final localisation check. */
export interface HeldOut {
  n: number;
  size: number;
  labels: Int32Array;
  /** Ground-truth boxes per image (empty: the image has none). */
  boxes: Box[][];
  /** Normalised NHWC batch of these images; the caller disposes it. */
  batch(indices: number[]): tf.Tensor4D;
}

export interface TrainData {
  /** For the log line: what is being trained on. */
  describe: string;
  /** Training images per epoch (after --epoch-fraction). */
  samplesPerEpoch: number;
  /** The batch of iteration `step`, given `stepsPerEpoch`. Calls come in step order. */
  next(step: number, stepsPerEpoch: number): Promise<TrainBatch>;
  heldOut: HeldOut;
  problems: Problems | null;
  close(): Promise<void>;
}

export interface DigitsPlan {
  kind: 'digits';
  trainCount: number;
  valCount: number;
  /** Train on these digits only (the held-out images keep every class). */
  classes?: number[];
}

export interface ShardsPlan {
  kind: 'shards';
  train: string;
  trainOptions: DatasetOptions;
  /** Held-out spec and its options (boxes); default: the first images of the training data. */
  val?: string;
  valOptions: DatasetOptions;
  valCount: number;
  workers: number;
  shuffleBuffer: number;
  prefetchBatches: number;
  epochFraction: number;
  augmentation?: Augmentation;
  pixelLimit?: number;
}

export type DataPlan = DigitsPlan | ShardsPlan;

export interface OpenOptions {
  size: number;
  batchSize: number;
  seed: number;
  log: (line: string) => void;
}

export function openTrainData(plan: DataPlan, o: OpenOptions): Promise<TrainData> {
  return plan.kind === 'digits' ? digitsData(plan, o) : shardsData(plan, o);
}

/** Samples of the epoch-`epoch` permutation, batch `b`: a pure function of (seed, epoch). */
function batchAt(n: number, batchSize: number, seed: number, epoch: number, b: number): number[] {
  return new Rng((seed * 1_000_003 + epoch) >>> 0).permutation(n).slice(b * batchSize, (b + 1) * batchSize);
}

/** The ground truth of digit image i: its one box. */
export function digitBoxes(set: ClutteredSet, i: number): Box[] {
  return [[set.boxes[4 * i]!, set.boxes[4 * i + 1]!, set.boxes[4 * i + 2]!, set.boxes[4 * i + 3]!]];
}

function clutteredHeldOut(val: ClutteredSet): HeldOut {
  const boxes = Array.from({ length: val.n }, (_, i) => digitBoxes(val, i));
  return {
    n: val.n,
    size: val.size,
    labels: val.labels,
    boxes,
    batch(indices) {
      const b = toBatch(val, indices);
      b.y.dispose();
      return b.x;
    },
  };
}

/** The --data name of the built-in cluttered digits. */
export const BUILTIN_DATA = 'cluttered-mnist';

/**
 * The built-in digits of a run with this seed: training images from MNIST's training set (seed),
 * held-out ones from its test set (seed + 1), digits of 20-40 px on a 64 px canvas and the same
 * proportion on other canvases. `casm eval` takes its images from here too.
 */
export function loadDigits(split: 'train' | 'test', count: number, size: number, seed: number): Promise<ClutteredSet> {
  const digits = { size, minDigit: Math.round((size * 20) / 64), maxDigit: Math.round((size * 40) / 64) };
  return loadCluttered({ split, count, seed: split === 'train' ? seed : seed + 1, ...digits });
}

async function digitsData(plan: DigitsPlan, o: OpenOptions): Promise<TrainData> {
  const train = await loadDigits('train', plan.trainCount, o.size, o.seed);
  const val = await loadDigits('test', plan.valCount, o.size, o.seed);
  const keep = plan.classes ? new Set(plan.classes) : null;
  const kept = Array.from({ length: train.n }, (_, i) => i).filter((i) => keep === null || keep.has(train.labels[i]!));
  if (kept.length < o.batchSize) throw new Error(`${kept.length} training images are fewer than one batch of ${o.batchSize}`);
  return {
    describe: `${kept.length} cluttered digits ${o.size}px${plan.classes ? ` of classes ${plan.classes.join(',')}` : ''}`,
    samplesPerEpoch: kept.length,
    async next(step, stepsPerEpoch) {
      const t0 = performance.now();
      const b = toBatch(
        train,
        batchAt(kept.length, o.batchSize, o.seed, Math.floor(step / stepsPerEpoch), step % stepsPerEpoch).map((i) => kept[i]!),
      );
      return { x: b.x, y: b.y, waitMs: performance.now() - t0 };
    },
    heldOut: clutteredHeldOut(val),
    problems: null,
    close: async () => {},
  };
}

/** Data problems are printed as they happen, up to this many; all are counted. */
const PRINTED_PROBLEMS = 20;

async function shardsData(plan: ShardsPlan, o: OpenOptions): Promise<TrainData> {
  let printed = 0;
  const onProblem = (p: Problem) => {
    if (printed++ < PRINTED_PROBLEMS) o.log(`data: ${p.file}@${p.offset}: ${p.kind}: ${p.message}`);
    if (printed === PRINTED_PROBLEMS) o.log(`data: further problems are counted, not printed (TensorBoard data/problems)`);
  };
  const loaderOptions = {
    workers: plan.workers,
    batchSize: o.batchSize,
    size: o.size,
    seed: o.seed,
    shuffleBuffer: plan.shuffleBuffer,
    prefetchBatches: plan.prefetchBatches,
    onProblem,
    ...(plan.pixelLimit !== undefined ? { pixelLimit: plan.pixelLimit } : {}),
  };
  const train = openDataset(plan.train, plan.trainOptions);
  const t0 = performance.now();
  const counts = await Promise.all(train.shards.map((s) => countShard(s, train)));
  const total = counts.reduce((a, c) => a + c.count, 0);
  const exact = counts.every((c) => c.exact);
  const samplesPerEpoch = Math.floor(total * plan.epochFraction);
  o.log(
    `data: ${train.layout} ${plan.train}: ${train.shards.length} of ${train.totalShards} shards, ${exact ? '' : 'about '}${total} images` +
      `${train.classes ? ` of ${train.classes.length} classes` : ''} (counted in ${((performance.now() - t0) / 1000).toFixed(1)} s); ` +
      `${samplesPerEpoch} per epoch; ${plan.workers} decode workers, shuffle buffer ${plan.shuffleBuffer}, prefetch ${plan.prefetchBatches} batches`,
  );
  if (samplesPerEpoch < o.batchSize) throw new Error(`${plan.train}: ${samplesPerEpoch} images per epoch are fewer than one batch of ${o.batchSize}`);

  const loader = new DataLoader(train, { ...loaderOptions, preprocess: 'train', ...(plan.augmentation ? { augmentation: plan.augmentation } : {}) });
  const heldOut = await shardsHeldOut(plan, loaderOptions, o);
  let epoch = -1;
  let nextStep = -1;
  let batches: AsyncGenerator<HostBatch> | null = null;
  return {
    describe: `${plan.train}, RandomResizedCrop ${o.size} (area ${(plan.augmentation?.cropScale ?? [0.08, 1]).join('-')}) + flip${plan.augmentation?.colorJitter ? ` + ColorJitter ${plan.augmentation.colorJitter}` : ''}`,
    samplesPerEpoch,
    async next(step, stepsPerEpoch) {
      const e = Math.floor(step / stepsPerEpoch);
      if (batches === null || e !== epoch || step !== nextStep) {
        await batches?.return(undefined);
        epoch = e;
        const done = (step % stepsPerEpoch) * o.batchSize;
        batches = loader.batches(e, { skip: done, limit: stepsPerEpoch * o.batchSize - done });
      }
      let r = await batches.next();
      if (r.done) {
        // The stream ran short of the counted epoch (an estimated count): go on with the next epoch.
        o.log(`data: epoch ${e} ended before iteration ${step}; continuing with the next epoch's order`);
        batches = loader.batches(e + 1, {});
        r = await batches.next();
        if (r.done) throw new Error(`${plan.train}: no training images left to read`);
      }
      nextStep = step + 1;
      const b = r.value;
      return {
        x: tf.tensor4d(b.x, [b.n, b.size, b.size, 3]),
        y: tf.tensor1d(b.labels, 'int32'),
        waitMs: b.waitMs,
      };
    },
    heldOut,
    problems: loader.problems,
    async close() {
      await batches?.return(undefined);
      await loader.close();
    },
  };
}

/** The first `valCount` images of --val (or of the training data), eval preprocessing. */
async function shardsHeldOut(
  plan: ShardsPlan,
  loaderOptions: Omit<ConstructorParameters<typeof DataLoader>[1], 'preprocess'>,
  o: OpenOptions,
): Promise<HeldOut> {
  const ds = openDataset(plan.val ?? plan.train, plan.val ? plan.valOptions : plan.trainOptions);
  const loader = new DataLoader(ds, { ...loaderOptions, preprocess: 'eval', shuffleBuffer: 0, seed: seedFrom('held-out', o.seed) });
  const per = o.size * o.size * 3;
  // Pixels, as the loader gives them; normalised per batch, as the evaluation does.
  const pixels = new Uint8Array(plan.valCount * per);
  const labels: number[] = [];
  const boxes: Box[][] = [];
  try {
    for await (const s of loader.samples(0, { limit: plan.valCount })) {
      pixels.set(s.data, labels.length * per);
      labels.push(s.label);
      boxes.push((s.boxes ?? []).map((b): Box => [b[0], b[1], b[2], b[3]]));
    }
  } finally {
    await loader.close();
  }
  if (labels.length === 0) throw new Error(`${plan.val ?? plan.train}: no held-out images could be read`);
  const withBoxes = boxes.filter((b) => b.length > 0).length;
  o.log(
    `held-out: ${labels.length} images of ${plan.val ?? `${plan.train} (no --val: the first training images)`}, ` +
      `short side ${o.size} + centre crop; ${withBoxes} with boxes`,
  );
  return {
    n: labels.length,
    size: o.size,
    labels: Int32Array.from(labels),
    boxes,
    batch(indices) {
      const data = new Uint8Array(indices.length * per);
      indices.forEach((idx, i) => data.set(pixels.subarray(idx * per, (idx + 1) * per), i * per));
      return tf.tensor4d(normalizeBytes(data, 3), [indices.length, o.size, o.size, 3]);
    },
  };
}
