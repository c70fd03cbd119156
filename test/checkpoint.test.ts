/**
 * Training runs end to end on the built-in digits with a tiny model: resume continues exactly
 * (2N straight == N, stop, resume N), and bad checkpoints or losses fail loudly while the last
 * good checkpoint stays whole.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultTrainConfig, type TrainConfig } from '../src/casm/config.js';
import { runTraining, type RunOptions } from '../src/train/train.js';
import * as tf from '@tensorflow/tfjs';
import { CasmTrainer } from '../src/casm/trainer.js';
import { CheckpointError, loadCasmModel, readCheckpoint, readCheckpointState, resolveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { sha256File } from '../src/util/sha256.js';
import { useTestBackend } from './helpers/backend.js';
import { runPython } from './helpers/python.js';

const root = mkdtempSync(join(tmpdir(), 'casm-ckpt-'));
before(async () => {
  await useTestBackend();
});
after(() => rmSync(root, { recursive: true, force: true }));

function config(over: Partial<TrainConfig> = {}): TrainConfig {
  return defaultTrainConfig({
    arch: { depths: [1, 1, 1, 1], width: 4, classes: 10, inputSize: 32 },
    masker: { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride: 4 },
    batchSize: 8,
    epochs: 100,
    warmupSteps: 5,
    seed: 3,
    optim: { ...defaultTrainConfig().optim, classifierLr: 0.01, lrDecayEpochs: 4 },
    ...over,
  });
}

function options(outDir: string, over: Partial<RunOptions> = {}): RunOptions {
  return {
    config: config(),
    outDir,
    data: { kind: 'digits', trainCount: 400, valCount: 16 },
    checkpointEvery: 1000,
    logEvery: 1000,
    imageEvery: 1000,
    log: () => {},
    ...over,
  };
}

function tensorsOf(dir: string, file: string): Map<string, Float32Array> {
  return new Map([...readSafetensors(join(dir, file)).tensors].map(([k, t]) => [k, t.data]));
}

function maxRelDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  let worst = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    assert.equal(x.length, y.length, k);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / Math.max(1, Math.abs(x[i])));
  }
  return worst;
}

// L100 over 2N = 230 iterations (5 warm-up): snapshots at CASM steps 0, 100 before the stop at
// N = 115 and 200 after it; the learning rate drops at epoch 4 (step 200, 50 steps an epoch).
const N = 115;
let straight = '';

test('resume: 2N straight equals N, stop, resume N (step, pool, optimiser states, weights, losses)', async () => {
  const a = join(root, 'a');
  const resA = await runTraining(options(a, { checkpointEvery: N, maxSteps: 2 * N }));
  straight = resA.checkpoint;
  const b = join(root, 'b');
  const resB = await runTraining(options(b, { resume: join(a, `ckpt-${String(N).padStart(8, '0')}`), maxSteps: 2 * N }));

  const sa = readCheckpointState(resA.checkpoint);
  const sb = readCheckpointState(resB.checkpoint);
  assert.equal(sa.step, 2 * N);
  assert.equal(sb.step, 2 * N);
  assert.deepEqual(sa.poolSteps, [0, 100, 200]);
  assert.deepEqual(sb.poolSteps, sa.poolSteps);
  assert.equal(sb.rngState, sa.rngState);
  for (const file of ['classifier.safetensors', 'masker.safetensors', 'optim-classifier.safetensors', 'optim-masker.safetensors', 'pool.safetensors']) {
    const d = maxRelDiff(tensorsOf(resA.checkpoint, file), tensorsOf(resB.checkpoint, file));
    assert.ok(d < 1e-4, `${file} differs by ${d}`);
  }
  const la = resA.last!;
  const lb = resB.last!;
  assert.equal(lb.step, la.step);
  assert.equal(la.lrClassifier, 0.001, 'the step schedule decayed the learning rate');
  for (const k of ['classifierLoss', 'maskerLoss', 'areaMean', 'entropy'] as const) {
    assert.ok(Math.abs(la[k] - lb[k]) < 1e-4 * Math.max(1, Math.abs(la[k])), `${k}: ${la[k]} vs ${lb[k]}`);
  }
  assert.deepEqual(resB.eval, resA.eval);
});

test('loadCasmModel: the weights the checkpoint files hold, nothing of training (optimisers, pool), all freed on dispose', async () => {
  const dir = join(root, 'inference');
  await runTraining(options(dir, { maxSteps: 8 }));
  const before = tf.memory().numTensors;
  const { model, dir: ckpt, state } = loadCasmModel(dir);
  assert.equal(state.step, 8);
  assert.equal(ckpt, resolveCheckpoint(dir));
  const files = { 'classifier.safetensors': [model.classifier], 'masker.safetensors': model.masker.models };
  let weights = 0;
  for (const [file, models] of Object.entries(files)) {
    const saved = [...tensorsOf(ckpt, file).values()];
    const loaded = models.flatMap((m) => m.weights.map((w) => w.read().dataSync() as Float32Array));
    assert.equal(loaded.length, saved.length, file);
    loaded.forEach((v, i) => assert.deepEqual(v, saved[i], `${file} weight ${i}`));
    weights += loaded.length;
  }
  // A shared encoder holds no variables of its own: the tensors are the weights, no optimiser slot.
  assert.equal(tf.memory().numTensors - before, weights);
  const x = tf.zeros([2, 32, 32, 3]) as tf.Tensor4D;
  const { masks, logits } = model.inference(x);
  assert.deepEqual(
    [masks.shape, logits.shape],
    [
      [2, 32, 32, 1],
      [2, 10],
    ],
  );
  tf.dispose([x, masks, logits]);
  model.dispose();
  assert.equal(tf.memory().numTensors, before);
  assert.throws(() => loadCasmModel(join(root, 'no-such-run')), /no-such-run/);
  // It checks the hashes of the files it reads, and only those: a corrupt pool does not stop inference, a corrupt masker does.
  const copy = join(root, 'inference-copy');
  cpSync(ckpt, copy, { recursive: true });
  writeFileSync(join(copy, 'pool.safetensors'), 'not the pool');
  loadCasmModel(copy).model.dispose();
  assert.throws(() => readCheckpointState(copy), /pool\.safetensors: corrupt/);
  writeFileSync(join(copy, 'masker.safetensors'), 'not the masker');
  assert.throws(() => loadCasmModel(copy), /masker\.safetensors: corrupt \(sha256 differs from state\.json\)/);
});

test('a checkpoint holds the trainer state as plain values: read back it equals state(); restore refuses what does not fit', async () => {
  const dir = join(root, 'plain');
  const res = await runTraining(options(dir, { maxSteps: 8, config: config({ thinning: 'FL', warmupSteps: 2 }) }));
  const live = await res.trainer.state();
  const read = readCheckpoint(res.checkpoint);
  assert.equal(read.step, 8);
  assert.ok(read.pool.length > 0, 'thinning FL keeps a snapshot');
  assert.deepEqual(read, live);
  // A fresh trainer restored from it is the same trainer.
  const fresh = new CasmTrainer(read.config);
  await fresh.restore(read);
  assert.deepEqual(await fresh.state(), live);
  // A snapshot of another classifier, a missing masker weight, another architecture: refused, naming the part.
  const short = { ...read, pool: [{ step: 3, weights: read.pool[0]!.weights.slice(1) }] };
  await assert.rejects(fresh.restore(short), /pool snapshot 0: \d+ weights that do not fit the classifier/);
  await assert.rejects(fresh.restore({ ...read, masker: read.masker.slice(1) }), /masker weights: \d+ tensors, the model has \d+ weights/);
  const wide = config({ arch: { ...read.config.arch, width: 8 } });
  await assert.rejects(fresh.restore({ ...read, config: wide }), /architecture differs/);
  fresh.dispose();
  res.trainer.dispose();
  // pool.safetensors with a tensor state.json's snapshots do not name is refused (hash updated, so only the count can tell).
  const copy = join(root, 'plain-copy');
  cpSync(res.checkpoint, copy, { recursive: true });
  const pool = readSafetensors(join(copy, 'pool.safetensors')).tensors;
  writeSafetensors(join(copy, 'pool.safetensors'), [
    ...[...pool].map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
    { name: '9/0', shape: [1], data: new Float32Array(1) },
  ]);
  const state = JSON.parse(readFileSync(join(copy, 'state.json'), 'utf8'));
  state.files['pool.safetensors'] = sha256File(join(copy, 'pool.safetensors'));
  writeFileSync(join(copy, 'state.json'), JSON.stringify(state));
  assert.throws(
    () => readCheckpoint(copy),
    (e: Error) => e instanceof CheckpointError && /pool\.safetensors: \d+ tensors, of which state\.json's 1 snapshots name \d+/.test(e.message),
  );
});

test('a corrupt checkpoint is refused, naming the file', () => {
  const bad = join(root, 'corrupt');
  cpSync(straight, bad, { recursive: true });
  const file = join(bad, 'masker.safetensors');
  const bytes = readFileSync(file);
  bytes[bytes.length - 3] ^= 0xff;
  writeFileSync(file, bytes);
  assert.throws(
    () => readCheckpointState(bad),
    (e: Error) => e instanceof CheckpointError && e.message.includes(`${file}: corrupt`),
  );
  const state = JSON.parse(readFileSync(join(straight, 'state.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(bad, 'masker.safetensors'), readFileSync(join(straight, 'masker.safetensors')));
  writeFileSync(join(bad, 'state.json'), JSON.stringify({ ...state, config: {} }));
  assert.throws(() => readCheckpointState(bad), /state\.json: its config lacks thinning, score, .*arch\.depths, arch\.width/);
  writeFileSync(join(bad, 'state.json'), '{"format": "casm-ts-checkpoint", ');
  assert.throws(() => readCheckpointState(bad), /state\.json: unreadable checkpoint state/);
  assert.throws(() => resolveCheckpoint(join(root, 'nope')), /nope: no such checkpoint or run directory/);
});

test('a checkpoint from before --decoder-stride reads as the reference decoder (stride 4)', () => {
  const old = join(root, 'before-stride');
  cpSync(straight, old, { recursive: true });
  const state = JSON.parse(readFileSync(join(old, 'state.json'), 'utf8')) as { config: { masker: Record<string, unknown> } };
  delete state.config.masker['stride'];
  writeFileSync(join(old, 'state.json'), JSON.stringify(state));
  assert.equal(readCheckpointState(old).config.masker.stride, 4);
});

test('resuming with another architecture is refused, naming the checkpoint', async () => {
  const wider = config({ arch: { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 } });
  await assert.rejects(
    runTraining(options(join(root, 'c'), { config: wider, resume: straight })),
    (e: Error) => e instanceof CheckpointError && e.message.includes(straight) && /width/.test(e.message),
  );
});

test('a fresh run refuses a directory that already holds a run', async () => {
  await assert.rejects(runTraining(options(join(root, 'a'), { maxSteps: 1 })), /a already holds a run .*--resume/);
});

test('a non-finite loss stops the run naming the step; the last good checkpoint is untouched', async () => {
  const dir = join(root, 'nan');
  // Warm-up ignores lambda; the first CASM iteration (step 7) meets lambda = Infinity.
  const opts = options(dir, { config: config({ warmupSteps: 6, lambdaR: Infinity }), checkpointEvery: 3, maxSteps: 20 });
  await assert.rejects(runTraining(opts), /step 7: masker loss is (NaN|Infinity)/);
  const latest = resolveCheckpoint(dir);
  assert.match(latest, /ckpt-00000006$/);
  assert.equal(readCheckpointState(latest).step, 6); // hashes verified
});

test('a diverging masker (lr 1e6) is warned about in the log and in TensorBoard; the run goes on', async () => {
  const dir = join(root, 'diverging');
  const lines: string[] = [];
  const cfg = config({ optim: { ...config().optim, maskerLr: 1e6 } });
  const res = await runTraining(options(dir, { config: cfg, logEvery: 2, maxSteps: 14, log: (l) => lines.push(l) }));
  res.trainer.dispose();
  const warnings = lines.filter((l) => l.startsWith('warning: '));
  assert.ok(
    warnings.some((l) => /^warning: step \d+: masker weights have diverged \(max \|w\| = .* > 10000\)/.test(l)),
    lines.join('\n'),
  );
  assert.equal(readCheckpointState(res.checkpoint).step, 14);
  const tb = JSON.parse(runPython('read_events.py', [join(dir, 'tb')])) as { scalars: Record<string, [number, number][]> };
  const maxAbs = tb.scalars['health/masker_max_abs_weight']!;
  assert.ok(maxAbs.length >= 7 && Math.max(...maxAbs.map(([, v]) => v)) > 1e4, JSON.stringify(maxAbs));
  assert.equal(
    tb.scalars['health/warnings']!.reduce((n, [, v]) => n + v, 0),
    warnings.length,
  );
});
