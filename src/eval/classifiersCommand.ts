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
 * top1.png (grouped bars) and examples.png (clean | masked-in | masked-out | inpainted).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CasmTrainer } from '../casm/trainer.js';
import { loadCheckpoint, readCheckpointState, resolveCheckpoint } from '../checkpoints/checkpoint.js';
import { denormalize, normalize } from '../data/normalize.js';
import { Classifier } from '../explain/classifier.js';
import { imagesToRgb, png, tile } from '../explain/display.js';
import { readLayersModel } from '../export/exportMasker.js';
import { Progress } from '../log/progress.js';
import { openEvalData, type EvalDataOptions } from './evalData.js';
import { barChartPng } from './figures.js';
import { DEFAULT_RADIUS, inpaintTelea } from './inpaint.js';
import { binarize, binarizeTopK, type Binarization } from './localization.js';
import { buildMethods, EvalUsageError, loadModels } from './methods.js';
import { markdownTable, provenance, writeReport, type Provenance } from './report.js';

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
  problems: { count: number; byKind: Record<string, number>; first: string[] };
  /** Per classifier (name = its path; the checkpoint's own is 'own'): accuracy per condition. */
  classifiers: { name: string; source: string; results: Record<Condition, Accuracy> }[];
  seconds: number;
}

interface Scored {
  name: string;
  source: string;
  classifier: Classifier;
  dispose(): void;
  hits: Record<Condition, { top1: number; top5: number }>;
}

async function loadClassifier(path: string, size: number): Promise<Omit<Scored, 'name' | 'hits'>> {
  if (!existsSync(path)) throw new EvalUsageError(`--classifiers ${path}: no such file or directory`);
  let classifier: Classifier;
  let dispose: () => void;
  if (existsSync(join(path, 'model.json'))) {
    const model = await readLayersModel(path);
    classifier = new Classifier(model);
    dispose = () => model.dispose();
  } else {
    const dir = resolveCheckpoint(path);
    const trainer = new CasmTrainer(readCheckpointState(dir).config);
    await loadCheckpoint(dir, trainer);
    classifier = new Classifier(trainer.classifier);
    dispose = () => trainer.dispose();
  }
  const [h, w, c] = classifier.inputShape;
  if (h !== size || w !== size || c !== 3) {
    dispose();
    throw new EvalUsageError(`--classifiers ${path}: input ${h}x${w}x${c}, the masks are ${size}x${size}x3`);
  }
  return { source: path, classifier, dispose };
}

const noHits = () => Object.fromEntries(CONDITIONS.map((c) => [c, { top1: 0, top5: 0 }])) as Scored['hits'];

export async function evalClassifiers(o: ClassifiersOptions): Promise<ClassifiersReport> {
  const t0 = performance.now();
  const models = await loadModels(o.checkpoint, o.model);
  const trainer = models.trainer!;
  const scored: Scored[] = [{ name: 'own', source: models.checkpoint!.dir, classifier: new Classifier(trainer.classifier), dispose: () => {}, hits: noHits() }];
  const data = await openEvalData({ ...o.data, size: models.size, onProblem: (p) => o.log(`data: ${p.file}@${p.offset}: ${p.kind}: ${p.message}`) });
  try {
    for (const path of o.classifiers) scored.push({ name: path, ...(await loadClassifier(path, models.size)), hits: noHits() });
    const [casm] = buildMethods(['casm'], models, { samples: 1, spread: 0, magnitude: false, seed: 0 });
    o.log(
      `eval classifiers: ${data.describe}; masks of ${models.exported?.dir ?? models.checkpoint!.dir}; ` +
        `classifiers: own${o.classifiers.map((c) => `, ${c}`).join('')}; inpainting: Telea, radius ${o.radius}`,
    );
    const size = models.size;
    const hw = size * size;
    const progress = new Progress(Math.ceil(data.total / o.data.batchSize), 0, o.data.batchSize);
    const exampleRows: Uint8Array[][] = [];
    let n = 0;
    let batchNo = 0;
    for await (const b of data.batches()) {
      const x = tf.tensor4d(b.x, [b.n, size, size, 3]);
      const labels = tf.tensor1d(b.labels, 'int32');
      const masks = casm!.masks(x, b.labels);
      const m = tf.tensor4d(masks, [b.n, size, size, 1]);
      // Telea fills the binarised mask's pixels from the rest of the image (bytes in, bytes out).
      const pictures = tf.tidy(() => imagesToRgb(denormalize(x)));
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
          const bytes = new Int32Array(b.n * hw * 3);
          filled.forEach((f, i) => bytes.set(f, i * hw * 3));
          return normalize(tf.tensor4d(bytes, [b.n, size, size, 3]).toFloat().div(255));
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
        for (let i = 0; i < b.n && exampleRows.length < o.examples; i++) {
          const views = tf.tidy(() => CONDITIONS.slice(1, 3).map((c) => imagesToRgb(denormalize(images[c].slice([i], [1])))[0]!));
          exampleRows.push([pictures[i]!, ...views, filled[i]!]);
        }
      } finally {
        tf.dispose([x, labels, m, images['masked-in'], images['masked-out'], images.inpainted]);
      }
      n += b.n;
      progress.tick();
      if (++batchNo % 10 === 0) o.log(progress.line(batchNo, `${n} images`));
    }
    if (n === 0) throw new Error(`${o.data.spec}: the validation set is empty (no image could be read)`);
    const problems = data.problems;
    const report: ClassifiersReport = {
      provenance: provenance(o.argv),
      checkpoint: {
        dir: models.checkpoint!.dir,
        step: models.checkpoint!.state.step,
        thinning: models.checkpoint!.state.config.thinning,
        score: models.checkpoint!.state.config.score,
      },
      model: models.exported?.dir ?? null,
      data: { spec: o.data.spec, describe: data.describe },
      inpainting: {
        method: "Telea's fast marching (OpenCV 5.0.0 cv.inpaint, INPAINT_TELEA, WebAssembly build @opencvjs/web)",
        radius: o.radius,
        region: o.binarization === 'mean' ? `mask >= ${o.alpha} * mean(mask)` : 'top round(mean(m) N) pixels',
      },
      images: n,
      problems: { count: problems?.count ?? 0, byKind: { ...(problems?.byKind ?? {}) }, first: (problems?.format() ?? []).slice(0, 20) },
      classifiers: scored.map((s) => ({
        name: s.name,
        source: s.source,
        results: Object.fromEntries(CONDITIONS.map((c) => [c, { top1: s.hits[c].top1 / n, top5: s.hits[c].top5 / n }])) as Record<Condition, Accuracy>,
      })),
      seconds: (performance.now() - t0) / 1000,
    };
    const chart = await barChartPng({
      title: `Top-1 accuracy (${n} images)`,
      yLabel: 'top-1',
      categories: [...CONDITIONS],
      series: report.classifiers.map((c) => ({ name: c.name, values: CONDITIONS.map((k) => c.results[k].top1) })),
      yMax: 1,
    });
    const figures: Record<string, Buffer> = { 'top1.png': chart };
    if (exampleRows.length > 0) {
      const grid = tile(exampleRows, size, size);
      figures['examples.png'] = await png(grid.rgb, grid.width, grid.height);
    }
    writeReport(o.out, report, classifiersMarkdown(report), figures);
    o.log(`eval classifiers: ${n} images in ${report.seconds.toFixed(1)} s -> ${o.out}/report.{json,md}, top1.png, examples.png`);
    o.log(classifiersTable(report).trimEnd());
    return report;
  } finally {
    await data.close();
    for (const s of scored) s.dispose();
    models.dispose();
  }
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
    `- command: \`${r.provenance.command}\``,
    `- casm-ts ${r.provenance.projectVersion}, tfjs ${r.provenance.tfjsVersion} (${r.provenance.backend}), ${r.provenance.date}`,
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
