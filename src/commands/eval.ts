/**
 * `casm eval localization | merge | classifiers`: the evaluation data options, sharding, and the
 * commands.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { availableParallelism } from 'node:os';
import { BUILTIN_DATA } from '../data/trainData.js';
import { readSynsetList } from '../data/imageFolder.js';
import { parseClasses } from '../data/dataset.js';
import { resolveDataSpec } from '../data/spec.js';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from '../engine/engine.js';
import { SMOOTHGRAD_DEFAULTS } from '../explain/smoothGrad.js';
import { DIGITS_EVAL_COUNT, type EvalDataOptions } from '../eval/evalData.js';
import { BINARIZATIONS, type Binarization } from '../boxes.js';
import { evalClassifiers, evalClassifiersShard, mergeClassifiers, type ClassifiersOptions } from '../eval/classifiersCommand.js';
import { DEFAULT_RADIUS } from '../eval/inpaint.js';
import { evalLocalization, evalLocalizationShard, mergeLocalization, TARGETS, type LocalizationOptions, type Target } from '../eval/localizationCommand.js';
import { shareKind, type Shard } from '../eval/shares.js';
import { DEFAULT_METHODS, EVAL_METHODS, parseEvalMethods, type EvalMethod } from '../eval/methods.js';
import { UsageError } from '../util/usageError.js';
import { int, num, requirePaths } from './options.js';

export interface EvalCliOptions {
  data: string;
  boxes?: string;
  synsets?: string;
  stretch: boolean;
  limit?: number;
  batchSize: number;
  workers: number;
  seed: number;
  backend: BackendChoice;
}

/** Where evaluation images come from: the options every evaluation command shares. */
export function withEvalDataOptions(cmd: Command): Command {
  return cmd
    .option('--data <spec>', `validation images: the built-in '${BUILTIN_DATA}' (held-out digits) or shards / an ImageFolder (spec section 5)`, BUILTIN_DATA)
    .option('--boxes <path>', 'ground-truth boxes: a folder of VOC XML files or LOC_val_solution.csv')
    .option('--synsets <file>', "synset list (class indices; picks each image's boxes)")
    .option('--stretch', 'resize to size x size instead of short side + centre crop', false)
    .option('--limit <n>', `at most n images (${BUILTIN_DATA}: how many, default ${DIGITS_EVAL_COUNT})`, int(1))
    .option('--batch-size <n>', 'images per pass', int(1), 16)
    .option('--workers <n>', 'decode worker threads (shards)', int(0), Math.max(1, Math.min(4, availableParallelism())))
    .option('--seed <n>', "the training run's seed (its held-out digits) and the SmoothGrad noise seed", int(0), 0)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'));
}

export interface ShardCliOptions {
  shardIndex?: number;
  numShards?: number;
}

/** --out, and --shard-index/--num-shards of an evaluation that jobs can split (`casm eval merge` joins their shares). */
export function withShardOptions(cmd: Command): Command {
  return cmd
    .option('--shard-index <i>', "with --num-shards: this job's share of the batches (0-based)", int(0))
    .option('--num-shards <n>', "score 1/n of the batches and write them to --out for 'casm eval merge' (every job reads all images)", int(1))
    .requiredOption('--out <dir>', 'directory for report.json, report.md and the figures (with --num-shards: for the share)');
}

export function shardOf(o: ShardCliOptions): Shard | null {
  if ((o.shardIndex === undefined) !== (o.numShards === undefined)) throw new UsageError('--shard-index and --num-shards go together');
  if (o.numShards === undefined) return null;
  if (o.shardIndex! >= o.numShards) throw new UsageError(`--shard-index ${o.shardIndex}: must be below --num-shards ${o.numShards}`);
  return { index: o.shardIndex!, count: o.numShards };
}

export function evalDataOptions(o: EvalCliOptions): Omit<EvalDataOptions, 'size' | 'onProblem'> {
  if (o.data !== BUILTIN_DATA) {
    try {
      resolveDataSpec(o.data);
    } catch (e) {
      throw new UsageError(`--data: ${(e as Error).message}`);
    }
  }
  requirePaths({ '--boxes': o.boxes, '--synsets': o.synsets });
  return {
    spec: o.data,
    ...(o.boxes ? { boxes: o.boxes } : {}),
    ...(o.synsets ? { synsets: o.synsets } : {}),
    preprocess: o.stretch ? 'eval-stretch' : 'eval',
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    batchSize: o.batchSize,
    workers: o.workers,
    seed: o.seed,
  };
}

/** `casm eval`. */
export function registerEval(program: Command, argv: string[]): void {
  const evaluate = program.command('eval').description('evaluate masks: localisation (spec section 4)');
  withShardOptions(withEvalDataOptions(evaluate.command('localization')))
    .description('LE, OM, F1, F1a and mask statistics of CASM and the baselines on validation images with boxes; report.json, report.md, le.png, examples.png')
    .option('--checkpoint <dir>', "a training run or checkpoint: its classifier (gradient methods, OM) and masker ('casm')")
    .option('--model <dir>', "an exported mask network ('casm export'): used for 'casm'")
    .option('--compare <runs...>', "other CASM runs or checkpoints whose maskers are scored too, as 'casm-<thinning>' (e.g. the thinning F run)", [])
    .option(
      '--seen <classes>',
      "the classes the models were trained on (ranges like '0-9' or a file of indices or synsets): every figure for seen and unseen classes apart",
    )
    .addOption(
      new Option(
        '--target <class>',
        "what gradient methods explain: 'label', 'predicted' (top-1), or 'auto': the label on seen classes, the top-1 on unseen ones",
      )
        .choices(TARGETS)
        .default('auto'),
    )
    .addOption(
      new Option('--methods <list>', `comma-separated: ${[...EVAL_METHODS, 'all'].join(', ')}`)
        .argParser((v: string) => {
          try {
            return parseEvalMethods(v);
          } catch (e) {
            throw new InvalidArgumentError((e as Error).message);
          }
        })
        .default(DEFAULT_METHODS, DEFAULT_METHODS.join(',')),
    )
    .addOption(
      new Option('--binarize <rule>', "mask -> binary: 'mean' (m >= alpha * mean(m)) or the reference code's 'top-k'").choices(BINARIZATIONS).default('mean'),
    )
    .option('--alpha <a>', 'threshold factor of the mean rule', num(0), 1)
    .option('--layer <name>', 'Grad-CAM layer (default: the last spatial layer, stage 4)')
    .option('--samples <n>', 'SmoothGrad noise samples', int(1), SMOOTHGRAD_DEFAULTS.samples)
    .option('--spread <s>', 'SmoothGrad noise level: sigma = spread * (max(x) - min(x))', num(0), SMOOTHGRAD_DEFAULTS.spread)
    .option('--magnitude', 'SmoothGrad: average squared gradients', false)
    .option('--examples <n>', 'rows of examples.png', int(0), 8)
    .action(
      async (
        o: EvalCliOptions &
          ShardCliOptions & {
            checkpoint?: string;
            model?: string;
            compare: string[];
            seen?: string;
            target: Target;
            methods: EvalMethod[];
            binarize: Binarization;
            alpha: number;
            layer?: string;
            samples: number;
            spread: number;
            magnitude: boolean;
            examples: number;
            out: string;
          },
      ) => {
        const shard = shardOf(o);
        requirePaths({ '--checkpoint': o.checkpoint, '--model': o.model });
        for (const run of o.compare) requirePaths({ '--compare': run });
        let seen: number[] | undefined;
        try {
          if (o.seen !== undefined) seen = parseClasses(o.seen, o.synsets ? readSynsetList(o.synsets) : null, '--seen');
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        const log = (line: string) => console.log(line);
        await initEngine(o.backend, log);
        const options: LocalizationOptions = {
          ...(o.checkpoint ? { checkpoint: o.checkpoint } : {}),
          ...(o.model ? { model: o.model } : {}),
          compare: o.compare,
          ...(seen ? { seen } : {}),
          target: o.target,
          data: evalDataOptions(o),
          methods: o.methods,
          binarization: o.binarize,
          alpha: o.alpha,
          explainer: { ...(o.layer ? { layer: o.layer } : {}), samples: o.samples, spread: o.spread, magnitude: o.magnitude, seed: o.seed },
          examples: o.examples,
          out: o.out,
          argv,
          log,
        };
        if (shard === null) await evalLocalization(options);
        else await evalLocalizationShard(options, shard);
      },
    );
  evaluate
    .command('merge')
    .description("the report of the shards of one 'eval localization|classifiers --num-shards n' (their --out directories), exactly as one job would write it")
    .argument('<shards...>', "the shards' directories, each holding share.json")
    .requiredOption('--out <dir>', 'directory for report.json, report.md and the figures')
    .action(async (dirs: string[], o: { out: string }) => {
      const log = (line: string) => console.log(line);
      if (shareKind(dirs[0]!) === 'localization') await mergeLocalization(dirs, o.out, argv, log);
      else await mergeClassifiers(dirs, o.out, argv, log);
    });
  withShardOptions(withEvalDataOptions(evaluate.command('classifiers')))
    .description(
      "top-1/top-5 of classifiers on clean, masked-in, masked-out and inpainted (Telea) images, masks by a run's masker; report.json, report.md, top1.png, examples.png",
    )
    .requiredOption('--checkpoint <dir>', 'the CASM run whose masker makes the masks (its own classifier is scored first)')
    .option('--model <dir>', "an exported mask network ('casm export') to use instead of the checkpoint's masker")
    .option('--classifiers <paths...>', 'other classifiers: CASM runs or checkpoints, or tfjs LayersModel directories (logits last, normalised NHWC input)', [])
    .addOption(new Option('--binarize <rule>', "which pixels are inpainted: the box rule's binary mask").choices(BINARIZATIONS).default('mean'))
    .option('--alpha <a>', 'threshold factor of the mean rule', num(0), 1)
    .option('--radius <px>', "Telea inpainting radius (the reference code's 3)", num(1, 100), DEFAULT_RADIUS)
    .option('--examples <n>', 'rows of examples.png', int(0), 8)
    .action(
      async (
        o: EvalCliOptions &
          ShardCliOptions & {
            checkpoint: string;
            model?: string;
            classifiers: string[];
            binarize: Binarization;
            alpha: number;
            radius: number;
            examples: number;
            out: string;
          },
      ) => {
        const shard = shardOf(o);
        requirePaths({ '--checkpoint': o.checkpoint, '--model': o.model });
        const log = (line: string) => console.log(line);
        await initEngine(o.backend, log);
        const options: ClassifiersOptions = {
          checkpoint: o.checkpoint,
          ...(o.model ? { model: o.model } : {}),
          classifiers: o.classifiers,
          data: evalDataOptions(o),
          binarization: o.binarize,
          alpha: o.alpha,
          radius: o.radius,
          examples: o.examples,
          out: o.out,
          argv,
          log,
        };
        if (shard === null) await evalClassifiers(options);
        else await evalClassifiersShard(options, shard);
      },
    );
}
