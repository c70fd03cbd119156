/**
 * `casm eval localization`: the ImageNet-val localisation protocol (spec section 4) for CASM and
 * the baselines on one pass over the validation images. Per method: LE, OM, F1, F1a and mask
 * statistics; the report carries the command, checkpoint, data and version. Writes into --out:
 *   report.json   everything, machine-readable (per-method figures, counts, problems, provenance)
 *   report.md     the table people read
 *   le.png        localisation error per method (bar chart)
 *   examples.png  image | each method's mask, its box (red) and the ground truth (green)
 */
import * as tf from '@tensorflow/tfjs';
import { denormalize } from '../data/normalize.js';
import type { ExplainerOptions } from '../explain/explainCommand.js';
import { imagesToRgb } from '../explain/display.js';
import { Progress } from '../log/progress.js';
import { openEvalData, type EvalDataOptions } from './evalData.js';
import { barChartPng, exampleGridPng, type ExampleRow } from './figures.js';
import { LocalizationTally, type Binarization, type MethodResult } from './localization.js';
import { buildMethods, loadModels, type EvalMethod } from './methods.js';
import { markdownTable, provenance, writeReport, type Provenance } from './report.js';

export interface LocalizationOptions {
  checkpoint?: string;
  /** An exported mask network (`casm export`): used for 'casm' instead of the checkpoint's masker. */
  model?: string;
  data: Omit<EvalDataOptions, 'size' | 'onProblem'>;
  methods: EvalMethod[];
  binarization: Binarization;
  alpha: number;
  explainer: ExplainerOptions;
  /** Rows of examples.png. */
  examples: number;
  out: string;
  /** The command line (after `casm`), for the report. */
  argv: string[];
  log: (line: string) => void;
}

export interface LocalizationReport {
  provenance: Provenance;
  checkpoint: { dir: string; step: number; thinning: string; score: string } | null;
  model: string | null;
  data: { spec: string; boxes: string | null; describe: string };
  protocol: { preprocess: string; size: number; binarization: Binarization; alpha: number; box: string; hit: string; targets: string };
  images: { read: number; scored: number; withoutBoxes: number };
  /** Top-1 accuracy of the checkpoint's classifier on the scored clean images. */
  classifierTop1: number | null;
  problems: { count: number; byKind: Record<string, number>; first: string[] };
  methods: Record<string, MethodResult>;
  seconds: number;
}

/** Per image: its label and whether each method hit (the unseen-class experiment splits these by class). */
export interface PerImage {
  labels: number[];
  hits: Record<string, boolean[]>;
}

export async function evalLocalization(o: LocalizationOptions): Promise<{ report: LocalizationReport; perImage: PerImage }> {
  const t0 = performance.now();
  const models = await loadModels(o.checkpoint, o.model);
  let printed = 0;
  const data = await openEvalData({
    ...o.data,
    size: models.size,
    onProblem: (p) => {
      if (printed++ < 20) o.log(`data: ${p.file}@${p.offset}: ${p.kind}: ${p.message}`);
    },
  });
  try {
    const methods = buildMethods(o.methods, models, o.explainer);
    const tallies = o.methods.map(() => new LocalizationTally(o.binarization, o.alpha));
    const perImage: PerImage = { labels: [], hits: Object.fromEntries(o.methods.map((m) => [m, []])) };
    const examples: ExampleRow[] = [];
    let read = 0;
    let right = 0;
    const progress = new Progress(Math.ceil(data.total / o.data.batchSize), 0, o.data.batchSize);
    o.log(
      `eval localization: ${data.describe}; methods ${o.methods.join(', ')}; ` +
        `${o.binarization === 'mean' ? `m >= ${o.alpha} * mean(m)` : 'top-k pixels'}, largest 4-connected component, IoU > 0.5` +
        (models.checkpoint ? `; checkpoint ${models.checkpoint.dir} (step ${models.checkpoint.state.step})` : '') +
        (models.exported ? `; casm from ${models.exported.dir}` : ''),
    );
    let batchNo = 0;
    for await (const b of data.batches()) {
      read += b.n;
      const boxed = b.boxes.map((bs, i) => (bs.length > 0 ? i : -1)).filter((i) => i >= 0);
      if (boxed.length > 0) {
        const x = tf.tensor4d(b.x, [b.n, b.size, b.size, 3]);
        try {
          const top1 = models.predict(x);
          const masks = methods.map((m) => m.masks(x, b.labels));
          const hw = b.size * b.size;
          const wantExamples = Math.min(boxed.length, o.examples - examples.length);
          const pictures = wantExamples > 0 ? tf.tidy(() => imagesToRgb(denormalize(x))) : [];
          for (const [k, i] of boxed.entries()) {
            const correct = top1 === null ? null : top1[i] === b.labels[i];
            right += correct ? 1 : 0;
            perImage.labels.push(b.labels[i]!);
            const cells = masks.map((all, j) => {
              const mask = all.subarray(i * hw, (i + 1) * hw);
              const { box, hit } = tallies[j]!.add(mask, b.size, b.size, b.boxes[i]!, correct);
              perImage.hits[o.methods[j]!]!.push(hit);
              return { mask, box };
            });
            if (k < wantExamples) {
              examples.push({ image: pictures[i]!, width: b.size, height: b.size, truth: b.boxes[i]!, title: `class ${b.labels[i]}`, cells });
            }
          }
        } finally {
          x.dispose();
        }
      }
      progress.tick();
      if (++batchNo % 10 === 0) o.log(progress.line(batchNo, `${read} images, ${perImage.labels.length} with boxes`));
    }
    if (read === 0) throw new Error(`${o.data.spec}: the validation set is empty (no image could be read)`);
    const scored = perImage.labels.length;
    if (scored === 0) {
      throw new Error(`${o.data.spec}: none of the ${read} images has a ground-truth box of its class${o.data.boxes ? ` in ${o.data.boxes}` : ' (give --boxes)'}`);
    }
    const problems = data.problems;
    const report: LocalizationReport = {
      provenance: provenance(o.argv),
      checkpoint: models.checkpoint && {
        dir: models.checkpoint.dir,
        step: models.checkpoint.state.step,
        thinning: models.checkpoint.state.config.thinning,
        score: models.checkpoint.state.config.score,
      },
      model: models.exported?.dir ?? null,
      data: { spec: o.data.spec, boxes: o.data.boxes ?? null, describe: data.describe },
      protocol: {
        preprocess: o.data.preprocess === 'eval' ? `short side to ${models.size}, centre crop ${models.size}` : `resize to ${models.size}x${models.size}`,
        size: models.size,
        binarization: o.binarization,
        alpha: o.alpha,
        box: 'tight box of the largest 4-connected component',
        hit: 'IoU > 0.5 with any ground-truth box of the class',
        targets: 'gradient methods explain the ground-truth class',
      },
      images: { read, scored, withoutBoxes: read - scored },
      classifierTop1: models.checkpoint ? right / scored : null,
      problems: { count: problems?.count ?? 0, byKind: { ...(problems?.byKind ?? {}) }, first: (problems?.format() ?? []).slice(0, 20) },
      methods: Object.fromEntries(o.methods.map((m, j) => [m, tallies[j]!.result()])),
      seconds: (performance.now() - t0) / 1000,
    };
    if (report.images.withoutBoxes > 0) o.log(`${report.images.withoutBoxes} of ${read} images have no box of their class: not scored (see problems in report.json)`);
    const le = await barChartPng({
      title: `Localisation error (${scored} images)`,
      yLabel: 'LE (lower is better)',
      categories: o.methods,
      series: [{ name: 'LE', values: o.methods.map((m) => report.methods[m]!.le) }],
      yMax: 1,
    });
    const figures: Record<string, Buffer> = { 'le.png': le };
    if (examples.length > 0) figures['examples.png'] = await exampleGridPng(examples, { methods: o.methods });
    writeReport(o.out, report, localizationMarkdown(report), figures);
    o.log(`eval localization: ${scored} images scored in ${report.seconds.toFixed(1)} s -> ${o.out}/report.{json,md}, le.png, examples.png`);
    o.log(localizationTable(report).trimEnd());
    return { report, perImage };
  } finally {
    await data.close();
    models.dispose();
  }
}

/** The table of a localisation report: one row per method. */
export function localizationTable(r: LocalizationReport): string {
  return markdownTable(
    ['method', 'LE', 'OM', 'F1', 'F1a', 'area mean', 'area std', 'entropy (bits)', 'TV', 'no box'],
    Object.entries(r.methods).map(([name, m]) => [name, m.le, m.om, m.f1, m.f1a, m.area.mean, m.area.std, m.entropy, m.tv, String(m.noBox)]),
  );
}

function localizationMarkdown(r: LocalizationReport): string {
  return [
    `# Localisation (spec section 4)`,
    '',
    `- command: \`${r.provenance.command}\``,
    `- casm-ts ${r.provenance.projectVersion}, tfjs ${r.provenance.tfjsVersion} (${r.provenance.backend}), ${r.provenance.date}`,
    r.checkpoint ? `- checkpoint: ${r.checkpoint.dir} (step ${r.checkpoint.step}, thinning ${r.checkpoint.thinning}, score ${r.checkpoint.score})` : '- checkpoint: none',
    r.model ? `- exported mask network: ${r.model}` : '',
    `- data: ${r.data.describe}${r.data.boxes ? `; boxes ${r.data.boxes}` : ''}`,
    `- images: ${r.images.read} read, ${r.images.scored} scored, ${r.images.withoutBoxes} without a box of their class; ${r.problems.count} data problems`,
    `- protocol: ${r.protocol.preprocess}; ${r.protocol.binarization === 'mean' ? `m >= ${r.protocol.alpha} * mean(m)` : 'top round(mean(m) N) pixels'}; ${r.protocol.box}; hit: ${r.protocol.hit}; ${r.protocol.targets}`,
    r.classifierTop1 === null ? '' : `- classifier top-1 on these images: ${r.classifierTop1.toFixed(3)}`,
    '',
    localizationTable(r),
    'LE = 1 - hit rate; OM = 1 - hit and top-1 right; F1 = continuous F1 against the best box, F1a = mean over boxes;',
    'area = mean of the mask; entropy = mean binary entropy of mask pixels; TV = total variation per pixel.',
    '',
    '![LE per method](le.png)',
    '',
    '![examples](examples.png)',
    '',
  ]
    .filter((l, i, all) => l !== '' || all[i - 1] !== '')
    .join('\n');
}
