/**
 * The masks an evaluation compares (spec section 4), all as N x H x W values in [0, 1] at the
 * input size: CASM's masker (from a checkpoint, or an exported mask network), the gradient
 * explainers on the checkpoint's classifier (targets: the ground-truth labels, the protocol's
 * "class known" setting), and the two trivial baselines: `full` (the whole image) and `centre`
 * (the centre box with a 33-pixel margin at 224, as a 0/1 mask).
 */
import * as tf from '@tensorflow/tfjs';
import { loadCasmModel, type CheckpointState } from '../checkpoints/checkpoint.js';
import { Classifier } from '../explain/classifier.js';
import { buildExplainer, METHODS as EXPLAIN_METHODS, parseMethods, type ExplainerOptions, type Method as ExplainMethod } from '../explain/explainCommand.js';
import { checkMasksFinite, loadMaskNetwork, type MaskerMeta } from '../export/exportMasker.js';
import type { CasmModel } from '../models/casmModel.js';
import { centreBox } from '../boxes.js';
import { UsageError } from '../util/usageError.js';

export const EVAL_METHODS = [...EXPLAIN_METHODS, 'full', 'centre'] as const;
export type EvalMethod = (typeof EVAL_METHODS)[number];
export const DEFAULT_METHODS: EvalMethod[] = ['casm', 'gradcam', 'smoothgrad', 'vanilla', 'full', 'centre'];

export const parseEvalMethods = (spec: string): EvalMethod[] => parseMethods(spec, EVAL_METHODS);

/** A batch as the methods take it: the model input (NHWC) and the RGB pixels it was made of. */
export interface BatchImages {
  x: tf.Tensor4D;
  pixels: Uint8Array;
}

/** One method: masks of a batch (images, labels) as n*h*w floats in [0, 1]. */
export interface MaskMethod {
  /** An EvalMethod, or a name of the evaluation's own (another run's masker). */
  name: string;
  masks(images: BatchImages, labels: Int32Array): Float32Array;
}

/** What is evaluated: a checkpoint (classifier + masker) and/or an exported mask network. */
export interface Models {
  /** Input side in pixels. */
  size: number;
  /** The checkpoint's model (classifier and masker), when one was given. */
  casm: CasmModel | null;
  checkpoint: { dir: string; state: CheckpointState } | null;
  exported: { dir: string; model: tf.LayersModel; meta: MaskerMeta } | null;
  /** Top-1 classes of the checkpoint's classifier on clean images (null without a checkpoint). */
  predict(x: tf.Tensor4D): Int32Array | null;
  dispose(): void;
}

export async function loadModels(checkpoint: string | undefined, exportedDir: string | undefined): Promise<Models> {
  if (checkpoint === undefined && exportedDir === undefined) throw new UsageError('give --checkpoint <run or checkpoint dir> and/or --model <exported dir>');
  let casm: CasmModel | null = null;
  let ckpt: Models['checkpoint'] = null;
  if (checkpoint !== undefined) {
    const loaded = loadCasmModel(checkpoint);
    casm = loaded.model;
    ckpt = { dir: loaded.dir, state: loaded.state };
  }
  const exported = exportedDir === undefined ? null : { dir: exportedDir, ...(await loadMaskNetwork(exportedDir)) };
  const size = casm?.arch.inputSize ?? exported!.meta.input.height;
  if (exported && exported.meta.input.height !== size) {
    throw new UsageError(
      `--model ${exportedDir}: input ${exported.meta.input.height}x${exported.meta.input.width} differs from the checkpoint's ${size}x${size}`,
    );
  }
  return {
    size,
    casm,
    checkpoint: ckpt,
    exported,
    predict(x) {
      if (casm === null) return null;
      const top1 = tf.tidy(() => tf.argMax(casm!.classify(x, false).logits, 1));
      const classes = top1.dataSync() as Int32Array;
      top1.dispose();
      return classes;
    },
    dispose() {
      casm?.dispose();
      exported?.model.dispose();
    },
  };
}

function fromTensor(maps: tf.Tensor3D): Float32Array {
  const v = maps.dataSync() as Float32Array;
  maps.dispose();
  return v;
}

/** The method objects; a method the models cannot run is a usage error naming what it needs. */
export function buildMethods(methods: EvalMethod[], models: Models, o: ExplainerOptions): MaskMethod[] {
  const { size, casm } = models;
  const classifier = casm ? new Classifier(casm.classifier) : null;
  return methods.map((name): MaskMethod => {
    switch (name) {
      case 'full':
      case 'centre': {
        const one = new Float32Array(size * size).fill(name === 'full' ? 1 : 0);
        if (name === 'centre') {
          const [x0, y0, x1, y1] = centreBox(size, size);
          for (let y = y0; y < y1; y++) one.fill(1, y * size + x0, y * size + x1);
        }
        return {
          name,
          masks: ({ x }) => {
            const out = new Float32Array(x.shape[0] * size * size);
            for (let i = 0; i < x.shape[0]; i++) out.set(one, i * size * size);
            return out;
          },
        };
      }
      case 'casm':
        // The exported network when given (what users deploy), else the checkpoint's masker.
        if (models.exported) {
          const { model, dir } = models.exported;
          return {
            name,
            masks: ({ x, pixels }) => {
              const masks = fromTensor(
                tf.tidy(() => tf.squeeze(model.predict(tf.tensor4d(Float32Array.from(pixels), x.shape)) as tf.Tensor4D, [3]) as tf.Tensor3D),
              );
              checkMasksFinite(masks, dir, `a batch of ${x.shape[0]} evaluation images`);
              return masks;
            },
          };
        }
        break;
    }
    if (casm === null || classifier === null) throw new UsageError(`method '${name}' needs a checkpoint's classifier: give --checkpoint`);
    const explainer = buildExplainer(name as ExplainMethod, casm, classifier, o);
    return { name, masks: ({ x }, labels) => fromTensor(explainer.explain(x, Array.from(labels)).maps) };
  });
}
