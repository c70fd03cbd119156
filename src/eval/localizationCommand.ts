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
import type { ExplainerOptions } from '../explain/explainCommand.js';
import { pixelsToRgb } from '../explain/display.js';
import { Progress } from '../log/progress.js';
import { openEvalData, type EvalDataOptions } from './evalData.js';
import { barChartPng, exampleGridPng, type ExampleRow } from './figures.js';
import { type Binarization } from '../boxes.js';
import { LocalizationTally, scoreMask, type MaskScore, type MethodResult } from './localization.js';
import { checkShard, firstExamples, problemsRecord, readShares, SHARE_FILE, writeShare, type ExampleCodec, type ShareCommon, type Shard } from './shares.js';
import { buildMethods, loadModels, type EvalMethod, type MaskMethod, type Models } from './methods.js';
import { markdownTable, provenance, provenanceLines, writeReport, type Provenance } from './report.js';
import { UsageError } from '../util/usageError.js';

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
  /** Jobs the images were scored in (`casm eval merge` of that many shards; 1: one process). */
  shards: number;
  /** Seconds of scoring, summed over the shards. */
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
  constructor(readonly names: string[]) {
    this.tallies = names.map(() => new LocalizationTally());
  }
  add(r: ScoredImage): void {
    this.images++;
    this.right += r.correct ? 1 : 0;
    r.scores.forEach((s, j) => this.tallies[j]!.add(s, r.correct));
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
      if (m.size !== size) throw new UsageError(`--compare ${run}: input ${m.size}px differs from the evaluated models' ${size}px`);
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

/** One scored image: its place in the validation set, what the classifier said, each method's score. */
export interface ScoredImage {
  /** Position among all images read, the order of every sum in the report. */
  index: number;
  label: number;
  /** The classifier's top-1 was right (null without a classifier). */
  correct: boolean | null;
  /** One per method, in the order of `setup.methods`. */
  scores: MaskScore[];
}

/** What every share of one evaluation must have in common: a merge refuses shares that differ here. */
export interface LocalizationSetup {
  checkpoint: LocalizationReport['checkpoint'];
  /** sha256 of the checkpoint's weight files (two runs in one directory are not one checkpoint). */
  checkpointFiles: Record<string, string> | null;
  compared: { dir: string; step: number; files: Record<string, string> }[];
  model: string | null;
  data: LocalizationReport['data'] & { total: number; batchSize: number; limit: number | null };
  protocol: LocalizationReport['protocol'];
  methods: string[];
  explainer: ExplainerOptions;
  seenClasses: number[] | null;
  hasClassifier: boolean;
  /** Rows of examples.png. */
  examples: number;
}

/**
 * The scores of one share of the validation images, everything a report needs: an unsharded
 * evaluation builds its report from its one share, `casm eval merge` from all of them, by the same
 * code and in the same image order, so the figures are the same to the last bit.
 */
export interface LocalizationShare extends ShareCommon<LocalizationSetup, ExampleRow> {
  records: ScoredImage[];
}

/** An example row in a share: the picture and each method's mask as arrays, the rest as JSON. */
const exampleCodec: ExampleCodec<ExampleRow> = {
  pixels: (e) => [
    { name: 'image', shape: [e.height, e.width, 3], data: Float32Array.from(e.image) },
    ...e.cells.map((c, j) => ({ name: `mask/${j}`, shape: [e.height, e.width], data: c.mask.slice() })),
  ],
  meta: ({ image: _, cells, ...meta }) => ({ ...meta, boxes: cells.map((c) => c.box) }),
  restore: (meta, values) => {
    const { boxes, ...row } = meta as Omit<ExampleRow, 'image' | 'cells'> & { boxes: ExampleRow['cells'][number]['box'][] };
    return { ...row, image: Uint8Array.from(values('image')), cells: boxes.map((box, j) => ({ mask: values(`mask/${j}`), box })) };
  },
};

export async function evalLocalization(o: LocalizationOptions): Promise<{ report: LocalizationReport; perImage: PerImage }> {
  const share = await scoreLocalization(o, { index: 0, count: 1 });
  const { report, perImage, examples } = buildLocalizationReport([share], share.provenance);
  await writeLocalizationReport(o.out, report, examples, o.log);
  return { report, perImage };
}

/** One job of a sharded evaluation: scores its share of the batches and writes it to `o.out` for `casm eval merge`. */
export async function evalLocalizationShard(o: LocalizationOptions, shard: Shard): Promise<LocalizationShare> {
  const share = await scoreLocalization(o, shard);
  writeShare(o.out, 'localization', share, exampleCodec);
  o.log(
    `eval localization: shard ${shard.index} of ${shard.count}: ${share.records.length} images scored in ${share.seconds.toFixed(1)} s -> ${o.out}/${SHARE_FILE}; ` +
      `'casm eval merge' of all ${shard.count} shards writes the report`,
  );
  return share;
}

/** Scores the images of one shard (`{ index: 0, count: 1 }`: all of them). */
async function scoreLocalization(o: LocalizationOptions, shard: Shard): Promise<LocalizationShare> {
  const t0 = performance.now();
  checkShard(shard);
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
    const seenSet = o.seen ? new Set(o.seen) : null;
    const isSeen = (label: number) => seenSet === null || seenSet.has(label);
    const target = o.target ?? 'auto';
    const records: ScoredImage[] = [];
    const examples: LocalizationShare['examples'] = [];
    // Examples spread over the whole set (validation sets are often sorted by class).
    const exampleEvery = Math.max(1, Math.floor(data.total / Math.max(1, o.examples)));
    let read = 0;
    const batches = Math.ceil(data.total / o.data.batchSize);
    const progress = new Progress(Math.ceil((batches - shard.index) / shard.count), 0, o.data.batchSize);
    o.log(
      `eval localization: ${data.describe}; methods ${names.join(', ')}; ` +
        `${o.binarization === 'mean' ? `m >= ${o.alpha} * mean(m)` : 'top-k pixels'}, largest 4-connected component, IoU > 0.5` +
        (models.checkpoint ? `; checkpoint ${models.checkpoint.dir} (step ${models.checkpoint.state.step})` : '') +
        (models.exported ? `; casm from ${models.exported.dir}` : '') +
        (seenSet ? `; ${seenSet.size} seen classes, gradient targets: ${targetsText(target)}` : '') +
        (shard.count > 1 ? `; shard ${shard.index} of ${shard.count}: the batches b with b mod ${shard.count} = ${shard.index}` : ''),
    );
    let batchNo = 0;
    let mine = 0;
    for await (const b of data.batches()) {
      const first = read;
      read += b.n;
      if (batchNo++ % shard.count !== shard.index) continue;
      const boxed = b.boxes.map((bs, i) => (bs.length > 0 ? i : -1)).filter((i) => i >= 0);
      if (boxed.length > 0) {
        const x = tf.tensor4d(b.x, [b.n, b.size, b.size, 3]);
        try {
          const top1 = models.predict(x);
          const targets = b.labels.map((l, i) => (top1 !== null && (target === 'predicted' || (target === 'auto' && !isSeen(l))) ? top1[i]! : l));
          const masks = methods.map((m) => m.masks({ x, pixels: b.pixels }, targets));
          const hw = b.size * b.size;
          const exampleAt = (i: number) => examples.length < o.examples && (first + i) % exampleEvery === 0;
          const pictures = boxed.some(exampleAt) ? pixelsToRgb(b.pixels, b.n, 3) : [];
          for (const i of boxed) {
            const label = b.labels[i]!;
            const cells = masks.map((every) => every.subarray(i * hw, (i + 1) * hw));
            const scores = cells.map((mask) => scoreMask(mask, b.size, b.size, b.boxes[i]!, o.alpha, o.binarization));
            records.push({ index: first + i, label, correct: top1 === null ? null : top1[i] === label, scores });
            if (exampleAt(i)) {
              const name = (c: number) => data.synsets?.[c] ?? `class ${c}`;
              const title = `${name(label)}${isSeen(label) ? '' : ' (unseen)'}${top1 === null ? '' : `, top-1 ${name(top1[i]!)}`}`;
              const row = { image: pictures[i]!, width: b.size, height: b.size, truth: b.boxes[i]!, title };
              examples.push({ ...row, index: first + i, cells: cells.map((mask, j) => ({ mask, box: scores[j]!.box })) });
            }
          }
        } finally {
          x.dispose();
        }
      }
      progress.tick();
      if (++mine % 10 === 0) o.log(progress.line(mine, `${read} images read, ${records.length} scored`));
    }
    if (read === 0) throw new Error(`${o.data.spec}: the validation set is empty (no image could be read)`);
    const checkpoint = models.checkpoint;
    return {
      shard,
      setup: {
        checkpoint: checkpoint && {
          dir: checkpoint.dir,
          step: checkpoint.state.step,
          thinning: checkpoint.state.config.thinning,
          score: checkpoint.state.config.score,
        },
        checkpointFiles: checkpoint?.state.files ?? null,
        compared: compared.models.map((m) => ({ dir: m.checkpoint!.dir, step: m.checkpoint!.state.step, files: m.checkpoint!.state.files })),
        model: models.exported?.dir ?? null,
        data: {
          spec: o.data.spec,
          boxes: o.data.boxes ?? null,
          describe: data.describe,
          total: data.total,
          batchSize: o.data.batchSize,
          limit: o.data.limit ?? null,
        },
        protocol: {
          preprocess: o.data.preprocess === 'eval' ? `short side to ${models.size}, centre crop ${models.size}` : `resize to ${models.size}x${models.size}`,
          size: models.size,
          binarization: o.binarization,
          alpha: o.alpha,
          box: 'tight box of the largest 4-connected component',
          hit: 'IoU > 0.5 with any ground-truth box of the class',
          targets: `gradient methods explain ${seenSet ? targetsText(target) : target === 'predicted' ? 'the top-1 class' : 'the ground-truth class'}`,
        },
        methods: names,
        explainer: o.explainer,
        seenClasses: seenSet && [...seenSet].sort((a, b) => a - b),
        hasClassifier: checkpoint !== null,
        examples: o.examples,
      },
      provenance: provenance(o.argv),
      read,
      problems: problemsRecord(data.problems),
      records,
      examples,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await data.close();
    models.dispose();
    for (const m of compared.models) m.dispose();
  }
}

/**
 * The report of the shares of one evaluation (checked to fit together by readShares): the records
 * tallied in image order, the first `setup.examples` example candidates.
 */
export function buildLocalizationReport(
  shares: LocalizationShare[],
  prov: Provenance,
): { report: LocalizationReport; perImage: PerImage; examples: ExampleRow[] } {
  const { setup, read, problems } = shares[0]!;
  const records = shares.flatMap((s) => s.records).sort((a, b) => a.index - b.index);
  const names = setup.methods;
  const scored = records.length;
  if (scored === 0) {
    throw new Error(
      `${setup.data.spec}: none of the ${read} images has a ground-truth box of its class${setup.data.boxes ? ` in ${setup.data.boxes}` : ' (give --boxes)'}`,
    );
  }
  const seenSet = setup.seenClasses && new Set(setup.seenClasses);
  const isSeen = (label: number) => seenSet === null || seenSet.has(label);
  const all = new SplitTally(names);
  const split = seenSet ? { seen: new SplitTally(names), unseen: new SplitTally(names) } : null;
  const byClassifier = setup.hasClassifier ? { right: new SplitTally(names), wrong: new SplitTally(names) } : null;
  const perImage: PerImage = { labels: [], hits: Object.fromEntries(names.map((m) => [m, []])) };
  for (const r of records) {
    all.add(r);
    split?.[isSeen(r.label) ? 'seen' : 'unseen'].add(r);
    if (byClassifier && r.correct !== null && isSeen(r.label)) byClassifier[r.correct ? 'right' : 'wrong'].add(r);
    perImage.labels.push(r.label);
    r.scores.forEach((s, j) => perImage.hits[names[j]!]!.push(s.hit));
  }
  const report: LocalizationReport = {
    provenance: prov,
    checkpoint: setup.checkpoint,
    model: setup.model,
    data: { spec: setup.data.spec, boxes: setup.data.boxes, describe: setup.data.describe },
    protocol: setup.protocol,
    images: { read, scored, withoutBoxes: read - scored },
    classifierTop1: setup.hasClassifier ? all.right / scored : null,
    problems,
    methods: all.result(setup.hasClassifier)!.methods,
    bySplit: split && {
      seenClasses: setup.seenClasses!,
      seen: split.seen.result(setup.hasClassifier),
      unseen: split.unseen.result(setup.hasClassifier),
    },
    byClassifier: byClassifier && { right: byClassifier.right.result(true), wrong: byClassifier.wrong.result(true) },
    shards: shares.length,
    seconds: shares.reduce((t, s) => t + s.seconds, 0),
  };
  return { report, perImage, examples: firstExamples(shares, setup.examples) };
}

/** `casm eval merge`: the report of the shards in `dirs`, the one an unsharded run writes. */
export async function mergeLocalization(dirs: string[], out: string, argv: string[], log: (line: string) => void): Promise<LocalizationReport> {
  const shares = readShares<ExampleRow, LocalizationShare>(dirs, 'localization', exampleCodec);
  log(`eval merge: ${shares.length} shards, ${shares.reduce((n, s) => n + s.records.length, 0)} scored images of ${shares[0]!.read} read`);
  const { report, examples } = buildLocalizationReport(shares, provenance(argv, shares[0]!.provenance));
  await writeLocalizationReport(out, report, examples, log);
  return report;
}

/** report.json, report.md, le.png and examples.png into `out`. */
export async function writeLocalizationReport(out: string, report: LocalizationReport, examples: ExampleRow[], log: (line: string) => void): Promise<void> {
  const names = Object.keys(report.methods);
  if (report.images.withoutBoxes > 0)
    log(`${report.images.withoutBoxes} of ${report.images.read} images have no box of their class: not scored (see problems in report.json)`);
  const parts = report.bySplit
    ? (['seen', 'unseen'] as const).flatMap((k) =>
        report.bySplit![k] ? [{ name: `${k} classes (${report.bySplit![k]!.images})`, r: report.bySplit![k]!.methods }] : [],
      )
    : [{ name: 'LE', r: report.methods }];
  const le = await barChartPng({
    title: `Localisation error (${report.images.scored} images)`,
    yLabel: 'LE (lower is better)',
    categories: names,
    series: parts.map((p) => ({ name: p.name, values: names.map((m) => p.r[m]!.le) })),
    yMax: 1,
  });
  const figures: Record<string, Buffer> = { 'le.png': le };
  if (examples.length > 0) figures['examples.png'] = await exampleGridPng(examples, { methods: names });
  writeReport(out, report, localizationMarkdown(report), figures);
  log(`eval localization: ${report.images.scored} images scored in ${report.seconds.toFixed(1)} s -> ${out}/report.{json,md}, le.png, examples.png`);
  log(localizationTable(report).trimEnd());
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
    ...provenanceLines(r.provenance),
    r.checkpoint
      ? `- checkpoint: ${r.checkpoint.dir} (step ${r.checkpoint.step}, thinning ${r.checkpoint.thinning}, score ${r.checkpoint.score})`
      : '- checkpoint: none',
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
