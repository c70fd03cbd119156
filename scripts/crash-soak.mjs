#!/usr/bin/env node
// Crash soak (issue 15): a small training killed with SIGKILL at random moments, each time resumed
// with --resume, must end bit-identical to the same training run straight through, with no
// half-written files and no lock left behind. Not a test (it takes minutes and its kills are
// random in time); the README records what it gave.
//
//   node scripts/crash-soak.mjs [--kills 10] [--seed 1] [--out /tmp/casm-soak]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: { kills: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' }, out: { type: 'string', default: '/tmp/casm-soak' } },
});
const kills = Number(args.kills);
let rng = Number(args.seed) >>> 0 || 1;
const random = () => (rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0) / 2 ** 32;

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli.js');
const TRAIN = [
  'train',
  '--train-count',
  '640',
  '--val-count',
  '8',
  '--batch-size',
  '8',
  '--width',
  '4',
  '--input-size',
  '32',
  '--warmup-steps',
  '5',
  '--epochs',
  '10',
  '--max-steps',
  '400',
  '--checkpoint-every',
  '3',
  '--log-every',
  '1000',
];
rmSync(args.out, { recursive: true, force: true });
mkdirSync(args.out, { recursive: true });
const straight = join(args.out, 'straight');
const crashed = join(args.out, 'crashed');

const t0 = Date.now();
const r = spawnSync(process.execPath, [cli, ...TRAIN, '--out', straight], { encoding: 'utf8' });
if (r.status !== 0) throw new Error(`the straight run failed: ${r.stderr}`);
const straightSeconds = (Date.now() - t0) / 1000;
console.log(`straight run: ${straightSeconds.toFixed(1)} s`);

/** One attempt: a fresh start or a resume, killed after `delay` ms (null: let it finish). Resolves with its exit code or signal. */
function attempt(delay) {
  const resume = existsSync(join(crashed, 'latest'));
  const child = spawn(process.execPath, [cli, ...TRAIN, '--out', crashed, ...(resume ? ['--resume', crashed] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const timer = delay === null ? null : setTimeout(() => child.kill('SIGKILL'), delay);
  return new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ resume, code, signal, err });
    }),
  );
}

const stepOf = (dir) => (existsSync(join(dir, 'latest')) ? readFileSync(join(dir, 'latest'), 'utf8').trim() : '(none)');
let killed = 0;
for (let i = 0; i < kills; i++) {
  // From engine start-up to a sixth of the run past it: the kills land all along the run.
  const delay = Math.round(1000 + (random() * (straightSeconds * 1000)) / 6);
  const a = await attempt(delay);
  if (a.signal === 'SIGKILL') killed++;
  else if (a.code !== 0) throw new Error(`attempt ${i + 1} exited ${a.code}: ${a.err}`);
  console.log(`attempt ${i + 1}: ${a.resume ? 'resume' : 'start'}, ${a.signal ?? `exit ${a.code}`} after ${delay} ms; latest ${stepOf(crashed)}`);
}
const last = await attempt(null);
if (last.code !== 0) throw new Error(`the final resume exited ${last.code}: ${last.err}`);

const state = (dir) => JSON.parse(readFileSync(join(dir, stepOf(dir), 'state.json'), 'utf8'));
const a = state(straight);
const b = state(crashed);
const same = a.step === b.step && JSON.stringify(a.files) === JSON.stringify(b.files) && a.rngState === b.rngState;
const leftovers = readdirSync(crashed).filter((f) => f.startsWith('.') || f === 'run.lock');
console.log(
  `${killed} of ${kills} attempts killed by SIGKILL, then a resume to the end: step ${b.step}; ` +
    `weights, optimiser states and pool ${same ? 'bit-identical to' : 'DIFFERENT from'} the straight run (sha256 of every file); ` +
    `leftovers: ${leftovers.length ? leftovers.join(', ') : 'none'}`,
);
process.exitCode = same && leftovers.length === 0 ? 0 : 1;
