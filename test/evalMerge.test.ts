/**
 * Sharded evaluation: `eval localization|classifiers --shard-index i --num-shards n` on every i,
 * then `eval merge`, gives the report one process gives (every figure, the example rows in the
 * same order, the same figures byte for byte), on the held-out digits and on JPEG shards with
 * corrupt records, for 1, 2 and 3 shards; shares that are not one evaluation's shards are refused, named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClassifiersReport } from '../src/eval/classifiersCommand.js';
import type { LocalizationReport } from '../src/eval/localizationCommand.js';
import { useTestBackend } from './helpers/backend.js';
import { inProcessCli } from './helpers/cli.js';
import { readJson, reportFigures, sameReport } from './helpers/reports.js';
import { trainTinyRun } from './helpers/tinyRun.js';
import { digitValShards } from './helpers/valShards.js';

const backend = await useTestBackend();
const casm = inProcessCli(backend);
const root = mkdtempSync(join(tmpdir(), 'casm-merge-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const runDir = join(root, 'run');
await trainTinyRun(runDir);

/** Runs `eval <command> args` whole and as `n` shards plus a merge; asserts that the two reports are one. */
async function assertMergeExact<R extends LocalizationReport | ClassifiersReport>(
  command: 'localization' | 'classifiers',
  name: string,
  args: string[],
  counts: number[],
): Promise<R> {
  const whole = join(root, `${name}-whole`);
  const r = await casm('eval', command, ...args, '--out', whole);
  assert.equal(r.code, 0, r.err);
  for (const n of counts) {
    const dirs = Array.from({ length: n }, (_, i) => join(root, `${name}-${n}-shard${i}`));
    for (const [i, dir] of dirs.entries()) {
      const s = await casm('eval', command, ...args, '--shard-index', String(i), '--num-shards', String(n), '--out', dir);
      assert.equal(s.code, 0, s.err);
      assert.match(s.out, new RegExp(`shard ${i} of ${n}: \\d+ images scored`));
    }
    const merged = join(root, `${name}-${n}-merged`);
    // Given out of order: the merge orders shards by index.
    const m = await casm('eval', 'merge', ...dirs.slice().reverse(), '--out', merged);
    assert.equal(m.code, 0, m.err);
    assert.deepEqual(reportFigures(merged), reportFigures(whole), `${name}: ${n} shards merged`);
    const pngs = command === 'localization' ? ['examples.png', 'le.png'] : ['examples.png', 'top1.png'];
    assert.deepEqual(sameReport(merged, whole, pngs), { figures: true, markdown: true, pngs: [] }, `${name}: report.md and figures of ${n} shards`);
    assert.equal(readJson<R>(join(merged, 'report.json')).shards, n);
  }
  return readJson<R>(join(whole, 'report.json'));
}

test('eval merge of 1, 2, 3 shards of the held-out digits = one process: every figure, seen/unseen, examples in order', async () => {
  // 23 images in batches of 5: five batches, the last short; three shards get 2, 2 and 1 of them.
  const args = [
    '--checkpoint',
    runDir,
    '--methods',
    'casm,gradcam,smoothgrad,vanilla,full,centre',
    '--samples',
    '2',
    '--seen',
    '0-4',
    '--limit',
    '23',
    '--batch-size',
    '5',
    '--examples',
    '5',
  ];
  const whole = await assertMergeExact<LocalizationReport>('localization', 'digits', args, [1, 2, 3]);
  assert.equal(whole.images.scored, 23);
  assert.equal(whole.bySplit!.seen!.images + whole.bySplit!.unseen!.images, 23, 'both splits present');
  assert.equal(whole.shards, 1);
});

test('eval merge on JPEG shards with corrupt records: problems counted once, the same report for 1, 2, 3 shards', async () => {
  const d = await digitValShards(join(root, 'val'), { images: 20, tars: 2, corruptAfter: [3, 14] });
  const args = ['--checkpoint', runDir, ...d.args, '--methods', 'casm,vanilla,full', '--batch-size', '4', '--workers', '2', '--examples', '3'];
  const whole = await assertMergeExact<LocalizationReport>('localization', 'jpeg', args, [1, 2, 3]);
  assert.deepEqual(whole.images, { read: 20, scored: 17, withoutBoxes: 3 });
  assert.equal(whole.problems.byKind['decode-error'], 2, JSON.stringify(whole.problems));
  assert.equal(whole.methods['full']!.le, 0, 'every box is its whole image');
});

test('eval classifiers: merge of 1, 2, 3 shards = one process, on the held-out digits and on JPEG shards with corrupt records', async () => {
  // 14 digits in batches of 4: four batches, the last short; a second classifier (the same run as a directory) is scored too.
  const digits = await assertMergeExact<ClassifiersReport>(
    'classifiers',
    'cls-digits',
    ['--checkpoint', runDir, '--classifiers', runDir, '--limit', '14', '--batch-size', '4', '--examples', '5'],
    [1, 2, 3],
  );
  assert.equal(digits.images, 14);
  assert.deepEqual(
    digits.classifiers.map((c) => c.name),
    ['own', runDir],
  );
  // Counts over 14 images: every accuracy is a multiple of 1/14.
  for (const a of Object.values(digits.classifiers[0]!.results)) assert.ok(Math.abs(a.top1 * 14 - Math.round(a.top1 * 14)) < 1e-9, JSON.stringify(a));
  const d = await digitValShards(join(root, 'val-cls'), { images: 12, tars: 2, corruptAfter: [5] });
  const jpeg = await assertMergeExact<ClassifiersReport>(
    'classifiers',
    'cls-jpeg',
    ['--checkpoint', runDir, '--data', d.spec, '--synsets', d.synsets, '--batch-size', '3', '--workers', '2', '--examples', '4'],
    [1, 2, 3],
  );
  assert.equal(jpeg.images, 12, 'every image read is scored, with a box or without');
  assert.equal(jpeg.problems.byKind['decode-error'], 1, JSON.stringify(jpeg.problems));
});

test('eval merge refuses shares of two checkpoints, a missing and a duplicated shard, a directory without a share', async () => {
  const other = join(root, 'run-b');
  await trainTinyRun(other, { maxSteps: 4 });
  const args = (run: string, i: number, n: number) => [
    'eval',
    'localization',
    '--checkpoint',
    run,
    '--methods',
    'casm,full',
    '--limit',
    '8',
    '--batch-size',
    '4',
    '--shard-index',
    String(i),
    '--num-shards',
    String(n),
  ];
  const dir = (tag: string) => join(root, `refuse-${tag}`);
  for (const [tag, run, i, n] of [
    ['a0', runDir, 0, 2],
    ['b1', other, 1, 2],
    ['a1', runDir, 1, 2],
    ['t0', runDir, 0, 3],
    ['t1', runDir, 1, 3],
  ] as const) {
    const r = await casm(...args(run, i, n), '--out', dir(tag));
    assert.equal(r.code, 0, r.err);
  }
  const refused = async (dirs: string[], pattern: RegExp) => {
    const r = await casm('eval', 'merge', ...dirs, '--out', join(root, 'refused'));
    assert.equal(r.code, 2, `${dirs.join(' ')}: ${r.out}${r.err}`);
    assert.match(r.err, pattern);
  };
  await refused([dir('a0'), dir('b1')], new RegExp(`${dir('a0')} and ${dir('b1')} are not shards of one evaluation: their checkpoint differs`));
  await refused([dir('t0'), dir('t1')], new RegExp(`shard 2 of 3 missing \\(given: ${dir('t0')}, ${dir('t1')}\\)`));
  cpSync(dir('a0'), dir('a0-copy'), { recursive: true });
  await refused([dir('a0'), dir('a0-copy'), dir('a1')], new RegExp(`shard 0 of 2 given twice: ${dir('a0')} and ${dir('a0-copy')}`));
  await refused([dir('a0'), dir('t1')], new RegExp(`${dir('a0')} is shard 0 of 2, ${dir('t1')} shard 1 of 3`));
  await refused([dir('a0'), runDir], new RegExp(`${runDir}: no share\\.json`));
  const cls = await casm(
    'eval',
    'classifiers',
    '--checkpoint',
    runDir,
    '--limit',
    '8',
    '--batch-size',
    '4',
    '--shard-index',
    '1',
    '--num-shards',
    '2',
    '--out',
    dir('c1'),
  );
  assert.equal(cls.code, 0, cls.err);
  await refused([dir('a0'), dir('c1')], new RegExp(`${dir('c1')}: a share of 'eval classifiers', not of 'eval localization'`));
  // The two that fit merge.
  const ok = await casm('eval', 'merge', dir('a0'), dir('a1'), '--out', join(root, 'ok'));
  assert.equal(ok.code, 0, ok.err);
  assert.equal(readJson<LocalizationReport>(join(root, 'ok', 'report.json')).images.scored, 8);
  const bad = await casm(...args(runDir, 2, 2), '--out', dir('x'));
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--shard-index 2: must be below --num-shards 2/);
});
