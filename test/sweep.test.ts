/**
 * Experiments as job arrays: `experiment sweep` over thinning x score run as one process and as
 * one task per training plus `--merge` give the same figures; tasks write only their own files;
 * a merge before every task is done, a task out of range and another grid in the same directory
 * are refused, naming what is missing (bad option values: cli.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { useTestBackend } from './helpers/backend.js';
import { inProcessCli } from './helpers/cli.js';
import { readJson } from './helpers/reports.js';
import { tinySweep } from './helpers/tinyRun.js';

const backend = await useTestBackend();
const casm = inProcessCli(backend);
const root = mkdtempSync(join(tmpdir(), 'casm-sweep-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

interface Sweep {
  trainings: { name: string; thinning: string; score: string; trained: boolean; result: { le: number; f1: number; area: number; images: number } }[];
}

test('experiment sweep: one process and one task per training + --merge give the same figures', async () => {
  const whole = join(root, 'whole');
  const r = await casm(...tinySweep(whole));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /sweep: 2 trainings: 0 F-entropy, 1 L100-entropy/);
  const one = readJson<Sweep>(join(whole, 'experiment.json'));
  assert.deepEqual(
    one.trainings.map((t) => [t.name, t.thinning, t.score]),
    [
      ['F-entropy', 'F', 'entropy'],
      ['L100-entropy', 'L100', 'entropy'],
    ],
  );
  for (const t of one.trainings) {
    assert.equal(t.result.images, 16);
    assert.ok(t.result.le >= 0 && t.result.le <= 1 && t.result.f1 > 0 && t.result.area > 0, JSON.stringify(t.result));
    assert.equal(readJson<{ thinning: string }>(join(whole, `train-${t.name}`, 'config.json')).thinning, t.thinning);
  }

  const tasks = join(root, 'tasks');
  const early = await casm(...tinySweep(tasks, '--merge'));
  assert.equal(early.code, 1);
  assert.match(early.err, /2 of 2 trainings not done: tasks 0 \(F-entropy\), 1 \(L100-entropy\); run them \(--task i\) before --merge/);
  const t1 = await casm(...tinySweep(tasks, '--task', '1'));
  assert.equal(t1.code, 0, t1.err);
  assert.match(t1.out, /1 of 2 trainings done; when all are, rerun without --task \(or with --merge\)/);
  assert.ok(!existsSync(join(tasks, 'train-F-entropy')), 'task 1 trains only its own training');
  assert.ok(!existsSync(join(tasks, 'report.md')), 'no report before every training is done');
  const t0 = await casm(...tinySweep(tasks, '--task', '0'));
  assert.equal(t0.code, 0, t0.err);
  const merged = await casm(...tinySweep(tasks, '--merge'));
  assert.equal(merged.code, 0, merged.err);
  assert.doesNotMatch(merged.out, /training (F|L100)-entropy ->/, '--merge trains nothing');
  assert.deepEqual(
    readJson<Sweep>(join(tasks, 'experiment.json')).trainings.map((t) => [t.name, t.result]),
    one.trainings.map((t) => [t.name, t.result]),
    'tasks give the figures of one process',
  );

  const out = await casm(...tinySweep(tasks, '--task', '2'));
  assert.equal(out.code, 1);
  assert.match(out.err, /--task 2: the study has 2 trainings \(tasks 0-1: F-entropy, L100-entropy\)/);
  const other = await casm(...tinySweep(tasks).map((a) => (a === 'F,L100' ? 'F,L' : a)));
  assert.equal(other.code, 1);
  assert.match(other.err, /holds an experiment with other classes or trainings/);
});
