/**
 * `casm explain`: saliency maps of image files from a CASM checkpoint, by CASM's masker and the
 * gradient baselines on its classifier. Writes, per image and method,
 *   <out>/<image>-<method>-heatmap.png   the map in [0, 1] through the colour map
 *   <out>/<image>-<method>-overlay.png   the heatmap blended over the image (alpha 0.5)
 * and <out>/grid.png: one row per image, columns image | method 1 | method 2 | ... (heatmaps).
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCasmModel } from '../checkpoints/checkpoint.js';
import { normalizeBytes } from '../data/preprocess.js';
import type { CasmModel } from '../models/casmModel.js';
import { CasmMasks } from './casmMasks.js';
import { Classifier } from './classifier.js';
import { colorize, overlay, pixelsToRgb, png, tile, type Colormap } from './display.js';
import type { Explainer } from './explainer.js';
import { GradCam } from './gradCam.js';
import { loadImages, uniqueStems } from './images.js';
import { SmoothGrad } from './smoothGrad.js';
import { GradientTimesInput, VanillaGradient } from './vanilla.js';
import { UsageError } from '../util/usageError.js';

export const METHODS = ['casm', 'gradcam', 'smoothgrad', 'vanilla', 'gradxinput'] as const;
export type Method = (typeof METHODS)[number];

/** 'all' or a comma-separated list of `valid` names; an unknown name lists the valid ones. */
export function parseMethods<T extends string>(spec: string, valid: readonly T[] = METHODS as readonly string[] as readonly T[]): T[] {
  const names = spec.split(',').map((s) => s.trim());
  if (names.includes('all')) return [...valid];
  for (const n of names) {
    if (!(valid as readonly string[]).includes(n)) {
      throw new UsageError(`unknown method '${n}': valid methods are ${[...valid, 'all'].join(', ')}`);
    }
  }
  return [...new Set(names)] as T[];
}

export interface ExplainOptions {
  /** A run directory (its latest checkpoint) or a checkpoint directory. */
  checkpoint: string;
  images: string[];
  out: string;
  methods: Method[];
  /** Grad-CAM layer (default: the last spatial layer, stage 4). */
  layer?: string;
  /** One class explained for every image (default: each image's argmax). */
  target?: number;
  /** SmoothGrad (over the vanilla gradient). */
  samples: number;
  spread: number;
  magnitude: boolean;
  seed: number;
  batchSize: number;
  colormap: Colormap;
  log: (line: string) => void;
}

export interface ExplainResult {
  /** Output name of each image explained, in order. */
  images: string[];
  /** Target class of each image. */
  targets: number[];
  skipped: string[];
  grid: string;
}

/** What the explainers need of the options (`casm eval` builds them too). */
export type ExplainerOptions = Pick<ExplainOptions, 'layer' | 'samples' | 'spread' | 'magnitude' | 'seed'>;

export function buildExplainer(method: Method, casm: CasmModel, classifier: Classifier, o: ExplainerOptions): Explainer {
  switch (method) {
    case 'casm':
      return new CasmMasks(casm);
    case 'gradcam':
      return new GradCam(classifier, o.layer);
    case 'smoothgrad':
      return new SmoothGrad(new VanillaGradient(classifier), { samples: o.samples, spread: o.spread, magnitude: o.magnitude, seed: o.seed });
    case 'vanilla':
      return new VanillaGradient(classifier);
    case 'gradxinput':
      return new GradientTimesInput(classifier);
  }
}

export async function explainCommand(o: ExplainOptions): Promise<ExplainResult> {
  const { model: casm, dir, state } = loadCasmModel(o.checkpoint);
  try {
    const classifier = new Classifier(casm.classifier);
    if (o.target !== undefined && !(Number.isInteger(o.target) && o.target >= 0 && o.target < classifier.classes)) {
      throw new UsageError(`--target ${o.target}: target class ${o.target} is outside the model's range 0..${classifier.classes - 1}`);
    }
    if (o.layer !== undefined && !classifier.spatialLayers.has(o.layer)) {
      throw new UsageError(`--layer ${o.layer}: unknown layer; valid layers are ${[...classifier.spatialLayers.keys()].join(', ')}`);
    }
    const explainers = o.methods.map((m) => buildExplainer(m, casm, classifier, o));
    const cam = explainers.find((e): e is GradCam => e instanceof GradCam);
    o.log(`explain: ${dir} (step ${state.step}), methods ${o.methods.join(', ')}${cam ? `, Grad-CAM layer ${cam.layer}` : ''}`);

    mkdirSync(o.out, { recursive: true });
    const [h, w, channels] = classifier.inputShape;
    const names = uniqueStems(o.images);
    const rows: Uint8Array[][] = [];
    const result: ExplainResult = { images: [], targets: [], skipped: [], grid: join(o.out, 'grid.png') };
    for (let start = 0; start < o.images.length; start += o.batchSize) {
      const decoded = await loadImages(o.images.slice(start, start + o.batchSize), classifier.inputShape, (file, reason) => {
        o.log(`skipping ${file}: cannot decode it (${reason})`);
        result.skipped.push(file);
      });
      if (!decoded) continue;
      const { pixels, indices } = decoded;
      const x = tf.tensor4d(normalizeBytes(pixels, channels), [indices.length, h, w, channels]);
      const batchNames = indices.map((i) => names[start + i]);
      try {
        const pictures = pixelsToRgb(pixels, indices.length, channels);
        const batchRows = pictures.map((p) => [p]);
        let classes: number[] = [];
        for (const [k, explainer] of explainers.entries()) {
          const { maps, targets } = explainer.explain(x, o.target === undefined ? undefined : indices.map(() => o.target!));
          classes = targets;
          const values = maps.dataSync();
          maps.dispose();
          for (const [i, name] of batchNames.entries()) {
            const heat = colorize(values.subarray(i * h * w, (i + 1) * h * w), o.colormap);
            const base = join(o.out, `${name}-${o.methods[k]}`);
            writeFileSync(`${base}-heatmap.png`, await png(heat, w, h));
            writeFileSync(`${base}-overlay.png`, await png(overlay(pictures[i], heat), w, h));
            batchRows[i].push(heat);
          }
        }
        rows.push(...batchRows);
        result.images.push(...batchNames);
        result.targets.push(...classes);
        batchNames.forEach((name, i) => o.log(`${o.images[start + indices[i]]}: class ${classes[i]} -> ${join(o.out, name)}-<method>-{heatmap,overlay}.png`));
      } finally {
        x.dispose();
      }
    }
    if (rows.length === 0) throw new Error(`none of the ${o.images.length} image file(s) could be decoded`);
    const grid = tile(rows, w, h);
    writeFileSync(result.grid, await png(grid.rgb, grid.width, grid.height));
    o.log(`grid: ${result.grid} (${grid.width}x${grid.height}; columns: image, ${o.methods.join(', ')})`);
    return result;
  } finally {
    casm.dispose();
  }
}
