/**
 * On a real Slurm: a single-node cluster (Debian's slurmctld, slurmd and munge, started as root by
 * test/helpers/slurm-cluster.sh under a temp directory, stopped and removed at the end) runs
 * scripts/slurm/eval.sh: an array of shard jobs of `casm eval localization` (and of `casm eval
 * classifiers`) and a merge job after them (afterok), and scripts/slurm/experiment.sh: an array of tiny trainings of
 * `casm experiment sweep` and the report after them. The merged report must be the one-process
 * report, the sweep's figures those of one process; a failing shard must cancel the merge and
 * make the script fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClassifiersReport } from '../src/eval/classifiersCommand.js';
import type { LocalizationReport } from '../src/eval/localizationCommand.js';
import { useTestBackend } from './helpers/backend.js';
import { readJson, sameReport } from './helpers/reports.js';
import { tinySweep, trainTinyRun } from './helpers/tinyRun.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const backend = await useTestBackend();
const root = mkdtempSync(join(tmpdir(), 'casm-slurm-'));
const clusterDir = join(root, 'cluster');
const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) => spawnSync(cmd, args, { cwd: repo, env, encoding: 'utf8', timeout: 300_000 });

const started = run('bash', [join(repo, 'test', 'helpers', 'slurm-cluster.sh'), 'start', clusterDir]);
test.after(() => {
  run('bash', [join(repo, 'test', 'helpers', 'slurm-cluster.sh'), 'stop', clusterDir]);
  rmSync(root, { recursive: true, force: true });
});
const env = { ...process.env, SLURM_CONF: started.stdout.trim() };
// Shard jobs and the one process they are compared with on one thread each: on some CPUs (an AMD
// EPYC of the Zen 3 generation) even inference rounds differently with the thread count.
const oneThread = { ...process.env, TF_NUM_INTRAOP_THREADS: '1' };
const runDir = join(root, 'run');
await trainTinyRun(runDir);

test('Slurm: an array of 3 shard jobs and a merge job after them give the one-process report (localization; classifiers in 2 jobs)', () => {
  assert.equal(started.status, 0, `the local cluster did not start: ${started.stderr}`);
  const evalArgs = [
    '--checkpoint',
    runDir,
    '--methods',
    'casm,smoothgrad,full,centre',
    '--samples',
    '2',
    '--limit',
    '20',
    '--batch-size',
    '4',
    '--examples',
    '4',
    '--workers',
    '1',
    '--backend',
    backend,
  ];
  const whole = join(root, 'whole');
  const single = run('node', [join(repo, 'dist', 'src', 'cli.js'), 'eval', 'localization', ...evalArgs, '--out', whole], oneThread);
  assert.equal(single.status, 0, single.stderr);

  const out = join(root, 'sharded');
  const r = run('bash', [join(repo, 'scripts', 'slurm', 'eval.sh'), 'localization', '--shards', '3', '--out', out, '--wait', '--', ...evalArgs], {
    ...env,
    ...oneThread,
    SLURM_CONF: env.SLURM_CONF,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}\n${logs(out)}`);
  assert.match(r.stdout, /array: job \d+ \(tasks 0-2, /);
  for (let i = 0; i < 3; i++) assert.ok(existsSync(join(out, `shard-${i}`, 'share.json')), `shard ${i} wrote its share`);
  assert.deepEqual(sameReport(out, whole), { figures: true, markdown: true, pngs: [] });
  const merged = readJson<LocalizationReport>(join(out, 'report.json'));
  assert.equal(merged.shards, 3);
  assert.equal(merged.images.scored, 20);
  assert.match(merged.provenance.command, /^casm eval merge .*shard-0 .*shard-1 .*shard-2 --out /);

  const clsArgs = ['--checkpoint', runDir, '--limit', '12', '--batch-size', '4', '--examples', '3', '--workers', '1', '--backend', backend];
  const clsWhole = join(root, 'cls-whole');
  const clsSingle = run('node', [join(repo, 'dist', 'src', 'cli.js'), 'eval', 'classifiers', ...clsArgs, '--out', clsWhole], oneThread);
  assert.equal(clsSingle.status, 0, clsSingle.stderr);
  const clsOut = join(root, 'cls-sharded');
  const c = run('bash', [join(repo, 'scripts', 'slurm', 'eval.sh'), 'classifiers', '--shards', '2', '--out', clsOut, '--wait', '--', ...clsArgs], {
    ...env,
    ...oneThread,
    SLURM_CONF: env.SLURM_CONF,
  });
  assert.equal(c.status, 0, `${c.stdout}\n${c.stderr}\n${logs(clsOut)}`);
  assert.deepEqual(sameReport(clsOut, clsWhole, ['examples.png', 'top1.png']), { figures: true, markdown: true, pngs: [] });
  assert.equal(readJson<ClassifiersReport>(join(clsOut, 'report.json')).shards, 2);
});

test('Slurm: a shard that fails cancels the merge, and the script says so with a non-zero exit', () => {
  assert.equal(started.status, 0, `the local cluster did not start: ${started.stderr}`);
  const out = join(root, 'failing');
  const r = run(
    'bash',
    [
      join(repo, 'scripts', 'slurm', 'eval.sh'),
      'localization',
      '--shards',
      '2',
      '--out',
      out,
      '--wait',
      '--',
      '--checkpoint',
      join(root, 'no-such-run'),
      '--limit',
      '8',
    ],
    env,
  );
  assert.notEqual(r.status, 0, r.stdout);
  assert.match(r.stdout, /then: job \d+ \(failed: exit \d+, job CANCELLED, see /);
  assert.match(readFileSync(join(out, 'logs', 'eval-shard-0.out'), 'utf8'), /no-such-run/);
  assert.ok(!existsSync(join(out, 'report.json')), 'no report without every shard');
});

test('Slurm: a sweep as a job array, one training per task, then its report: the figures of one process', () => {
  assert.equal(started.status, 0, `the local cluster did not start: ${started.stderr}`);
  const cli = (args: string[], e = process.env) => run('node', [join(repo, 'dist', 'src', 'cli.js'), ...args, '--backend', backend], e);
  const whole = join(root, 'sweep-whole');
  const single = cli(tinySweep(whole));
  assert.equal(single.status, 0, single.stderr);
  const out = join(root, 'sweep-array');
  // Each task on as many CPUs as the single process: training sums in an order that depends on the thread count.
  const r = run(
    'bash',
    [
      join(repo, 'scripts', 'slurm', 'experiment.sh'),
      '--tasks',
      '2',
      '--cpus',
      String(availableParallelism()),
      '--wait',
      '--',
      ...tinySweep(out).slice(1),
      '--backend',
      backend,
    ],
    env,
  );
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}\n${logs(out)}`);
  for (const name of ['F-entropy', 'L100-entropy'])
    assert.match(readFileSync(join(out, 'logs', `experiment-task-${name === 'F-entropy' ? 0 : 1}.out`), 'utf8'), new RegExp(`training ${name} ->`));
  assert.doesNotMatch(readFileSync(join(out, 'logs', 'experiment-merge.out'), 'utf8'), /training \S+ ->/, 'the report job trains nothing');
  type Sweep = { trainings: { name: string; result: unknown }[] };
  const results = (dir: string) => readJson<Sweep>(join(dir, 'experiment.json')).trainings.map((t) => [t.name, t.result]);
  assert.deepEqual(results(out), results(whole));
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| L100-entropy \| L100 \| entropy \| default \| [\d.]+ \|/);
});

function logs(out: string): string {
  const dir = join(out, 'logs');
  if (!existsSync(dir)) return '(no logs)';
  return readdirSync(dir)
    .map((f) => `${f}:\n${readFileSync(join(dir, f), 'utf8')}`)
    .join('\n');
}
