#!/usr/bin/env node
/**
 * casm: the command line. `casm train --help` lists every option with its default; a bad option
 * or value prints what is wrong and exits with code 2; a run that fails exits with code 1.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { defaultTrainConfig, DEFAULT_OPTIM, type ClassifierStep, type TrainConfig } from './casm/config.js';
import { THINNINGS, type Thinning } from './casm/pool.js';
import { defaultLambda, SCORES, type Score } from './casm/score.js';
import { runTraining } from './casm/train.js';
import { resolveCheckpoint } from './checkpoints/checkpoint.js';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from './engine.js';
import { COLORMAPS } from './explain/display.js';
import { explainCommand, ExplainUsageError, METHODS, parseMethods, type ExplainOptions, type Method } from './explain/explainCommand.js';
import { SMOOTHGRAD_DEFAULTS } from './explain/smoothGrad.js';
import { exportMasker, QUANTIZATIONS, type Quantization } from './export/exportMasker.js';
import { maskCommand, MaskUsageError } from './export/maskCommand.js';
import type { Upsample } from './models/masker.js';
import { PROJECT_VERSION } from './version.js';

export const BUILTIN_DATA = 'cluttered-mnist';

/** The built-in digits demo: a small ResNet on 64px canvases, sized to train in minutes on 2 cores. */
export const DIGITS_PRESET = {
  depths: [1, 1, 1, 1],
  width: 16,
  inputSize: 64,
  classes: 10,
  batchSize: 32,
  epochs: 1,
  // From scratch the classifier must be good before the masker can be scored against it.
  warmupSteps: 400,
  trainCount: 25_600,
  valCount: 1_000,
  classifierLr: 0.05,
  maskerLr: 1e-3,
  lrDecayEpochs: 20,
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
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number in [${min}, ${max}]`);
    return n;
  };
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
  out?: string;
  depths: number[];
  width: number;
  inputSize: number;
  decoderWidth: number;
  upsample: Upsample;
  shareEncoder: boolean;
  thinning: Thinning;
  score: Score;
  lambdaR?: number;
  classifierStep: ClassifierStep;
  trainNoise: number;
  warmupSteps: number;
  batchSize: number;
  epochs: number;
  stepsPerEpoch?: number;
  lrClassifier: number;
  lrMasker: number;
  lrDecayEpochs: number;
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
}

export function trainConfigFrom(o: TrainOptions): TrainConfig {
  return defaultTrainConfig({
    arch: { depths: o.depths, width: o.width, classes: DIGITS_PRESET.classes, inputSize: o.inputSize },
    masker: { decoderWidth: o.decoderWidth, upsample: o.upsample, shareEncoder: o.shareEncoder },
    thinning: o.thinning,
    score: o.score,
    lambdaR: o.lambdaR ?? defaultLambda(o.thinning, o.score, DIGITS_PRESET.classes),
    classifierStep: o.classifierStep,
    trainNoise: o.trainNoise,
    warmupSteps: o.warmupSteps,
    optim: {
      ...DEFAULT_OPTIM,
      classifierLr: o.lrClassifier,
      maskerLr: o.lrMasker,
      lrDecayEpochs: o.lrDecayEpochs,
      weightDecay: o.weightDecay,
      clipNorm: o.clipNorm,
    },
    batchSize: o.batchSize,
    epochs: o.epochs,
    stepsPerEpoch: o.stepsPerEpoch ?? Number.MAX_SAFE_INTEGER,
    seed: o.seed,
  });
}

export function buildProgram(): Command {
  const program = new Command('casm')
    .description('Classifier-agnostic saliency masks (CASM) on TensorFlow.js')
    .version(PROJECT_VERSION)
    .exitOverride()
    .showHelpAfterError();
  const p = DIGITS_PRESET;
  program
    .command('train')
    .description('train a classifier and a masker in alternation (spec section 2)')
    .option('--data <spec>', `training data: the built-in '${BUILTIN_DATA}' (ImageNet shards: not yet)`, BUILTIN_DATA)
    .option('--out <dir>', 'run directory for checkpoints, event files and figures (default: checkpoints/<thinning>-<score>)')
    .option('--depths <a,b,c,d>', 'bottleneck blocks per ResNet stage (ResNet-50: 3,4,6,3)', intList, p.depths)
    .option('--width <n>', 'ResNet stem width (ResNet-50: 64)', int(1), p.width)
    .option('--input-size <px>', 'image side, a multiple of 32 (ResNet-50 on ImageNet: 224)', int(32), p.inputSize)
    .option('--decoder-width <n>', 'channels of each decoder branch', int(1), 64)
    .addOption(new Option('--upsample <mode>', 'decoder upsampling').choices(['nearest', 'bilinear', 'deconv']).default('nearest'))
    .option('--no-share-encoder', 'give the masker its own ResNet encoder (ablation)')
    .addOption(new Option('--thinning <strategy>', 'classifier pool strategy').choices(THINNINGS).default('L100'))
    .addOption(new Option('--score <score>', 'masker score').choices(SCORES).default('entropy'))
    .option('--lambda-r <x>', 'area penalty lambda_R (default: the preset of thinning and score, scaled by log(classes)/log(1000))', num(0))
    .addOption(
      new Option('--classifier-step <kind>', "classifier update: eq. 8 'joint' or the reference's 'two-step'")
        .choices(['joint', 'two-step'])
        .default('joint'),
    )
    .option('--train-noise <s>', 'Gaussian input noise level for the classifier (SmoothGrad 3.5); 0 = off', num(0, 10), 0)
    .option('--warmup-steps <n>', 'iterations of classifier-only training before CASM (0 with pretrained weights)', int(0), p.warmupSteps)
    .option('--batch-size <n>', 'images per iteration', int(1), p.batchSize)
    .option('--epochs <n>', 'epochs', int(1), p.epochs)
    .option('--steps-per-epoch <n>', 'iterations per epoch (default: one pass over the training set)', int(1))
    .option('--lr-classifier <x>', 'classifier SGD learning rate (spec: 1e-3 from a pretrained ResNet)', num(0), p.classifierLr)
    .option('--lr-masker <x>', 'masker Adam learning rate', num(0), p.maskerLr)
    .option('--lr-decay-epochs <n>', 'multiply both learning rates by 0.1 every n epochs', int(1), p.lrDecayEpochs)
    .option('--weight-decay <x>', 'L2 weight decay of both optimisers', num(0), DEFAULT_OPTIM.weightDecay)
    .option('--clip-norm <x>', 'masker gradient norm clip', num(0), DEFAULT_OPTIM.clipNorm)
    .option('--train-count <n>', 'cluttered training digits', int(1), p.trainCount)
    .option('--val-count <n>', 'held-out cluttered digits for figures and the final check', int(1), p.valCount)
    .option('--checkpoint-every <n>', 'iterations between checkpoints', int(1), 500)
    .option('--log-every <n>', 'iterations between progress lines', int(1), 25)
    .option('--image-every <n>', 'iterations between TensorBoard mask grids', int(1), 200)
    .option('--max-steps <n>', 'stop after this many iterations in total', int(1))
    .option('--resume <dir>', 'continue a run (its directory or one checkpoint)')
    .option('--classifier-weights <file>', 'start from a pretrained classifier (torchvision safetensors or tfjs model)')
    .option('--seed <n>', 'seed of every random choice', int(0), 0)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (o: TrainOptions) => {
      if (o.data !== BUILTIN_DATA) {
        if (!existsSync(o.data)) throw new UsageError(`--data ${o.data}: no such file or directory`);
        throw new UsageError(`--data ${o.data}: only the built-in '${BUILTIN_DATA}' is supported in this version`);
      }
      if (o.inputSize % 32 !== 0) throw new UsageError(`--input-size ${o.inputSize}: must be a multiple of 32`);
      for (const [flag, path] of [['--resume', o.resume], ['--classifier-weights', o.classifierWeights]] as const) {
        if (path !== undefined && !existsSync(path)) throw new UsageError(`${flag} ${path}: no such file or directory`);
      }
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      const config = trainConfigFrom(o);
      await runTraining({
        config,
        outDir: o.out ?? (o.resume ? dirname(resolveCheckpoint(o.resume)) : `checkpoints/${o.thinning}-${o.score}`),
        trainCount: o.trainCount,
        valCount: o.valCount,
        checkpointEvery: o.checkpointEvery,
        logEvery: o.logEvery,
        imageEvery: o.imageEvery,
        maxSteps: o.maxSteps,
        resume: o.resume,
        classifierWeights: o.classifierWeights,
        log,
      });
    });
  program
    .command('explain')
    .description('saliency maps of images: CASM masks and gradient baselines (spec section 3) as heatmaps, overlays and a grid')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, ...); one that cannot be decoded is reported and skipped')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for <image>-<method>-{heatmap,overlay}.png and grid.png')
    .addOption(
      new Option('--method <list>', `comma-separated methods: ${[...METHODS, 'all'].join(', ')}`)
        .argParser((v: string) => {
          try {
            return parseMethods(v);
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
      if (!existsSync(o.checkpoint)) throw new UsageError(`--checkpoint ${o.checkpoint}: no such file or directory`);
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      try {
        await explainCommand({ ...o, images, methods: o.method, log });
      } catch (e) {
        throw e instanceof ExplainUsageError ? new UsageError(e.message) : e;
      }
    });
  program
    .command('export')
    .description('write the mask network alone (RGB pixels 0..255 in, normalisation inside, mask out) as a tfjs LayersModel + masker.json')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for model.json, weight shards and masker.json')
    .addOption(new Option('--quantize <kind>', 'weight storage').choices(QUANTIZATIONS).default('none'))
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (o: { checkpoint: string; out: string; quantize: Quantization; backend: BackendChoice }) => {
      if (!existsSync(o.checkpoint)) throw new UsageError(`--checkpoint ${o.checkpoint}: no such file or directory`);
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      await exportMasker({ checkpoint: o.checkpoint, out: o.out, quantization: o.quantize, log });
    });
  program
    .command('mask')
    .description("masks of images with an exported mask network ('casm export'): masks.jsonl of areas and boxes, PNGs, .npy")
    .argument('<images...>', 'image files and folders; a file that cannot be decoded is skipped and listed')
    .requiredOption('--model <dir>', "a directory written by 'casm export'")
    .requiredOption('--out <dir>', 'directory for masks.jsonl and the per-image files')
    .option('--png', 'write <image>-mask.png and <image>-overlay.png', false)
    .option('--npy', 'write <image>-mask.npy (float32 H x W)', false)
    .option('--boxes', 'add each mask\'s box (largest component of mask >= mean) to masks.jsonl and the overlays', false)
    .option('--batch-size <n>', 'images per pass', int(1), 16)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (images: string[], o: { model: string; out: string; png: boolean; npy: boolean; boxes: boolean; batchSize: number; backend: BackendChoice }) => {
      if (!existsSync(o.model)) throw new UsageError(`--model ${o.model}: no such file or directory`);
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      try {
        await maskCommand({ ...o, inputs: images, log });
      } catch (e) {
        throw e instanceof MaskUsageError ? new UsageError(e.message) : e;
      }
    });
  return program;
}

/** A wrong invocation: exit code 2, like commander's own errors. */
export class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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
