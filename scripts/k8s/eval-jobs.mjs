#!/usr/bin/env node
// Kubernetes manifests of a sharded `casm eval localization|classifiers`: an Indexed Job whose
// pod i scores shard i (its index from the job-completion-index annotation), and a Job that
// merges the shares. Kubernetes has no afterok between Jobs, so the merge is applied once the
// shards' Job is complete:
//
//   node scripts/k8s/eval-jobs.mjs localization --part shards --name photo --image IMAGE --claim PVC \
//       --shards 8 [--parallelism 4] [--cpus 1] [--memory 4Gi] [--gpus 0] [--mount /data] \
//       [--casm 'node /opt/casm-ts/dist/src/cli.js'] --out /data/evals/photo -- <eval options> | kubectl apply -f -
//   kubectl wait --for=condition=complete --timeout=6h job/photo-shards
//   node scripts/k8s/eval-jobs.mjs localization --part merge <the same options> | kubectl apply -f -
//
// Paths in the eval options and --out are the pods' paths: the claim is mounted at --mount in
// every pod. Prints JSON (which kubectl reads as YAML); exits 2 on a bad option.
import { argv, exit, stdout, stderr } from 'node:process';

const usage = (message) => {
  stderr.write(`eval-jobs.mjs: ${message} (see the head of scripts/k8s/eval-jobs.mjs)\n`);
  exit(2);
};

function parse(args) {
  const [command, ...rest] = args;
  if (command !== 'localization' && command !== 'classifiers') usage(`first say which evaluation: localization or classifiers (got '${command ?? ''}')`);
  const o = {
    command,
    part: '',
    parallelism: '',
    cpus: '1',
    memory: '4Gi',
    gpus: '0',
    mount: '/data',
    casm: 'node /opt/casm-ts/dist/src/cli.js',
    retries: '2',
    evalArgs: [],
  };
  const names = new Set(['part', 'name', 'image', 'claim', 'shards', 'parallelism', 'cpus', 'memory', 'gpus', 'mount', 'casm', 'out', 'retries']);
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--') {
      o.evalArgs = rest.slice(i + 1);
      break;
    }
    const key = rest[i].replace(/^--/, '');
    if (!rest[i].startsWith('--') || !names.has(key)) usage(`unknown option '${rest[i]}'`);
    if (i + 1 >= rest.length) usage(`${rest[i]} needs a value`);
    o[key] = rest[++i];
  }
  for (const key of ['part', 'name', 'image', 'claim', 'shards', 'out']) if (!o[key]) usage(`give --${key}`);
  if (o.part !== 'shards' && o.part !== 'merge') usage(`--part must be shards or merge, got '${o.part}'`);
  if (!/^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$/.test(o.name))
    usage(`--name '${o.name}': lower-case letters, digits and '-', at most 42 (a Job name gets a suffix)`);
  for (const key of ['shards', 'retries', 'gpus', ...(o.parallelism ? ['parallelism'] : [])]) {
    if (!/^\d+$/.test(o[key]) || (key === 'shards' && o[key] === '0'))
      usage(`--${key} must be a ${key === 'shards' ? 'positive' : 'non-negative'} integer, got '${o[key]}'`);
  }
  if (!o.out.startsWith(o.mount + '/')) usage(`--out ${o.out}: must lie under --mount ${o.mount}, where the pods share the claim`);
  if (o.evalArgs.includes('--out') || o.evalArgs.some((a) => a.includes('shard-index') || a.includes('num-shards')))
    usage('the eval options must not set --out, --shard-index or --num-shards: this script does');
  return o;
}

/** One Job of the evaluation: its pods run `args` (after the casm entry) on the claim. */
function job(o, suffix, spec, args, env = []) {
  const gpu = Number(o.gpus) > 0 ? { 'nvidia.com/gpu': Number(o.gpus) } : {};
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: `${o.name}-${suffix}`, labels: { app: 'casm-ts', 'casm-ts/evaluation': o.name } },
    spec: {
      ...spec,
      backoffLimit: Number(o.retries),
      template: {
        metadata: { labels: { app: 'casm-ts', 'casm-ts/evaluation': o.name } },
        spec: {
          restartPolicy: 'Never',
          containers: [
            {
              name: 'casm',
              image: o.image,
              command: o.casm.split(' ').filter(Boolean),
              args,
              env,
              resources: { requests: { cpu: o.cpus, memory: o.memory, ...gpu }, limits: { cpu: o.cpus, memory: o.memory, ...gpu } },
              volumeMounts: [{ name: 'work', mountPath: o.mount }],
            },
          ],
          volumes: [{ name: 'work', persistentVolumeClaim: { claimName: o.claim } }],
        },
      },
    },
  };
}

const o = parse(argv.slice(2));
const n = Number(o.shards);
const manifest =
  o.part === 'shards'
    ? job(
        o,
        'shards',
        { completionMode: 'Indexed', completions: n, parallelism: o.parallelism ? Number(o.parallelism) : n },
        // $(SHARD) is expanded by Kubernetes from the container's env, no shell in between.
        ['eval', o.command, ...o.evalArgs, '--shard-index', '$(SHARD)', '--num-shards', String(n), '--out', `${o.out}/shard-$(SHARD)`],
        [{ name: 'SHARD', valueFrom: { fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" } } }],
      )
    : job(o, 'merge', { completions: 1 }, ['eval', 'merge', ...Array.from({ length: n }, (_, i) => `${o.out}/shard-${i}`), '--out', o.out]);
stdout.write(JSON.stringify(manifest, null, 2) + '\n');
