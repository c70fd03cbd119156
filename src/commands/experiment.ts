/**
 * `casm experiment unseen | sweep`: the paper's experiments, each training one per job-array task
 * when asked.
 */
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type TrainConfig } from '../casm/config.js';
import { THINNINGS, type Thinning } from '../casm/pool.js';
import { SCORES, type Score } from '../casm/score.js';
import { runTraining } from '../train/train.js';
import { BUILTIN_DATA, type DataPlan } from '../data/trainData.js';
import { parseClassRanges } from '../data/dataset.js';
import { initEngine } from '../engine/engine.js';
import { DIGITS_EVAL_COUNT } from '../eval/evalData.js';
import { evalLocalization } from '../eval/localizationCommand.js';
import { runSweep } from '../eval/sweep.js';
import { runUnseen, TRAININGS } from '../eval/unseen.js';
import { UsageError } from '../util/usageError.js';
import { TrainOptions, checkTrainOptions, dataPlanFrom, trainConfigFrom, withTrainOptions } from './train.js';
import { evalDataOptions } from './eval.js';
import { int, listOf, num } from './options.js';

export type ExperimentCliOptions = TrainOptions & { evalLimit?: number; evalBatchSize: number; task?: number; merge: boolean };

/** What every experiment adds to the training options: its evaluations, and running as a job array. */
export function withExperimentOptions(cmd: Command): Command {
  return cmd
    .option('--eval-limit <n>', `validation images per evaluation (${BUILTIN_DATA}: default ${DIGITS_EVAL_COUNT}; shards: all)`, int(1))
    .option('--eval-batch-size <n>', 'images per evaluation pass', int(1), 16)
    .option('--task <i>', 'run only the i-th training (0-based) and its evaluation: one task of a job array (e.g. --task $SLURM_ARRAY_TASK_ID)', int(0))
    .option('--merge', 'train nothing: the report of trainings that are all done (the last step after a job array)', false);
}

export function checkExperimentOptions(name: string, o: ExperimentCliOptions): void {
  if (o.task !== undefined && o.merge) throw new UsageError(`experiment ${name}: --task runs one training, --merge none: give one of them`);
  if (o.out === undefined) throw new UsageError(`experiment ${name}: give --out <dir> (the experiment directory)`);
  if (o.resume !== undefined || o.classes !== undefined)
    throw new UsageError(`experiment ${name}: the experiment chooses the classes and resumes itself (no --classes, --resume)`);
  if (o.data !== BUILTIN_DATA && o.val === undefined)
    throw new UsageError(`experiment ${name}: give --val <spec> and --boxes <path>: the validation images the maskers are scored on`);
  checkTrainOptions(o);
}

/** One training of an experiment into runDir; continued from its latest checkpoint when it has one. */
export async function trainRun(o: TrainOptions, config: TrainConfig, data: DataPlan, runDir: string, log: (line: string) => void): Promise<void> {
  const { trainer } = await runTraining({
    config,
    outDir: runDir,
    data,
    checkpointEvery: o.checkpointEvery,
    logEvery: o.logEvery,
    imageEvery: o.imageEvery,
    maxSteps: o.maxSteps,
    ...(existsSync(join(runDir, 'latest')) ? { resume: runDir } : {}),
    classifierWeights: o.classifierWeights,
    log,
  });
  trainer.dispose();
}

/** CASM's localisation figures of a run on the experiment's validation images (--val, or the held-out digits). */
export function evaluateCasm(o: ExperimentCliOptions, runDir: string, out: string, argv: string[], log: (line: string) => void) {
  return evalLocalization({
    checkpoint: runDir,
    data: evalDataOptions({ ...o, data: o.val ?? BUILTIN_DATA, stretch: false, limit: o.evalLimit, batchSize: o.evalBatchSize }),
    methods: ['casm'],
    binarization: 'mean',
    alpha: 1,
    explainer: { samples: 1, spread: 0, magnitude: false, seed: o.seed },
    examples: 8,
    out,
    argv,
    log,
  });
}

/** `casm experiment`. */
export function registerExperiment(program: Command, argv: string[]): void {
  const experiment = program.command('experiment').description('experiments of the paper (spec section 4)');
  withExperimentOptions(withTrainOptions(experiment.command('unseen')))
    .description(
      'train CASM (thinning L) on class subsets B-F, C-F, D-F, E-F, F of disjoint sets A 5%, B 5%, C 10%, D 30%, E 30%, F 20%, ' +
        'and report LE on seen vs unseen classes (experiment.json, report.md, unseen.png); resumable: rerun the same command',
    )
    .option('--trainings <list>', `which trainings of the protocol (default ${TRAININGS.join(',')})`, (v: string) => v.split(','), TRAININGS)
    .option('--seen <classes>', "instead of the protocol: one training on these classes (e.g. '0-4' for the digits), the rest unseen")
    .action(async (o: ExperimentCliOptions & { trainings: string[]; seen?: string }, cmd: Command) => {
      checkExperimentOptions('unseen', o);
      for (const t of o.trainings) {
        if (!TRAININGS.includes(t)) throw new UsageError(`--trainings: unknown training '${t}': valid are ${TRAININGS.join(', ')}`);
      }
      // The protocol trains with thinning L unless told otherwise.
      const thinning = cmd.getOptionValueSource('thinning') === 'default' ? 'L' : o.thinning;
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log, o.trainingPath, o.precision);
      const { plan, classes: numClasses } = dataPlanFrom(o);
      await runUnseen({
        out: o.out!,
        numClasses,
        seed: o.seed,
        trainings: o.trainings,
        ...(o.seen !== undefined ? { seen: parseClassRanges(o.seen, '--seen') } : {}),
        ...(o.task !== undefined ? { task: o.task } : {}),
        merge: o.merge,
        argv,
        log,
        train: (_name, classes, runDir) =>
          trainRun(
            o,
            trainConfigFrom({ ...o, thinning }, numClasses),
            plan.kind === 'digits' ? { ...plan, classes } : { ...plan, trainOptions: { ...plan.trainOptions, classes: classes.join(',') } },
            runDir,
            log,
          ),
        evaluate: (runDir, out) => evaluateCasm(o, runDir, out, argv, log),
      });
    });
  withExperimentOptions(withTrainOptions(experiment.command('sweep')))
    .description(
      'train CASM for every thinning x score (x lambda_R) and report LE, OM, F1 and mask area of each on the validation images (experiment.json, report.md, sweep.png); resumable',
    )
    .option('--thinnings <list>', `comma-separated: ${THINNINGS.join(', ')}`, listOf(THINNINGS), [...THINNINGS])
    .option('--scores <list>', `comma-separated: ${SCORES.join(', ')}`, listOf(SCORES), [...SCORES])
    .option(
      '--lambdas <list>',
      "comma-separated lambda_R values, each a training of every thinning x score (default: each one's preset)",
      (v: string) => v.split(',').map((x) => num(0)(x)),
      [],
    )
    .action(async (o: ExperimentCliOptions & { thinnings: Thinning[]; scores: Score[]; lambdas: number[] }) => {
      checkExperimentOptions('sweep', o);
      if (o.lambdaR !== undefined) throw new UsageError('experiment sweep: give lambda_R values with --lambdas, not --lambda-r');
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log, o.trainingPath, o.precision);
      const { plan, classes } = dataPlanFrom(o);
      await runSweep({
        out: o.out!,
        thinnings: o.thinnings,
        scores: o.scores,
        lambdas: o.lambdas,
        ...(o.task !== undefined ? { task: o.task } : {}),
        merge: o.merge,
        argv,
        log,
        train: (p, runDir) =>
          trainRun(
            o,
            trainConfigFrom({ ...o, thinning: p.thinning, score: p.score, ...(p.lambdaR === null ? {} : { lambdaR: p.lambdaR }) }, classes),
            plan,
            runDir,
            log,
          ),
        evaluate: async (runDir, out) => (await evaluateCasm(o, runDir, out, argv, log)).report,
      });
    });
}
