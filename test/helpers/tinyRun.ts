/**
 * A tiny CASM run on the built-in digits, for tests that need a real checkpoint on disk (explain,
 * export, the browser page). The in-memory models are freed; only the run directory remains.
 */
import { defaultTrainConfig } from '../../src/casm/config.js';
import { runTraining } from '../../src/train/train.js';
import { TINY_TRAIN_FLAGS } from './tinyFlags.js';

export interface TinyRun {
  /** Canvas and input size (64: the digits are 20-40 px). */
  inputSize?: number;
  decoderWidth?: number;
  warmupSteps?: number;
  maxSteps?: number;
  trainCount?: number;
}

export async function trainTinyRun(outDir: string, o: TinyRun = {}): Promise<void> {
  const config = defaultTrainConfig({
    arch: { depths: [1, 1, 1, 1], width: 4, classes: 10, inputSize: o.inputSize ?? 64 },
    masker: { decoderWidth: o.decoderWidth ?? 8, upsample: 'nearest', shareEncoder: true, stride: 4 },
    batchSize: 8,
    warmupSteps: o.warmupSteps ?? 2,
  });
  const { trainer } = await runTraining({
    config,
    outDir,
    data: { kind: 'digits', trainCount: o.trainCount ?? 64, valCount: 8 },
    checkpointEvery: 1000,
    logEvery: 1000,
    imageEvery: 1000,
    maxSteps: o.maxSteps ?? 3,
    log: () => {},
  });
  trainer.dispose();
}

/** `casm experiment sweep` of two tiny trainings (thinning F and L100) on the built-in digits: 3 steps each, 16 held-out images per evaluation. */
export const tinySweep = (out: string, ...more: string[]) => [
  'experiment',
  'sweep',
  '--thinnings',
  'F,L100',
  '--scores',
  'entropy',
  '--out',
  out,
  ...TINY_TRAIN_FLAGS,
  '--eval-limit',
  '16',
  ...more,
];
