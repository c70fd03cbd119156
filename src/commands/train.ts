/**
 * `casm train`: the training options (every default a preset's), the configuration they resolve to,
 * the data plan, and resuming with the options a run was started with.
 */
import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import {
  BN_STATISTICS,
  defaultTrainConfig,
  DEFAULT_OPTIM,
  MASKER_IMAGES,
  type BnStatistics,
  type ClassifierStep,
  type MaskerImages,
  type TrainConfig,
} from '../casm/config.js';
import { THINNINGS, type Thinning } from '../casm/pool.js';
import { SCORES, type Score } from '../casm/score.js';
import { PRESET_NAMES, PRESETS, type PresetName } from '../casm/presets.js';
import { runTraining } from '../train/train.js';
import { BUILTIN_DATA, type DataPlan } from '../data/trainData.js';
import { readSynsetList } from '../data/imageFolder.js';
import { parseClassRanges } from '../data/dataset.js';
import { resolveDataSpec } from '../data/spec.js';
import { readCheckpointState, resolveCheckpoint } from '../checkpoints/checkpoint.js';
import { assertUnlocked } from '../checkpoints/runLock.js';
import { BACKEND_CHOICES, defaultTrainingPath, initEngine, TRAINING_PATHS, type BackendChoice, type TrainingPath } from '../engine/engine.js';
import { PRECISIONS, type Precision } from '../engine/mixedPrecision.js';
import { MASK_STRIDES, type MaskStride, type Upsample } from '../models/masker.js';
import { UsageError } from '../util/usageError.js';
import { int, intList, num, presetHelp, presetOf, requirePaths, stride } from './options.js';

export interface TrainOptions {
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
  cutmix?: number;
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
  precision: Precision;
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
    cutMix: o.cutmix ?? p.cutMix,
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
export function dataPlanFrom(o: TrainOptions): { plan: DataPlan; classes: number } {
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
export function withTrainOptions(cmd: Command): Command {
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
    .option(
      '--cutmix <p>',
      `probability that a warm-up batch is CutMix'd (a box pasted from another image, labels mixed by area); 0 = off${presetHelp('cutMix')}`,
      num(0, 1),
    )
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
    )
    .addOption(
      new Option(
        '--precision <p>',
        'bf16: convolutions and their gradients in bfloat16, weights, BatchNorm and losses in float32 (native engine, a CPU with AMX-BF16 or AVX512-BF16)',
      )
        .choices(PRECISIONS)
        .default('fp32'),
    );
}

/** Options that change how a run goes, not what it computes: a resume may set them anew. */
export const RUNTIME_OPTIONS = new Set<keyof TrainOptions>([
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
  'precision',
]);

/**
 * The options of a resumed run: those it was started with, and this command's runtime options.
 * Any other option given explicitly must equal the saved one: a resume continues the run as it
 * was started, and silently dropping `--lr-classifier 0.5` would train something the user did not ask for.
 */
export function resumedOptions(o: TrainOptions, cmd: Command, log: (line: string) => void): TrainOptions {
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

/** Checks of training options that need no engine: paths exist, data specs match files. */
export function checkTrainOptions(o: TrainOptions): void {
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

/** `casm train`. */
export function registerTrain(program: Command, _argv: string[]): void {
  withTrainOptions(program.command('train'))
    .description('train a classifier and a masker in alternation (spec section 2)')
    .action(async (given: TrainOptions, cmd: Command) => {
      const log = (line: string) => console.log(line);
      const o = given.resume ? resumedOptions(given, cmd, log) : given;
      checkTrainOptions(o);
      await initEngine(o.backend, log, o.trainingPath, o.precision);
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
}
