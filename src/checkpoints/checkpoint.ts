/**
 * Checkpoints: a trainer's state (`TrainerState`, plain values: the trainer is never seen here)
 * on disk, everything a run needs to continue exactly where it stopped. One directory per
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
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TrainConfig } from '../casm/config.js';
import { NO_MASK_TERMS } from '../casm/score.js';
import type { DataPlan } from '../data/trainData.js';
import type { TrainerState } from '../casm/trainer.js';
import { CasmModel } from '../models/casmModel.js';
import { DEFAULT_MASKER } from '../models/masker.js';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { setWeightArrays } from '../models/weightArrays.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { PROJECT_VERSION } from '../version.js';
import { sha256File } from '../util/sha256.js';

export const CHECKPOINT_FORMAT = 'casm-ts-checkpoint';
export const CHECKPOINT_VERSION = 1;

/** state.json: what the weight files do not hold, and their hashes. */
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

/** Writes a checkpoint of a trainer's state into runDir and points `latest` at it. Returns its path. */
export function saveCheckpoint(runDir: string, state: TrainerState, run: RunRecord, keep = 2): string {
  mkdirSync(runDir, { recursive: true });
  const name = `ckpt-${String(state.step).padStart(8, '0')}`;
  const final = join(runDir, name);
  const tmp = join(runDir, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    writeCheckpointFiles(tmp, state, run);
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

/** The weight files and the parts of the state each holds. */
const FILES = {
  'classifier.safetensors': 'classifier',
  'masker.safetensors': 'masker',
  'optim-classifier.safetensors': 'classifierOptimizer',
  'optim-masker.safetensors': 'maskerOptimizer',
} as const;
const POOL_FILE = 'pool.safetensors';

function writeCheckpointFiles(dir: string, state: TrainerState, run: RunRecord): void {
  const groups: Record<string, readonly TensorToWrite[]> = {
    ...Object.fromEntries(Object.entries(FILES).map(([file, part]) => [file, state[part]])),
    [POOL_FILE]: state.pool.flatMap((s, j) => s.weights.map((data, i) => ({ name: `${j}/${i}`, shape: [data.length], data }))),
  };
  const files: Record<string, string> = {};
  for (const [file, entries] of Object.entries(groups)) {
    writeSafetensors(join(dir, file), entries);
    files[file] = sha256File(join(dir, file));
  }
  const record: CheckpointState = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    projectVersion: PROJECT_VERSION,
    step: state.step,
    rngState: state.rngState,
    config: state.config,
    poolSteps: state.pool.map((s) => s.step),
    files,
    run,
  };
  writeFileSync(join(dir, 'state.json'), JSON.stringify(record, null, 2));
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

/** The tensors of one of the checkpoint's files, as named arrays. */
function readArrays(dir: string, file: string): TensorToWrite[] {
  return [...readSafetensors(join(dir, file)).tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
}

/** Runs fn, whose errors name a part of the state, with errors naming the checkpoint instead. */
function inCheckpoint<T>(dir: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw e instanceof CheckpointError ? e : new CheckpointError(`${dir}: ${(e as Error).message}`, { cause: e });
  }
}

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
    inCheckpoint(dir, () => {
      setWeightArrays([model.classifier], readArrays(dir, 'classifier.safetensors'), 'classifier.safetensors');
      setWeightArrays(model.masker.models, readArrays(dir, 'masker.safetensors'), 'masker.safetensors');
    });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, dir, state };
}

/** The trainer state a checkpoint holds (every file verified unless `state` is given, already read). */
export function readCheckpoint(dir: string, state = readCheckpointState(dir)): TrainerState {
  const parts = Object.fromEntries(Object.entries(FILES).map(([file, part]) => [part, readArrays(dir, file)])) as Record<
    (typeof FILES)[keyof typeof FILES],
    TensorToWrite[]
  >;
  const pool = readSafetensors(join(dir, POOL_FILE)).tensors;
  const snapshots = state.poolSteps.map((step, j) => {
    const weights: Float32Array[] = [];
    for (let t = pool.get(`${j}/0`); t; t = pool.get(`${j}/${weights.length}`)) weights.push(t.data);
    return { step, weights };
  });
  const held = snapshots.reduce((n, s) => n + s.weights.length, 0);
  if (held !== pool.size) throw new CheckpointError(`${join(dir, POOL_FILE)}: ${pool.size} tensors, of which state.json's ${snapshots.length} snapshots name ${held}`);
  return { step: state.step, rngState: state.rngState, config: state.config, ...parts, pool: snapshots };
}
