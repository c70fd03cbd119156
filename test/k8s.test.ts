/**
 * scripts/k8s/eval-jobs.mjs: the Kubernetes Indexed Job of a sharded evaluation and the Job of its
 * merge. No cluster here: the manifests are checked against the Kubernetes API's own schemas
 * (npm kubernetes-models), and the commands their pods would run are run here, pod by pod, with
 * the index Kubernetes would give each: the merged report must be the one-process report.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { useTestBackend } from './helpers/backend.js';
import { sameReport } from './helpers/reports.js';
import { trainTinyRun } from './helpers/tinyRun.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const backend = await useTestBackend();
const root = mkdtempSync(join(tmpdir(), 'casm-k8s-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const runDir = join(root, 'run');
await trainTinyRun(runDir);

const jobs = (args: string[]) => spawnSync('node', [join(repo, 'scripts', 'k8s', 'eval-jobs.mjs'), ...args], { encoding: 'utf8' });
const cli = (args: string[]) => spawnSync('node', [join(repo, 'dist', 'src', 'cli.js'), ...args], { cwd: repo, encoding: 'utf8' });

interface Container {
  command: string[];
  args: string[];
  env: { name: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
  resources: { limits: Record<string, string | number> };
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  spec: { completionMode?: string; completions: number; parallelism?: number; template: { spec: { containers: Container[] } } };
}

test('k8s: an Indexed Job of 3 shards and a merge Job, valid by the Kubernetes schemas; their pods give the one-process report', () => {
  const evalArgs = ['--checkpoint', runDir, '--methods', 'casm,vanilla,full', '--limit', '14', '--batch-size', '4', '--examples', '3', '--backend', backend];
  const common = [
    '--name',
    'digits',
    '--image',
    'casm-ts:test',
    '--claim',
    'casm-work',
    '--mount',
    root,
    '--shards',
    '3',
    '--parallelism',
    '2',
    '--gpus',
    '1',
    '--out',
    join(root, 'evals', 'k8s'),
  ];
  const made = (['shards', 'merge'] as const).map((part) => {
    const r = jobs(['localization', '--part', part, ...common, '--', ...evalArgs]);
    assert.equal(r.status, 0, r.stderr);
    const manifest = JSON.parse(r.stdout) as Manifest;
    new Job(manifest as unknown as ConstructorParameters<typeof Job>[0]).validate();
    return manifest;
  });
  const [shards, merge] = made as [Manifest, Manifest];
  assert.deepEqual([shards.metadata.name, shards.spec.completionMode, shards.spec.completions, shards.spec.parallelism], ['digits-shards', 'Indexed', 3, 2]);
  assert.deepEqual([merge.metadata.name, merge.spec.completions], ['digits-merge', 1]);
  const pod = shards.spec.template.spec.containers[0]!;
  assert.equal(pod.resources.limits['nvidia.com/gpu'], 1);
  const index = pod.env.find((e) => e.name === 'SHARD');
  assert.equal(index?.valueFrom?.fieldRef.fieldPath, "metadata.annotations['batch.kubernetes.io/job-completion-index']");

  // The pods, one by one: Kubernetes expands $(SHARD) from the env, the annotation holding the index.
  for (let i = 0; i < 3; i++) {
    const r = cli(pod.args.map((a) => a.replaceAll('$(SHARD)', String(i))));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`shard ${i} of 3: \\d+ images scored`));
  }
  const r = cli(merge.spec.template.spec.containers[0]!.args);
  assert.equal(r.status, 0, r.stderr);
  const whole = join(root, 'whole');
  const single = cli(['eval', 'localization', ...evalArgs, '--out', whole]);
  assert.equal(single.status, 0, single.stderr);
  assert.deepEqual(sameReport(join(root, 'evals', 'k8s'), whole), { figures: true, markdown: true, pngs: [] });
});

test('k8s: bad options are refused with exit 2, naming the problem; the schemas catch a malformed Job', () => {
  const base = ['localization', '--part', 'shards', '--name', 'x', '--image', 'i', '--claim', 'c', '--out', '/data/e'];
  for (const [args, pattern] of [
    [[...base, '--shards', '0'], /--shards must be a positive integer, got '0'/],
    [[...base, '--shards', '2', '--mount', '/work'], /--out \/data\/e: must lie under --mount \/work/],
    [[...base, '--shards', '2', '--', '--num-shards', '4'], /must not set --out, --shard-index or --num-shards/],
    [['explain', '--part', 'shards'], /localization or classifiers \(got 'explain'\)/],
    [[...base.filter((a) => a !== '--image' && a !== 'i'), '--shards', '2'], /give --image/],
  ] as const) {
    const r = jobs([...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, pattern);
  }
  // The check the manifests pass is a real one: a string count and an unknown completion mode fail it.
  const ok = JSON.parse(jobs([...base, '--shards', '2']).stdout) as Manifest;
  for (const broken of [
    { ...ok.spec, completions: '2' },
    { ...ok.spec, completionMode: 'Indexd' },
  ]) {
    assert.throws(() => new Job({ ...ok, spec: broken } as unknown as ConstructorParameters<typeof Job>[0]).validate(), /completion/);
  }
});
