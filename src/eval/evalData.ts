/**
 * The images an evaluation scores, in batches: the built-in digits' held-out set (test split, the
 * boxes of the digit) or a user's validation shards with their boxes, preprocessed as the protocol
 * says (spec section 4: short side to the input size, centre crop; or a stretch). Streams, so
 * ImageNet's 50,000 validation images never sit in memory at once.
 */
import { BUILTIN_DATA, digitBoxes, loadDigits } from '../data/trainData.js';
import { batchPixels } from '../data/batches.js';
import { normalizeBytes } from '../data/preprocess.js';
import { countShard, openDataset, type Dataset } from '../data/dataset.js';
import { DataLoader } from '../data/loader.js';
import type { Problem, Problems } from '../data/samples.js';
import type { Box } from '../boxes.js';

export interface EvalBatch {
  /** n x size x size x 3 model input (preprocess.ts) of `pixels`. */
  x: Float32Array;
  /** n x size x size x 3 RGB. */
  pixels: Uint8Array;
  n: number;
  size: number;
  labels: Int32Array;
  /** Ground-truth boxes of each image's class in the crop's frame (empty: none). */
  boxes: Box[][];
  /** Where each image came from: `<shard>@<offset>` or `cluttered-mnist test #i`. */
  sources: string[];
}

export interface EvalDataOptions {
  spec: string;
  boxes?: string;
  synsets?: string;
  /** Model input side. */
  size: number;
  /** 'eval' (short side + centre crop) or 'eval-stretch'. */
  preprocess: 'eval' | 'eval-stretch';
  /** At most this many images (digits: how many to generate, default 1000). */
  limit?: number;
  /** The training run's seed: the digits' held-out set of that run. */
  seed: number;
  workers: number;
  batchSize: number;
  onProblem?: (p: Problem) => void;
}

export interface EvalData {
  describe: string;
  /** Images to expect (counted from headers for shards; about, when labels sit inside records). */
  total: number;
  /** Data problems met so far (shards), counted and listed. */
  problems: Problems | null;
  /** Class index -> synset (name), when the data has a synset list. */
  synsets: string[] | null;
  batches(): AsyncGenerator<EvalBatch>;
  close(): Promise<void>;
}

export const DIGITS_EVAL_COUNT = 1000;

export async function openEvalData(o: EvalDataOptions): Promise<EvalData> {
  if (o.spec === BUILTIN_DATA) {
    if (o.boxes !== undefined) throw new Error(`--boxes: ${BUILTIN_DATA} has its own boxes (the digit's); give --boxes with shards only`);
    const set = await loadDigits('test', o.limit ?? DIGITS_EVAL_COUNT, o.size, o.seed);
    return {
      describe: `${set.n} held-out cluttered digits ${o.size}px (MNIST test split, seed ${o.seed + 1})`,
      total: set.n,
      problems: null,
      synsets: null,
      async *batches() {
        for (let start = 0; start < set.n; start += o.batchSize) {
          const indices = Array.from({ length: Math.min(o.batchSize, set.n - start) }, (_, i) => start + i);
          const pixels = batchPixels(set, indices);
          yield {
            x: normalizeBytes(pixels, 3),
            pixels,
            n: indices.length,
            size: set.size,
            labels: set.labels.slice(start, start + indices.length),
            boxes: indices.map((i) => digitBoxes(set, i)),
            sources: indices.map((i) => `${BUILTIN_DATA} test #${i}`),
          };
        }
      },
      close: async () => {},
    };
  }
  const ds: Dataset = openDataset(o.spec, { ...(o.synsets ? { synsets: o.synsets } : {}), ...(o.boxes ? { boxes: o.boxes } : {}) });
  const loader = new DataLoader(ds, {
    workers: o.workers,
    batchSize: o.batchSize,
    preprocess: o.preprocess,
    size: o.size,
    seed: o.seed,
    shuffleBuffer: 0,
    ...(o.onProblem ? { onProblem: o.onProblem } : {}),
  });
  const counted = (await Promise.all(ds.shards.map((sh) => countShard(sh, ds)))).reduce((a, c) => a + c.count, 0);
  return {
    total: Math.min(counted, o.limit ?? Infinity),
    describe: `${o.spec} (${ds.layout}, ${ds.shards.length} shards), ${o.preprocess === 'eval' ? 'short side + centre crop' : 'stretched'} to ${o.size}px`,
    problems: loader.problems,
    synsets: ds.synsets,
    async *batches() {
      for await (const b of loader.batches(0, { dropLast: false, ...(o.limit !== undefined ? { limit: o.limit } : {}) })) {
        yield {
          x: b.x,
          pixels: b.pixels,
          n: b.n,
          size: b.size,
          labels: b.labels,
          boxes: b.boxes.map((bs) => bs.map((r): Box => [r[0], r[1], r[2], r[3]])),
          sources: b.sources.map((s) => `${s.file}@${s.offset}`),
        };
      }
    },
    close: () => loader.close(),
  };
}
