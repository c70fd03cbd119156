/**
 * A training run, top to bottom: data, trainer (fresh or resumed), the loop with progress,
 * TensorBoard and checkpoints, then a held-out localisation check and the PNG of masks.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  CheckpointError,
  readCheckpoint,
  readCheckpointState,
  removeLeftovers,
  resolveCheckpoint,
  saveCheckpoint,
  type CheckpointState,
  type RunRecord,
} from '../checkpoints/checkpoint.js';
import { lockRun } from '../checkpoints/runLock.js';
import { denormalize } from '../data/normalize.js';
import { centreBox, localizationError, maskBox, type Box } from '../boxes.js';
import { maskGridPng } from '../log/maskGrid.js';
import { Progress } from '../log/progress.js';
import { SummaryWriter } from '../log/tensorboard.js';
import { loadClassifierWeights } from '../models/weights.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { convPrecision } from '../engine/mixedPrecision.js';
import { architectureKey, type TrainConfig } from '../casm/config.js';
import { openTrainData, type DataPlan, type HeldOut, type TrainData } from '../data/trainData.js';
import { HealthWatch } from '../casm/divergence.js';
import { CasmTrainer, type StepStats } from '../casm/trainer.js';

export interface RunOptions {
  config: TrainConfig;
  /** Where checkpoints, event files and figures go. */
  outDir: string;
  /** Training data and held-out images (for the mask figures and the final localisation check). */
  data: DataPlan;
  checkpointEvery: number;
  logEvery: number;
  imageEvery: number;
  /** A run directory or checkpoint to continue from: its config and data plan, with this plan's worker settings. */
  resume?: string;
  /** The command's options, recorded in every checkpoint so that a resume can tell what changed. */
  options?: Record<string, unknown>;
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

/** Trains into opts.outDir, holding its lock (one run per directory) until the run ends or fails. */
export async function runTraining(opts: RunOptions): Promise<RunResult> {
  const lock = lockRun(opts.outDir, opts.log);
  try {
    const left = removeLeftovers(opts.outDir);
    if (left.count > 0) opts.log(`removed ${left.count} half-written files of an interrupted run from ${opts.outDir} (${(left.bytes / 1e6).toFixed(1)} MB)`);
    return await train(opts);
  } finally {
    lock.release();
  }
}

async function train(opts: RunOptions): Promise<RunResult> {
  const { log } = opts;
  let config = opts.config;
  let run: RunRecord = { data: opts.data, options: opts.options ?? null };
  let resume: { dir: string; saved: CheckpointState } | null = null;
  if (opts.resume) {
    const resumeDir = resolveCheckpoint(opts.resume);
    const saved = readCheckpointState(resumeDir);
    resume = { dir: resumeDir, saved };
    if (architectureKey(saved.config) !== architectureKey(config)) {
      throw new CheckpointError(`${resumeDir}: was trained with ${architectureKey(saved.config)}; this run asks for ${architectureKey(config)}`);
    }
    config = saved.config;
    if (saved.run) run = { data: withWorkerSettings(saved.run.data, opts.data), options: saved.run.options };
    else log(`${resumeDir}: a checkpoint from before data plans were recorded: resuming on the data this command names`);
  } else if (existsSync(join(opts.outDir, 'latest'))) {
    // Never train over another run's checkpoints and event files.
    throw new Error(`${opts.outDir} already holds a run (see its 'latest'); continue it with --resume ${opts.outDir} or pick another --out`);
  }
  const data = await openTrainData(run.data, { size: config.arch.inputSize, batchSize: config.batchSize, seed: config.seed, log });
  const stepsPerEpoch = Math.min(config.stepsPerEpoch, Math.floor(data.samplesPerEpoch / config.batchSize));
  config = { ...config, stepsPerEpoch };
  const totalSteps = Math.min(config.epochs * stepsPerEpoch, opts.maxSteps ?? Infinity);

  const trainer = new CasmTrainer(config);
  if (resume) {
    const state = readCheckpoint(resume.dir, resume.saved);
    try {
      await trainer.restore(state);
    } catch (e) {
      throw new CheckpointError(`${resume.dir}: ${(e as Error).message}`, { cause: e });
    }
    log(`resumed from ${resume.dir} at step ${trainer.step} (pool of ${trainer.pool.snapshots.length}), with its saved configuration`);
  } else if (opts.classifierWeights) {
    loadClassifierWeights(trainer.classifier, opts.classifierWeights);
    log(`classifier weights from ${opts.classifierWeights}`);
  }
  mkdirSync(opts.outDir, { recursive: true });
  // The precision is this session's (a resume may change it): the weights are float32 either way.
  writeFileAtomic(join(opts.outDir, 'config.json'), JSON.stringify({ ...config, ...run, precision: convPrecision() }, null, 2));
  const tb = new SummaryWriter(join(opts.outDir, 'tb'));
  if (resume) tb.sessionStart(trainer.step + 1);
  log(
    `training ${config.thinning}/${config.score} lambda=${Number(config.lambdaR.toPrecision(4))}` +
      (config.maskTerms.tv > 0 || config.maskTerms.maskedIn > 0 ? ` lambda_tv=${config.maskTerms.tv} lambda_in=${config.maskTerms.maskedIn}` : '') +
      (config.bnStatistics === 'clean' ? ', classifier BatchNorm statistics of clean images' : '') +
      (config.maskerImages === 'all' ? ', masker trained on all images' : '') +
      (config.cutMix > 0 ? `, CutMix on ${config.cutMix} of the warm-up batches` : '') +
      `, ${config.warmupSteps} warm-up steps on ${data.describe}, ` +
      `batch ${config.batchSize}, ${stepsPerEpoch} steps/epoch, steps ${trainer.step}..${totalSteps}; logs: ${tb.logdir}`,
  );

  const progress = new Progress(totalSteps, trainer.step, config.batchSize);
  let last: StepStats | null = null;
  let checkpoint = resume?.dir ?? '';
  const health = new HealthWatch();
  let checkedAt = -1;
  // Once per step, though a step may both log and checkpoint: a check counts toward saturation.
  const checkHealth = () => {
    if (checkedAt === trainer.step) return;
    checkedAt = trainer.step;
    const h = health.check(trainer, last);
    tb.scalar('health/classifier_max_abs_weight', h.classifierMaxAbs, trainer.step);
    tb.scalar('health/masker_max_abs_weight', h.maskerMaxAbs, trainer.step);
    for (const w of h.warnings) log(`warning: step ${trainer.step}: ${w}`);
    tb.scalar('health/warnings', h.warnings.length, trainer.step);
  };
  const save = async () => {
    checkHealth(); // nothing non-finite reaches a checkpoint
    checkpoint = saveCheckpoint(opts.outDir, await trainer.state(), run);
  };
  try {
    while (trainer.step < totalSteps) {
      const batch = await data.next(trainer.step, stepsPerEpoch);
      try {
        last = trainer.iteration(batch.x, batch.y);
      } finally {
        batch.x.dispose();
        batch.y.dispose();
      }
      const rate = progress.tick();
      writeScalars(tb, last, rate);
      tb.scalar('data/wait_ms', batch.waitMs, last.step);
      if (data.problems) tb.scalar('data/problems', data.problems.count, last.step);
      if (trainer.step % opts.logEvery === 0 || trainer.step === totalSteps) {
        log(progress.line(trainer.step, summary(last, batch.waitMs, data)));
        checkHealth();
      }
      if (trainer.step % opts.imageEvery === 0 && trainer.step < totalSteps) await logMaskGrid(tb, trainer, data.heldOut, trainer.step, null);
      if (trainer.step % opts.checkpointEvery === 0 && trainer.step < totalSteps) await save();
      tb.flush();
    }
    if (checkpoint === '' || !checkpoint.endsWith(String(trainer.step).padStart(8, '0'))) await save();
    log(`checkpoint: ${checkpoint}`);
    const evaluation = evaluateHeldOut(trainer, data.heldOut);
    writeFileAtomic(join(opts.outDir, 'eval.json'), JSON.stringify({ step: trainer.step, ...evaluation }, null, 2));
    const le = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));
    log(
      `held-out (${evaluation.images} images, ${evaluation.withBoxes} with boxes): classifier accuracy ${evaluation.accuracy.toFixed(3)}; ` +
        `localisation error (IoU > 0.5): CASM ${le(evaluation.casm)}, centre box ${le(evaluation.centre)}, full image ${le(evaluation.full)}`,
    );
    if (data.problems && data.problems.count > 0) log(`data problems: ${data.problems.count} ${JSON.stringify(data.problems.byKind)}`);
    const figure = join(opts.outDir, 'masks.png');
    await logMaskGrid(tb, trainer, data.heldOut, trainer.step, figure);
    log(`mask figure: ${figure}`);
    return { trainer, checkpoint, last, eval: evaluation };
  } finally {
    tb.close();
    await data.close();
  }
}

/** The saved plan, decoded with the given plan's threads and prefetch: they change speed, not the batches. */
function withWorkerSettings(saved: DataPlan, given: DataPlan): DataPlan {
  return saved.kind === 'shards' && given.kind === 'shards' ? { ...saved, workers: given.workers, prefetchBatches: given.prefetchBatches } : saved;
}

function summary(s: StepStats, waitMs: number, data: TrainData): string {
  const io = ` | data wait ${waitMs.toFixed(0)} ms${data.problems?.count ? `, ${data.problems.count} problems` : ''}`;
  if (Number.isNaN(s.maskerLoss)) return `warm-up: cls ${s.classifierLoss.toFixed(3)} acc ${s.accClean.toFixed(2)}${io}`;
  return (
    `cls ${s.classifierLoss.toFixed(3)} acc ${s.accClean.toFixed(2)}/${s.accMasked.toFixed(2)} | ` +
    `masker ${s.maskerLoss.toFixed(3)} H ${s.entropy.toFixed(2)} area ${s.areaMean.toFixed(3)} gated ${s.gated.toFixed(2)} ` +
    `tv ${s.tv.toFixed(4)}${s.maskedIn > 0 ? ` in-CE ${s.maskedIn.toFixed(3)}` : ''}${io}`
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
    'masker/total_variation': s.tv,
    'masker/masked_in_ce': s.maskedIn,
    'masker/lambda': s.lambda,
    'lr/classifier': s.lrClassifier,
    'lr/masker': s.lrMasker,
    'perf/images_per_second': rate,
  };
  // Warm-up iterations have no masker figures (NaN): leave those curves out rather than plot gaps.
  for (const [tag, v] of Object.entries(scalars)) if (!Number.isNaN(v)) tb.scalar(tag, v, s.step);
}

/** Masks of the held-out set (each a Float32Array of H*W) and whether the classifier got each image right. */
function heldOutInference(trainer: CasmTrainer, val: HeldOut): { masks: Float32Array[]; correct: boolean[] } {
  const masks: Float32Array[] = [];
  const correct: boolean[] = [];
  const bs = trainer.config.batchSize;
  const hw = val.size * val.size;
  for (let start = 0; start < val.n; start += bs) {
    const indices = Array.from({ length: Math.min(bs, val.n - start) }, (_, i) => start + i);
    const x = val.batch(indices);
    const out = trainer.model.inference(x);
    const data = out.masks.dataSync() as Float32Array;
    const predicted = tf.tidy(() => tf.argMax(out.logits, 1).dataSync());
    tf.dispose([x, out.masks, out.logits]);
    indices.forEach((idx, i) => {
      masks.push(data.slice(i * hw, (i + 1) * hw));
      correct.push(predicted[i] === val.labels[idx]);
    });
  }
  return { masks, correct };
}

export interface HeldOutEval {
  images: number;
  /** Images with ground-truth boxes: the localisation errors are over these. */
  withBoxes: number;
  /** Top-1 accuracy of the classifier on the clean held-out images. */
  accuracy: number;
  /** Localisation error (IoU > 0.5) of CASM's boxes, of the centre box and of the whole image; null without boxes. */
  casm: number | null;
  centre: number | null;
  full: number | null;
}

/** Localisation error on held-out images: CASM's largest-component boxes against centre and full boxes. */
export function evaluateHeldOut(trainer: CasmTrainer, val: HeldOut): HeldOutEval {
  const { masks, correct } = heldOutInference(trainer, val);
  const s = val.size;
  const boxed = masks.map((_, i) => i).filter((i) => val.boxes[i]!.length > 0);
  const truth = boxed.map((i) => val.boxes[i]!);
  const le = (boxes: (Box | null)[]) => (boxed.length === 0 ? null : localizationError(boxes, truth));
  return {
    images: val.n,
    withBoxes: boxed.length,
    accuracy: correct.filter(Boolean).length / val.n,
    casm: le(boxed.map((i) => maskBox(masks[i]!, s, s))),
    centre: le(boxed.map(() => centreBox(s, s))),
    full: le(boxed.map((): Box => [0, 0, s, s])),
  };
}

/** image | mask | masked-in | masked-out for the first held-out images, to TensorBoard and optionally a PNG file. */
async function logMaskGrid(tb: SummaryWriter, trainer: CasmTrainer, val: HeldOut, step: number, file: string | null): Promise<void> {
  const rows = Math.min(8, val.n);
  const indices = Array.from({ length: rows }, (_, i) => i);
  const x = val.batch(indices);
  const { masks, logits } = trainer.model.inference(x);
  logits.dispose();
  const images = denormalize(x);
  const flat = masks.dataSync() as Float32Array;
  const hw = val.size * val.size;
  const predBoxes = indices.map((i) => maskBox(flat.slice(i * hw, (i + 1) * hw), val.size, val.size));
  // The grid draws one ground-truth box per row: the first of the image's class.
  const gtBoxes = new Int32Array(indices.flatMap((i) => (val.boxes[i]![0] ?? [0, 0, 0, 0]).map(Math.round)));
  try {
    const grid = await maskGridPng(images, masks, { scale: 2, gtBoxes, predBoxes });
    tb.image('masks/held_out', grid.png, grid.height, grid.width, 3, step);
    if (file) writeFileAtomic(file, grid.png);
  } finally {
    tf.dispose([x, masks, images]);
  }
}
