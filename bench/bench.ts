/**
 * npm run bench [-- --batch 16 --size 224 --steps 3 --warmup 3 --rounds 2 --depths 3,4,6,3 --backend tensorflow --precision fp32,bf16]
 * One CASM iteration (thinning L100, entropy score) of ResNet-50 at 224 on our engine next to the
 * independent PyTorch implementation of the same iteration (bench/reference/casm_iteration.py,
 * installed by `bash scripts/setup-bench.sh`), plus the plain classifier step and the masker
 * forward; img/s, peak RSS and the ours / PyTorch ratio. In fp32, and in bf16 (ours: --precision
 * bf16; PyTorch: torch.autocast('cpu', dtype=torch.bfloat16)) where the CPU has AMX-BF16 or
 * AVX512-BF16 (--precision picks; elsewhere bf16 would time an emulation). Each mode runs in its own process (ours
 * and PyTorch's alike), so a peak RSS belongs to that mode alone. Writes bench/results.md.
 * Both engines get faster over their first iterations (allocators settling), hence 3 warm-up
 * calls. This machine's speed drifts by up to 10% between minutes, so ours and PyTorch's runs of a
 * mode alternate, `rounds` times, and the ratio is taken of the medians.
 * Not a test: nothing here asserts a speed; take figures on an idle machine (the load average is
 * printed next to them).
 */
import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { crossEntropy } from '../src/casm/score.js';
import { trainingPath } from '../src/engine/fusedTraining.js';
import { bf16Support, EMULATION_ENV, type Precision } from '../src/engine/mixedPrecision.js';
import { REPO_ROOT } from '../src/version.js';
import { measure, setupBench } from './common.js';

const MODES = {
  plain: 'plain classifier step (SGD on clean CE)',
  masker_forward: 'masker forward (classifier features + decoder, inference)',
  casm: 'CASM iteration (eq. 8 classifier step + L100 pool + masker step)',
} as const;
type Mode = keyof typeof MODES;
interface Result {
  img_per_s: number;
  ms_per_iteration: number;
  peak_rss_mb: number;
}

const bench = await setupBench('bench', { batch: 16, warmup: 3 });
const { trainer, arch, batch, size, steps, warmup, precisions } = bench;

if (bench.mode !== undefined) {
  // A child: time one mode, print its result as one JSON line.
  const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const y = tf.randomUniform([batch], 0, arch.classes, 'int32', 2) as tf.Tensor1D;
  const sgd = tf.train.momentum(1e-3, 0.9);
  const run: Record<Mode, () => void> = {
    plain: () => tf.tidy(() => void sgd.minimize(() => crossEntropy((trainer.classifier.apply(x, { training: true }) as tf.Tensor[])[5] as tf.Tensor2D, y))),
    masker_forward: () => {
      const { masks, logits } = trainer.model.inference(x);
      masks.dataSync();
      tf.dispose([masks, logits]);
    },
    casm: () => void trainer.iteration(x, y),
  };
  const ms = measure(run[bench.mode as Mode], warmup, steps);
  const result: Result = { img_per_s: (1000 * batch) / ms, ms_per_iteration: ms, peak_rss_mb: process.resourceUsage().maxRSS / 1024 };
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(0);
}

const args = process.argv.slice(2);
const load0 = loadavg()[0];
const python = join(REPO_ROOT, '.venv-bench', 'bin', 'python');
const hasReference = existsSync(python);
if (!hasReference) console.log(`pytorch reference: not installed (${python} missing): bash scripts/setup-bench.sh`);

if (!precisions.includes('bf16'))
  console.log(`bf16 rows: not timed (${bf16Support().reason}; CASM_BF16_EMULATION=1 with --precision fp32,bf16 times an emulation)`);

/** One mode of ours in a child process. */
function runOurs(mode: Mode, precision: Precision): Result {
  const out = execFileSync(process.execPath, [process.argv[1]!, ...args, '--mode', mode, '--precision', precision], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`bench: mode ${mode} printed no result`);
  return JSON.parse(line.slice(7)) as Result;
}

/** One mode of the PyTorch reference (its own child process), same shapes and counts; bf16 under autocast. */
function runReference(mode: Mode, precision: Precision): { environment: { torch: string; threads: number }; result: Result } {
  const refArgs = [
    '--json',
    '--mode',
    mode,
    '--batch',
    String(batch),
    '--size',
    String(size),
    '--steps',
    String(steps),
    '--warmup',
    String(warmup),
    '--depths',
    arch.depths.join(','),
    '--width',
    String(arch.width),
    '--autocast',
    precision === 'bf16' ? 'bf16' : 'off',
  ];
  const out = JSON.parse(
    execFileSync(python, [join(REPO_ROOT, 'bench', 'reference', 'casm_iteration.py'), ...refArgs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  return { environment: out.environment, result: out.results[mode] };
}

/** A row of the table: one mode in one precision. */
type Key = `${Mode} ${Precision}`;
const keys = precisions.flatMap((p) => (Object.keys(MODES) as Mode[]).map((m) => `${m} ${p}` as Key));
const split = (k: Key) => k.split(' ') as [Mode, Precision];
const runs = Object.fromEntries(keys.map((k) => [k, { ours: [] as Result[], ref: [] as Result[] }])) as Record<Key, { ours: Result[]; ref: Result[] }>;
let torch: { torch: string; threads: number } | null = null;
const show = (who: string, round: number, k: Key, r: Result) =>
  console.log(
    `round ${round} ${who} ${MODES[split(k)[0]]} (${split(k)[1]}): ${r.img_per_s.toFixed(3)} img/s (${r.ms_per_iteration.toFixed(0)} ms/iteration), peak RSS ${r.peak_rss_mb.toFixed(0)} MB`,
  );
for (let round = 1; round <= bench.rounds; round++) {
  for (const k of keys) {
    const [mode, precision] = split(k);
    runs[k].ours.push(runOurs(mode, precision));
    show('ours   ', round, k, runs[k].ours.at(-1)!);
    if (!hasReference) continue;
    const ref = runReference(mode, precision);
    torch = ref.environment;
    runs[k].ref.push(ref.result);
    show('pytorch', round, k, ref.result);
  }
}
const load1 = loadavg()[0];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2;
};
const speed = (rs: Result[]) => median(rs.map((r) => r.img_per_s));
const peak = (rs: Result[]) => Math.max(...rs.map((r) => r.peak_rss_mb));
const ratio = (k: Key) => (hasReference ? speed(runs[k].ours) / speed(runs[k].ref) : null);
/** The ratio of each round's pair, lowest to highest. */
const spread = (k: Key) => {
  if (!hasReference) return 'n/a';
  const rs = runs[k].ours.map((o, i) => o.img_per_s / runs[k].ref[i]!.img_per_s);
  return `${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)}`;
};
for (const p of precisions) {
  const r = (m: Mode) => ratio(`${m} ${p}`)?.toFixed(2) ?? 'n/a';
  console.log(
    `ratio ours / PyTorch, ${p} (medians of ${bench.rounds} rounds): CASM iteration ${r('casm')} (rounds ${spread(`casm ${p}`)}), ` +
      `plain step ${r('plain')}, masker forward ${r('masker_forward')}; load ${load0.toFixed(1)} -> ${load1.toFixed(1)}`,
  );
}

const row = (k: Key) => {
  const { ours, ref } = runs[k];
  const [m, p] = split(k);
  const r = hasReference ? { speed: speed(ref).toFixed(3), rss: peak(ref).toFixed(0) } : { speed: 'n/a', rss: 'n/a' };
  return `| ${MODES[m]} | ${p} | ${speed(ours).toFixed(3)} | ${r.speed} | ${ratio(k)?.toFixed(2) ?? 'n/a'} | ${spread(k)} | ${peak(ours).toFixed(0)} | ${r.rss} |`;
};
// The latest run replaces the top of bench/results.md; its hand-written part from '## History' on stays.
const resultsPath = join(REPO_ROOT, 'bench', 'results.md');
const previous = existsSync(resultsPath) ? readFileSync(resultsPath, 'utf8') : '';
const history = previous.includes('\n## History') ? previous.slice(previous.indexOf('\n## History')) : '';
writeFileSync(
  resultsPath,
  [
    '# npm run bench: our engine vs the PyTorch reference',
    '',
    `- command: \`${process.env[EMULATION_ENV] === '1' ? `${EMULATION_ENV}=1 ` : ''}npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}\` (written by bench/bench.ts, ${new Date().toISOString()})`,
    `- machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; load average ${load0.toFixed(1)} before, ${load1.toFixed(1)} after`,
    `- ours: backend ${bench.engine.backend}${bench.engine.tensorflowVersion ? `, libtensorflow ${bench.engine.tensorflowVersion}` : ''}, tfjs ${tf.version.tfjs}, Node ${process.version}; training: ${trainingPath()}`,
    `- PyTorch: ${torch ? `torch ${torch.torch}, ${torch.threads} threads` : 'not installed (bash scripts/setup-bench.sh)'}`,
    `- ResNet depths [${arch.depths}] width ${arch.width} at ${size} px, batch ${batch}, ${warmup} warm-up + ${steps} timed calls; each mode in its own process; ` +
      `${bench.rounds} rounds, ours and PyTorch alternating; img/s are medians over the rounds, peak RSS the highest`,
    `- bf16: ours --precision bf16 (convolutions and their gradients in bfloat16), PyTorch under torch.autocast('cpu', dtype=torch.bfloat16)` +
      (precisions.includes('bf16') ? (bf16Support().ok ? '' : ` (EMULATED: ${bf16Support().reason})`) : `: not timed (${bf16Support().reason})`),
    '',
    '| what | precision | ours img/s | PyTorch img/s | ratio | ratio per round | ours peak RSS MB | PyTorch peak RSS MB |',
    '|---|---|---|---|---|---|---|---|',
    ...keys.map(row),
  ].join('\n') +
    '\n' +
    history,
);
console.log('written: bench/results.md');
