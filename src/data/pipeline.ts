/**
 * One stream of decoded samples, as a worker thread (or the main thread, with --workers 0)
 * produces it: its shards in order -> labelled samples of the kept classes -> a seeded shuffle
 * buffer -> skip (resume) -> decode + transform, a few images in flight at once.
 *
 * Randomness is keyed so that it does not depend on timing or on how many samples were skipped:
 * the shard order by (seed, epoch), the shuffle buffer by (seed, epoch, stream), and each
 * training crop by (seed, epoch, sample key). No tfjs.
 */
import { Rng, seedFrom } from '../util/rng.js';
import { readShard, type ReadContext, type Shard } from './dataset.js';
import { transformSample, type Augmentation, type TransformSpec } from './decode.js';
import type { PixelBox, Problems, Sample, SampleSource } from './samples.js';

/**
 * Which preprocessing, at which output size (spec sections 4 and 5): 'eval' resizes the short side
 * and centre-crops, 'eval-stretch' resizes to size x size (the evaluation's option).
 */
export type Preprocess = 'train' | 'val' | 'eval' | 'eval-stretch';

export interface StreamPlan {
  shards: Shard[];
  epoch: number;
  seed: number;
  /** Which of the parallel streams this is (keys its shuffle buffer). */
  stream: number;
  /** Samples held for shuffling; 0 or 1 keeps the shard order. */
  shuffleBuffer: number;
  /** Samples to pass over without decoding (they still go through the shuffle buffer). */
  skip: number;
  preprocess: Preprocess;
  size: number;
  /** 'train': the augmentation beyond torchvision's defaults. */
  augmentation?: Augmentation;
  pixelLimit?: number;
  /** Images decoded concurrently (sharp runs them on libuv threads). Default 2. */
  decodeAhead?: number;
}

export interface DecodedSample {
  key: string;
  label: number;
  /** HWC RGB pixels (model input: preprocess.ts). */
  data: Uint8Array;
  width: number;
  height: number;
  /** Ground-truth boxes of the sample's class in the output frame (when the data set has boxes). */
  boxes?: PixelBox[];
  source: SampleSource;
}

/** The epoch's shard order: a permutation drawn from (seed, epoch). */
export function epochShardOrder(shards: Shard[], seed: number, epoch: number): Shard[] {
  const rng = new Rng(seedFrom('shards', seed, epoch));
  const out = [...shards];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Stream w of n gets the shards w, w+n, w+2n, ... of the epoch's order. */
export function streamShards(order: Shard[], w: number, n: number): Shard[] {
  return order.filter((_, i) => i % n === w);
}

export function transformOf(plan: Pick<StreamPlan, 'preprocess' | 'size' | 'seed' | 'epoch' | 'augmentation'>, key: string): TransformSpec {
  switch (plan.preprocess) {
    case 'train':
      return {
        kind: 'train',
        size: plan.size,
        rng: new Rng(seedFrom('crop', plan.seed, plan.epoch, key)),
        ...(plan.augmentation?.cropScale ? { scale: plan.augmentation.cropScale } : {}),
        ...(plan.augmentation?.colorJitter ? { colorJitter: plan.augmentation.colorJitter } : {}),
      };
    case 'val':
      // Resize(256) + CenterCrop(224), the same proportion at other sizes.
      return { kind: 'val', resize: Math.round((plan.size * 256) / 224), crop: plan.size };
    case 'eval':
      return { kind: 'eval', size: plan.size };
    case 'eval-stretch':
      return { kind: 'eval', mode: 'stretch', size: plan.size };
  }
}

async function* shuffled(samples: AsyncIterable<Sample>, size: number, rng: Rng): AsyncGenerator<Sample> {
  if (size <= 1) {
    yield* samples;
    return;
  }
  const buf: Sample[] = [];
  for await (const s of samples) {
    if (buf.length < size) {
      buf.push(s);
      continue;
    }
    const j = rng.int(size);
    yield buf[j]!;
    buf[j] = s;
  }
  for (let i = buf.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [buf[i], buf[j]] = [buf[j]!, buf[i]!];
  }
  yield* buf;
}

export async function* decodedSamples(plan: StreamPlan, ctx: ReadContext, problems: Problems): AsyncGenerator<DecodedSample> {
  async function* all(): AsyncGenerator<Sample> {
    for (const shard of plan.shards) yield* readShard(shard, ctx, problems);
  }
  const rng = new Rng(seedFrom('buffer', plan.seed, plan.epoch, plan.stream));
  const decode = async (s: Sample): Promise<DecodedSample | null> => {
    const spec = transformOf(plan, s.key);
    const opts = plan.pixelLimit === undefined ? {} : { pixelLimit: plan.pixelLimit };
    const t = await transformSample(s, spec, problems, opts);
    if (t === null) return null;
    const out: DecodedSample = { key: s.key, label: s.label, data: t.data, width: t.width, height: t.height, source: s.source };
    if (t.boxes !== undefined) out.boxes = t.boxes;
    return out;
  };
  // In-order decoding with up to `ahead` images in flight.
  const ahead = Math.max(1, plan.decodeAhead ?? 2);
  const inFlight: Promise<DecodedSample | null>[] = [];
  let seen = 0;
  for await (const s of shuffled(all(), plan.shuffleBuffer, rng)) {
    if (seen++ < plan.skip) continue;
    inFlight.push(decode(s));
    if (inFlight.length >= ahead) {
      const d = await inFlight.shift()!;
      if (d !== null) yield d;
    }
  }
  while (inFlight.length > 0) {
    const d = await inFlight.shift()!;
    if (d !== null) yield d;
  }
}
