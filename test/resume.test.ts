/**
 * `casm train --resume` continues the run as it was started (issue 15, item 2): its data options
 * and schedule come from the checkpoint, runtime options may change with a log line, and any
 * other option given differently is refused naming it.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readCheckpointState, resolveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { useTestBackend } from './helpers/backend.js';
import { inProcessCli } from './helpers/cli.js';
import { runPython } from './helpers/python.js';

const root = mkdtempSync(join(tmpdir(), 'casm-resume-'));
let casm: ReturnType<typeof inProcessCli>;
before(async () => {
  casm = inProcessCli(await useTestBackend());
});
after(() => rmSync(root, { recursive: true, force: true }));

// A run whose data and schedule differ from every default: 200 digits of classes 0-4, 8 per batch.
const START = [
  'train',
  '--train-count',
  '200',
  '--classes',
  '0-4',
  '--val-count',
  '8',
  '--batch-size',
  '8',
  '--width',
  '4',
  '--input-size',
  '32',
  '--warmup-steps',
  '3',
  '--epochs',
  '4',
  '--lr-classifier',
  '0.02',
  '--lr-decay-epochs',
  '2',
  '--checkpoint-every',
  '10',
  '--log-every',
  '10',
];

test('a resume continues on the saved data and schedule: bit-identical to the straight run', async () => {
  const straight = await casm(...START, '--out', join(root, 'straight'));
  assert.equal(straight.code, 0, straight.err);
  const half = await casm(...START, '--max-steps', '40', '--out', join(root, 'half'));
  assert.equal(half.code, 0, half.err);
  // Only --resume: everything else from the checkpoint, not from the defaults (25,600 digits, batch 32...).
  const resumed = await casm('train', '--resume', join(root, 'half'), '--log-every', '5');
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, /on \d+ cluttered digits 32px of classes 0,1,2,3,4, batch 8, 13 steps\/epoch, steps 40\.\.52/);
  assert.match(resumed.out, /resume: --log-every 5 \(the run was started with 10\)/);
  const [aDir, bDir] = [resolveCheckpoint(join(root, 'straight')), resolveCheckpoint(join(root, 'half'))];
  const [a, b] = [readCheckpointState(aDir), readCheckpointState(bDir)];
  assert.equal(b.step, 52);
  // Bit for bit; tensor data, not file hashes: optimiser slot names carry tfjs's per-process layer counters.
  const tensors = (dir: string, file: string) =>
    [...readSafetensors(join(dir, file)).tensors.values()].map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  for (const file of Object.keys(a.files)) {
    const [x, y] = [tensors(aDir, file), tensors(bDir, file)];
    assert.equal(y.length, x.length, file);
    x.forEach((t, i) => assert.ok(t.equals(y[i]!), `${file}: tensor ${i} differs`));
  }
  const recorded = JSON.parse(readFileSync(join(root, 'half', 'config.json'), 'utf8')) as {
    data: { trainCount: number; classes: number[] };
    options: { lrClassifier: number };
  };
  assert.equal(recorded.data.trainCount, 200);
  assert.deepEqual(recorded.data.classes, [0, 1, 2, 3, 4]);
  assert.equal(recorded.options.lrClassifier, 0.02);
});

test('an option given on resume that differs from the run is refused naming it; the same value is accepted', async () => {
  const dir = join(root, 'half');
  for (const [args, message] of [
    [['--lr-classifier', '0.5'], /--lr-classifier 0\.5: the run in .*half\/ckpt-00000052 was started with 0\.02; a resume continues a run as it was started/],
    [['--train-count', '2000'], /--train-count 2000: .*was started with 200;/],
    [['--thinning', 'F'], /--thinning F: .*was started with L100;/],
    [['--lambda-tv', '1'], /--lambda-tv 1: .*was started with \(not given\);/],
  ] as [string[], RegExp][]) {
    const r = await casm('train', '--resume', dir, ...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, message);
  }
  const same = await casm('train', '--resume', dir, '--lr-classifier', '0.02', '--max-steps', '55');
  assert.equal(same.code, 0, same.err);
  assert.match(same.out, /resume: --max-steps 55 \(the run was started with 40\)/);
  assert.equal(readCheckpointState(resolveCheckpoint(dir)).step, 52, 'the schedule ends at 52: nothing more to train');
});

test('TensorBoard after a resume: one point per step, the interrupted run’s later points purged (TensorBoard’s reader)', async () => {
  const dir = join(root, 'tb');
  // Steps 1-12 logged, checkpoints at 6 and 12; then a resume from step 6 logs 7-12 again.
  assert.equal((await casm(...START, '--max-steps', '12', '--checkpoint-every', '6', '--out', dir)).code, 0);
  const r = await casm('train', '--resume', join(dir, 'ckpt-00000006'), '--out', dir, '--max-steps', '12');
  assert.equal(r.code, 0, r.err);
  const read = JSON.parse(runPython('read_events.py', [join(dir, 'tb')])) as { scalars: Record<string, [number, number][]> };
  const steps = read.scalars['classifier/loss']!.map(([s]) => s);
  assert.deepEqual(
    steps,
    Array.from({ length: 12 }, (_, i) => i + 1),
  );
});

test('a run recorded before an option existed resumes with its default (--decoder-stride, added later: 4)', async () => {
  const dir = join(root, 'before-stride');
  cpSync(join(root, 'half'), dir, { recursive: true });
  const ckpt = resolveCheckpoint(dir);
  const path = join(ckpt, 'state.json');
  const state = JSON.parse(readFileSync(path, 'utf8')) as { config: { masker: Record<string, unknown> }; run: { options: Record<string, unknown> } };
  delete state.config.masker['stride'];
  delete state.run.options['decoderStride'];
  writeFileSync(path, JSON.stringify(state));
  const r = await casm('train', '--resume', dir);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /resumed from .*before-stride\/ckpt-00000052 at step 52/);
});
