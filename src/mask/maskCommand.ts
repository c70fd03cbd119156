/**
 * `casm mask --model <dir> <images | folders> --out <dir> [--png] [--npy] [--boxes]`, or
 * `--data <spec>` (shards of any layout, spec section 5, with --shard-index/--num-shards): batch
 * inference with an exported mask network (exportMasker.ts) on any backend. Images are decoded
 * like `casm explain`'s (images.ts: short side resized to the model's size, centre-cropped; shards
 * through the DataLoader's evaluation transform, the same geometry) and fed as pixel values 0..255;
 * the network normalises them itself. Writes
 *   <out>/masks.jsonl           one line per image: {file, name, size, area[, box]} or {file, skipped, reason}
 *                               (from shards, file is `<shard>@<byte offset>`)
 *   <out>/<name>-mask.png       the mask in gray (--png)
 *   <out>/<name>-overlay.png    jet mask over the image, the box drawn in white with --boxes (--png)
 *   <out>/<name>-mask.npy       the mask, float32 H x W (--npy)
 * `area` is the mean of the mask; `box` is [x0, y0, x1, y1] (x1, y1 exclusive) in model-input
 * pixels, from the largest component of mask >= mean (maskBox), null for a flat mask.
 * Files that cannot be decoded are skipped, logged, listed at the end and in masks.jsonl.
 */
import * as tf from '@tensorflow/tfjs';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { maskBox, type Box } from '../boxes.js';
import { colorize, overlay, pixelsToRgb, png } from '../explain/display.js';
import { expandInputs, loadImages, uniqueStems } from '../explain/images.js';
import { countShard, openDataset } from '../data/dataset.js';
import { DataLoader } from '../data/loader.js';
import type { ProblemKind } from '../data/samples.js';
import { formatDuration } from '../log/progress.js';
import { checkMasksFinite, loadMaskNetwork } from '../export/exportMasker.js';
import { UsageError } from '../util/usageError.js';
import { writeFileAtomic } from '../util/atomicWrite.js';

export interface MaskOptions {
  /** A directory written by `casm export`. */
  model: string;
  /** Image files and folders (a folder contributes its files, sorted; hidden ones skipped). */
  inputs: string[];
  /** Or a data spec (shards), read with `workers` decode threads; this job's share of its shards. */
  data?: { spec: string; shardIndex: number; numShards: number; workers: number };
  out: string;
  png: boolean;
  npy: boolean;
  boxes: boolean;
  batchSize: number;
  log: (line: string) => void;
}

export interface MaskRecord {
  file: string;
  name: string;
  /** [height, width] of the mask (the model's input size). */
  size: [number, number];
  area: number;
  box?: Box | null;
}

export interface MaskResult {
  records: MaskRecord[];
  skipped: string[];
  jsonl: string;
}

/** A float32 H x W array as NumPy .npy (format 1.0). */
export function npyBytes(data: Float32Array, shape: number[]): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header = header + ' '.repeat(pad % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

function drawBox(rgb: Uint8Array, w: number, box: Box): void {
  const [x0, y0, x1, y1] = box;
  const put = (x: number, y: number) => rgb.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3);
  for (let x = x0; x < x1; x++) {
    put(x, y0);
    put(x, y1 - 1);
  }
  for (let y = y0; y < y1; y++) {
    put(x0, y);
    put(x1 - 1, y);
  }
}

/** One batch to mask: RGB pixels (images = `indices` into `ids`), what the network takes, and what could not be read. */
interface ImageBatch {
  ids: { file: string; name: string }[];
  pixels: Uint8Array | null;
  indices: number[];
  /** `counted`: one of the source's `total` images that is not among `ids` (a sample that failed to decode). */
  skipped: { file: string; reason: string; counted: boolean }[];
}

/**
 * Problems of a sample the headers counted (it has an image); the others (a lone label, a bad tar
 * member, a truncated archive) are reported but are no image of the total.
 */
const SAMPLE_PROBLEMS = new Set<ProblemKind>(['decode-error', 'bad-label']);

interface ImageSource {
  describe: string;
  total: number;
  /** Shards: this job's shard files with their place in the whole list (for `casm mask merge`). */
  shards?: { file: string; index: number }[];
  batches: AsyncGenerator<ImageBatch>;
  close(): Promise<void>;
}

function fileSource(inputs: string[], h: number, w: number, batchSize: number): ImageSource {
  const files = expandInputs(inputs);
  const names = uniqueStems(files);
  async function* batches(): AsyncGenerator<ImageBatch> {
    for (let start = 0; start < files.length; start += batchSize) {
      const ids = files.slice(start, start + batchSize).map((file, i) => ({ file, name: names[start + i]! }));
      const skipped: ImageBatch['skipped'] = [];
      const decoded = await loadImages(
        ids.map((d) => d.file),
        [h, w, 3],
        (file, reason) => skipped.push({ file, reason, counted: false }),
      );
      yield { ids, pixels: decoded?.pixels ?? null, indices: decoded?.indices ?? [], skipped };
    }
  }
  return { describe: `${files.length} file(s)`, total: files.length, batches: batches(), close: async () => {} };
}

async function shardSource(data: NonNullable<MaskOptions['data']>, size: number, batchSize: number): Promise<ImageSource> {
  const ds = openDataset(data.spec, { shardIndex: data.shardIndex, numShards: data.numShards });
  const counts = await Promise.all(ds.shards.map((s) => countShard(s, ds)));
  const pending: ImageBatch['skipped'] = [];
  const loader = new DataLoader(ds, {
    workers: data.workers,
    batchSize,
    preprocess: 'eval',
    size,
    seed: 0,
    shuffleBuffer: 0,
    onProblem: (p) => pending.push({ file: `${p.file}@${p.offset}`, reason: `${p.kind}: ${p.message}`, counted: SAMPLE_PROBLEMS.has(p.kind) }),
  });
  const used = new Set<string>();
  const nameOf = (key: string) => {
    const base = key.replace(/[^\w.-]+/g, '_');
    let name = base;
    for (let k = 2; used.has(name); k++) name = `${base}-${k}`;
    used.add(name);
    return name;
  };
  async function* batches(): AsyncGenerator<ImageBatch> {
    for await (const b of loader.batches(0, { dropLast: false })) {
      const ids = b.keys.map((key, i) => ({ file: `${b.sources[i]!.file}@${b.sources[i]!.offset}`, name: nameOf(key) }));
      yield { ids, pixels: b.pixels, indices: ids.map((_, i) => i), skipped: pending.splice(0) };
    }
    if (pending.length > 0) yield { ids: [], pixels: null, indices: [], skipped: pending.splice(0) };
  }
  return {
    describe: `${data.spec} (${ds.layout}, ${ds.shards.length} of ${ds.totalShards} shards, ${data.workers} decode workers)`,
    shards: ds.shards.map((s) => ({ file: s.file, index: s.index })),
    total: counts.reduce((a, c) => a + c.count, 0),
    batches: batches(),
    close: () => loader.close(),
  };
}

export async function maskCommand(o: MaskOptions): Promise<MaskResult> {
  const { model, meta } = await loadMaskNetwork(o.model);
  const h = meta.input.height;
  const w = meta.input.width;
  if (o.data && h !== w) throw new UsageError(`${o.model}: --data needs a square model input, this one is ${w}x${h}`);
  let source: ImageSource | null = null;
  try {
    source = o.data ? await shardSource(o.data, h, o.batchSize) : fileSource(o.inputs, h, w, o.batchSize);
    o.log(
      `mask: ${o.model} (${meta.training.thinning}/${meta.training.score}, step ${meta.source.step}, ${w}x${h}, ` +
        `casm-ts ${meta.projectVersion}${meta.quantization !== 'none' ? `, ${meta.quantization}` : ''}) on ${tf.getBackend()}: ${source.describe}`,
    );
    mkdirSync(o.out, { recursive: true });
    const jsonl = join(o.out, 'masks.jsonl');
    writeFileSync(jsonl, '');
    const result: MaskResult = { records: [], skipped: [], jsonl };
    const t0 = performance.now();
    let done = 0;
    for await (const batch of source.batches) {
      const lines: string[] = [];
      for (const { file, reason } of batch.skipped) {
        o.log(`skipping ${file}: cannot decode it (${reason})`);
        result.skipped.push(file);
        lines.push(JSON.stringify({ file, skipped: true, reason }));
      }
      if (batch.pixels) {
        const n = batch.indices.length;
        const values = tf.tidy(() => (model.predict(tf.tensor4d(Float32Array.from(batch.pixels!), [n, h, w, 3])) as tf.Tensor4D).dataSync() as Float32Array);
        checkMasksFinite(values, o.model, batch.ids.map((d) => d.file).join(', '));
        const pictures = o.png ? pixelsToRgb(batch.pixels, n, 3) : [];
        for (const [k, i] of batch.indices.entries()) {
          const { file, name } = batch.ids[i]!;
          const mask = values.slice(k * h * w, (k + 1) * h * w);
          let sum = 0;
          for (const v of mask) sum += v;
          const record: MaskRecord = { file, name, size: [h, w], area: sum / mask.length };
          const box = o.boxes ? maskBox(mask, h, w, meta.threshold?.alpha ?? 1) : null;
          if (o.boxes) record.box = box;
          if (o.png) {
            writeFileSync(join(o.out, `${name}-mask.png`), await png(colorize(mask, 'gray'), w, h));
            const over = overlay(pictures[k]!, colorize(mask, 'jet'));
            if (o.boxes && box) drawBox(over, w, box);
            writeFileSync(join(o.out, `${name}-overlay.png`), await png(over, w, h));
          }
          if (o.npy) writeFileSync(join(o.out, `${name}-mask.npy`), npyBytes(mask, [h, w]));
          result.records.push(record);
          lines.push(JSON.stringify(record));
        }
      }
      // One line per image, in input order (skipped ones were pushed first; sort them into place).
      const order = new Map(batch.ids.map((d, i) => [d.file, i]));
      lines.sort((a, b) => (order.get((JSON.parse(a) as { file: string }).file) ?? -1) - (order.get((JSON.parse(b) as { file: string }).file) ?? -1));
      if (lines.length) appendFileSync(jsonl, lines.join('\n') + '\n');
      done += batch.ids.length + batch.skipped.filter((s) => s.counted).length;
      const secs = (performance.now() - t0) / 1000;
      const rate = result.records.length / Math.max(secs, 1e-9);
      const eta = (Math.max(0, source.total - done) * secs) / Math.max(done, 1);
      o.log(
        `mask: ${done}/${source.total} images, ${result.records.length} masks, ${result.skipped.length} skipped ` +
          `(${Math.round((100 * done) / Math.max(source.total, 1))}%) | ${rate.toFixed(1)} masks/s | ETA ${formatDuration(eta)}`,
      );
    }
    if (result.records.length === 0) throw new Error(`none of the ${done} image(s) could be decoded`);
    if (result.skipped.length) o.log(`skipped ${result.skipped.length} image(s) that could not be decoded:\n${result.skipped.map((f) => `  ${f}`).join('\n')}`);
    if (o.data) {
      // Last, so that its presence means the job finished: what `casm mask merge` checks the jobs by.
      const job: MaskJob = {
        format: MASK_JOB_FORMAT,
        model: { dir: resolve(o.model), files: meta.files ?? {} },
        spec: o.data.spec,
        shard: { index: o.data.shardIndex, count: o.data.numShards },
        shards: source.shards ?? [],
        masks: result.records.length,
        skipped: result.skipped.length,
      };
      writeFileAtomic(join(o.out, MASK_JOB_FILE), JSON.stringify(job, null, 2) + '\n');
    }
    o.log(`mask: ${result.records.length} mask(s) -> ${o.out} (masks.jsonl${o.png ? ', PNGs' : ''}${o.npy ? ', .npy' : ''})`);
    return result;
  } finally {
    await source?.close();
    model.dispose();
  }
}

const MASK_JOB_FILE = 'mask.json';
const MASK_JOB_FORMAT = 'casm-ts-mask-job-1';

/** What a `casm mask --data` job ran: the merge's check that jobs are the shards of one run. */
interface MaskJob {
  format: string;
  model: { dir: string; files: Record<string, string> };
  spec: string;
  shard: { index: number; count: number };
  shards: { file: string; index: number }[];
  masks: number;
  skipped: number;
}

/**
 * `casm mask merge`: one masks.jsonl for the jobs of one `casm mask --data --num-shards n` (their
 * --out directories), in the data set's order (shard, then byte offset); each line gains `dir`,
 * the job directory that holds its PNG and .npy files. Refuses jobs of another model, data spec or
 * job count, a job given twice or missing, and an unfinished job, naming the directories.
 */
export function mergeMasks(dirs: string[], out: string, log: (line: string) => void): { lines: number } {
  const jobs = dirs.map((dir) => {
    const path = join(dir, MASK_JOB_FILE);
    if (!existsSync(path)) throw new UsageError(`${dir}: no ${MASK_JOB_FILE}: not a finished job of 'casm mask --data'`);
    const job = JSON.parse(readFileSync(path, 'utf8')) as MaskJob;
    if (job.format !== MASK_JOB_FORMAT) throw new UsageError(`${path}: not a mask job of this version (format ${job.format})`);
    return { dir, job };
  });
  const [first] = jobs as [(typeof jobs)[number]];
  const seen = new Map<number, string>();
  for (const { dir, job } of jobs) {
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (!same(job.model.files, first.job.model.files))
      throw new UsageError(`${first.dir} and ${dir} are not jobs of one run: their models differ (${first.job.model.dir}, ${job.model.dir})`);
    if (job.spec !== first.job.spec || job.shard.count !== first.job.shard.count) {
      throw new UsageError(
        `${first.dir} and ${dir} are not jobs of one run: ${first.job.spec} in ${first.job.shard.count} jobs against ${job.spec} in ${job.shard.count}`,
      );
    }
    const other = seen.get(job.shard.index);
    if (other !== undefined) throw new UsageError(`job ${job.shard.index} of ${job.shard.count} given twice: ${other} and ${dir}`);
    seen.set(job.shard.index, dir);
  }
  const missing = Array.from({ length: first.job.shard.count }, (_, i) => i).filter((i) => !seen.has(i));
  if (missing.length > 0)
    throw new UsageError(`job${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${first.job.shard.count} missing (given: ${dirs.join(', ')})`);
  const records = jobs.flatMap(({ dir, job }) => {
    const place = new Map(job.shards.map((s) => [s.file, s.index]));
    return readFileSync(join(dir, 'masks.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((line) => {
        const record = JSON.parse(line) as { file: string };
        const at = record.file.lastIndexOf('@');
        const shard = place.get(record.file.slice(0, at));
        if (shard === undefined) throw new UsageError(`${join(dir, 'masks.jsonl')}: ${record.file} is in none of the job's shards`);
        return { key: [shard, Number(record.file.slice(at + 1))] as const, line: JSON.stringify({ ...record, dir: resolve(dir) }) };
      });
  });
  records.sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1]);
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'masks.jsonl'), records.map((r) => r.line).join('\n') + '\n');
  const masks = jobs.reduce((n, j) => n + j.job.masks, 0);
  const skipped = jobs.reduce((n, j) => n + j.job.skipped, 0);
  log(`mask merge: ${jobs.length} jobs, ${masks} masks and ${skipped} skipped -> ${join(out, 'masks.jsonl')}`);
  return { lines: records.length };
}
