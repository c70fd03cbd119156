/**
 * What every bench shares: command-line options (ResNet shape, batch, warm-up and timed calls,
 * backend), the engine, a trainer with random weights (speed does not depend on them), the header
 * line, and the timing loop.
 */
import { parseArgs } from 'node:util';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { initEngine, type BackendChoice, type EngineInfo } from '../src/engine/engine.js';
import { bf16Support, PRECISIONS, type Precision } from '../src/engine/mixedPrecision.js';
import { SMOOTHGRAD_DEFAULTS } from '../src/explain/smoothGrad.js';
import { RESNET50, type ResNetConfig } from '../src/models/resnet.js';

export interface Bench {
  engine: EngineInfo;
  trainer: CasmTrainer;
  arch: ResNetConfig;
  batch: number;
  size: number;
  /** SmoothGrad's n. */
  samples: number;
  steps: number;
  warmup: number;
  mode: string | undefined;
  rounds: number;
  /** As given (bench.ts reads the list); the engine runs the first. */
  precisions: Precision[];
}

export async function setupBench(name: string, defaults: { batch: number; warmup: number }): Promise<Bench> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'auto' },
      batch: { type: 'string', default: String(defaults.batch) },
      size: { type: 'string', default: '224' },
      samples: { type: 'string', default: String(SMOOTHGRAD_DEFAULTS.samples) },
      steps: { type: 'string', default: '3' },
      warmup: { type: 'string', default: String(defaults.warmup) },
      depths: { type: 'string', default: RESNET50.depths.join(',') },
      width: { type: 'string', default: String(RESNET50.width) },
      // bench.ts: run one mode in this process (its children), else all modes and the reference,
      // interleaved over `rounds` rounds.
      mode: { type: 'string' },
      rounds: { type: 'string', default: '2' },
      // bench.ts: the precisions to time (each mode in each); a child gets one.
      precision: { type: 'string' },
    },
  });
  const size = Number(values.size);
  // By default fp32, and bf16 too where the CPU has it (elsewhere it would be a slow emulation).
  const precisions = (values.precision ?? (bf16Support().ok ? 'fp32,bf16' : 'fp32')).split(',') as Precision[];
  for (const p of precisions) if (!(PRECISIONS as readonly string[]).includes(p)) throw new Error(`--precision ${p}: valid are ${PRECISIONS.join(', ')}`);
  const arch = { depths: values.depths!.split(',').map(Number), width: Number(values.width), classes: 1000, inputSize: size };
  const bench: Bench = {
    engine: await initEngine(values.backend as BackendChoice, undefined, undefined, precisions[0]),
    trainer: new CasmTrainer(defaultTrainConfig({ arch, thinning: 'L100', batchSize: Number(values.batch) })),
    arch,
    batch: Number(values.batch),
    size,
    samples: Number(values.samples),
    steps: Number(values.steps),
    warmup: Number(values.warmup),
    mode: values.mode,
    rounds: Number(values.rounds),
    precisions,
  };
  // f' as the reference's default (--choice alternate): the current classifier on even iterations,
  // the snapshot on odd ones, so both engines time the same mix (the pool's own draw is random).
  const { pool } = bench.trainer;
  let t = 0;
  pool.choose = () => (t++ % 2 === 1 && pool.snapshots.length > 0 ? { kind: 'snapshot', index: 0 } : { kind: 'current' });
  const { engine } = bench;
  console.log(
    `${name}: backend ${engine.backend}${engine.tensorflowVersion ? ` (libtensorflow ${engine.tensorflowVersion})` : ''}, ` +
      `ResNet depths [${arch.depths}] width ${arch.width} at ${size}px, batch ${bench.batch}, precision ${engine.precision}, ` +
      `${bench.warmup} warm-up + ${bench.steps} timed calls each`,
  );
  return bench;
}

/** Milliseconds per call of fn, after `warm` untimed calls. */
export function measure(fn: () => void, warm: number, calls: number): number {
  for (let i = 0; i < warm; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return (performance.now() - t0) / calls;
}
