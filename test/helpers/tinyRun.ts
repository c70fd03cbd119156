/**
 * A tiny CASM run on the built-in digits, for tests that need a real checkpoint on disk (explain,
 * export, the browser page). The in-memory models are freed; only the run directory remains.
 */
import { defaultTrainConfig } from '../../src/casm/config.js';
import { runTraining } from '../../src/casm/train.js';

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
