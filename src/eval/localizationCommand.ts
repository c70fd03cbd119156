/**
 * `casm eval localization`: the ImageNet-val localisation protocol (spec section 4) for CASM and
 * the baselines on one pass over the validation images. Per method: LE, OM, F1, F1a and mask
 * statistics; the report carries the command, checkpoint, data and version. Writes into --out:
 *   report.json   everything, machine-readable (per-method figures, counts, problems, provenance)
 *   report.md     the table people read
 *   le.png        localisation error per method (bar chart)
 *   examples.png  image | each method's mask, its box (red) and the ground truth (green)
 * With `seen` (the classes the models were trained on) every figure is also reported for images
 * of seen and of unseen classes apart; `compare` adds the maskers of other CASM runs (thinning F
 * next to L100, say) as methods `casm-<thinning>`, scored on the same images in the same pass.
 */
import * as tf from '@tensorflow/tfjs';
import { denormalize } from '../data/normalize.js';
import type { ExplainerOptions } from '../explain/explainCommand.js';
import { imagesToRgb } from '../explain/display.js';
import { Progress } from '../log/progress.js';
import { openEvalData, type EvalDataOptions } from './evalData.js';
import { barChartPng, exampleGridPng, type ExampleRow } from './figures.js';
import { LocalizationTally, type Binarization, type MethodResult } from './localization.js';
import { buildMethods, EvalUsageError, loadModels, type EvalMethod, type MaskMethod, type Models } from './methods.js';
import { markdownTable, provenance, writeReport, type Provenance } from './report.js';

/**
 * The class a gradient method explains: the label, the classifier's top-1, or (`auto`) the label
 * on seen classes and the top-1 on unseen ones, whose logits were never trained and say nothing.
 */
export const TARGETS = ['auto', 'label', 'predicted'] as const;
export type Target = (typeof TARGETS)[number];

export interface LocalizationOptions {
  checkpoint?: string;
  /** Other CASM runs whose maskers are scored too, as `casm-<thinning>`. */
  compare?: string[];
  /** Classes the models were trained on: figures for seen and unseen images apart. */
  seen?: number[];
  target?: Target;
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
  /** With `seen`: the same figures on images of seen and of unseen classes (null: none of them). */
  bySplit: { seenClasses: number[]; seen: SplitResult | null; unseen: SplitResult | null } | null;
  /**
   * With a classifier: the figures on the (seen, with `seen`) images it classifies right and on
   * those it gets wrong; where masks fail is often where the classifier does.
   */
  byClassifier: { right: SplitResult | null; wrong: SplitResult | null } | null;
  seconds: number;
}

export interface SplitResult {
  images: number;
  classifierTop1: number | null;
  methods: Record<string, MethodResult>;
}

/** Figures of one set of images: a tally per method and the classifier's right answers. */
class SplitTally {
  readonly tallies: LocalizationTally[];
  images = 0;
  right = 0;
  constructor(
    readonly names: string[],
    binarization: Binarization,
    alpha: number,
  ) {
    this.tallies = names.map(() => new LocalizationTally(binarization, alpha));
  }
  result(hasClassifier: boolean): SplitResult | null {
    if (this.images === 0) return null;
    return {
      images: this.images,
      classifierTop1: hasClassifier ? this.right / this.images : null,
      methods: Object.fromEntries(this.names.map((m, j) => [m, this.tallies[j]!.result()])),
    };
  }
}

/** The maskers of other CASM runs as methods `casm-<thinning>` (`casm-<thinning>-2` on a clash). */
async function comparedMaskers(runs: string[], size: number, taken: string[]): Promise<{ models: Models[]; methods: MaskMethod[] }> {
  const models: Models[] = [];
  const methods: MaskMethod[] = [];
  try {
    for (const run of runs) {
      const m = await loadModels(run, undefined);
      models.push(m);
      if (m.size !== size) throw new EvalUsageError(`--compare ${run}: input ${m.size}px differs from the evaluated models' ${size}px`);
      const base = `casm-${m.checkpoint!.state.config.thinning}`;
      let name = base;
      for (let k = 2; taken.includes(name); k++) name = `${base}-${k}`;
      taken.push(name);
      methods.push({ ...buildMethods(['casm'], m, { samples: 1, spread: 0, magnitude: false, seed: 0 })[0]!, name });
    }
    return { models, methods };
  } catch (e) {
    for (const m of models) m.dispose();
    throw e;
  }
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
  const compared = { models: [] as Models[], methods: [] as MaskMethod[] };
  try {
    const own = buildMethods(o.methods, models, o.explainer);
    Object.assign(compared, await comparedMaskers(o.compare ?? [], models.size, [...o.methods]));
    const methods = [...own, ...compared.methods];
    const names = methods.map((m) => m.name);
    const all = new SplitTally(names, o.binarization, o.alpha);
    const seenSet = o.seen ? new Set(o.seen) : null;
    const split = seenSet ? { seen: new SplitTally(names, o.binarization, o.alpha), unseen: new SplitTally(names, o.binarization, o.alpha) } : null;
    const byClassifier = models.checkpoint ? { right: new SplitTally(names, o.binarization, o.alpha), wrong: new SplitTally(names, o.binarization, o.alpha) } : null;
    const target = o.target ?? 'auto';
    const perImage: PerImage = { labels: [], hits: Object.fromEntries(names.map((m) => [m, []])) };
    const examples: ExampleRow[] = [];
    // Examples spread over the whole set (validation sets are often sorted by class).
    const exampleEvery = Math.max(1, Math.floor(data.total / Math.max(1, o.examples)));
    let read = 0;
    const progress = new Progress(Math.ceil(data.total / o.data.batchSize), 0, o.data.batchSize);
    o.log(
      `eval localization: ${data.describe}; methods ${names.join(', ')}; ` +
        `${o.binarization === 'mean' ? `m >= ${o.alpha} * mean(m)` : 'top-k pixels'}, largest 4-connected component, IoU > 0.5` +
        (models.checkpoint ? `; checkpoint ${models.checkpoint.dir} (step ${models.checkpoint.state.step})` : '') +
        (models.exported ? `; casm from ${models.exported.dir}` : '') +
        (seenSet ? `; ${seenSet.size} seen classes, gradient targets: ${targetsText(target)}` : ''),
    );
    let batchNo = 0;
    for await (const b of data.batches()) {
      const first = read;
      read += b.n;
      const boxed = b.boxes.map((bs, i) => (bs.length > 0 ? i : -1)).filter((i) => i >= 0);
      if (boxed.length > 0) {
        const x = tf.tensor4d(b.x, [b.n, b.size, b.size, 3]);
        try {
          const top1 = models.predict(x);
          const isSeen = (label: number) => seenSet === null || seenSet.has(label);
          const targets = b.labels.map((l, i) => (top1 !== null && (target === 'predicted' || (target === 'auto' && !isSeen(l))) ? top1[i]! : l));
          const masks = methods.map((m) => m.masks(x, targets));
          const hw = b.size * b.size;
          const exampleAt = (i: number) => examples.length < o.examples && (first + i) % exampleEvery === 0;
          const pictures = boxed.some(exampleAt) ? tf.tidy(() => imagesToRgb(denormalize(x))) : [];
          for (const i of boxed) {
            const label = b.labels[i]!;
            const correct = top1 === null ? null : top1[i] === label;
            const sets = [
              all,
              ...(split ? [isSeen(label) ? split.seen : split.unseen] : []),
              ...(byClassifier && correct !== null && isSeen(label) ? [correct ? byClassifier.right : byClassifier.wrong] : []),
            ];
            for (const t of sets) {
              t.images++;
              t.right += correct ? 1 : 0;
            }
            perImage.labels.push(label);
            const cells = masks.map((every, j) => {
              const mask = every.subarray(i * hw, (i + 1) * hw);
              const { box, hit } = all.tallies[j]!.add(mask, b.size, b.size, b.boxes[i]!, correct);
              for (const t of sets.slice(1)) t.tallies[j]!.add(mask, b.size, b.size, b.boxes[i]!, correct);
              perImage.hits[names[j]!]!.push(hit);
              return { mask, box };
            });
            if (exampleAt(i)) {
              const name = (c: number) => data.synsets?.[c] ?? `class ${c}`;
              const title = `${name(label)}${isSeen(label) ? '' : ' (unseen)'}${top1 === null ? '' : `, top-1 ${name(top1[i]!)}`}`;
              examples.push({ image: pictures[i]!, width: b.size, height: b.size, truth: b.boxes[i]!, title, cells });
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
        targets: `gradient methods explain ${seenSet ? targetsText(target) : target === 'predicted' ? 'the top-1 class' : 'the ground-truth class'}`,
      },
      images: { read, scored, withoutBoxes: read - scored },
      classifierTop1: models.checkpoint ? all.right / scored : null,
      problems: { count: problems?.count ?? 0, byKind: { ...(problems?.byKind ?? {}) }, first: (problems?.format() ?? []).slice(0, 20) },
      methods: all.result(models.checkpoint !== null)!.methods,
      bySplit: split && {
        seenClasses: [...seenSet!].sort((a, b) => a - b),
        seen: split.seen.result(models.checkpoint !== null),
        unseen: split.unseen.result(models.checkpoint !== null),
      },
      byClassifier: byClassifier && { right: byClassifier.right.result(true), wrong: byClassifier.wrong.result(true) },
      seconds: (performance.now() - t0) / 1000,
    };
    if (report.images.withoutBoxes > 0) o.log(`${report.images.withoutBoxes} of ${read} images have no box of their class: not scored (see problems in report.json)`);
    const parts = report.bySplit
      ? (['seen', 'unseen'] as const).flatMap((k) => (report.bySplit![k] ? [{ name: `${k} classes (${report.bySplit![k]!.images})`, r: report.bySplit![k]!.methods }] : []))
      : [{ name: 'LE', r: report.methods }];
    const le = await barChartPng({
      title: `Localisation error (${scored} images)`,
      yLabel: 'LE (lower is better)',
      categories: names,
      series: parts.map((p) => ({ name: p.name, values: names.map((m) => p.r[m]!.le) })),
      yMax: 1,
    });
    const figures: Record<string, Buffer> = { 'le.png': le };
    if (examples.length > 0) figures['examples.png'] = await exampleGridPng(examples, { methods: names });
    writeReport(o.out, report, localizationMarkdown(report), figures);
    o.log(`eval localization: ${scored} images scored in ${report.seconds.toFixed(1)} s -> ${o.out}/report.{json,md}, le.png, examples.png`);
    o.log(localizationTable(report).trimEnd());
    return { report, perImage };
  } finally {
    await data.close();
    models.dispose();
    for (const m of compared.models) m.dispose();
  }
}

function targetsText(target: Target): string {
  if (target === 'auto') return 'the label on seen classes, the top-1 class on unseen ones';
  return target === 'label' ? 'the ground-truth class' : 'the top-1 class';
}

/** The table of a localisation report: one row per method. */
export function localizationTable(r: Pick<LocalizationReport, 'methods'>): string {
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
    ...(r.bySplit
      ? (['seen', 'unseen'] as const).flatMap((k) => {
          const part = r.bySplit![k];
          if (part === null) return [`## ${k} classes`, '', 'none of the images.', ''];
          const top1 = part.classifierTop1 === null ? '' : `; classifier top-1 ${part.classifierTop1.toFixed(3)}`;
          return [`## ${k === 'seen' ? 'Seen' : 'Unseen'} classes (${part.images} images${top1})`, '', localizationTable(part)];
        })
      : []),
    ...(r.byClassifier
      ? (['right', 'wrong'] as const).flatMap((k) => {
          const part = r.byClassifier![k];
          return part === null ? [] : [`## ${r.bySplit ? 'Seen images' : 'Images'} the classifier gets ${k} (${part.images})`, '', localizationTable(part)];
        })
      : []),
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
