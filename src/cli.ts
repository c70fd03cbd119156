#!/usr/bin/env node
/**
 * casm: the command line. `casm train --help` lists every option with its default; a bad option
 * or value prints what is wrong and exits with code 2; a run that fails exits with code 1.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, realpathSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  BN_STATISTICS,
  defaultTrainConfig,
  DEFAULT_OPTIM,
  MASKER_IMAGES,
  type BnStatistics,
  type ClassifierStep,
  type MaskerImages,
  type TrainConfig,
} from './casm/config.js';
import { THINNINGS, type Thinning } from './casm/pool.js';
import { SCORES, type Score } from './casm/score.js';
import { PRESET_NAMES, PRESETS, type Preset, type PresetName } from './casm/presets.js';
import { runTraining } from './train/train.js';
import { BUILTIN_DATA, type DataPlan } from './data/trainData.js';
import { readSynsetList } from './data/imageFolder.js';
import { formatInspect, inspectData, makeShards } from './data/dataCommand.js';
import { parseClasses, parseClassRanges } from './data/dataset.js';
import { resolveDataSpec } from './data/spec.js';
import { writeFileAtomic } from './util/atomicWrite.js';
import { readCheckpointState, resolveCheckpoint } from './checkpoints/checkpoint.js';
import { assertUnlocked } from './checkpoints/runLock.js';
import { BACKEND_CHOICES, defaultTrainingPath, initEngine, TRAINING_PATHS, type BackendChoice, type TrainingPath } from './engine/engine.js';
import { COLORMAPS } from './explain/display.js';
import { explainCommand, METHODS, parseMethods, type ExplainOptions, type Method } from './explain/explainCommand.js';
import { SMOOTHGRAD_DEFAULTS } from './explain/smoothGrad.js';
import { exportMasker, QUANTIZATIONS, type Quantization } from './export/exportMasker.js';
import { maskCommand } from './mask/maskCommand.js';
import { expandInputs } from './explain/images.js';
import { DIGITS_EVAL_COUNT, type EvalDataOptions } from './eval/evalData.js';
import { BINARIZATIONS, type Binarization } from './boxes.js';
import { evalClassifiers, evalClassifiersShard, mergeClassifiers, type ClassifiersOptions } from './eval/classifiersCommand.js';
import { DEFAULT_RADIUS } from './eval/inpaint.js';
import { evalLocalization, evalLocalizationShard, mergeLocalization, TARGETS, type LocalizationOptions, type Target } from './eval/localizationCommand.js';
import { shareKind, type Shard } from './eval/shares.js';
import { runSweep } from './eval/sweep.js';
import { runUnseen, TRAININGS } from './eval/unseen.js';
import { DEFAULT_METHODS, EVAL_METHODS, parseEvalMethods, type EvalMethod } from './eval/methods.js';
import { MASK_STRIDES, type MaskStride, type Upsample } from './models/masker.js';
import { PROJECT_VERSION } from './version.js';
import { UsageError } from './util/usageError.js';

/** A named training recipe: what the options that are not given default to. */
/** The preset a run uses: the one named, else digits for the built-in data and imagenet for shards. */
function presetOf(o: { preset?: PresetName; data: string }): Preset {
  return PRESETS[o.preset ?? (o.data === BUILTIN_DATA ? 'digits' : 'imagenet')];
}

const presetHelp = (key: keyof Preset) => {
  const v = (p: Preset) => (Array.isArray(p[key]) ? (p[key] as number[]).join(',') : String(p[key]));
  return ` (default: the preset's; ${PRESET_NAMES.map((n) => `${n} ${v(PRESETS[n])}`).join(', ')})`;
};

function int(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

function num(min: number, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Infinity ? `expected a finite number >= ${min}` : `expected a number in [${min}, ${max}]`);
    }
    return n;
  };
}

/** A comma-separated list of some of `choices`, each once. */
function listOf<T extends string>(choices: readonly T[]) {
  return (v: string): T[] => {
    const items = v.split(',');
    for (const x of items) if (!choices.includes(x as T)) throw new InvalidArgumentError(`unknown '${x}': valid are ${choices.join(', ')}`);
    if (new Set(items).size !== items.length) throw new InvalidArgumentError('an item is given twice');
    return items as T[];
  };
}

function stride(v: string): MaskStride {
  const n = MASK_STRIDES.find((s) => String(s) === v);
  if (n === undefined) throw new InvalidArgumentError(`expected one of ${MASK_STRIDES.join(', ')}`);
  return n;
}

function intList(v: string): number[] {
  const parts = v.split(',').map(Number);
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new InvalidArgumentError('expected four positive integers, e.g. 3,4,6,3');
  }
  return parts;
}

interface TrainOptions {
  data: string;
  val?: string;
  boxes?: string;
  synsets?: string;
  classes?: string;
  numClasses?: number;
  workers: number;
  shuffleBuffer: number;
  prefetch: number;
  epochFraction?: number;
  shardIndex: number;
  numShards: number;
  out?: string;
  depths?: number[];
  width?: number;
  inputSize?: number;
  decoderWidth: number;
  upsample: Upsample;
  decoderStride: MaskStride;
  shareEncoder: boolean;
  thinning: Thinning;
  score: Score;
  lambdaR?: number;
  lambdaTv?: number;
  lambdaIn?: number;
  cropScale?: number;
  colorJitter?: number;
  bnStatistics?: BnStatistics;
  maskerImages?: MaskerImages;
  preset?: PresetName;
  classifierStep: ClassifierStep;
  trainNoise: number;
  warmupSteps?: number;
  batchSize?: number;
  epochs?: number;
  stepsPerEpoch?: number;
  lrClassifier?: number;
  lrMasker?: number;
  lrDecayEpochs?: number;
  weightDecay: number;
  clipNorm: number;
  trainCount: number;
  valCount: number;
  checkpointEvery: number;
  logEvery: number;
  imageEvery: number;
  maxSteps?: number;
  resume?: string;
  classifierWeights?: string;
  seed: number;
  backend: BackendChoice;
  trainingPath: TrainingPath;
}

/** The resolved configuration: options given win, the rest comes from the data's preset. */
export function trainConfigFrom(o: TrainOptions, classes: number): TrainConfig {
  const p = presetOf(o);
  return defaultTrainConfig({
    arch: { depths: o.depths ?? p.depths, width: o.width ?? p.width, classes, inputSize: o.inputSize ?? p.inputSize },
    masker: { decoderWidth: o.decoderWidth, upsample: o.upsample, shareEncoder: o.shareEncoder, stride: o.decoderStride },
    thinning: o.thinning,
    score: o.score,
    // Unset: defaultTrainConfig's, from the thinning, score and class count.
    ...(o.lambdaR !== undefined ? { lambdaR: o.lambdaR } : {}),
    maskTerms: { tv: o.lambdaTv ?? p.lambdaTv, maskedIn: o.lambdaIn ?? p.lambdaIn },
    bnStatistics: o.bnStatistics ?? p.bnStatistics,
    maskerImages: o.maskerImages ?? p.maskerImages,
    classifierStep: o.classifierStep,
    trainNoise: o.trainNoise,
    warmupSteps: o.warmupSteps ?? p.warmupSteps,
    optim: {
      ...DEFAULT_OPTIM,
      classifierLr: o.lrClassifier ?? p.classifierLr,
      maskerLr: o.lrMasker ?? p.maskerLr,
      lrDecayEpochs: o.lrDecayEpochs ?? p.lrDecayEpochs,
      weightDecay: o.weightDecay,
      clipNorm: o.clipNorm,
    },
    batchSize: o.batchSize ?? p.batchSize,
    epochs: o.epochs ?? p.epochs,
    stepsPerEpoch: o.stepsPerEpoch ?? Number.MAX_SAFE_INTEGER,
    seed: o.seed,
  });
}

/** Where the run's data comes from, and the classifier's number of classes. */
function dataPlanFrom(o: TrainOptions): { plan: DataPlan; classes: number } {
  if (o.data === BUILTIN_DATA) {
    const plan: DataPlan = { kind: 'digits', trainCount: o.trainCount, valCount: o.valCount };
    if (o.classes) plan.classes = parseClassRanges(o.classes, '--classes');
    return { plan, classes: PRESETS.digits.classes };
  }
  const synsetCount = o.synsets ? readSynsetList(o.synsets).length : null;
  const shardOptions = { shardIndex: o.shardIndex, numShards: o.numShards };
  const plan: DataPlan = {
    kind: 'shards',
    train: o.data,
    trainOptions: { ...shardOptions, ...(o.synsets ? { synsets: o.synsets } : {}), ...(o.classes ? { classes: o.classes } : {}) },
    valOptions: { ...(o.synsets ? { synsets: o.synsets } : {}), ...(o.boxes ? { boxes: o.boxes } : {}) },
    valCount: o.valCount,
    workers: o.workers,
    shuffleBuffer: o.shuffleBuffer,
    prefetchBatches: o.prefetch,
    epochFraction: o.epochFraction ?? presetOf(o).epochFraction,
    augmentation: { cropScale: [o.cropScale ?? presetOf(o).cropScale, 1], colorJitter: o.colorJitter ?? presetOf(o).colorJitter },
  };
  if (o.val) plan.val = o.val;
  if (o.numClasses !== undefined && synsetCount !== null && o.numClasses < synsetCount) {
    throw new UsageError(`--num-classes ${o.numClasses}: fewer than the ${synsetCount} classes of --synsets ${o.synsets}`);
  }
  return { plan, classes: o.numClasses ?? synsetCount ?? presetOf(o).classes };
}

/** The options of a training run (`casm train`; `casm experiment unseen` trains with them too). */
function withTrainOptions(cmd: Command): Command {
  return cmd
    .option(
      '--data <spec>',
      `training data: the built-in '${BUILTIN_DATA}', or shards (spec section 5): WebDataset tars ('dir/train-{000000..000146}.tar', globs), ` +
        "TFRecords (build_imagenet_data.py), an ImageFolder; several joined with '::'",
      BUILTIN_DATA,
    )
    .option('--val <spec>', 'held-out shards for the mask figures and the final check (default: the first training images)')
    .option('--boxes <path>', 'boxes of the held-out images: a folder of VOC XML files or LOC_val_solution.csv')
    .option('--synsets <file>', 'synset list (sorted synsets -> class index); default: the ImageFolder folders or the labels as stored')
    .option('--classes <list>', "train on these classes only: ranges like '0-99,200' or a file of indices or synsets")
    .option('--num-classes <n>', `classifier outputs (default: the number of --synsets, else the preset's: imagenet ${PRESETS.imagenet.classes})`, int(2))
    .option('--workers <n>', 'decode worker threads (0: decode in the main thread)', int(0), Math.max(1, Math.min(4, availableParallelism())))
    .option('--shuffle-buffer <n>', 'samples held for shuffling after the shard-order shuffle', int(0), 1000)
    .option('--prefetch <batches>', 'batches the workers may decode ahead of training', int(1), 4)
    .option('--crop-scale <min>', `shards: smallest area share of RandomResizedCrop${presetHelp('cropScale')}`, num(0.01, 1))
    .option(
      '--color-jitter <s>',
      `shards: ColorJitter strength, brightness / contrast / saturation factors in [1-s, 1+s]; 0 = off${presetHelp('colorJitter')}`,
      num(0, 1),
    )
    .option('--epoch-fraction <f>', `share of the training set per epoch${presetHelp('epochFraction')}`, num(1e-9, 1))
    .option('--shard-index <i>', "this job's share of the shards: those with index % num-shards == i", int(0), 0)
    .option('--num-shards <n>', 'jobs the shards are split across', int(1), 1)
    .option('--out <dir>', 'run directory for checkpoints, event files and figures (default: checkpoints/<thinning>-<score>)')
    .addOption(
      new Option(
        '--preset <name>',
        "the defaults of every option below: 'digits' (built-in data), 'imagenet' (shards; the spec), 'small-photos' (small real-photo sets from scratch)",
      ).choices(PRESET_NAMES),
    )
    .option('--depths <a,b,c,d>', `bottleneck blocks per ResNet stage${presetHelp('depths')}`, intList)
    .option('--width <n>', `ResNet stem width${presetHelp('width')}`, int(1))
    .option('--input-size <px>', `image side, a multiple of 32${presetHelp('inputSize')}`, int(32))
    .option('--decoder-width <n>', 'channels of each decoder branch', int(1), 64)
    .addOption(new Option('--upsample <mode>', 'decoder upsampling').choices(['nearest', 'bilinear', 'deconv']).default('nearest'))
    .addOption(
      new Option(
        '--decoder-stride <n>',
        `the mask is made at 1/n of the input side from the feature maps no finer than that: ${MASK_STRIDES.join(', ')} (4: the reference, every map)`,
      )
        .default(4)
        .argParser(stride),
    )
    .option('--no-share-encoder', 'give the masker its own ResNet encoder (ablation)')
    .addOption(new Option('--thinning <strategy>', 'classifier pool strategy').choices(THINNINGS).default('L100'))
    .addOption(new Option('--score <score>', 'masker score').choices(SCORES).default('entropy'))
    .option('--lambda-r <x>', 'area penalty lambda_R (default: the preset of thinning and score, scaled by log(classes)/log(1000))', num(0))
    .option('--lambda-tv <x>', `weight of the masks' total variation (mean squared neighbour difference); 0 = off, the paper${presetHelp('lambdaTv')}`, num(0))
    .option('--lambda-in <x>', `weight of the masked-in term CE(f'(m * x), y) on clean-correct images; 0 = off, the paper${presetHelp('lambdaIn')}`, num(0))
    .addOption(
      new Option(
        '--bn-statistics <images>',
        `what the classifier's BatchNorm moving statistics average: 'all' its training-mode inputs, masked-out ones too (the reference), or 'clean' images only${presetHelp('bnStatistics')}`,
      ).choices(BN_STATISTICS),
    )
    .addOption(
      new Option(
        '--masker-images <which>',
        `which images train the masker: 'correct' those the classifier gets right (the reference's adaptive lambda), or 'all' (every image, as at inference)${presetHelp('maskerImages')}`,
      ).choices(MASKER_IMAGES),
    )
    .addOption(
      new Option('--classifier-step <kind>', "classifier update: eq. 8 'joint' or the reference's 'two-step'").choices(['joint', 'two-step']).default('joint'),
    )
    .option('--train-noise <s>', 'Gaussian input noise level for the classifier (SmoothGrad 3.5); 0 = off', num(0, 10), 0)
    .option('--warmup-steps <n>', `iterations of classifier-only training before CASM${presetHelp('warmupSteps')}`, int(0))
    .option('--batch-size <n>', `images per iteration${presetHelp('batchSize')}`, int(1))
    .option('--epochs <n>', `epochs${presetHelp('epochs')}`, int(1))
    .option('--steps-per-epoch <n>', 'iterations per epoch (default: one pass over the training set)', int(1))
    .option('--lr-classifier <x>', `classifier SGD learning rate${presetHelp('classifierLr')}`, num(0))
    .option('--lr-masker <x>', `masker Adam learning rate${presetHelp('maskerLr')}`, num(0))
    .option('--lr-decay-epochs <n>', `multiply both learning rates by 0.1 every n epochs${presetHelp('lrDecayEpochs')}`, int(1))
    .option('--weight-decay <x>', 'L2 weight decay of both optimisers', num(0), DEFAULT_OPTIM.weightDecay)
    .option('--clip-norm <x>', 'masker gradient norm clip', num(0), DEFAULT_OPTIM.clipNorm)
    .option('--train-count <n>', 'cluttered training digits (built-in data)', int(1), 25_600)
    .option('--val-count <n>', 'held-out images for figures and the final check', int(1), 1_000)
    .option('--checkpoint-every <n>', 'iterations between checkpoints', int(1), 500)
    .option('--log-every <n>', 'iterations between progress lines', int(1), 25)
    .option('--image-every <n>', 'iterations between TensorBoard mask grids', int(1), 200)
    .option('--max-steps <n>', 'stop after this many iterations in total', int(1))
    .option('--resume <dir>', 'continue a run (its directory or one checkpoint)')
    .option('--classifier-weights <file>', 'start from a pretrained classifier (torchvision safetensors or tfjs model)')
    .option('--seed <n>', 'seed of every random choice', int(0), 0)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .addOption(
      new Option(
        '--training-path <path>',
        "native engine: 'fused' (TensorFlow's fused kernels, lazy gradients; src/engine/) or 'composed' (tfjs's ops as written; CASM_FUSED=0 makes it the default)",
      )
        .choices(TRAINING_PATHS)
        .default(defaultTrainingPath()),
    );
}

/** Options that change how a run goes, not what it computes: a resume may set them anew. */
const RUNTIME_OPTIONS = new Set<keyof TrainOptions>([
  'resume',
  'out',
  'maxSteps',
  'checkpointEvery',
  'logEvery',
  'imageEvery',
  'workers',
  'prefetch',
  'backend',
  'trainingPath',
]);

/**
 * The options of a resumed run: those it was started with, and this command's runtime options.
 * Any other option given explicitly must equal the saved one: a resume continues the run as it
 * was started, and silently dropping `--lr-classifier 0.5` would train something the user did not ask for.
 */
function resumedOptions(o: TrainOptions, cmd: Command, log: (line: string) => void): TrainOptions {
  requirePaths({ '--resume': o.resume });
  // A run that is still starting may have no checkpoint yet: say that it is in use, not that it has none.
  assertUnlocked(o.out ?? (existsSync(join(o.resume!, 'state.json')) ? dirname(o.resume!) : o.resume!));
  const dir = resolveCheckpoint(o.resume!);
  // The options only: the weight files are verified once, when the run loads them.
  const saved = readCheckpointState(dir, { verifyFiles: false }).run?.options as Partial<TrainOptions> | null | undefined;
  if (!saved) {
    log(`${dir}: no options recorded (an older checkpoint, or a run started from code): its saved configuration and this command's data options apply`);
    return o;
  }
  const shown = (v: unknown) => (v === undefined ? '(not given)' : Array.isArray(v) ? v.join(',') : String(v));
  const runtime: Partial<TrainOptions> = {};
  for (const opt of cmd.options) {
    const key = opt.attributeName() as keyof TrainOptions;
    const given = cmd.getOptionValueSource(key) === 'cli';
    if (RUNTIME_OPTIONS.has(key)) {
      (runtime as Record<string, unknown>)[key] = o[key];
      if (given && key !== 'resume' && JSON.stringify(o[key]) !== JSON.stringify(saved[key]))
        log(`resume: ${opt.long} ${shown(o[key])} (the run was started with ${shown(saved[key])})`);
    } else if (given && JSON.stringify(o[key]) !== JSON.stringify(saved[key])) {
      throw new UsageError(
        `${opt.long} ${shown(o[key])}: the run in ${dir} was started with ${shown(saved[key])}; a resume continues a run as it was started (train into a new --out to change it)`,
      );
    }
  }
  // An option the run predates is not in its record: it takes its default, which for every option
  // added since is the behaviour the run was trained with (--decoder-stride 4, say).
  return { ...o, ...(saved as TrainOptions), ...runtime };
}

/** Checks every command shares: this job's share of the shards, and an output folder that can be one. */
function checkCommonOptions(o: { shardIndex?: number; numShards?: number; out?: string }): void {
  if (o.shardIndex !== undefined && o.numShards !== undefined && o.shardIndex >= o.numShards) {
    throw new UsageError(`--shard-index ${o.shardIndex}: must be below --num-shards ${o.numShards}`);
  }
  if (o.out !== undefined && existsSync(o.out) && !statSync(o.out).isDirectory()) throw new UsageError(`--out ${o.out}: exists and is not a directory`);
}

/** Paths given on the command line must exist: a usage error naming the flag otherwise. */
function requirePaths(paths: Record<string, string | undefined>): void {
  for (const [flag, path] of Object.entries(paths)) {
    if (path !== undefined && !existsSync(path)) throw new UsageError(`${flag} ${path}: no such file or directory`);
  }
}

/** Checks of training options that need no engine: paths exist, data specs match files. */
function checkTrainOptions(o: TrainOptions): void {
  if (o.inputSize !== undefined && o.inputSize % 32 !== 0) throw new UsageError(`--input-size ${o.inputSize}: must be a multiple of 32`);
  requirePaths({ '--resume': o.resume, '--classifier-weights': o.classifierWeights, '--synsets': o.synsets, '--boxes': o.boxes });
  // A spec that matches nothing is an error before anything starts.
  for (const [flag, spec] of [
    ['--data', o.data],
    ['--val', o.val],
  ] as const) {
    if (spec === undefined || spec === BUILTIN_DATA) continue;
    try {
      resolveDataSpec(spec);
    } catch (e) {
      throw new UsageError(`${flag}: ${(e as Error).message}`);
    }
  }
}

/** The CLI; `argv` (after `casm`) is what reports record as their command. */
export function buildProgram(argv: string[] = []): Command {
  const program = new Command('casm')
    .description('Classifier-agnostic saliency masks (CASM) on TensorFlow.js')
    .version(PROJECT_VERSION)
    .exitOverride()
    .showHelpAfterError()
    .hook('preAction', (_, command) => checkCommonOptions(command.opts()));
  withTrainOptions(program.command('train'))
    .description('train a classifier and a masker in alternation (spec section 2)')
    .action(async (given: TrainOptions, cmd: Command) => {
      const log = (line: string) => console.log(line);
      const o = given.resume ? resumedOptions(given, cmd, log) : given;
      checkTrainOptions(o);
      await initEngine(o.backend, log, o.trainingPath);
      const { plan, classes } = dataPlanFrom(o);
      const config = trainConfigFrom(o, classes);
      if (plan.kind === 'shards' && !o.classifierWeights && !o.resume && config.warmupSteps === 0) {
        log(
          'note: no --classifier-weights and no --warmup-steps: the masker is scored against an untrained classifier (the paper starts from a pretrained ResNet-50)',
        );
      }
      await runTraining({
        config,
        outDir: o.out ?? (o.resume ? dirname(resolveCheckpoint(o.resume)) : `checkpoints/${o.thinning}-${o.score}`),
        data: plan,
        checkpointEvery: o.checkpointEvery,
        logEvery: o.logEvery,
        imageEvery: o.imageEvery,
        maxSteps: o.maxSteps,
        resume: o.resume,
        classifierWeights: o.classifierWeights,
        options: { ...o },
        log,
      });
    });
  const data = program.command('data').description('data sets as shards: write WebDataset shards, inspect any spec (spec section 5)');
  data
    .command('make-shards')
    .description('write an ImageFolder (root/<synset>/<image>) as shuffled WebDataset tar shards + synsets.txt')
    .argument('<imagefolder>', 'ImageFolder root')
    .argument('<out>', 'output folder (must not hold shards with the same prefix)')
    .option('--shard-size <n>', 'samples per shard', int(1), 1000)
    .option('--prefix <name>', 'shard file names <prefix>-000000.tar', 'shard')
    .option('--synsets <file>', 'synset list fixing the class indices (default: the folder names)')
    .option('--no-shuffle', 'keep the folder order (default: a seeded shuffle, so shards mix classes)')
    .option('--seed <n>', 'seed of the shuffle', int(0), 0)
    .action(async (root: string, out: string, o: { shardSize: number; prefix: string; synsets?: string; shuffle: boolean; seed: number }) => {
      if (!existsSync(root)) throw new UsageError(`${root}: no such file or directory`);
      const log = (line: string) => console.log(line);
      const r = await makeShards({ root, out, ...o, log });
      if (r.problems.count > 0) {
        log(`skipped ${r.problems.count}: ${JSON.stringify(r.problems.byKind)}`);
        for (const line of r.problems.format().slice(0, 20)) log(`  ${line}`);
      }
    });
  data
    .command('inspect')
    .description('read every sample of a spec: counts, classes, image sizes, formats, boxes and problems')
    .argument('<spec>', 'shards or an ImageFolder, as for train --data')
    .option('--synsets <file>', 'synset list')
    .option('--classes <list>', "only these classes: ranges like '0-99,200' or a file")
    .option('--boxes <path>', 'a folder of VOC XML files or LOC_val_solution.csv')
    .option('--shard-index <i>', "this job's share of the shards", int(0), 0)
    .option('--num-shards <n>', 'jobs the shards are split across', int(1), 1)
    .option('--json <file>', 'also write the report as JSON')
    .action(async (spec: string, o: { synsets?: string; classes?: string; boxes?: string; shardIndex: number; numShards: number; json?: string }) => {
      try {
        resolveDataSpec(spec);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const log = (line: string) => console.log(line);
      const { json, ...rest } = o;
      const report = await inspectData(spec, { ...rest, log });
      log(formatInspect(report));
      if (json) writeFileAtomic(json, JSON.stringify(report, null, 2));
    });
  program
    .command('explain')
    .description('saliency maps of images: CASM masks and gradient baselines (spec section 3) as heatmaps, overlays and a grid')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, ...) and folders of them; one that cannot be decoded is reported and skipped')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for <image>-<method>-{heatmap,overlay}.png and grid.png')
    .addOption(
      new Option('--method <list>', `comma-separated methods: ${[...METHODS, 'all'].join(', ')}`)
        .argParser((v: string) => {
          try {
            return parseMethods<Method>(v);
          } catch (e) {
            throw new InvalidArgumentError((e as Error).message);
          }
        })
        .default([...METHODS], 'all'),
    )
    .option('--layer <name>', 'Grad-CAM layer (default: the last spatial layer, stage 4)')
    .option('--target <class>', "class explained in every image (default: each image's top class)", int(0))
    .option('--samples <n>', 'SmoothGrad noise samples', int(1), SMOOTHGRAD_DEFAULTS.samples)
    .option('--spread <s>', 'SmoothGrad noise level: sigma = spread * (max(x) - min(x))', num(0), SMOOTHGRAD_DEFAULTS.spread)
    .option('--magnitude', 'SmoothGrad: average squared gradients', false)
    .addOption(new Option('--colormap <name>', 'heatmap colours').choices(COLORMAPS).default('jet'))
    .option('--batch-size <n>', 'images per pass', int(1), 8)
    .option('--seed <n>', 'seed of the SmoothGrad noise', int(0), 0)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (images: string[], o: Omit<ExplainOptions, 'images' | 'methods' | 'log'> & { method: Method[]; backend: BackendChoice }) => {
      requirePaths({ '--checkpoint': o.checkpoint });
      const files = await expandInputs(images);
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      await explainCommand({ ...o, images: files, methods: o.method, log });
    });
  program
    .command('export')
    .description('write the mask network alone (RGB pixels 0..255 in, normalisation inside, mask out) as a tfjs LayersModel + masker.json')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for model.json, weight shards and masker.json')
    .addOption(new Option('--quantize <kind>', 'weight storage').choices(QUANTIZATIONS).default('none'))
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (o: { checkpoint: string; out: string; quantize: Quantization; backend: BackendChoice }) => {
      requirePaths({ '--checkpoint': o.checkpoint });
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      await exportMasker({ checkpoint: o.checkpoint, out: o.out, quantization: o.quantize, log });
    });
  program
    .command('mask')
    .description("masks of images with an exported mask network ('casm export'): masks.jsonl of areas and boxes, PNGs, .npy")
    .argument('[images...]', 'image files and folders; a file that cannot be decoded is skipped and listed')
    .option('--data <spec>', 'instead of files: shards or an ImageFolder (spec section 5), read by decode workers')
    .option('--shard-index <i>', "with --data: this job's share of the shards", int(0), 0)
    .option('--num-shards <n>', 'with --data: jobs the shards are split across', int(1), 1)
    .option('--workers <n>', 'with --data: decode worker threads', int(0), Math.max(1, Math.min(4, availableParallelism())))
    .requiredOption('--model <dir>', "a directory written by 'casm export'")
    .requiredOption('--out <dir>', 'directory for masks.jsonl and the per-image files')
    .option('--png', 'write <image>-mask.png and <image>-overlay.png', false)
    .option('--npy', 'write <image>-mask.npy (float32 H x W)', false)
    .option('--boxes', "add each mask's box (largest component of mask >= mean) to masks.jsonl and the overlays", false)
    .option('--batch-size <n>', 'images per pass', int(1), 16)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (images: string[], o: MaskCliOptions) => {
      requirePaths({ '--model': o.model });
      if (images.length > 0 === (o.data !== undefined)) throw new UsageError('give image files and folders, or --data <spec>, not both');
      if (o.data !== undefined) {
        try {
          resolveDataSpec(o.data);
        } catch (e) {
          throw new UsageError(`--data: ${(e as Error).message}`);
        }
      }
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      const { data, shardIndex, numShards, workers, ...rest } = o;
      await maskCommand({ ...rest, inputs: images, ...(data !== undefined ? { data: { spec: data, shardIndex, numShards, workers } } : {}), log });
    });
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
      await initEngine(o.backend, log, o.trainingPath);
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
      await initEngine(o.backend, log, o.trainingPath);
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
  return program;
}

type ExperimentCliOptions = TrainOptions & { evalLimit?: number; evalBatchSize: number; task?: number; merge: boolean };

/** What every experiment adds to the training options: its evaluations, and running as a job array. */
function withExperimentOptions(cmd: Command): Command {
  return cmd
    .option('--eval-limit <n>', `validation images per evaluation (${BUILTIN_DATA}: default ${DIGITS_EVAL_COUNT}; shards: all)`, int(1))
    .option('--eval-batch-size <n>', 'images per evaluation pass', int(1), 16)
    .option('--task <i>', 'run only the i-th training (0-based) and its evaluation: one task of a job array (e.g. --task $SLURM_ARRAY_TASK_ID)', int(0))
    .option('--merge', 'train nothing: the report of trainings that are all done (the last step after a job array)', false);
}

function checkExperimentOptions(name: string, o: ExperimentCliOptions): void {
  if (o.task !== undefined && o.merge) throw new UsageError(`experiment ${name}: --task runs one training, --merge none: give one of them`);
  if (o.out === undefined) throw new UsageError(`experiment ${name}: give --out <dir> (the experiment directory)`);
  if (o.resume !== undefined || o.classes !== undefined)
    throw new UsageError(`experiment ${name}: the experiment chooses the classes and resumes itself (no --classes, --resume)`);
  if (o.data !== BUILTIN_DATA && o.val === undefined)
    throw new UsageError(`experiment ${name}: give --val <spec> and --boxes <path>: the validation images the maskers are scored on`);
  checkTrainOptions(o);
}

/** One training of an experiment into runDir; continued from its latest checkpoint when it has one. */
async function trainRun(o: TrainOptions, config: TrainConfig, data: DataPlan, runDir: string, log: (line: string) => void): Promise<void> {
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
function evaluateCasm(o: ExperimentCliOptions, runDir: string, out: string, argv: string[], log: (line: string) => void) {
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

interface EvalCliOptions {
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
function withEvalDataOptions(cmd: Command): Command {
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

interface ShardCliOptions {
  shardIndex?: number;
  numShards?: number;
}

/** --out, and --shard-index/--num-shards of an evaluation that jobs can split (`casm eval merge` joins their shares). */
function withShardOptions(cmd: Command): Command {
  return cmd
    .option('--shard-index <i>', "with --num-shards: this job's share of the batches (0-based)", int(0))
    .option('--num-shards <n>', "score 1/n of the batches and write them to --out for 'casm eval merge' (every job reads all images)", int(1))
    .requiredOption('--out <dir>', 'directory for report.json, report.md and the figures (with --num-shards: for the share)');
}

function shardOf(o: ShardCliOptions): Shard | null {
  if ((o.shardIndex === undefined) !== (o.numShards === undefined)) throw new UsageError('--shard-index and --num-shards go together');
  if (o.numShards === undefined) return null;
  if (o.shardIndex! >= o.numShards) throw new UsageError(`--shard-index ${o.shardIndex}: must be below --num-shards ${o.numShards}`);
  return { index: o.shardIndex!, count: o.numShards };
}

function evalDataOptions(o: EvalCliOptions): Omit<EvalDataOptions, 'size' | 'onProblem'> {
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

interface MaskCliOptions {
  model: string;
  out: string;
  png: boolean;
  npy: boolean;
  boxes: boolean;
  batchSize: number;
  data?: string;
  shardIndex: number;
  numShards: number;
  workers: number;
  backend: BackendChoice;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram(argv.slice(2));
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    if (e.code?.startsWith('commander.')) return 2; // commander printed the message already
    if (err instanceof UsageError) {
      console.error(`casm: ${err.message}`);
      return 2;
    }
    console.error(`casm: ${e.message ?? String(err)}`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = await main(process.argv);
}
