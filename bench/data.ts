/**
 * node dist/bench/data.js [--batch 8 --size 224 --steps 2 --warmup 1 --fed-steps 3 --workers 0,1,2
 *                          --passes 2 --prefetch 4 --shuffle-buffer 1000 --images 256 --shards 8
 *                          --backend tensorflow --depths 3,4,6,3 --width 64 --regenerate]
 * Does the data pipeline keep up with training? Four measurements in one process:
 *
 *   1. a realistic shard set, made once and cached under data/cache/bench-shards/: JPEGs of
 *      ImageNet's typical sizes (500x375, 375x500, some 800x600 / 600x800) at quality 90, built
 *      deterministically from MNIST digits pasted onto textured coloured backgrounds (so they
 *      carry a photo's entropy, ~100-150 KB each), in WebDataset tar shards. Nothing is downloaded.
 *   2. decode + augment throughput (RandomResizedCrop + flip + normalise, preprocess 'train')
 *      through the DataLoader with 0 (main thread), 1 and 2 worker threads, no training running.
 *   3. the training step's consumption rate: one full CASM iteration (ResNet-50 at 224, L100)
 *      on the same engine, fed a decoded batch.
 *   4. both together, as `casm train --data` runs them: CASM iterations fed by the DataLoader
 *      (default worker count, prefetch 4 batches) and the time each step waited for data.
 *      Decoding and training share the machine's cores, so (4) is the figure that matters;
 *      (2) and (3) are each measured with the machine to themselves.
 * Not a test: nothing here asserts a speed.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance as perf } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { openDataset, type Dataset } from '../src/data/dataset.js';
import { DataLoader, type HostBatch } from '../src/data/loader.js';
import { loadMnist, MNIST_SIDE, type MnistData } from '../src/data/mnist.js';
import { webDatasetEntries, writeTar, type TarEntry } from '../src/data/tar.js';
import { Rng, seedFrom } from '../src/util/rng.js';
import { PROJECT_VERSION, REPO_ROOT } from '../src/version.js';
import { measure, setupBench } from './common.js';

// ---------------------------------------------------------------------------------------------
// Options: ours, and setupBench's (which parses process.argv strictly, so it is handed only its own).

const COMMON_OPTIONS = ['backend', 'batch', 'size', 'samples', 'steps', 'warmup', 'depths', 'width'] as const;
const { values: opt } = parseArgs({
  options: {
    backend: { type: 'string' },
    batch: { type: 'string' },
    size: { type: 'string' },
    samples: { type: 'string' },
    /** Timed CASM iterations of the training rate (setupBench's --steps; default 2 here). */
    steps: { type: 'string', default: '2' },
    warmup: { type: 'string' },
    depths: { type: 'string' },
    width: { type: 'string' },
    /** Worker counts of the decode measurement. */
    workers: { type: 'string', default: '0,1,2' },
    /** Timed passes over the shard set per worker count (after one warm-up pass). */
    passes: { type: 'string', default: '2' },
    /** CASM iterations fed by the DataLoader (the combined figure). */
    'fed-steps': { type: 'string', default: '3' },
    prefetch: { type: 'string', default: '4' },
    'shuffle-buffer': { type: 'string', default: '1000' },
    images: { type: 'string', default: '256' },
    shards: { type: 'string', default: '8' },
    regenerate: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(
    readFileSync(new URL(import.meta.url), 'utf8')
      .split('*/')[0]!
      .replace(/^\/\*\*\n/, '')
      .replace(/^ \* ?/gm, '')
      .trimEnd(),
  );
  process.exit(0);
}
const forCommon: string[] = [];
for (const k of COMMON_OPTIONS) if (opt[k] !== undefined) forCommon.push(`--${k}`, opt[k]!);
process.argv = [...process.argv.slice(0, 2), ...forCommon];

const workerCounts = opt.workers.split(',').map(Number);
const passes = Number(opt.passes);
const fedSteps = Number(opt['fed-steps']);
const prefetch = Number(opt.prefetch);
const shuffleBuffer = Number(opt['shuffle-buffer']);
const imageCount = Number(opt.images);
const shardCount = Number(opt.shards);
/** What `casm train --workers` defaults to (src/cli.ts). */
const defaultWorkers = Math.max(1, Math.min(4, availableParallelism()));
for (const [name, v, min] of [
  ['--passes', passes, 1],
  ['--fed-steps', fedSteps, 1],
  ['--prefetch', prefetch, 1],
  ['--shuffle-buffer', shuffleBuffer, 0],
  ['--images', imageCount, 1],
  ['--shards', shardCount, 1],
  ...workerCounts.map((w) => ['--workers', w, 0] as const),
] as const) {
  if (!(Number.isInteger(v) && v >= min)) {
    console.error(`bench data: ${name} must be an integer >= ${min}`);
    process.exit(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Header

const bench = await setupBench('bench data', { batch: 8, warmup: 1 });
const { trainer, batch, size, steps, warmup } = bench;
const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU';
console.log(
  `machine: ${availableParallelism()} cores (${cpuModel}), load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} at start; node ${process.version}, casm-ts ${PROJECT_VERSION}, TensorFlow.js ${tf.version_core}, ` +
    `sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}), sharp.concurrency ${sharp.concurrency()}, ` +
    `UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}, ` +
    `TF_NUM_INTRAOP_THREADS ${process.env.TF_NUM_INTRAOP_THREADS ?? '(TF default)'}`,
);

// ---------------------------------------------------------------------------------------------
// 1. The shard set

const SHARD_DIR = join(REPO_ROOT, 'data', 'cache', 'bench-shards');
/** Bump when the generator changes, so an old cache is regenerated. */
const GENERATOR_VERSION = 2;
const QUALITY = 90;

interface Manifest {
  generator: number;
  images: number;
  shards: number;
  quality: number;
  sharp: string;
  files: string[];
  /** Bytes of each image's JPEG, in key order. */
  jpegBytes: number[];
  sizes: Record<string, number>;
  seconds: number;
}

const shardName = (i: number) => `shard-${String(i).padStart(5, '0')}.tar`;
const shardSpec = join(SHARD_DIR, `shard-{${'0'.repeat(5)}..${String(shardCount - 1).padStart(5, '0')}}.tar`);

/** Image k's size: 45% 500x375, 35% 375x500, 20% 800x600 or 600x800 (ImageNet's usual shapes). */
function imageSize(rng: Rng): [number, number] {
  const r = rng.next();
  if (r < 0.45) return [500, 375];
  if (r < 0.8) return [375, 500];
  return rng.next() < 0.5 ? [800, 600] : [600, 800];
}

/** Value noise: a (gw+1) x (gh+1) grid of uniform [-1, 1) values, bilinear over w x h pixels. */
function valueNoise(rng: Rng, w: number, h: number, cell: number): Float32Array {
  const gw = Math.ceil(w / cell) + 1;
  const gh = Math.ceil(h / cell) + 1;
  const grid = Float32Array.from({ length: gw * gh }, () => 2 * rng.next() - 1);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    const fy = y / cell;
    const y0 = Math.floor(fy);
    const ty = fy - y0;
    for (let x = 0; x < w; x++) {
      const fx = x / cell;
      const x0 = Math.floor(fx);
      const tx = fx - x0;
      const i = y0 * gw + x0;
      const a = grid[i]! + (grid[i + 1]! - grid[i]!) * tx;
      const b = grid[i + gw]! + (grid[i + gw + 1]! - grid[i + gw]!) * tx;
      out[y * w + x] = a + (b - a) * ty;
    }
  }
  return out;
}

/** Bilinear sample of a 28x28 MNIST digit at (u, v) in digit pixels; 0 outside. */
function digitAt(img: Uint8Array, off: number, u: number, v: number): number {
  const S = MNIST_SIDE;
  const x0 = Math.floor(u);
  const y0 = Math.floor(v);
  const tx = u - x0;
  const ty = v - y0;
  const px = (x: number, y: number) => (x < 0 || y < 0 || x >= S || y >= S ? 0 : img[off + y * S + x]!);
  const a = px(x0, y0) + (px(x0 + 1, y0) - px(x0, y0)) * tx;
  const b = px(x0, y0 + 1) + (px(x0 + 1, y0 + 1) - px(x0, y0 + 1)) * tx;
  return (a + (b - a) * ty) / 255;
}

/**
 * One synthetic photo: a coloured background of value noise at three scales (colour blobs,
 * luminance texture), 3-7 MNIST digits of random size, colour and position pasted on it, and
 * film grain over everything. Label: the largest digit's class.
 */
function synthImage(k: number, mnist: MnistData): { rgb: Uint8Array; width: number; height: number; label: number } {
  const rng = new Rng(seedFrom('bench-shards', k));
  const [w, h] = imageSize(rng);
  const base = [40 + 175 * rng.next(), 40 + 175 * rng.next(), 40 + 175 * rng.next()];
  const colour = [0, 1, 2].map(() => valueNoise(rng, w, h, 96));
  const mid = valueNoise(rng, w, h, 24);
  const fine = valueNoise(rng, w, h, 5);
  const rgb = new Float32Array(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const lum = 40 * mid[i]! + 45 * fine[i]!;
    for (let c = 0; c < 3; c++) rgb[3 * i + c] = base[c]! + 55 * colour[c]![i]! + lum;
  }
  const digits = 3 + rng.int(5);
  let label = 0;
  let largest = -1;
  for (let d = 0; d < digits; d++) {
    const idx = rng.int(mnist.n);
    const side = Math.round(Math.min(w, h) * (0.15 + 0.5 * rng.next()));
    const ox = rng.int(w - side + 1);
    const oy = rng.int(h - side + 1);
    const ink = [255 * rng.next(), 255 * rng.next(), 255 * rng.next()];
    const off = idx * MNIST_SIDE * MNIST_SIDE;
    const scale = MNIST_SIDE / side;
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const a = digitAt(mnist.images, off, (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5);
        if (a <= 0) continue;
        const i = 3 * ((oy + y) * w + ox + x);
        for (let c = 0; c < 3; c++) rgb[i + c] = rgb[i + c]! * (1 - a) + ink[c]! * a;
      }
    }
    if (side > largest) {
      largest = side;
      label = mnist.labels[idx]!;
    }
  }
  const out = new Uint8Array(w * h * 3);
  for (let i = 0; i < out.length; i++) {
    const v = rgb[i]! + 34 * (rng.next() - 0.5) * 2;
    out[i] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
  }
  return { rgb: out, width: w, height: h, label };
}

function readManifest(): Manifest | null {
  try {
    const m = JSON.parse(readFileSync(join(SHARD_DIR, 'manifest.json'), 'utf8')) as Manifest;
    const ok =
      m.generator === GENERATOR_VERSION &&
      m.images === imageCount &&
      m.shards === shardCount &&
      m.quality === QUALITY &&
      m.files.length === shardCount &&
      m.files.every((f) => existsSync(join(SHARD_DIR, f)));
    return ok ? m : null;
  } catch {
    return null;
  }
}

async function makeShards(): Promise<Manifest> {
  const t0 = performance.now();
  rmSync(SHARD_DIR, { recursive: true, force: true });
  mkdirSync(SHARD_DIR, { recursive: true });
  const mnist = loadMnist('train');
  const files: string[] = [];
  const jpegBytes: number[] = [];
  const sizes: Record<string, number> = {};
  const per = Math.ceil(imageCount / shardCount);
  for (let s = 0; s < shardCount; s++) {
    const entries: TarEntry[] = [];
    for (let k = s * per; k < Math.min(imageCount, (s + 1) * per); k++) {
      const img = synthImage(k, mnist);
      const jpeg = await sharp(img.rgb, { raw: { width: img.width, height: img.height, channels: 3 } })
        .jpeg({ quality: QUALITY })
        .toBuffer();
      jpegBytes.push(jpeg.length);
      sizes[`${img.width}x${img.height}`] = (sizes[`${img.width}x${img.height}`] ?? 0) + 1;
      entries.push(...webDatasetEntries(`img${String(k).padStart(6, '0')}`, new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.length), img.label));
    }
    writeTar(join(SHARD_DIR, shardName(s)), entries);
    files.push(shardName(s));
  }
  const m: Manifest = {
    generator: GENERATOR_VERSION,
    images: imageCount,
    shards: shardCount,
    quality: QUALITY,
    sharp: sharp.versions.sharp,
    files,
    jpegBytes,
    sizes,
    seconds: (performance.now() - t0) / 1000,
  };
  writeFileSync(join(SHARD_DIR, 'manifest.json'), JSON.stringify(m, null, 1) + '\n');
  return m;
}

let manifest = opt.regenerate ? null : readManifest();
const cached = manifest !== null;
manifest ??= await makeShards();
{
  const kb = manifest.jpegBytes.map((b) => b / 1024);
  const mean = kb.reduce((a, b) => a + b, 0) / kb.length;
  const onDisk = manifest.files.reduce((a, f) => a + statSync(join(SHARD_DIR, f)).size, 0);
  console.log(
    `\n1. shards: ${manifest.images} JPEGs (q${manifest.quality}; ${Object.entries(manifest.sizes)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([s, n]) => `${n} x ${s}`)
      .join(', ')}) in ${manifest.shards} WebDataset tar shards, ${(onDisk / 2 ** 20).toFixed(1)} MiB, ` +
      `${cached ? 'cached' : `made in ${manifest.seconds.toFixed(1)} s`} (${SHARD_DIR})`,
  );
  console.log(
    `   JPEG size: mean ${mean.toFixed(1)} KB, min ${Math.min(...kb).toFixed(1)} KB, max ${Math.max(...kb).toFixed(1)} KB ` +
      `(synthetic: MNIST digits on textured coloured backgrounds, film grain)`,
  );
}
const dataset: Dataset = openDataset(shardSpec);

// ---------------------------------------------------------------------------------------------
// 2. Decode + augment throughput, nothing else running

const loaderOptions = (workers: number) => ({
  workers,
  batchSize: batch,
  preprocess: 'train' as const,
  size,
  seed: 0,
  shuffleBuffer,
  prefetchBatches: prefetch,
});

/** Images of one full pass (epoch), the last partial batch included. */
async function pass(loader: DataLoader, epoch: number): Promise<number> {
  let n = 0;
  for await (const b of loader.batches(epoch, { dropLast: false })) n += b.n;
  return n;
}

interface DecodeResult {
  workers: number;
  rate: number;
  perPass: number[];
  /** Process CPU time / wall time over the timed passes: cores kept busy. */
  cores: number;
  /** Event-loop utilisation of the main thread over the timed passes. */
  mainBusy: number;
}

async function decodeRate(workers: number): Promise<DecodeResult> {
  const loader = new DataLoader(dataset, loaderOptions(workers));
  try {
    const warm = await pass(loader, 0);
    if (warm !== manifest!.images) throw new Error(`warm-up pass gave ${warm} of ${manifest!.images} images`);
    const perPass: number[] = [];
    const cpu0 = process.cpuUsage();
    const elu0 = perf.eventLoopUtilization();
    const t0 = performance.now();
    let images = 0;
    for (let p = 1; p <= passes; p++) {
      const tp = performance.now();
      const n = await pass(loader, p);
      perPass.push((1000 * n) / (performance.now() - tp));
      images += n;
    }
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const elu = perf.eventLoopUtilization(elu0);
    if (loader.problems.count > 0) throw new Error(`${loader.problems.count} data problems: ${loader.problems.list[0]?.message}`);
    return { workers, rate: (1000 * images) / wall, perPass, cores: (cpu.user + cpu.system) / 1000 / wall, mainBusy: elu.utilization };
  } finally {
    await loader.close();
  }
}

console.log(
  `\n2. decode + augment (RandomResizedCrop ${size} + flip + normalise, preprocess 'train') through the DataLoader, ` +
    `batch ${batch}, shuffle buffer ${shuffleBuffer}, prefetch ${prefetch} batches: 1 warm-up + ${passes} timed passes over the ${manifest.images} images, no training running`,
);
const decoded: DecodeResult[] = [];
for (const w of workerCounts) {
  const r = await decodeRate(w);
  decoded.push(r);
  console.log(
    `   workers ${w}${w === 0 ? ' (main thread)' : ''}: ${r.rate.toFixed(1)} img/s ` +
      `(passes: ${r.perPass.map((x) => x.toFixed(1)).join(', ')} img/s; ${r.cores.toFixed(2)} cores busy, main thread ${(100 * r.mainBusy).toFixed(0)}% busy)`,
  );
}

// ---------------------------------------------------------------------------------------------
// 3. The training step's consumption rate, fed a real decoded batch

async function oneBatch(): Promise<HostBatch> {
  const loader = new DataLoader(dataset, loaderOptions(0));
  try {
    for await (const b of loader.batches(0, { limit: batch })) return b;
    throw new Error('no batch');
  } finally {
    await loader.close();
  }
}

const host = await oneBatch();
const x = tf.tensor4d(host.x, [host.n, size, size, 3]);
const y = tf.tensor1d(host.labels, 'int32');
// Warm-up first (the first iteration creates the pool and the optimisers' slots), then count
// tensors around the timed calls: a leak shows as a changed count.
const trainStep = () => void trainer.iteration(x, y);
for (let i = 0; i < warmup; i++) trainStep();
const tensorsBefore = tf.memory().numTensors;
// One call at a time, so the spread of single iterations is visible (their mean is measure's figure).
const trainCalls = Array.from({ length: steps }, () => measure(trainStep, 0, 1));
const trainMs = trainCalls.reduce((a, b) => a + b, 0) / steps;
const leaked = tf.memory().numTensors - tensorsBefore;
tf.dispose([x, y]);
const trainRate = (1000 * batch) / trainMs;
console.log(
  `\n3. training: one CASM iteration (thinning L100, entropy score) of ResNet depths [${bench.arch.depths}] width ${bench.arch.width} at ${size}px, ` +
    `batch ${batch}: ${trainRate.toFixed(2)} img/s (${trainMs.toFixed(0)} ms/iteration; ${warmup} warm-up + ${steps} timed: ` +
    `${trainCalls.map((ms) => ms.toFixed(0)).join(', ')} ms)` +
    (leaked !== 0 ? `  [tensor count changed by ${leaked}]` : ''),
);

// 4a. The table
const cell = (s: string, n: number) => s.padStart(n);
console.log(`\n   ${cell('workers', 16)} ${cell('decode img/s', 13)} ${cell('training img/s', 15)} ${cell('decode/training', 16)}`);
for (const r of decoded) {
  const label = `${r.workers}${r.workers === 0 ? ' (main thread)' : ''}${r.workers === defaultWorkers ? ' *' : ''}`;
  console.log(`   ${cell(label, 16)} ${cell(r.rate.toFixed(1), 13)} ${cell(trainRate.toFixed(2), 15)} ${cell(`${(r.rate / trainRate).toFixed(1)}x`, 16)}`);
}
const atDefault = decoded.find((r) => r.workers === defaultWorkers);
console.log(`   * casm train's default --workers here (min(4, cores) = ${defaultWorkers})`);
if (atDefault) {
  console.log(
    `   decoding outpaces training: ${atDefault.rate > trainRate ? 'yes' : 'NO'} ` +
      `(${defaultWorkers} workers: ${atDefault.rate.toFixed(1)} img/s decoded vs ${trainRate.toFixed(2)} img/s trained, ratio ${(atDefault.rate / trainRate).toFixed(1)}; each measured alone)`,
  );
} else {
  console.log(`   decoding outpaces training: (not measured: --workers does not include the default ${defaultWorkers})`);
}

// ---------------------------------------------------------------------------------------------
// 4. Both at once: CASM iterations fed by the DataLoader

console.log(
  `\n4. together: ${fedSteps} CASM iterations fed by the DataLoader (workers ${defaultWorkers}, prefetch ${prefetch} batches), ` +
    `decoding and training sharing the ${availableParallelism()} cores`,
);
const fed = new DataLoader(dataset, loaderOptions(defaultWorkers));
const rows: { wait: number; iter: number; step: number }[] = [];
try {
  const it = fed.batches(0, { limit: fedSteps * batch });
  for (let s = 0; s < fedSteps; s++) {
    const t0 = performance.now();
    const r = await it.next();
    if (r.done) throw new Error(`the shard set ran out after ${s} batches`);
    const b = r.value;
    const bx = tf.tensor4d(b.x, [b.n, b.size, b.size, 3]);
    const by = tf.tensor1d(b.labels, 'int32');
    const t1 = performance.now();
    trainer.iteration(bx, by);
    const t2 = performance.now();
    tf.dispose([bx, by]);
    rows.push({ wait: b.waitMs, iter: t2 - t1, step: t2 - t0 });
    console.log(
      `   step ${s + 1}: waited ${b.waitMs.toFixed(0).padStart(6)} ms for data, iteration ${(t2 - t1).toFixed(0).padStart(6)} ms, ` +
        `step ${(t2 - t0).toFixed(0).padStart(6)} ms (${((100 * b.waitMs) / (t2 - t0)).toFixed(1)}% waiting)` +
        (s === 0 ? '  <- includes starting the workers and filling the pipeline' : ''),
    );
  }
  await it.return(undefined);
} finally {
  await fed.close();
}
const sum = (f: (r: (typeof rows)[number]) => number, rs = rows) => rs.reduce((a, r) => a + f(r), 0);
const summarise = (rs: typeof rows, what: string) => {
  const wait = sum((r) => r.wait, rs);
  const step = sum((r) => r.step, rs);
  const iter = sum((r) => r.iter, rs) / rs.length;
  console.log(
    `   ${what}: data wait mean ${(wait / rs.length).toFixed(0)} ms, max ${Math.max(...rs.map((r) => r.wait)).toFixed(0)} ms per step = ` +
      `${((100 * wait) / step).toFixed(1)}% of the step time; iteration ${iter.toFixed(0)} ms vs ${trainMs.toFixed(0)} ms alone ` +
      `(${iter >= trainMs ? '+' : ''}${((100 * (iter - trainMs)) / trainMs).toFixed(1)}%); ` +
      `${((1000 * batch * rs.length) / step).toFixed(2)} img/s trained end to end`,
  );
};
summarise(rows, `all ${rows.length} steps`);
if (rows.length > 1) summarise(rows.slice(1), `steps 2-${rows.length} (pipeline running)`);
{
  const all = [...trainCalls, ...rows.map((r) => r.iter)];
  console.log(
    `   (single iterations, alone and fed, ranged ${Math.min(...all).toFixed(0)}-${Math.max(...all).toFixed(0)} ms: ` +
      `a fed/alone difference inside that range is run-to-run noise, not contention)`,
  );
}
console.log(
  `\nload average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} at the end (this process included; other busy processes would distort every figure above)`,
);
