/**
 * A sweep of CASM trainings over thinning x score (x lambda_R), the grid of the paper's tables:
 * each training evaluated by the localisation protocol (CASM alone) on the same validation
 * images; report.md, sweep.png (LE per training) and experiment.json. Resumable, and runnable as
 * a job array, one training per task, then the report (see trainings.ts).
 */
import type { Score } from '../casm/score.js';
import type { Thinning } from '../casm/pool.js';
import { barChartPng } from './figures.js';
import type { LocalizationReport } from './localizationCommand.js';
import { markdownTable, provenance, provenanceLines, writeReport, type Provenance } from './report.js';
import { runTrainings, type Planned } from './trainings.js';

export interface SweepPoint {
  thinning: Thinning;
  score: Score;
  /** null: the default of the thinning and score. */
  lambdaR: number | null;
}

export interface SweepResult {
  images: number;
  le: number;
  om: number | null;
  f1: number;
  area: number;
  classifierTop1: number | null;
}

type SweepTraining = Planned<SweepResult> & SweepPoint;

interface SweepState {
  provenance: Provenance;
  trainings: SweepTraining[];
}

export interface SweepOptions {
  out: string;
  thinnings: Thinning[];
  scores: Score[];
  /** Empty: each training's default lambda_R. */
  lambdas: number[];
  task?: number;
  merge?: boolean;
  train(p: SweepPoint, runDir: string): Promise<void>;
  /** The localisation report of a run's masker, written into outDir. */
  evaluate(runDir: string, outDir: string): Promise<LocalizationReport>;
  argv: string[];
  log: (line: string) => void;
}

export const sweepName = (p: SweepPoint) => `${p.thinning}-${p.score}${p.lambdaR === null ? '' : `-lambda${p.lambdaR}`}`;

/** The trainings of the grid, thinning slowest, in task order. */
export function sweepPoints(o: Pick<SweepOptions, 'thinnings' | 'scores' | 'lambdas'>): SweepPoint[] {
  const lambdas = o.lambdas.length > 0 ? o.lambdas : [null];
  return o.thinnings.flatMap((thinning) => o.scores.flatMap((score) => lambdas.map((lambdaR) => ({ thinning, score, lambdaR }))));
}

/** The report once every training is done (null after a task that leaves others to do). */
export async function runSweep(o: SweepOptions): Promise<SweepState | null> {
  const state: SweepState = {
    provenance: provenance(o.argv),
    trainings: sweepPoints(o).map((p) => ({ ...p, name: sweepName(p), trained: false, result: null })),
  };
  o.log(`sweep: ${state.trainings.length} trainings: ${state.trainings.map((t, i) => `${i} ${t.name}`).join(', ')}`);
  const key = (s: SweepState) => JSON.stringify(s.trainings.map((t) => t.name));
  const trainings = await runTrainings<SweepTraining, SweepResult, SweepState>({
    out: o.out,
    plan: state,
    samePlan: (saved) => key(saved) === key(state),
    ...(o.task !== undefined ? { task: o.task } : {}),
    ...(o.merge ? { merge: true } : {}),
    train: (t, runDir) => o.train({ thinning: t.thinning, score: t.score, lambdaR: t.lambdaR }, runDir),
    async evaluate(t, runDir, evalDir) {
      const r = await o.evaluate(runDir, evalDir);
      const m = r.methods['casm']!;
      o.log(`sweep: ${t.name}: LE ${m.le.toFixed(3)}, F1 ${m.f1.toFixed(3)}, mask area ${m.area.mean.toFixed(3)} (${m.images} images)`);
      return { images: m.images, le: m.le, om: m.om, f1: m.f1, area: m.area.mean, classifierTop1: r.classifierTop1 };
    },
    log: (line) => o.log(`sweep: ${line}`),
  });
  if (trainings === null) return null;
  const done = { ...state, trainings };
  const chart = await barChartPng({
    title: 'CASM localisation error per training',
    yLabel: 'LE (lower is better)',
    categories: trainings.map((t) => t.name),
    series: [{ name: 'LE', values: trainings.map((t) => t.result.le) }],
    yMax: 1,
  });
  const table = markdownTable(
    ['training', 'thinning', 'score', 'lambda_R', 'LE', 'OM', 'F1', 'mask area', 'classifier top-1'],
    trainings.map((t) => [
      t.name,
      t.thinning,
      t.score,
      t.lambdaR === null ? 'default' : String(t.lambdaR),
      t.result.le,
      t.result.om,
      t.result.f1,
      t.result.area,
      t.result.classifierTop1,
    ]),
  );
  const md = [
    '# CASM sweep: thinning x score',
    '',
    ...provenanceLines(state.provenance),
    `- ${trainings[0]!.result.images} validation images per training (eval-<training>/report.md has every figure)`,
    '',
    table,
    '![LE per training](sweep.png)',
    '',
  ].join('\n');
  writeReport(o.out, done, md, { 'sweep.png': chart });
  o.log(table.trimEnd());
  return done;
}
