/**
 * The DataLoader: several streams of decoded samples (worker threads, or one in the main thread
 * with workers = 0) merged into batches in a fixed round-robin order, so the batches of an epoch
 * depend on the seed and the number of workers, never on timing.
 *
 * Each worker may run ahead of the consumer by `prefetchBatches` batches (its share): credit is
 * returned as samples are consumed, so memory stays bounded while training blocks the main
 * thread. The time a batch waited for data is measured and returned with it.
 */
import { Worker } from 'node:worker_threads';
import type { Dataset, ReadContext } from './dataset.js';
import { decodedSamples, epochShardOrder, streamShards, type DecodedSample, type Preprocess, type StreamPlan } from './pipeline.js';
import type { Augmentation } from './decode.js';
import { normalizeBytes } from './preprocess.js';
import { Problems, type PixelBox, type Problem, type SampleSource } from './samples.js';

export type ToWorker = { type: 'start'; gen: number; plan: StreamPlan; credit: number } | { type: 'credit'; gen: number; n: number } | { type: 'stop' };

export type ToMain =
  | { type: 'sample'; gen: number; sample: DecodedSample }
  | { type: 'problem'; gen: number; problem: Problem }
  | { type: 'end'; gen: number }
  | { type: 'error'; gen: number; message: string };

export interface LoaderOptions {
  /** Worker threads decoding in parallel; 0 decodes in the main thread. */
  workers: number;
  batchSize: number;
  preprocess: Preprocess;
  /** Output side in pixels. */
  size: number;
  /** 'train': the augmentation beyond torchvision's defaults. */
  augmentation?: Augmentation;
  seed: number;
  /** Samples held for shuffling, split across the streams (0: shard order). */
  shuffleBuffer: number;
  /** Batches each worker may decode ahead of the consumer (default 4). */
  prefetchBatches?: number;
  pixelLimit?: number;
  decodeAhead?: number;
  /** Called once per problem, as it happens (logging). */
  onProblem?: (p: Problem) => void;
}

export interface HostBatch {
  /** n x size x size x 3 model input (preprocess.ts) of `pixels`. */
  x: Float32Array;
  /** n x size x size x 3 RGB. */
  pixels: Uint8Array;
  n: number;
  size: number;
  labels: Int32Array;
  /** Per sample, its class boxes in the batch frame (empty without boxes). */
  boxes: PixelBox[][];
  keys: string[];
  /** Where each sample came from (shard file, byte offset). */
  sources: SampleSource[];
  /** Milliseconds the consumer waited for this batch's samples. */
  waitMs: number;
}

export interface EpochRange {
  /** Samples of the epoch to pass over (a resumed run); not decoded. */
  skip?: number;
  /** Stop after this many samples (--epoch-fraction). */
  limit?: number;
  /** Drop a final incomplete batch (training). Default true. */
  dropLast?: boolean;
}

/** One stream of an epoch: next sample, or null at its end. */
interface Stream {
  next(): Promise<DecodedSample | null>;
  stop(): void;
}

function inlineStream(plan: StreamPlan, ctx: ReadContext, problems: Problems): Stream {
  const it = decodedSamples(plan, ctx, problems);
  return {
    next: async () => {
      const r = await it.next();
      return r.done ? null : r.value;
    },
    stop: () => void it.return(undefined),
  };
}

/** The main thread's end of one worker. */
class WorkerStream implements Stream {
  queue: DecodedSample[] = [];
  private ended = false;
  private failure: Error | null = null;
  private waiting: (() => void) | null = null;

  constructor(
    private readonly worker: Worker,
    private readonly gen: number,
    plan: StreamPlan,
    credit: number,
    problems: Problems,
    private readonly name: string,
  ) {
    worker.removeAllListeners('message').removeAllListeners('error');
    worker.on('message', (m: ToMain) => {
      if (m.gen !== gen) return; // leftovers of a stopped epoch
      if (m.type === 'sample') this.queue.push(m.sample);
      else if (m.type === 'problem') problems.add(m.problem.kind, m.problem.file, m.problem.offset, m.problem.message);
      else if (m.type === 'end') this.ended = true;
      else this.failure = new Error(`${name}: ${m.message}`);
      this.wakeUp();
    });
    worker.on('error', (e) => {
      this.failure = new Error(`${name} crashed: ${e.message}`);
      this.wakeUp();
    });
    worker.postMessage({ type: 'start', gen, plan, credit } satisfies ToWorker);
  }

  private wakeUp(): void {
    this.waiting?.();
    this.waiting = null;
  }

  async next(): Promise<DecodedSample | null> {
    for (;;) {
      if (this.failure) throw this.failure;
      const s = this.queue.shift();
      if (s !== undefined) {
        this.worker.postMessage({ type: 'credit', gen: this.gen, n: 1 } satisfies ToWorker);
        return s;
      }
      if (this.ended) return null;
      await new Promise<void>((r) => (this.waiting = r));
    }
  }

  stop(): void {
    this.worker.postMessage({ type: 'stop' } satisfies ToWorker);
  }
}

export class DataLoader {
  readonly problems: Problems;
  private readonly workers: Worker[] = [];
  private gen = 0;
  private active: Stream[] = [];

  constructor(
    readonly dataset: Dataset,
    readonly opts: LoaderOptions,
  ) {
    this.problems = new Problems(1000, opts.onProblem);
    for (const p of dataset.problems.list) this.problems.add(p.kind, p.file, p.offset, p.message);
    const ctx: ReadContext = { synsets: dataset.synsets, classes: dataset.classes, annotations: dataset.annotations };
    for (let w = 0; w < opts.workers; w++) {
      this.workers.push(new Worker(new URL('./worker.js', import.meta.url), { workerData: ctx }));
    }
  }

  /** Streams in use: one per worker, but never more than there are shards. */
  get streams(): number {
    return Math.max(1, Math.min(this.opts.workers || 1, this.dataset.shards.length));
  }

  /** The samples of an epoch in round-robin order over the streams. */
  async *samples(epoch: number, range: EpochRange = {}): AsyncGenerator<DecodedSample> {
    const { dataset: ds, opts } = this;
    const n = this.streams;
    const skip = range.skip ?? 0;
    const limit = range.limit ?? Infinity;
    const order = epochShardOrder(ds.shards, opts.seed, epoch);
    const ctx: ReadContext = { synsets: ds.synsets, classes: ds.classes, annotations: ds.annotations };
    const gen = ++this.gen;
    const credit = Math.ceil(((opts.prefetchBatches ?? 4) * opts.batchSize) / n);
    const streams: Stream[] = Array.from({ length: n }, (_, w) => {
      const plan: StreamPlan = {
        shards: streamShards(order, w, n),
        epoch,
        seed: opts.seed,
        stream: w,
        shuffleBuffer: Math.ceil(opts.shuffleBuffer / n),
        // Round-robin: stream w delivered these many of the first `skip` samples.
        skip: Math.floor(skip / n) + (w < skip % n ? 1 : 0),
        preprocess: opts.preprocess,
        size: opts.size,
      };
      if (opts.pixelLimit !== undefined) plan.pixelLimit = opts.pixelLimit;
      if (opts.augmentation !== undefined) plan.augmentation = opts.augmentation;
      if (opts.decodeAhead !== undefined) plan.decodeAhead = opts.decodeAhead;
      const worker = this.workers[w];
      return worker ? new WorkerStream(worker, gen, plan, credit, this.problems, `data worker ${w}`) : inlineStream(plan, ctx, this.problems);
    });
    this.active = streams;
    let live = [...streams];
    let given = 0;
    let turn = skip % n;
    try {
      while (live.length > 0 && given < limit) {
        const s = live[turn % live.length]!;
        const sample = await s.next();
        if (sample === null) {
          live = live.filter((x) => x !== s);
          continue; // the next stream moved into this turn
        }
        given++;
        turn = (turn % live.length) + 1;
        yield sample;
      }
    } finally {
      for (const s of streams) s.stop();
    }
  }

  /** Decoded samples waiting in the main thread (bounded by the workers' credit). */
  get buffered(): number {
    return this.active.reduce((n, s) => n + (s instanceof WorkerStream ? s.queue.length : 0), 0);
  }

  /** Batches of an epoch, each with the time it waited for data. */
  async *batches(epoch: number, range: EpochRange = {}): AsyncGenerator<HostBatch> {
    const { batchSize, size } = this.opts;
    const per = size * size * 3;
    let items: DecodedSample[] = [];
    let waitMs = 0;
    const it = this.samples(epoch, range);
    const assemble = (): HostBatch => {
      const pixels = new Uint8Array(items.length * per);
      items.forEach((s, i) => pixels.set(s.data, i * per));
      const b: HostBatch = {
        x: normalizeBytes(pixels, 3),
        pixels,
        n: items.length,
        size,
        labels: Int32Array.from(items, (s) => s.label),
        boxes: items.map((s) => s.boxes ?? []),
        keys: items.map((s) => s.key),
        sources: items.map((s) => s.source),
        waitMs,
      };
      items = [];
      waitMs = 0;
      return b;
    };
    try {
      for (;;) {
        const t0 = performance.now();
        const r = await it.next();
        waitMs += performance.now() - t0;
        if (r.done) break;
        items.push(r.value);
        if (items.length === batchSize) yield assemble();
      }
      if (items.length > 0 && range.dropLast === false) yield assemble();
    } finally {
      await it.return(undefined); // a consumer that stops early closes the streams and their files
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
