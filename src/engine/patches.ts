/**
 * The engine patches in one place. backprop.ts replaces tfjs-core's Engine.gradients;
 * fusedTraining.ts replaces the call of the BatchNormalization, Conv2D and Add layers of
 * tfjs-layers and re-registers two gradients (Relu, FusedBatchNorm); mixedPrecision.ts registers
 * a bfloat16 convolution kernel on the native backend and calls TensorFlow handles through
 * tfjs-node's binding. They reach into internals (the tape's fields, layer prototypes, kernel
 * names, the binding's calls) that tfjs does not promise to keep, so they
 * are installed only on the tfjs they were written and tested for: package.json pins it.
 */
import * as tf from '@tensorflow/tfjs';
import { setFusedTraining } from './fusedTraining.js';
import { setPrecision, type Precision } from './mixedPrecision.js';

/** The tfjs release the patches were written for (every component of it). */
export const PATCHED_TFJS = '4.22.0';

/** The tfjs in this process is not the one the patches were written for. */
export class EngineVersionError extends Error {}

/** Throws unless every tfjs component in `versions` (tf.version's shape) is PATCHED_TFJS. */
export function checkTfjsVersion(versions: Record<string, string> = tf.version): void {
  const other = Object.entries(versions).filter(([, v]) => v !== PATCHED_TFJS);
  if (other.length > 0) {
    throw new EngineVersionError(
      `casm-ts's engine patches (src/engine/) were written for tfjs ${PATCHED_TFJS}; this process has ` +
        `${other.map(([k, v]) => `${k} ${v}`).join(', ')}. Install the pinned one: npm ci (or bash scripts/setup.sh)`,
    );
  }
}

/**
 * The training path: 'fused' (the native engine's fused kernels, lazy gradients, the backward
 * pass that frees as it goes) or 'composed' (tfjs as it is written), and the precision of the
 * convolutions (bf16 on the fused path only: engine.ts checks). Checks the tfjs version first.
 */
export function install(path: 'fused' | 'composed', precision: Precision = 'fp32'): void {
  checkTfjsVersion();
  setFusedTraining(path === 'fused');
  setPrecision(precision);
}
