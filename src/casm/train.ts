/**
 * A training run, top to bottom: data, trainer (fresh or resumed), the loop with progress,
 * TensorBoard and checkpoints, then a held-out localisation check and the PNG of masks.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError, loadCheckpoint, readCheckpointState, resolveCheckpoint, saveCheckpoint } from '../checkpoints/checkpoint.js';
import { loadCluttered, type ClutteredSet } from '../data/clutteredMnist.js';
import { toBatch } from '../data/batches.js';
import { denormalize } from '../data/normalize.js';
import { centreBox, localizationError, maskBox, type Box } from '../eval/localization.js';
import { maskGridPng } from '../log/maskGrid.js';
import { Progress } from '../log/progress.js';
import { SummaryWriter } from '../log/tensorboard.js';
import { loadClassifierWeights } from '../models/weights.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { Rng } from '../util/rng.js';
import { architectureKey, type TrainConfig } from './config.js';
import { CasmTrainer, type StepStats } from './trainer.js';

export interface RunOptions {
  config: TrainConfig;
  /** Where checkpoints, event files and figures go. */
  outDir: string;
  trainCount: number;
  /** Held-out images (MNIST's test digits) for the mask figure and the final localisation check. */
  valCount: number;
  checkpointEvery: number;
  logEvery: number;
  imageEvery: number;
  /** A run directory or checkpoint to continue from. */
  resume?: string;
  /** Pretrained classifier: torchvision safetensors or a tfjs model. */
  classifierWeights?: string;
  /** Stop after this many iterations in total (for tests and interrupted runs); default: the schedule's end. */
  maxSteps?: number;
  log: (line: string) => void;
}

export interface RunResult {
  trainer: CasmTrainer;
  checkpoint: string;
  last: StepStats | null;
  eval: HeldOutEval;
}

/** Samples of the epoch-`epoch` permutation, batch `b`: a pure function of (seed, epoch), so resuming needs no data state. */
function batchAt(n: number, batchSize: number, seed: number, epoch: number, b: number): number[] {
  const rng = new Rng((seed * 1_000_003 + epoch) >>> 0);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return perm.slice(b * batchSize, (b + 1) * batchSize);
}

export async function runTraining(opts: RunOptions): Promise<RunResult> {
  const { log } = opts;
  let config = opts.config;
  let resumeDir: string | null = null;
  if (opts.resume) {
    resumeDir = resolveCheckpoint(opts.resume);
    const saved = readCheckpointState(resumeDir).config;
    if (architectureKey(saved) !== architectureKey(config)) {
      throw new CheckpointError(`${resumeDir}: was trained with ${architectureKey(saved)}; this run asks for ${architectureKey(config)}`);
    }
    config = saved;
  } else if (existsSync(join(opts.outDir, 'latest'))) {
    // Never train over another run's checkpoints and event files.
    throw new Error(`${opts.outDir} already holds a run (see its 'latest'); continue it with --resume ${opts.outDir} or pick another --out`);
  }
  const size = config.arch.inputSize;
  // Digits of 20-40 px on the default 64 px canvas, the same proportion on other canvases.
  const digits = { size, minDigit: Math.round((size * 20) / 64), maxDigit: Math.round((size * 40) / 64) };
  const train = await loadCluttered({ split: 'train', count: opts.trainCount, seed: config.seed, ...digits });
  const val = await loadCluttered({ split: 'test', count: opts.valCount, seed: config.seed + 1, ...digits });
  if (train.n < config.batchSize) throw new Error(`${train.n} training images are fewer than one batch of ${config.batchSize}`);
  const stepsPerEpoch = Math.min(config.stepsPerEpoch, Math.floor(train.n / config.batchSize));
  config = { ...config, stepsPerEpoch };
  const totalSteps = Math.min(config.epochs * stepsPerEpoch, opts.maxSteps ?? Infinity);

  const trainer = new CasmTrainer(config);
  if (resumeDir) {
    await loadCheckpoint(resumeDir, trainer);
    log(`resumed from ${resumeDir} at step ${trainer.step} (pool of ${trainer.pool.snapshots.length}), with its saved configuration`);
  } else if (opts.classifierWeights) {
    loadClassifierWeights(trainer.classifier, opts.classifierWeights);
    log(`classifier weights from ${opts.classifierWeights}`);
  }
  mkdirSync(opts.outDir, { recursive: true });
  writeFileAtomic(join(opts.outDir, 'config.json'), JSON.stringify(config, null, 2));
  const tb = new SummaryWriter(join(opts.outDir, 'tb'));
  log(
    `training ${config.thinning}/${config.score} lambda=${Number(config.lambdaR.toPrecision(4))} on ${train.n} cluttered digits ${size}px, ` +
      `batch ${config.batchSize}, ${stepsPerEpoch} steps/epoch, steps ${trainer.step}..${totalSteps}; logs: ${tb.logdir}`,
  );

  const progress = new Progress(totalSteps, trainer.step, config.batchSize);
  let last: StepStats | null = null;
  let checkpoint = resumeDir ?? '';
  try {
    while (trainer.step < totalSteps) {
      const epoch = Math.floor(trainer.step / stepsPerEpoch);
      const indices = batchAt(train.n, config.batchSize, config.seed, epoch, trainer.step % stepsPerEpoch);
      const batch = toBatch(train, indices);
      try {
        last = trainer.iteration(batch.x, batch.y);
      } finally {
        batch.x.dispose();
        batch.y.dispose();
      }
      const rate = progress.tick();
      writeScalars(tb, last, rate);
      if (trainer.step % opts.logEvery === 0 || trainer.step === totalSteps) log(progress.line(trainer.step, summary(last)));
      if (trainer.step % opts.imageEvery === 0 && trainer.step < totalSteps) await logMaskGrid(tb, trainer, val, trainer.step, null);
      if (trainer.step % opts.checkpointEvery === 0 && trainer.step < totalSteps) {
        checkpoint = await saveCheckpoint(opts.outDir, trainer);
      }
      tb.flush();
    }
    if (checkpoint === '' || !checkpoint.endsWith(String(trainer.step).padStart(8, '0'))) {
      checkpoint = await saveCheckpoint(opts.outDir, trainer);
    }
    log(`checkpoint: ${checkpoint}`);
    const evaluation = evaluateHeldOut(trainer, val);
    writeFileAtomic(join(opts.outDir, 'eval.json'), JSON.stringify({ step: trainer.step, ...evaluation }, null, 2));
    log(
      `held-out digits (${evaluation.images}): classifier accuracy ${evaluation.accuracy.toFixed(3)}; ` +
        `localisation error (IoU > 0.5): CASM ${evaluation.casm.toFixed(3)}, ` +
        `centre box ${evaluation.centre.toFixed(3)}, full image ${evaluation.full.toFixed(3)}`,
    );
    const figure = join(opts.outDir, 'masks.png');
    await logMaskGrid(tb, trainer, val, trainer.step, figure);
    log(`mask figure: ${figure}`);
    return { trainer, checkpoint, last, eval: evaluation };
  } finally {
    tb.close();
  }
}

function summary(s: StepStats): string {
  if (Number.isNaN(s.maskerLoss)) return `warm-up: cls ${s.classifierLoss.toFixed(3)} acc ${s.accClean.toFixed(2)}`;
  return (
    `cls ${s.classifierLoss.toFixed(3)} acc ${s.accClean.toFixed(2)}/${s.accMasked.toFixed(2)} | ` +
    `masker ${s.maskerLoss.toFixed(3)} H ${s.entropy.toFixed(2)} area ${s.areaMean.toFixed(3)} gated ${s.gated.toFixed(2)}`
  );
}

function writeScalars(tb: SummaryWriter, s: StepStats, rate: number): void {
  const scalars: Record<string, number> = {
    'classifier/loss': s.classifierLoss,
    'classifier/acc_clean': s.accClean,
    'classifier/acc_masked_out': s.accMasked,
    'masker/loss': s.maskerLoss,
    'masker/entropy': s.entropy,
    'masker/area_mean': s.areaMean,
    'masker/area_std': s.areaStd,
    'masker/gated_fraction': s.gated,
    'masker/lambda': s.lambda,
    'lr/classifier': s.lrClassifier,
    'lr/masker': s.lrMasker,
    'perf/images_per_second': rate,
  };
  // Warm-up iterations have no masker figures (NaN): leave those curves out rather than plot gaps.
  for (const [tag, v] of Object.entries(scalars)) if (!Number.isNaN(v)) tb.scalar(tag, v, s.step);
}

/** Masks of the held-out set (each a Float32Array of H*W) and whether the classifier got each image right. */
function heldOutInference(trainer: CasmTrainer, val: ClutteredSet): { masks: Float32Array[]; correct: boolean[] } {
  const masks: Float32Array[] = [];
  const correct: boolean[] = [];
  const bs = trainer.config.batchSize;
  const hw = val.size * val.size;
  for (let start = 0; start < val.n; start += bs) {
    const indices = Array.from({ length: Math.min(bs, val.n - start) }, (_, i) => start + i);
    const batch = toBatch(val, indices);
    const out = trainer.inference(batch.x);
    const data = out.masks.dataSync() as Float32Array;
    const predicted = tf.tidy(() => tf.argMax(out.logits, 1).dataSync());
    tf.dispose([batch.x, batch.y, out.masks, out.logits]);
    indices.forEach((idx, i) => {
      masks.push(data.slice(i * hw, (i + 1) * hw));
      correct.push(predicted[i] === val.labels[idx]);
    });
  }
  return { masks, correct };
}

const boxOf = (boxes: Int32Array, i: number): Box => [boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]];

export interface HeldOutEval {
  images: number;
  /** Top-1 accuracy of the classifier on the clean held-out images. */
  accuracy: number;
  /** Localisation error (IoU > 0.5) of CASM's boxes, of the centre box and of the whole image. */
  casm: number;
  centre: number;
  full: number;
}

/** Localisation error on held-out digits: CASM's largest-component boxes against centre and full boxes. */
export function evaluateHeldOut(trainer: CasmTrainer, val: ClutteredSet): HeldOutEval {
  const { masks, correct } = heldOutInference(trainer, val);
  const s = val.size;
  const truth = masks.map((_, i) => [boxOf(val.boxes, i)]);
  return {
    images: val.n,
    accuracy: correct.filter(Boolean).length / val.n,
    casm: localizationError(masks.map((m) => maskBox(m, s, s)), truth),
    centre: localizationError(masks.map(() => centreBox(s, s)), truth),
    full: localizationError(masks.map((): Box => [0, 0, s, s]), truth),
  };
}

/** image | mask | masked-in | masked-out for the first held-out digits, to TensorBoard and optionally a PNG file. */
async function logMaskGrid(tb: SummaryWriter, trainer: CasmTrainer, val: ClutteredSet, step: number, file: string | null): Promise<void> {
  const rows = Math.min(8, val.n);
  const indices = Array.from({ length: rows }, (_, i) => i);
  const batch = toBatch(val, indices);
  const { masks, logits } = trainer.inference(batch.x);
  logits.dispose();
  const images = denormalize(batch.x);
  const flat = masks.dataSync() as Float32Array;
  const hw = val.size * val.size;
  const predBoxes = indices.map((i) => maskBox(flat.slice(i * hw, (i + 1) * hw), val.size, val.size));
  try {
    const grid = await maskGridPng(images, masks, { scale: 2, gtBoxes: batch.boxes, predBoxes });
    tb.image('masks/held_out', grid.png, grid.height, grid.width, 3, step);
    if (file) writeFileAtomic(file, grid.png);
  } finally {
    tf.dispose([batch.x, batch.y, masks, images]);
  }
}
