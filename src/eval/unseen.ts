/**
 * The unseen-class experiment (spec section 4): split the classes into disjoint sets A 5%, B 5%,
 * C 10%, D 30%, E 30%, F 20% (a seeded permutation), train CASM (thinning L) on B-F, C-F, D-F,
 * E-F and F, and report each masker's localisation error on images of classes it was trained on
 * (seen) and of the others (unseen; A is never seen). A custom split (`seen`: one training on
 * these classes, e.g. digits 0-4) runs the same way.
 *
 * Resumable, and runnable as a job array (one training per task, then the report): see trainings.ts.
 */
import { Rng, seedFrom } from '../util/rng.js';
import { barChartPng } from './figures.js';
import type { LocalizationReport, PerImage } from './localizationCommand.js';
import { markdownTable, provenance, provenanceLines, writeReport, type Provenance } from './report.js';
import { runTrainings, type Planned } from './trainings.js';

export const SPLIT_SHARES: [string, number][] = [
  ['A', 0.05],
  ['B', 0.05],
  ['C', 0.1],
  ['D', 0.3],
  ['E', 0.3],
  ['F', 0.2],
];
export const TRAININGS = ['B-F', 'C-F', 'D-F', 'E-F', 'F'];

/** Disjoint class sets A..F of a seeded permutation of 0..numClasses-1, sized by rounded cumulative shares. */
export function classSplits(numClasses: number, seed: number): Record<string, number[]> {
  const rng = new Rng(seedFrom('unseen-splits', seed));
  const perm = Array.from({ length: numClasses }, (_, i) => i);
  for (let i = numClasses - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const out: Record<string, number[]> = {};
  let cumulative = 0;
  let start = 0;
  for (const [name, share] of SPLIT_SHARES) {
    cumulative += share;
    const end = Math.round(cumulative * numClasses);
    out[name] = perm.slice(start, end).sort((a, b) => a - b);
    start = end;
  }
  return out;
}

/** The classes of a training named like 'C-F' (sets C, D, E, F) or 'F'. */
export function trainingClasses(splits: Record<string, number[]>, training: string): number[] {
  const m = /^([A-F])(?:-([A-F]))?$/.exec(training);
  if (!m) throw new Error(`training '${training}': expected a set range like C-F or one set like F`);
  const names = SPLIT_SHARES.map(([n]) => n);
  const [lo, hi] = [names.indexOf(m[1]!), names.indexOf(m[2] ?? m[1]!)];
  if (hi < lo) throw new Error(`training '${training}': the range is reversed`);
  return names
    .slice(lo, hi + 1)
    .flatMap((n) => splits[n]!)
    .sort((a, b) => a - b);
}

export interface Training extends Planned<UnseenResult> {
  classes: number[];
}

export interface UnseenResult {
  leSeen: number | null;
  leUnseen: number | null;
  leNever: number | null;
  seen: number;
  unseen: number;
  never: number;
}

interface State {
  provenance: Provenance;
  numClasses: number;
  seed: number;
  /** The class sets (A..F), or { seen, unseen } for a custom split. */
  splits: Record<string, number[]>;
  /** Classes no training sees (A; the unseen set of a custom split). */
  never: number[];
  trainings: Training[];
}

export interface UnseenOptions {
  out: string;
  numClasses: number;
  seed: number;
  /** The protocol's trainings to run (default all of TRAININGS), or a custom seen set. */
  trainings: string[];
  seen?: number[];
  /** Run only this training (a job array's task), or (`merge`) train nothing and report. */
  task?: number;
  merge?: boolean;
  /** Trains (or continues) a CASM run on these classes into runDir. */
  train(name: string, classes: number[], runDir: string): Promise<void>;
  /** Evaluates a run's masker on the validation images (CASM only), writing into outDir. */
  evaluate(runDir: string, outDir: string): Promise<{ report: LocalizationReport; perImage: PerImage }>;
  argv: string[];
  log: (line: string) => void;
}

function plan(o: UnseenOptions): State {
  const base = { provenance: provenance(o.argv), numClasses: o.numClasses, seed: o.seed };
  if (o.seen) {
    const seen = new Set(o.seen);
    const unseen = Array.from({ length: o.numClasses }, (_, c) => c).filter((c) => !seen.has(c));
    if (unseen.length === 0) throw new Error(`--seen covers all ${o.numClasses} classes: nothing would be unseen`);
    const name = `seen-${o.seen.join(',')}`.slice(0, 60);
    return { ...base, splits: { seen: o.seen, unseen }, never: unseen, trainings: [{ name, classes: o.seen, trained: false, result: null }] };
  }
  const splits = classSplits(o.numClasses, o.seed);
  for (const [name, classes] of Object.entries(splits)) {
    if (classes.length === 0) throw new Error(`${o.numClasses} classes are too few for the protocol's splits: set ${name} is empty (use --seen)`);
  }
  return {
    ...base,
    splits,
    never: splits['A']!,
    trainings: o.trainings.map((name) => ({ name, classes: trainingClasses(splits, name), trained: false, result: null })),
  };
}

/** The same experiment: class sets and trainings must match what experiment.json recorded. */
function sameExperiment(a: State, b: State): boolean {
  const key = (s: State) => JSON.stringify([s.numClasses, s.splits, s.trainings.map((t) => [t.name, t.classes])]);
  return key(a) === key(b);
}

/** The report once every training is done (null after a task that leaves others to do). */
export async function runUnseen(o: UnseenOptions): Promise<State | null> {
  const state = plan(o);
  o.log(
    `unseen: ${o.numClasses} classes; ${Object.entries(state.splits)
      .map(([k, v]) => `${k} ${v.length}`)
      .join(', ')}; trainings ${state.trainings.map((t) => t.name).join(', ')}`,
  );
  const never = new Set(state.never);
  const trainings = await runTrainings<Training, UnseenResult, State>({
    out: o.out,
    plan: state,
    samePlan: (saved) => sameExperiment(saved, state),
    ...(o.task !== undefined ? { task: o.task } : {}),
    ...(o.merge ? { merge: true } : {}),
    train: (t, runDir) => o.train(t.name, t.classes, runDir),
    async evaluate(t, runDir, evalDir) {
      const { perImage } = await o.evaluate(runDir, evalDir);
      const seen = new Set(t.classes);
      const le = (keep: (label: number) => boolean) => {
        const idx = perImage.labels.map((l, i) => (keep(l) ? i : -1)).filter((i) => i >= 0);
        return { n: idx.length, le: idx.length === 0 ? null : 1 - idx.filter((i) => perImage.hits['casm']![i]).length / idx.length };
      };
      const [s, u, n] = [le((l) => seen.has(l)), le((l) => !seen.has(l)), le((l) => never.has(l))];
      o.log(`unseen: ${t.name}: LE seen ${fmt(s.le)} (${s.n} images), unseen ${fmt(u.le)} (${u.n}), never seen ${fmt(n.le)} (${n.n})`);
      return { leSeen: s.le, leUnseen: u.le, leNever: n.le, seen: s.n, unseen: u.n, never: n.n };
    },
    log: (line) => o.log(`unseen: ${line}`),
  });
  if (trainings === null) return null;
  const done = { ...state, trainings };
  const chart = await barChartPng({
    title: 'CASM localisation error on seen and unseen classes',
    yLabel: 'LE (lower is better)',
    categories: trainings.map((t) => t.name),
    series: [
      { name: 'seen classes', values: trainings.map((t) => t.result.leSeen) },
      { name: 'unseen classes', values: trainings.map((t) => t.result.leUnseen) },
    ],
    yMax: 1,
  });
  const table = unseenTable(done);
  const md = [
    '# Localisation on classes unseen in training (spec section 4)',
    '',
    ...provenanceLines(state.provenance),
    `- ${state.numClasses} classes, seed ${state.seed}; sets: ${Object.entries(state.splits)
      .map(([k, v]) => `${k} = {${v.join(',')}}`)
      .join('; ')}`,
    '',
    table,
    'LE on the images of the classes a masker was trained on (seen), of the others (unseen), and of the classes no training saw (never seen).',
    '',
    '![LE seen vs unseen](unseen.png)',
    '',
  ].join('\n');
  writeReport(o.out, done, md, { 'unseen.png': chart });
  o.log(table.trimEnd());
  return done;
}

const fmt = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));

export function unseenTable(state: State): string {
  return markdownTable(
    ['training', 'classes trained', 'LE seen', 'LE unseen', 'LE never seen', 'images seen / unseen'],
    state.trainings.map((t) => [
      t.name,
      String(t.classes.length),
      t.result!.leSeen,
      t.result!.leUnseen,
      t.result!.leNever,
      `${t.result!.seen} / ${t.result!.unseen}`,
    ]),
  );
}
