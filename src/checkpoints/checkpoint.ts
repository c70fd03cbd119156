/**
 * Checkpoints: everything a run needs to continue exactly where it stopped. One directory per
 * checkpoint (`ckpt-00001000/`), built under a temporary name and renamed into place, and a
 * `latest` file replaced atomically last; a crash at any point leaves the previous checkpoint
 * whole. Every file's sha256 is recorded in state.json, so corruption is found on load.
 *
 *   state.json                   step, RNG state, pool steps, full config, file hashes
 *   classifier.safetensors       every classifier weight (BN statistics too), model order
 *   masker.safetensors           every masker weight
 *   optim-classifier.safetensors SGD momentum buffers
 *   optim-masker.safetensors     Adam moments and iteration count
 *   pool.safetensors             the pool's snapshots
 *
 * state.json also records the run's data plan and the command's options, so a resume continues
 * on the same data with the same settings.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { architectureKey, type TrainConfig } from '../casm/config.js';
import { NO_MASK_TERMS } from '../casm/score.js';
import type { DataPlan } from '../data/trainData.js';
import type { CasmTrainer } from '../casm/trainer.js';
import { CasmModel } from '../models/casmModel.js';
import { DEFAULT_MASKER } from '../models/masker.js';
import { readSafetensors, writeSafetensors, type TensorToWrite as TensorEntry } from '../io/safetensors.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { PROJECT_VERSION } from '../version.js';
import { sha256File } from '../util/sha256.js';

export const CHECKPOINT_FORMAT = 'casm-ts-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  projectVersion: string;
  step: number;
  rngState: number;
  config: TrainConfig;
  /** Iteration of each pool snapshot, in pool order. */
  poolSteps: number[];
  /** sha256 of every weight file. */
  files: Record<string, string>;
  /** Absent in checkpoints from before it was recorded. */
  run?: RunRecord;
}

/** What shapes a run besides the trainer's config: its data, and the options of the command that started it. */
export interface RunRecord {
  data: DataPlan;
  /** The CLI's options (null for runs started from code). */
  options: Record<string, unknown> | null;
}

/** A checkpoint that cannot be used; the message names the file and the problem. */
export class CheckpointError extends Error {}

function modelEntries(models: tf.LayersModel[]): TensorEntry[] {
  return models.flatMap((m, k) =>
    m.weights.map((w, i) => ({ name: `${k}/${i}/${w.originalName}`, shape: w.shape as number[], data: Float32Array.from(w.read().dataSync()) })),
  );
}

/**
 * Adam's bias-correction powers beta^t live outside getWeights(); setWeights() recomputes them with
 * pow(), which differs from the running product in the last bits, enough to make a resumed run
 * drift from a straight one. They are saved and restored as they are.
 */
const ADAM_POWERS = ['accBeta1', 'accBeta2'] as const;
type AdamPowers = Partial<Record<(typeof ADAM_POWERS)[number], tf.Variable>>;

async function optimizerEntries(opt: tf.Optimizer): Promise<TensorEntry[]> {
  const weights = await opt.getWeights();
  // Names carry the index: the optimisers restore their slots by position.
  const entries = weights.map((w, i) => ({ name: `${i}/${w.name}`, shape: w.tensor.shape, data: Float32Array.from(w.tensor.dataSync()) }));
  // Entry 0 is a fresh scalar of the iteration count (tfjs's saveIterations); the rest are the optimiser's own variables.
  weights[0]?.tensor.dispose();
  for (const key of ADAM_POWERS) {
    const v = (opt as unknown as AdamPowers)[key];
    if (v) entries.push({ name: key, shape: v.shape, data: Float32Array.from(v.dataSync()) });
  }
  return entries;
}

/** Writes a checkpoint of the trainer into runDir and points `latest` at it. Returns its path. */
export async function saveCheckpoint(runDir: string, trainer: CasmTrainer, run: RunRecord, keep = 2): Promise<string> {
  mkdirSync(runDir, { recursive: true });
  const name = `ckpt-${String(trainer.step).padStart(8, '0')}`;
  const final = join(runDir, name);
  const tmp = join(runDir, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    await writeCheckpointFiles(tmp, trainer, run);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (existsSync(final)) rmSync(final, { recursive: true });
  renameSync(tmp, final);
  writeFileAtomic(join(runDir, 'latest'), name + '\n');
  // Older checkpoints go only after the new one is in place.
  const all = readdirSync(runDir).filter((d) => /^ckpt-\d{8}$/.test(d)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(runDir, old), { recursive: true, force: true });
  return final;
}

async function writeCheckpointFiles(dir: string, trainer: CasmTrainer, run: RunRecord): Promise<void> {
  const groups: Record<string, TensorEntry[]> = {
    'classifier.safetensors': modelEntries([trainer.classifier]),
    'masker.safetensors': modelEntries(trainer.masker.models),
    'optim-classifier.safetensors': await optimizerEntries(trainer.classifierOpt),
    'optim-masker.safetensors': await optimizerEntries(trainer.maskerOpt),
    'pool.safetensors': trainer.pool.snapshots.flatMap((s, j) =>
      s.weights.map((data, i) => ({ name: `${j}/${i}`, shape: [data.length], data })),
    ),
  };
  const files: Record<string, string> = {};
  for (const [file, entries] of Object.entries(groups)) {
    writeSafetensors(join(dir, file), entries);
    files[file] = sha256File(join(dir, file));
  }
  const state: CheckpointState = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    projectVersion: PROJECT_VERSION,
    step: trainer.step,
    rngState: trainer.rng.state,
    config: trainer.config,
    poolSteps: trainer.pool.snapshots.map((s) => s.step),
    files,
    run,
  };
  writeFileSync(join(dir, 'state.json'), JSON.stringify(state, null, 2));
}

/** Temporary names a run writes under: checkpoint directories being built, and writeFileAtomic's files. */
const LEFTOVER = [/^\.ckpt-\d{8}\.tmp-\d+$/, /^\..+\.\d+\.[0-9a-z]+\.tmp$/];

/**
 * Removes what a killed or failed run left half-written in runDir: call it holding the run's lock,
 * when no other process can be writing there. Returns how many entries and bytes went.
 */
export function removeLeftovers(runDir: string): { count: number; bytes: number } {
  let count = 0;
  let bytes = 0;
  const size = (p: string): number => {
    const st = lstatSync(p);
    return st.isDirectory() ? readdirSync(p).reduce((n, f) => n + size(join(p, f)), 0) : st.size;
  };
  for (const name of existsSync(runDir) ? readdirSync(runDir) : []) {
    if (!LEFTOVER.some((re) => re.test(name))) continue;
    const p = join(runDir, name);
    bytes += size(p);
    rmSync(p, { recursive: true, force: true });
    count++;
  }
  return { count, bytes };
}

/** A run directory (its `latest` checkpoint) or a checkpoint directory -> the checkpoint directory. */
export function resolveCheckpoint(path: string): string {
  if (!existsSync(path)) throw new CheckpointError(`${path}: no such checkpoint or run directory`);
  if (existsSync(join(path, 'state.json'))) return path;
  const latest = join(path, 'latest');
  if (!existsSync(latest)) throw new CheckpointError(`${path}: neither a checkpoint (no state.json) nor a run directory (no latest)`);
  const dir = join(path, readFileSync(latest, 'utf8').trim());
  if (!existsSync(join(dir, 'state.json'))) throw new CheckpointError(`${latest}: points at ${dir}, which has no state.json`);
  return dir;
}

/** Reads and checks state.json; with verifyFiles also the sha256 of every file it lists (true, the default) or of those named. */
export function readCheckpointState(dir: string, { verifyFiles = true as boolean | string[] } = {}): CheckpointState {
  const path = join(dir, 'state.json');
  let state: CheckpointState;
  try {
    state = JSON.parse(readFileSync(path, 'utf8')) as CheckpointState;
  } catch (e) {
    throw new CheckpointError(`${path}: unreadable checkpoint state (${(e as Error).message})`);
  }
  if (state.format !== CHECKPOINT_FORMAT || typeof state.step !== 'number' || !state.config || !state.files) {
    throw new CheckpointError(`${path}: not a ${CHECKPOINT_FORMAT} state file`);
  }
  if (state.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(`${path}: checkpoint format version ${state.version}, this build reads ${CHECKPOINT_VERSION}`);
  }
  const cfg = state.config as Partial<TrainConfig>;
  const lacking = [
    ...(['thinning', 'score', 'lambdaR', 'optim', 'batchSize', 'epochs', 'stepsPerEpoch', 'seed', 'masker'] as const).filter((k) => cfg[k] === undefined),
    ...(['depths', 'width', 'classes', 'inputSize'] as const).filter((k) => cfg.arch?.[k] === undefined).map((k) => `arch.${k}`),
  ];
  if (lacking.length > 0) throw new CheckpointError(`${path}: its config lacks ${lacking.join(', ')}`);
  // Checkpoints from before these options existed trained without them.
  state.config.maskTerms ??= { ...NO_MASK_TERMS };
  state.config.bnStatistics ??= 'all';
  state.config.maskerImages ??= 'correct';
  state.config.masker.stride ??= DEFAULT_MASKER.stride;
  const checked = verifyFiles === true ? Object.keys(state.files) : verifyFiles === false ? [] : verifyFiles;
  for (const file of checked) {
    const hash = state.files[file];
    if (hash === undefined) throw new CheckpointError(`${path}: lists no ${file}`);
    const p = join(dir, file);
    if (!existsSync(p)) throw new CheckpointError(`${p}: missing from the checkpoint`);
    if (sha256File(p) !== hash) throw new CheckpointError(`${p}: corrupt (sha256 differs from state.json)`);
  }
  return state;
}

function loadModels(dir: string, file: string, models: tf.LayersModel[]): void {
  const path = join(dir, file);
  const tensors = readSafetensors(path).tensors;
  const weights = models.flatMap((m, k) => m.weights.map((w, i) => ({ w, key: `${k}/${i}/${w.originalName}` })));
  if (tensors.size !== weights.length) {
    throw new CheckpointError(`${path}: ${tensors.size} tensors, the model has ${weights.length} weights`);
  }
  const values = weights.map(({ w, key }) => {
    const t = tensors.get(key);
    if (!t) throw new CheckpointError(`${path}: no tensor ${key}`);
    if (t.shape.join(',') !== w.shape.join(',')) {
      throw new CheckpointError(`${path}: ${key} has shape [${t.shape}], the model expects [${w.shape}]`);
    }
    return t.data;
  });
  tf.tidy(() => weights.forEach(({ w }, i) => w.write(tf.tensor(values[i], w.shape as number[]))));
}

async function loadOptimizer(dir: string, file: string, opt: tf.Optimizer): Promise<void> {
  const tensors = readSafetensors(join(dir, file)).tensors;
  const entries = [...tensors.entries()]
    .filter(([name]) => !(ADAM_POWERS as readonly string[]).includes(name))
    .map(([name, t]) => ({ index: Number(name.split('/')[0]), name: name.slice(name.indexOf('/') + 1), t }))
    .sort((a, b) => a.index - b.index);
  if (entries.length === 0) return; // saved before the first update
  const named = entries.map(({ name, t }) => ({ name, tensor: tf.tensor(t.data, t.shape) }));
  await opt.setWeights(named);
  for (const n of named) n.tensor.dispose();
  for (const key of ADAM_POWERS) {
    const saved = tensors.get(key);
    const v = (opt as unknown as AdamPowers)[key];
    if (saved && v) tf.tidy(() => v.assign(tf.tensor(saved.data, v.shape)));
  }
}

/**
 * Restores a trainer built from the checkpoint's config (see `checkpointConfig`). The trainer
 * must have the same architecture; anything else is an error naming the checkpoint.
 */
/**
 * The model of a run or checkpoint, for inference: resolved, checked, its classifier and masker
 * weights loaded (no optimisers, no pool). `path`: a run directory (its latest) or a checkpoint.
 */
export function loadCasmModel(path: string): { model: CasmModel; dir: string; state: CheckpointState } {
  const dir = resolveCheckpoint(path);
  // Only the files it reads: a pool of classifier snapshots can be many times the model's size.
  const state = readCheckpointState(dir, { verifyFiles: ['classifier.safetensors', 'masker.safetensors'] });
  const model = new CasmModel(state.config.arch, state.config.masker, state.config.seed);
  try {
    loadModels(dir, 'classifier.safetensors', [model.classifier]);
    loadModels(dir, 'masker.safetensors', model.masker.models);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, dir, state };
}

export async function loadCheckpoint(dir: string, trainer: CasmTrainer, state = readCheckpointState(dir)): Promise<void> {
  if (architectureKey(state.config) !== architectureKey(trainer.config)) {
    throw new CheckpointError(
      `${dir}: architecture differs: checkpoint ${architectureKey(state.config)}, this run ${architectureKey(trainer.config)}`,
    );
  }
  loadModels(dir, 'classifier.safetensors', [trainer.classifier]);
  loadModels(dir, 'masker.safetensors', trainer.masker.models);
  await loadOptimizer(dir, 'optim-classifier.safetensors', trainer.classifierOpt);
  await loadOptimizer(dir, 'optim-masker.safetensors', trainer.maskerOpt);
  const pool = readSafetensors(join(dir, 'pool.safetensors')).tensors;
  trainer.pool.snapshots = state.poolSteps.map((step, j) => ({
    step,
    weights: trainer.classifier.weights.map((_, i) => {
      const t = pool.get(`${j}/${i}`);
      if (!t) throw new CheckpointError(`${join(dir, 'pool.safetensors')}: snapshot ${j} lacks weight ${i}`);
      return t.data;
    }),
  }));
  trainer.step = state.step;
  trainer.rng.state = state.rngState;
}
