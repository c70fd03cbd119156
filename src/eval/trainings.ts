/**
 * The trainings of a study (the unseen-class protocol, a thinning x score sweep), each trained into
 * its own directory and then evaluated, run one after another in one process or one per job of
 * an array (`task`: the index of the one to run). experiment.json records the plan; each
 * training's progress lives in its own directory (train-<name>/progress.json), so that the jobs
 * of an array never write the same file. Rerunning the command continues where it stopped: a
 * training interrupted midway from its latest checkpoint, a finished one is not repeated, an
 * evaluation already made is read back.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomicWrite.js';

export interface Planned<R> {
  name: string;
  trained: boolean;
  result: R | null;
}

export interface TrainingsOptions<T extends Planned<R>, R, S extends { trainings: T[] }> {
  /** The study's directory: experiment.json, train-<name>/ and eval-<name>/ per training. */
  out: string;
  /** What experiment.json holds (trainings with trained = false, result = null). */
  plan: S;
  /** The plan is the one a directory already holds (the same trainings of the same study). */
  samePlan(saved: S): boolean;
  /** Run only this training (0-based; a job array's task index). */
  task?: number;
  /** Train nothing: every training must be done (the final step after a job array). */
  merge?: boolean;
  train(t: T, runDir: string): Promise<void>;
  evaluate(t: T, runDir: string, evalDir: string): Promise<R>;
  log: (line: string) => void;
}

/** A done study: every training with its result; null when only a task ran or trainings remain. */
export async function runTrainings<T extends Planned<R>, R, S extends { trainings: T[] }>(o: TrainingsOptions<T, R, S>): Promise<(T & { result: R })[] | null> {
  mkdirSync(o.out, { recursive: true });
  const planPath = join(o.out, 'experiment.json');
  const trainings = o.plan.trainings;
  let saved: S | null = null;
  if (existsSync(planPath)) {
    saved = JSON.parse(readFileSync(planPath, 'utf8')) as S;
    if (!o.samePlan(saved)) throw new Error(`${planPath}: holds an experiment with other classes or trainings; pick another --out`);
  } else {
    writeFileAtomic(planPath, JSON.stringify(o.plan, null, 2) + '\n');
  }
  const progressPath = (t: T) => join(o.out, `train-${t.name}`, 'progress.json');
  trainings.forEach((t, i) => {
    const path = progressPath(t);
    // Directories of before progress.json kept it in experiment.json.
    const p = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Planned<R>) : saved?.trainings[i];
    if (p) Object.assign(t, { trained: p.trained, result: p.result });
  });
  const save = (t: T) => writeFileAtomic(progressPath(t), JSON.stringify({ name: t.name, trained: t.trained, result: t.result }, null, 2) + '\n');
  const done = () => trainings.filter((t) => t.result !== null).length;
  if (saved) o.log(`${planPath}: ${done()} of ${trainings.length} trainings done`);
  if (o.task !== undefined && !(Number.isInteger(o.task) && o.task >= 0 && o.task < trainings.length)) {
    throw new Error(
      `--task ${o.task}: the study has ${trainings.length} trainings (tasks 0-${trainings.length - 1}: ${trainings.map((t) => t.name).join(', ')})`,
    );
  }
  if (o.merge) {
    const missing = trainings.flatMap((t, i) => (t.result === null ? [`${i} (${t.name})`] : []));
    if (missing.length > 0)
      throw new Error(`${o.out}: ${missing.length} of ${trainings.length} trainings not done: tasks ${missing.join(', ')}; run them (--task i) before --merge`);
  }
  for (const t of o.task === undefined ? trainings : [trainings[o.task]!]) {
    const runDir = join(o.out, `train-${t.name}`);
    if (!t.trained) {
      o.log(`training ${t.name} -> ${runDir}`);
      await o.train(t, runDir);
      t.trained = true;
      save(t);
    }
    if (t.result === null) {
      t.result = await o.evaluate(t, runDir, join(o.out, `eval-${t.name}`));
      save(t);
    }
  }
  if (done() < trainings.length) {
    o.log(`${done()} of ${trainings.length} trainings done; when all are, rerun without --task (or with --merge) for the report`);
    return null;
  }
  writeFileAtomic(planPath, JSON.stringify({ ...o.plan, trainings }, null, 2) + '\n');
  return trainings as (T & { result: R })[];
}
