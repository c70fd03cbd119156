/**
 * One run per directory, and nothing half-written left behind (issue 15, items 1 and 3): two
 * trainings on one --out, a resume while the run still goes, stale and foreign locks, temporary
 * checkpoint files of a killed run, a checkpoint write that fails midway.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultTrainConfig } from '../src/casm/config.js';
import { runTraining, type RunOptions } from '../src/train/train.js';
import { readCheckpointState, saveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { LOCK_FILE, lockRun, RunLockError } from '../src/checkpoints/runLock.js';
import { useTestBackend } from './helpers/backend.js';
import { repoRoot } from './helpers/python.js';

const root = mkdtempSync(join(tmpdir(), 'casm-lock-'));
let backend = 'tensorflow';
before(async () => {
  backend = await useTestBackend();
});
after(() => rmSync(root, { recursive: true, force: true }));

function options(outDir: string, over: Partial<RunOptions> = {}): RunOptions {
  return {
    config: defaultTrainConfig({
      arch: { depths: [1, 1, 1, 1], width: 4, classes: 10, inputSize: 32 },
      masker: { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride: 4 },
      batchSize: 8,
      warmupSteps: 2,
    }),
    outDir,
    data: { kind: 'digits', trainCount: 64, valCount: 8 },
    checkpointEvery: 2,
    logEvery: 1000,
    imageEvery: 1000,
    maxSteps: 4,
    log: () => {},
    ...over,
  };
}

const lockOf = (dir: string) => JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number; host: string; processStart: string | null };

/** A pid that was just used and is now free: a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  assert.ok(r.pid && r.status === 0);
  return r.pid;
}

test('two CLI trainings on one --out: the second is refused naming the first, which finishes intact', async () => {
  const out = join(root, 'race');
  const cli = join(repoRoot, 'dist', 'src', 'cli.js');
  const common = [
    'train',
    '--train-count',
    '640',
    '--val-count',
    '8',
    '--batch-size',
    '8',
    '--epochs',
    '10',
    '--warmup-steps',
    '2',
    '--checkpoint-every',
    '5',
    '--width',
    '4',
    '--input-size',
    '32',
    '--backend',
    backend,
    '--out',
    out,
  ];
  const first = spawn(process.execPath, [cli, ...common, '--max-steps', '20', '--seed', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let firstErr = '';
  first.stderr.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((resolve) => first.on('exit', resolve));
  for (let i = 0; i < 600 && !existsSync(join(out, LOCK_FILE)); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(lockOf(out).pid, first.pid, 'the first run holds the lock');
  // Paused, so it surely still runs while the others try (no race on timing); resumed whatever they give.
  first.kill('SIGSTOP');
  try {
    for (const extra of [
      ['--seed', '2'],
      ['--resume', out],
    ]) {
      const second = spawnSync(process.execPath, [cli, ...common, '--max-steps', '4', ...extra], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(second.status, 1, `${extra.join(' ')}: ${second.stderr}`);
      assert.match(second.stderr, new RegExp(`casm: .*race is in use by pid ${first.pid} on ${hostname()} since .*run\\.lock`));
    }
  } finally {
    first.kill('SIGCONT');
  }
  assert.equal(await firstExit, 0, firstErr);
  const state = readCheckpointState(join(out, readFileSync(join(out, 'latest'), 'utf8').trim()));
  assert.equal(state.step, 20);
  assert.equal(state.config.seed, 1, 'the checkpoint is the first run’s');
  assert.ok(!existsSync(join(out, LOCK_FILE)), 'the lock goes with the run');
});

test('a lock held in this process refuses runTraining; a released one does not', async () => {
  const dir = join(root, 'held');
  const lock = lockRun(dir);
  await assert.rejects(runTraining(options(dir)), (e: Error) => e instanceof RunLockError && e.message.includes(`in use by pid ${process.pid}`));
  lock.release();
  assert.ok(!existsSync(join(dir, LOCK_FILE)));
  const res = await runTraining(options(dir));
  res.trainer.dispose();
  assert.equal(readCheckpointState(res.checkpoint).step, 4);
});

test('stale locks are taken over: a dead pid, a reused pid, an empty lock file; another host’s is refused', async () => {
  const cases: [string, string][] = [
    ['dead', JSON.stringify({ pid: deadPid(), host: hostname(), processStart: '1', started: 'then' })],
    // Our own pid with another start time: the pid was reused after the owner died.
    ['reused', JSON.stringify({ pid: process.pid, host: hostname(), processStart: '1', started: 'then' })],
    ['empty', ''],
  ];
  for (const [name, content] of cases) {
    const dir = join(root, `stale-${name}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, LOCK_FILE), content);
    const lines: string[] = [];
    const res = await runTraining(options(dir, { log: (l) => lines.push(l) }));
    res.trainer.dispose();
    assert.ok(
      lines.some((l) => l.includes('took over the stale lock')),
      `${name}: ${lines.join('\n')}`,
    );
    assert.equal(readCheckpointState(res.checkpoint).step, 4, name);
  }
  const dir = join(root, 'foreign');
  mkdirSync(dir);
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, host: 'elsewhere', processStart: null, started: 'then' }));
  await assert.rejects(runTraining(options(dir)), /in use by pid \d+ on elsewhere .*this host cannot check it: delete .*run\.lock once that run is gone/);
  assert.equal(lockOf(dir).host, 'elsewhere', 'a refused run leaves the holder’s lock');
});

test('a resume removes the half-written files of a killed run and says so', async () => {
  const dir = join(root, 'leftovers');
  (await runTraining(options(dir))).trainer.dispose();
  // What kill -9 leaves mid-checkpoint and mid-writeFileAtomic.
  mkdirSync(join(dir, '.ckpt-00000006.tmp-99999'));
  writeFileSync(join(dir, '.ckpt-00000006.tmp-99999', 'classifier.safetensors'), Buffer.alloc(1000));
  writeFileSync(join(dir, '.latest.99999.m1abc.tmp'), 'ckpt-00000006\n');
  const lines: string[] = [];
  const res = await runTraining(options(dir, { resume: dir, maxSteps: 6, log: (l) => lines.push(l) }));
  res.trainer.dispose();
  assert.ok(
    lines.some((l) => /removed 2 half-written files of an interrupted run .*\(0\.0 MB\)/.test(l)),
    lines.join('\n'),
  );
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('.')),
    [],
  );
  assert.equal(readCheckpointState(res.checkpoint).step, 6);
});

test('a checkpoint write that fails midway leaves no temporary directory and the previous checkpoint', async () => {
  const dir = join(root, 'failing');
  const res = await runTraining(options(dir));
  const before = readdirSync(dir).sort();
  // The classifier's file is written, then the masker's fails: an array that does not fill its shape.
  const state = await res.trainer.state();
  const broken = { ...state, step: 8, masker: [{ ...state.masker[0]!, shape: [1_000_000] }] };
  assert.throws(() => saveCheckpoint(dir, broken, { data: options(dir).data, options: null }), /masker\.safetensors: .*1000000/);
  res.trainer.dispose();
  assert.deepEqual(readdirSync(dir).sort(), before);
  assert.equal(readCheckpointState(join(dir, 'ckpt-00000004')).step, 4);
});
