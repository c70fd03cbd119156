/**
 * Backend selection for the CLI and the bench: which engine runs the TensorFlow.js ops.
 *
 *   tensorflow      @tensorflow/tfjs-node: the native binding built by scripts/build-engine.sh
 *                   against the libtensorflow inside the TensorFlow pip wheel in .venv.
 *   tensorflow-gpu  @tensorflow/tfjs-node-gpu: the same, CUDA build (CASM_GPU=1 bash
 *                   scripts/setup.sh; untested on our CPU-only machines).
 *   cpu             the pure-JS backend of @tensorflow/tfjs. Always available; much slower.
 *   auto            tensorflow-gpu if installed and it loads, else tensorflow, else cpu with a
 *                   loud warning.
 *
 * The whole project does `import * as tf from '@tensorflow/tfjs'`. tfjs-node depends on that
 * same @tensorflow/tfjs@4.22.0 (deduplicated by npm), and tfjs-core keeps its engine in a
 * global anyway, so importing tfjs-node registers the 'tensorflow' backend into the engine
 * everyone uses; initEngine checks that this is so (tf.getBackend() === 'tensorflow').
 *
 * Threads: libtensorflow sizes its intra-/inter-op thread pools from the core count; we keep
 * its defaults. TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (and OMP_NUM_THREADS for
 * oneDNN) in the environment override them, as in Python TensorFlow.
 * Logging: unless TF_CPP_MIN_LOG_LEVEL is set, we set it to 1 before loading libtensorflow,
 * which hides its INFO lines (e.g. the CPU-feature notice). The two-line oneDNN notice that
 * libtensorflow 2.21 prints while it is being loaded ignores that variable; it stays.
 */
import * as tf from '@tensorflow/tfjs';
import { trainingPath as trainingPathText } from './fusedTraining.js';
import { bf16Route, PrecisionUnavailable, type Precision } from './mixedPrecision.js';
import { install } from './patches.js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

export type BackendChoice = 'auto' | 'tensorflow' | 'tensorflow-gpu' | 'cpu';

export const BACKEND_CHOICES: readonly BackendChoice[] = Object.freeze(['auto', 'tensorflow', 'tensorflow-gpu', 'cpu'] as const);

/** How training runs on the native engine (patches.ts); the pure-JS backend always composes. */
export const TRAINING_PATHS = ['fused', 'composed'] as const;
export type TrainingPath = (typeof TRAINING_PATHS)[number];

/** 'fused', or 'composed' where the environment says CASM_FUSED=0 (the older switch, kept as an alias). */
export const defaultTrainingPath = (): TrainingPath => (process.env['CASM_FUSED'] === '0' ? 'composed' : 'fused');

export interface EngineInfo {
  /** tf.getBackend() after initialisation: 'tensorflow' (either native package) or 'cpu'. */
  backend: string;
  /** true when ops run in libtensorflow. */
  native: boolean;
  /** libtensorflow's TF_Version(), e.g. '2.21.0'; null on the cpu backend. */
  tensorflowVersion: string | null;
  /** Set when auto fell back to the slow pure-JS backend (also logged and printed to stderr). */
  warning: string | null;
  /** What the convolutions run in (mixedPrecision.ts). */
  precision: Precision;
}

type NativeChoice = 'tensorflow' | 'tensorflow-gpu';

const NATIVE_PACKAGES: Record<NativeChoice, string> = {
  tensorflow: '@tensorflow/tfjs-node',
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
};

const BUILD_HINT: Record<NativeChoice, string> = {
  tensorflow: 'build it with: bash scripts/setup.sh (or, with .venv in place: bash scripts/build-engine.sh --force)',
  'tensorflow-gpu': 'install and build it with: CASM_GPU=1 bash scripts/setup.sh (needs an NVIDIA GPU with CUDA 12)',
};

const require = createRequire(import.meta.url);

/** The native package loaded into this process, if any: two cannot share one process. */
let loadedNative: { choice: NativeChoice; pkg: string; pkgVersion: string; tfVersion: string } | null = null;

function defaultLog(line: string): void {
  process.stderr.write(line + '\n');
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? msg;
}

/** Not installed (null) or where its dist/index.js looks for tfjs_binding.node. */
function locateBinding(pkg: string): { pkgJson: string; version: string; binding: string } | null {
  let pkgJson: string;
  try {
    pkgJson = require.resolve(`${pkg}/package.json`);
  } catch {
    return null;
  }
  const version = (require(pkgJson) as { version: string }).version;
  const preGyp = createRequire(pkgJson)('@mapbox/node-pre-gyp') as { find(p: string): string };
  return { pkgJson, version, binding: preGyp.find(pkgJson) };
}

/** A native backend that cannot be used; message = reason + how to build it. */
class Unavailable extends Error {
  constructor(
    readonly reason: string,
    readonly notInstalled: boolean,
    hint: string | null,
    options?: ErrorOptions,
  ) {
    super(hint ? `${reason}; ${hint}` : reason, options);
  }
}

/** Loads a native package (once per process) and makes 'tensorflow' the active backend. */
async function loadNative(choice: NativeChoice): Promise<{ pkg: string; pkgVersion: string; tfVersion: string }> {
  const pkg = NATIVE_PACKAGES[choice];
  if (loadedNative) {
    if (loadedNative.choice !== choice && choice === 'tensorflow-gpu') {
      if (!locateBinding(pkg)) {
        throw new Unavailable(`backend '${choice}' is unavailable: ${pkg} is not installed`, true, BUILD_HINT[choice]);
      }
      throw new Unavailable(
        `backend 'tensorflow-gpu' is unavailable: ${loadedNative.pkg} is already loaded in this process ` +
          `and the two native packages cannot be loaded together`,
        false,
        null,
      );
    }
    // Either the same package, or tfjs-node asked for while tfjs-node-gpu is loaded: the same
    // 'tensorflow' backend over the same libtensorflow, so reuse it.
    if (!(await tf.setBackend('tensorflow'))) {
      throw new Unavailable(`backend '${choice}': tf.setBackend('tensorflow') failed`, false, null);
    }
    return loadedNative;
  }

  const where = locateBinding(pkg);
  if (!where) {
    throw new Unavailable(`backend '${choice}' is unavailable: ${pkg} is not installed`, true, BUILD_HINT[choice]);
  }
  if (!existsSync(where.binding)) {
    throw new Unavailable(
      `backend '${choice}' is unavailable: the native binding of ${pkg} is not built ` + `(${where.binding} is missing)`,
      false,
      BUILD_HINT[choice],
    );
  }
  process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '1';
  try {
    await import(pkg);
  } catch (err) {
    throw new Unavailable(`backend '${choice}' is unavailable: ${pkg} failed to load (${firstLine(err)})`, false, BUILD_HINT[choice], { cause: err });
  }
  // The package registered 'tensorflow' and made it current, in the engine we import.
  const backend = tf.findBackend('tensorflow') as { binding?: { TF_Version?: unknown } } | null;
  if (!backend || tf.getBackend() !== 'tensorflow') {
    throw new Unavailable(
      `backend '${choice}': ${pkg} loaded but did not register the 'tensorflow' backend in the ` +
        `@tensorflow/tfjs engine this project uses (tf.getBackend() is '${tf.getBackend()}'); ` +
        `are there two copies of @tensorflow/tfjs? (npm ls @tensorflow/tfjs)`,
      false,
      null,
    );
  }
  const tfVersion = backend.binding?.TF_Version;
  loadedNative = {
    choice,
    pkg,
    pkgVersion: where.version,
    tfVersion: typeof tfVersion === 'string' ? tfVersion : 'unknown',
  };
  return loadedNative;
}

async function useCpu(): Promise<void> {
  if (!(await tf.setBackend('cpu'))) throw new Error("tf.setBackend('cpu') failed");
  await tf.ready();
  // The cpu backend prints a "Hi, looks like you are running TensorFlow.js in Node.js ...
  // install our node backend" notice on first use; we report the backend ourselves.
  const cpu = tf.backend() as { firstUse?: boolean };
  if (typeof cpu.firstUse === 'boolean') cpu.firstUse = false;
}

/**
 * Selects and initialises the backend. Logs one line (`engine: backend=...`). Rejects with a
 * message saying how to build it when an explicitly requested native backend is unavailable,
 * and with the list of valid choices for an unknown choice.
 */
export async function initEngine(
  choice: BackendChoice,
  log: (line: string) => void = defaultLog,
  trainingPath: TrainingPath = defaultTrainingPath(),
  precision: Precision = 'fp32',
): Promise<EngineInfo> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(choice)) {
    throw new Error(`unknown backend '${String(choice)}': valid choices are ${BACKEND_CHOICES.join(', ')}`);
  }
  const bf16 = precision === 'bf16';
  if (bf16 && choice === 'cpu')
    throw new PrecisionUnavailable('--precision bf16 needs the native engine (--backend tensorflow): the pure-JS cpu backend has no bfloat16');
  if (bf16 && trainingPath !== 'fused')
    throw new PrecisionUnavailable('--precision bf16 runs on the fused training path: drop --training-path composed (or CASM_FUSED=0)');

  if (choice === 'cpu') {
    install('composed');
    await useCpu();
    log(`engine: backend=cpu pure-JS (TensorFlow.js ${tf.version_core}), chosen explicitly`);
    return { backend: tf.getBackend(), native: false, tensorflowVersion: null, warning: null, precision };
  }

  const candidates: NativeChoice[] = choice === 'auto' ? ['tensorflow-gpu', 'tensorflow'] : [choice];
  const reasons: string[] = [];
  for (const c of candidates) {
    try {
      const got = await loadNative(c);
      const route = bf16 ? ` (${bf16Route(c === 'tensorflow-gpu' ? 'gpu' : 'cpu')})` : '';
      install(trainingPath, precision);
      log(
        `engine: backend=${tf.getBackend()} native libtensorflow ${got.tfVersion} (${got.pkg} ${got.pkgVersion}); training: ${trainingPathText()}; precision ${precision}${route}`,
      );
      return { backend: tf.getBackend(), native: true, tensorflowVersion: got.tfVersion, warning: null, precision };
    } catch (err) {
      if (choice !== 'auto' || err instanceof PrecisionUnavailable) throw err;
      // auto: an absent GPU package is the normal case, not worth a word.
      if (!(err instanceof Unavailable && err.notInstalled && c === 'tensorflow-gpu')) {
        reasons.push(err instanceof Unavailable ? err.reason : firstLine(err));
      }
    }
  }

  if (bf16)
    throw new PrecisionUnavailable(`--precision bf16 needs the native engine, which is unavailable: ${reasons.join(' | ')}. Fix: bash scripts/setup.sh`);
  install('composed');
  await useCpu();
  const warning =
    'WARNING: the native TensorFlow engine is not available, so casm-ts runs on the pure-JS cpu ' +
    'backend, which is MUCH slower. ' +
    (reasons.length ? `Why: ${reasons.join(' | ')}. ` : '') +
    'Fix: bash scripts/setup.sh';
  const banner = ['*'.repeat(78), warning, '*'.repeat(78)].join('\n');
  log(banner);
  if (log !== defaultLog) process.stderr.write(banner + '\n');
  log(`engine: backend=cpu pure-JS (TensorFlow.js ${tf.version_core}), native engine unavailable`);
  return { backend: tf.getBackend(), native: false, tensorflowVersion: null, warning, precision };
}
