/**
 * `casm eval classifiers`: how well classifiers recognise images when CASM's mask keeps or hides
 * the evidence (spec section 4, "classification by other classifiers"). For each classifier,
 * top-1 and top-5 on four versions of every validation image:
 *   clean         x
 *   masked-in     m * x
 *   masked-out    (1 - m) * x
 *   inpainted     the pixels of the binarised mask (the box rule's b) filled by Telea's method
 *                 (OpenCV, src/eval/inpaint.ts) from the rest of the image
 * A mask that hides all the class evidence drives masked-out and inpainted accuracy down for
 * every classifier, not only for the one it was trained against. Writes report.json, report.md,
 * top1.png (grouped bars) and examples.png (clean | masked-in | masked-out | inpainted). With
 * --num-shards n, a job scores its share of the batches (hit counts: integers, so `casm eval
 * merge` of the shares gives one process's figures exactly).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadCasmModel } from '../checkpoints/checkpoint.js';
import { denormalize } from '../data/normalize.js';
import { normalizeBytes } from '../data/preprocess.js';
import { Classifier } from '../explain/classifier.js';
import { imagesToRgb, pixelsToRgb, png, tile } from '../explain/display.js';
import { readLayersModel } from '../export/exportMasker.js';
import { Progress } from '../log/progress.js';
import { openEvalData, type EvalDataOptions } from './evalData.js';
import { barChartPng } from './figures.js';
import { inpaintTelea } from './inpaint.js';
import { binarize, binarizeTopK, type Binarization } from '../boxes.js';
import { buildMethods, loadModels } from './methods.js';
import { markdownTable, provenance, provenanceLines, writeReport, type Provenance } from './report.js';
import {
  checkShard,
  firstExamples,
  problemsRecord,
  readShares,
  SHARE_FILE,
  writeShare,
  type ExampleCodec,
  type ProblemsRecord,
  type ShareCommon,
  type Shard,
} from './shares.js';
import { sha256File } from '../util/sha256.js';
import { UsageError } from '../util/usageError.js';

export const CONDITIONS = ['clean', 'masked-in', 'masked-out', 'inpainted'] as const;
export type Condition = (typeof CONDITIONS)[number];

export interface ClassifiersOptions {
  /** The CASM run whose masker makes the masks; its own classifier is scored first. */
  checkpoint: string;
  /** An exported mask network to use instead of the checkpoint's masker. */
  model?: string;
  /** Other classifiers: CASM checkpoints (their classifier) or tfjs LayersModel directories (logits last, normalised NHWC input). */
  classifiers: string[];
  data: Omit<EvalDataOptions, 'size' | 'onProblem'>;
  /** Which pixels are inpainted: the binarisation of the box rule. */
  binarization: Binarization;
  alpha: number;
  radius: number;
  examples: number;
  out: string;
  argv: string[];
  log: (line: string) => void;
}

export interface Accuracy {
  top1: number;
  top5: number;
}

export interface ClassifiersReport {
  provenance: Provenance;
  checkpoint: { dir: string; step: number; thinning: string; score: string };
  model: string | null;
  data: { spec: string; describe: string };
  inpainting: { method: string; radius: number; region: string };
  images: number;
  problems: ProblemsRecord;
  /** Per classifier (name = its path; the checkpoint's own is 'own'): accuracy per condition. */
  classifiers: { name: string; source: string; results: Record<Condition, Accuracy> }[];
  /** Jobs the images were scored in (`casm eval merge` of that many shards; 1: one process). */
  shards: number;
  /** Seconds of scoring, summed over the shards. */
  seconds: number;
}

/** Images of a classifier right at top-1 and top-5, per condition: counts, which shares add exactly. */
type Hits = Record<Condition, { top1: number; top5: number }>;

/** What the shares of one evaluation must have in common. */
export interface ClassifiersSetup {
  checkpoint: ClassifiersReport['checkpoint'];
  /** sha256 of the weight files of the masks' checkpoint and of every classifier. */
  checkpointFiles: Record<string, string>;
  classifiers: { name: string; source: string; files: Record<string, string> }[];
  model: string | null;
  data: ClassifiersReport['data'] & { total: number; batchSize: number; limit: number | null };
  inpainting: ClassifiersReport['inpainting'];
  size: number;
  examples: number;
}

/** An example row: clean | masked-in | masked-out | inpainted, size x size RGB bytes each. */
interface ExampleViews {
  views: Uint8Array[];
}

export interface ClassifiersShare extends ShareCommon<ClassifiersSetup, ExampleViews> {
  /** Images scored in this share. */
  scored: number;
  /** One per classifier of `setup.classifiers`. */
  hits: Hits[];
}

const exampleCodec: ExampleCodec<ExampleViews> = {
  pixels: (e) => e.views.map((v, j) => ({ name: `view/${j}`, shape: [v.length], data: Float32Array.from(v) })),
  meta: (e) => ({ views: e.views.length }),
  restore: (meta, values) => ({ views: Array.from({ length: (meta as { views: number }).views }, (_, j) => Uint8Array.from(values(`view/${j}`))) }),
};

interface Loaded {
  classifier: Classifier;
  files: Record<string, string>;
  dispose(): void;
}

async function loadClassifier(path: string, size: number): Promise<Loaded> {
  if (!existsSync(path)) throw new UsageError(`--classifiers ${path}: no such file or directory`);
  let loaded: Loaded;
  if (existsSync(join(path, 'model.json'))) {
    const model = await readLayersModel(path);
    const files = readdirSync(path)
      .filter((f) => statSync(join(path, f)).isFile())
      .sort();
    loaded = { classifier: new Classifier(model), files: Object.fromEntries(files.map((f) => [f, sha256File(join(path, f))])), dispose: () => model.dispose() };
  } else {
    const { model, state } = loadCasmModel(path);
    loaded = { classifier: new Classifier(model.classifier), files: state.files, dispose: () => model.dispose() };
  }
  const [h, w, c] = loaded.classifier.inputShape;
  if (h !== size || w !== size || c !== 3) {
    loaded.dispose();
    throw new UsageError(`--classifiers ${path}: input ${h}x${w}x${c}, the masks are ${size}x${size}x3`);
  }
  return loaded;
}

const noHits = () => Object.fromEntries(CONDITIONS.map((c) => [c, { top1: 0, top5: 0 }])) as Hits;

export async function evalClassifiers(o: ClassifiersOptions): Promise<ClassifiersReport> {
  const share = await scoreClassifiers(o, { index: 0, count: 1 });
  const { report, examples } = buildClassifiersReport([share], share.provenance);
  await writeClassifiersReport(o.out, report, examples, share.setup.size, o.log);
  return report;
}

/** One job of a sharded evaluation: scores its share of the batches and writes it to `o.out` for `casm eval merge`. */
export async function evalClassifiersShard(o: ClassifiersOptions, shard: Shard): Promise<ClassifiersShare> {
  const share = await scoreClassifiers(o, shard);
  writeShare(o.out, 'classifiers', share, exampleCodec);
  o.log(
    `eval classifiers: shard ${shard.index} of ${shard.count}: ${share.scored} images scored in ${share.seconds.toFixed(1)} s -> ${o.out}/${SHARE_FILE}; ` +
      `'casm eval merge' of all ${shard.count} shards writes the report`,
  );
  return share;
}

/** `casm eval merge` of classifiers shares: the report an unsharded run writes. */
export async function mergeClassifiers(dirs: string[], out: string, argv: string[], log: (line: string) => void): Promise<ClassifiersReport> {
  const shares = readShares<ExampleViews, ClassifiersShare>(dirs, 'classifiers', exampleCodec);
  log(`eval merge: ${shares.length} shards, ${shares.reduce((n, s) => n + s.scored, 0)} scored images of ${shares[0]!.read} read`);
  const { report, examples } = buildClassifiersReport(shares, provenance(argv, shares[0]!.provenance));
  await writeClassifiersReport(out, report, examples, shares[0]!.setup.size, log);
  return report;
}

/** Scores the images of one shard (`{ index: 0, count: 1 }`: all of them). */
async function scoreClassifiers(o: ClassifiersOptions, shard: Shard): Promise<ClassifiersShare> {
  const t0 = performance.now();
  checkShard(shard);
  const models = await loadModels(o.checkpoint, o.model);
  const own = { classifier: new Classifier(models.casm!.classifier), files: models.checkpoint!.state.files, dispose: () => {} };
  const scored: (Loaded & { name: string; source: string; hits: Hits })[] = [{ name: 'own', source: models.checkpoint!.dir, ...own, hits: noHits() }];
  const data = await openEvalData({ ...o.data, size: models.size, onProblem: (p) => o.log(`data: ${p.file}@${p.offset}: ${p.kind}: ${p.message}`) });
  try {
    for (const path of o.classifiers) scored.push({ name: path, source: path, ...(await loadClassifier(path, models.size)), hits: noHits() });
    const [casm] = buildMethods(['casm'], models, { samples: 1, spread: 0, magnitude: false, seed: 0 });
    o.log(
      `eval classifiers: ${data.describe}; masks of ${models.exported?.dir ?? models.checkpoint!.dir}; ` +
        `classifiers: own${o.classifiers.map((c) => `, ${c}`).join('')}; inpainting: Telea, radius ${o.radius}` +
        (shard.count > 1 ? `; shard ${shard.index} of ${shard.count}: the batches b with b mod ${shard.count} = ${shard.index}` : ''),
    );
    const size = models.size;
    const hw = size * size;
    const batches = Math.ceil(data.total / o.data.batchSize);
    const progress = new Progress(Math.ceil((batches - shard.index) / shard.count), 0, o.data.batchSize);
    const examples: ClassifiersShare['examples'] = [];
    let n = 0;
    let read = 0;
    let batchNo = 0;
    let mine = 0;
    for await (const b of data.batches()) {
      const first = read;
      read += b.n;
      if (batchNo++ % shard.count !== shard.index) continue;
      const x = tf.tensor4d(b.x, [b.n, size, size, 3]);
      const labels = tf.tensor1d(b.labels, 'int32');
      const masks = casm!.masks({ x, pixels: b.pixels }, b.labels);
      const m = tf.tensor4d(masks, [b.n, size, size, 1]);
      // Telea fills the binarised mask's pixels from the rest of the image (bytes in, bytes out).
      const pictures = pixelsToRgb(b.pixels, b.n, 3);
      const filled = await Promise.all(
        pictures.map((rgb, i) => {
          const mask = masks.subarray(i * hw, (i + 1) * hw);
          return inpaintTelea(rgb, o.binarization === 'mean' ? binarize(mask, o.alpha) : binarizeTopK(mask), size, size, o.radius);
        }),
      );
      const images: Record<Condition, tf.Tensor4D> = {
        clean: x,
        'masked-in': tf.mul(m, x),
        'masked-out': tf.tidy(() => tf.mul(tf.sub(1, m), x)),
        inpainted: tf.tidy(() => {
          const bytes = new Uint8Array(b.n * hw * 3);
          filled.forEach((f, i) => bytes.set(f, i * hw * 3));
          return tf.tensor4d(normalizeBytes(bytes, 3), [b.n, size, size, 3]);
        }),
      };
      try {
        for (const s of scored) {
          for (const c of CONDITIONS) {
            const [top1, top5] = tf.tidy(() => {
              const logits = s.classifier.logitsOf(images[c]);
              const k = Math.min(5, s.classifier.classes);
              const inTopK = tf.any(tf.equal(tf.topk(logits, k).indices, labels.expandDims(1)), 1);
              const first = tf.equal(tf.argMax(logits, 1), labels);
              return [tf.sum(tf.cast(first, 'int32')), tf.sum(tf.cast(inTopK, 'int32'))];
            });
            s.hits[c].top1 += top1!.dataSync()[0]!;
            s.hits[c].top5 += top5!.dataSync()[0]!;
            tf.dispose([top1!, top5!]);
          }
        }
        for (let i = 0; i < b.n && examples.length < o.examples; i++) {
          const views = tf.tidy(() => CONDITIONS.slice(1, 3).map((c) => imagesToRgb(denormalize(images[c].slice([i], [1])))[0]!));
          examples.push({ index: first + i, views: [pictures[i]!, ...views, filled[i]!] });
        }
      } finally {
        tf.dispose([x, labels, m, images['masked-in'], images['masked-out'], images.inpainted]);
      }
      n += b.n;
      progress.tick();
      if (++mine % 10 === 0) o.log(progress.line(mine, `${read} images read, ${n} scored`));
    }
    if (read === 0) throw new Error(`${o.data.spec}: the validation set is empty (no image could be read)`);
    const checkpoint = models.checkpoint!;
    return {
      shard,
      setup: {
        checkpoint: { dir: checkpoint.dir, step: checkpoint.state.step, thinning: checkpoint.state.config.thinning, score: checkpoint.state.config.score },
        checkpointFiles: checkpoint.state.files,
        classifiers: scored.map((s) => ({ name: s.name, source: s.source, files: s.files })),
        model: models.exported?.dir ?? null,
        data: { spec: o.data.spec, describe: data.describe, total: data.total, batchSize: o.data.batchSize, limit: o.data.limit ?? null },
        inpainting: {
          method: "Telea's fast marching (OpenCV 5.0.0 cv.inpaint, INPAINT_TELEA, WebAssembly build @opencvjs/web)",
          radius: o.radius,
          region: o.binarization === 'mean' ? `mask >= ${o.alpha} * mean(mask)` : 'top round(mean(m) N) pixels',
        },
        size,
        examples: o.examples,
      },
      provenance: provenance(o.argv),
      read,
      problems: problemsRecord(data.problems),
      examples,
      scored: n,
      hits: scored.map((s) => s.hits),
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await data.close();
    for (const s of scored) s.dispose();
    models.dispose();
  }
}

/** The report of the shares of one evaluation (checked to fit together by readShares): hit counts summed, then divided. */
function buildClassifiersReport(shares: ClassifiersShare[], prov: Provenance): { report: ClassifiersReport; examples: Uint8Array[][] } {
  const { setup, problems } = shares[0]!;
  const n = shares.reduce((t, s) => t + s.scored, 0);
  const report: ClassifiersReport = {
    provenance: prov,
    checkpoint: setup.checkpoint,
    model: setup.model,
    data: { spec: setup.data.spec, describe: setup.data.describe },
    inpainting: setup.inpainting,
    images: n,
    problems,
    classifiers: setup.classifiers.map((c, k) => ({
      name: c.name,
      source: c.source,
      results: Object.fromEntries(
        CONDITIONS.map((cond) => {
          const hits = shares.reduce((t, s) => ({ top1: t.top1 + s.hits[k]![cond].top1, top5: t.top5 + s.hits[k]![cond].top5 }), { top1: 0, top5: 0 });
          return [cond, { top1: hits.top1 / n, top5: hits.top5 / n }];
        }),
      ) as Record<Condition, Accuracy>,
    })),
    shards: shares.length,
    seconds: shares.reduce((t, s) => t + s.seconds, 0),
  };
  return { report, examples: firstExamples(shares, setup.examples).map((e) => e.views) };
}

/** report.json, report.md, top1.png and examples.png into `out`. */
async function writeClassifiersReport(
  out: string,
  report: ClassifiersReport,
  examples: Uint8Array[][],
  size: number,
  log: (line: string) => void,
): Promise<void> {
  const chart = await barChartPng({
    title: `Top-1 accuracy (${report.images} images)`,
    yLabel: 'top-1',
    categories: [...CONDITIONS],
    series: report.classifiers.map((c) => ({ name: c.name, values: CONDITIONS.map((k) => c.results[k].top1) })),
    yMax: 1,
  });
  const figures: Record<string, Buffer> = { 'top1.png': chart };
  if (examples.length > 0) {
    const grid = tile(examples, size, size);
    figures['examples.png'] = await png(grid.rgb, grid.width, grid.height);
  }
  writeReport(out, report, classifiersMarkdown(report), figures);
  log(`eval classifiers: ${report.images} images in ${report.seconds.toFixed(1)} s -> ${out}/report.{json,md}, top1.png, examples.png`);
  log(classifiersTable(report).trimEnd());
}

function classifiersTable(r: ClassifiersReport): string {
  return markdownTable(
    ['classifier', ...CONDITIONS.flatMap((c) => [`${c} top-1`, `${c} top-5`])],
    r.classifiers.map((c) => [c.name, ...CONDITIONS.flatMap((k) => [c.results[k].top1, c.results[k].top5])]),
  );
}

function classifiersMarkdown(r: ClassifiersReport): string {
  return [
    '# Classification of masked images (spec section 4)',
    '',
    ...provenanceLines(r.provenance),
    `- masks: ${r.model ?? r.checkpoint.dir} (checkpoint step ${r.checkpoint.step}, thinning ${r.checkpoint.thinning}, score ${r.checkpoint.score})`,
    `- data: ${r.data.describe}; ${r.images} images; ${r.problems.count} data problems`,
    `- inpainting: ${r.inpainting.method}, radius ${r.inpainting.radius}, region ${r.inpainting.region}`,
    '',
    classifiersTable(r),
    '![top-1 per condition and classifier](top1.png)',
    '',
    'Examples: clean | masked-in | masked-out | inpainted.',
    '',
    '![examples](examples.png)',
    '',
  ].join('\n');
}
