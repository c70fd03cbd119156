/**
 * Loading pretrained weights into the classifier (and saving them back in torchvision's layout).
 *
 * README snippet -- using ImageNet-pretrained torchvision weights:
 *
 *   1. Export them once with Python (torch, torchvision and safetensors installed):
 *
 *        import torchvision
 *        from safetensors.torch import save_file
 *        m = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
 *        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, 'resnet50.safetensors')
 *
 *      (IMAGENET1K_V2 works the same way; so does any ResNet built from torchvision's Bottleneck,
 *      e.g. torchvision.models.resnet.ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10), given a
 *      ResNetConfig with the same depths and classes and width 64.)
 *
 *   2. Load them in TypeScript:
 *
 *        import { buildResNet, RESNET50 } from './models/resnet.js';
 *        import { loadTorchvisionWeights } from './models/weights.js';
 *        const f = buildResNet(RESNET50);
 *        loadTorchvisionWeights(f, 'resnet50.safetensors');
 *
 *      The model takes NHWC float32 RGB images normalised with the ImageNet mean/std
 *      (mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]) -- torchvision takes NCHW.
 *      Its outputs are [pool, stage1, stage2, stage3, stage4, logits].
 *
 * Mapping (torchvision key -> our layer, '.' <-> '_'; `layer1.0.conv1.weight` -> `layer1_0_conv1`):
 *   conv  weight [out, in, kh, kw]                 -> kernel [kh, kw, in, out]
 *   fc    weight [out, in]                         -> kernel [in, out];  bias -> bias
 *   bn    weight, bias, running_mean, running_var  -> gamma, beta, moving_mean, moving_variance
 *   bn    num_batches_tracked                      -> ignored (a training counter)
 * The check is strict: a missing key, an unexpected key or a shape mismatch throws an Error that
 * starts with the file and names the first offending tensor (plus how many more problems there
 * are); nothing is written into the model unless the whole file matches.
 */
import * as tf from '@tensorflow/tfjs';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';

type Layout = 'conv' | 'dense' | 'plain';

/** One model variable and the torchvision tensor it corresponds to. */
interface TorchSlot {
  variable: tf.LayerVariable;
  layer: string;
  /** Our weight name inside the layer: kernel, bias, gamma, ... */
  role: string;
  key: string;
  /** Shape in torch's layout. */
  torchShape: number[];
  layout: Layout;
}

const BN_ROLES: Record<string, string> = {
  gamma: 'weight',
  beta: 'bias',
  moving_mean: 'running_mean',
  moving_variance: 'running_var',
};
const BN_IGNORED = 'num_batches_tracked';

function shapeString(shape: readonly (number | null)[]): string {
  return `[${shape.join(',')}]`;
}

function sameShape(a: readonly (number | null)[], b: readonly (number | null)[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** 'conv1/kernel' -> 'kernel' (the last scope segment is the weight's own name). */
function roleOf(v: tf.LayerVariable): string {
  const parts = v.originalName.split('/');
  return parts[parts.length - 1] ?? v.originalName;
}

function torchPrefix(layerName: string): string {
  return layerName.replace(/_/g, '.');
}

/** Every variable of the model with its torchvision key, in layer order. */
function torchvisionSlots(model: tf.LayersModel): { slots: TorchSlot[]; bnPrefixes: Set<string> } {
  const slots: TorchSlot[] = [];
  const bnPrefixes = new Set<string>();
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const cls = layer.getClassName();
    const prefix = torchPrefix(layer.name);
    if (cls === 'BatchNormalization') bnPrefixes.add(prefix);
    for (const v of layer.weights) {
      const role = roleOf(v);
      const shape = v.shape as number[];
      let torchName: string | undefined;
      let layout: Layout = 'plain';
      let torchShape = [...shape];
      if (cls === 'Conv2D' && role === 'kernel') {
        torchName = 'weight';
        layout = 'conv';
        torchShape = [shape[3], shape[2], shape[0], shape[1]];
      } else if (cls === 'Dense' && role === 'kernel') {
        torchName = 'weight';
        layout = 'dense';
        torchShape = [shape[1], shape[0]];
      } else if ((cls === 'Conv2D' || cls === 'Dense') && role === 'bias') {
        torchName = 'bias';
      } else if (cls === 'BatchNormalization') {
        torchName = BN_ROLES[role];
      }
      if (torchName === undefined) {
        throw new Error(
          `loadTorchvisionWeights: layer ${layer.name} (${cls}) weight ${role} has no torchvision equivalent ` +
            `(supported: Conv2D, Dense, BatchNormalization)`,
        );
      }
      slots.push({ variable: v, layer: layer.name, role, key: `${prefix}.${torchName}`, torchShape, layout });
    }
  }
  return { slots, bnPrefixes };
}

/** torch [O, I, KH, KW] -> tfjs [KH, KW, I, O]. */
function convTorchToTf(src: Float32Array, [o, i, kh, kw]: number[]): Float32Array {
  const dst = new Float32Array(src.length);
  let s = 0;
  for (let a = 0; a < o; a++) {
    for (let b = 0; b < i; b++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) dst[((y * kw + x) * i + b) * o + a] = src[s++];
      }
    }
  }
  return dst;
}

/** tfjs [KH, KW, I, O] -> torch [O, I, KH, KW]. */
function convTfToTorch(src: Float32Array, [o, i, kh, kw]: number[]): Float32Array {
  const dst = new Float32Array(src.length);
  let d = 0;
  for (let a = 0; a < o; a++) {
    for (let b = 0; b < i; b++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) dst[d++] = src[((y * kw + x) * i + b) * o + a];
      }
    }
  }
  return dst;
}

/** Row-major [r, c] -> [c, r]. */
function transpose2d(src: Float32Array, r: number, c: number): Float32Array {
  const dst = new Float32Array(src.length);
  for (let y = 0; y < r; y++) {
    for (let x = 0; x < c; x++) dst[x * r + y] = src[y * c + x];
  }
  return dst;
}

function problemError(file: string, problems: string[], hint: string): Error {
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return new Error(`${file}: ${problems[0]}${more}; ${hint}`);
}

/** Writes values into variables (shapes already checked), disposing the temporaries. */
function assign(pairs: { variable: tf.LayerVariable; values: Float32Array }[]): void {
  for (const { variable, values } of pairs) {
    const t = tf.tensor(values, variable.shape as number[], 'float32');
    try {
      variable.write(t);
    } finally {
      t.dispose();
    }
  }
}

export interface LoadReport {
  /** Number of tensors written into the model. */
  loaded: number;
  /** Keys present in the file and deliberately skipped (num_batches_tracked). */
  ignored: string[];
  /** `__metadata__` of the safetensors file. */
  metadata: Record<string, string>;
}

/**
 * Loads a torchvision ResNet state dict saved as safetensors into a model from buildResNet
 * (layer names = torchvision keys with '.' -> '_'). Strict: see the module comment.
 */
export function loadTorchvisionWeights(model: tf.LayersModel, file: string): LoadReport {
  const { tensors, metadata } = readSafetensors(file);
  const { slots, bnPrefixes } = torchvisionSlots(model);
  const problems: string[] = [];
  const used = new Set<string>();
  const pairs: { variable: tf.LayerVariable; values: Float32Array }[] = [];
  for (const s of slots) {
    const t = tensors.get(s.key);
    if (!t) {
      problems.push(`missing tensor ${s.key}: model layer ${s.layer} needs its ${s.role}, shape ${shapeString(s.torchShape)}`);
      continue;
    }
    used.add(s.key);
    if (!sameShape(t.shape, s.torchShape)) {
      problems.push(
        `tensor ${s.key} has shape ${shapeString(t.shape)}, model expects ${shapeString(s.torchShape)} ` +
          `(layer ${s.layer} ${s.role}, ${shapeString(s.variable.shape)} in tfjs layout)`,
      );
      continue;
    }
    let values = t.data;
    if (s.layout === 'conv') values = convTorchToTf(values, s.torchShape);
    else if (s.layout === 'dense') values = transpose2d(values, s.torchShape[0], s.torchShape[1]);
    pairs.push({ variable: s.variable, values });
  }
  const ignored: string[] = [];
  for (const key of tensors.keys()) {
    if (used.has(key)) continue;
    const dot = key.lastIndexOf('.');
    if (key.slice(dot + 1) === BN_IGNORED && bnPrefixes.has(key.slice(0, dot))) {
      ignored.push(key);
      continue;
    }
    const layer = dot > 0 ? key.slice(0, dot).replace(/\./g, '_') : key;
    problems.push(`unexpected tensor ${key} (shape ${shapeString(tensors.get(key)!.shape)}): the model has no layer ${layer} with such a weight`);
  }
  if (problems.length > 0) {
    throw problemError(
      file,
      problems,
      `the file does not match the model '${model.name}' (is it a torchvision ResNet state dict with the same depths, width and classes?)`,
    );
  }
  assign(pairs);
  return { loaded: pairs.length, ignored, metadata };
}

/** The model's weights as a torchvision state dict (torch layouts, '.' keys, no num_batches_tracked). */
export function torchvisionStateDict(model: tf.LayersModel): TensorToWrite[] {
  const { slots } = torchvisionSlots(model);
  return slots.map((s) => {
    const v = s.variable.read().dataSync() as Float32Array;
    let data: Float32Array;
    if (s.layout === 'conv') data = convTfToTorch(v, s.torchShape);
    else if (s.layout === 'dense') data = transpose2d(v, s.torchShape[1], s.torchShape[0]);
    else data = Float32Array.from(v);
    return { name: s.key, shape: s.torchShape, data };
  });
}

/**
 * Saves the model's weights as a torchvision-layout safetensors file (atomically), readable by
 * loadTorchvisionWeights and by torch: `model.load_state_dict(safetensors.torch.load_file(f))`.
 */
export function saveTorchvisionWeights(model: tf.LayersModel, file: string, metadata?: Record<string, string>): void {
  writeSafetensors(file, torchvisionStateDict(model), metadata);
}

// ------------------------------------------------------------------ tfjs LayersModel format

interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: string;
  group?: string;
  quantization?: { dtype: string };
}
interface ManifestGroup {
  paths: string[];
  weights: ManifestEntry[];
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

function entryBytes(e: ManifestEntry, where: string): number {
  const dtype = e.quantization?.dtype ?? e.dtype;
  const size = DTYPE_BYTES[dtype];
  if (size === undefined) throw new Error(`${where}: weight ${e.name} has unsupported dtype ${dtype}`);
  return e.shape.reduce((a, b) => a * b, 1) * size;
}

/**
 * Loads weights from a tfjs LayersModel saved as model.json + binary shards (what
 * `model.save('file://dir')` writes), matching them to `model` by weight name
 * (`<layer name>/<weight>`, e.g. `layer1_0_conv1/kernel`). `path` is the directory or the
 * model.json file. The topology in model.json is not used; the check is strict, as for
 * loadTorchvisionWeights (missing, unexpected, shape or dtype mismatch -> Error naming the first
 * offending weight; nothing is written unless everything matches). Optimizer weights are skipped.
 */
export function loadTfjsWeights(model: tf.LayersModel, path: string): LoadReport {
  let modelJson = resolve(path);
  try {
    if (statSync(modelJson).isDirectory()) modelJson = join(modelJson, 'model.json');
  } catch (err) {
    throw new Error(`${path}: cannot read tfjs model: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(modelJson, 'utf8'));
  } catch (err) {
    throw new Error(`${modelJson}: cannot read tfjs model.json: ${(err as Error).message}`, { cause: err });
  }
  const manifest = (parsed as { weightsManifest?: unknown } | null)?.weightsManifest;
  if (
    !Array.isArray(manifest) ||
    !manifest.every(
      (g) =>
        g &&
        Array.isArray((g as ManifestGroup).paths) &&
        Array.isArray((g as ManifestGroup).weights) &&
        (g as ManifestGroup).weights.every((e) => e && typeof e.name === 'string' && Array.isArray(e.shape) && typeof e.dtype === 'string'),
    )
  ) {
    throw new Error(`${modelJson}: not a tfjs model.json: no valid weightsManifest [{paths, weights: [{name, shape, dtype}]}]`);
  }
  const groups = manifest as ManifestGroup[];

  // 1. Names, shapes and dtypes against the model, from the manifest alone (before reading data).
  const byName = new Map<string, tf.LayerVariable>();
  for (const v of model.weights) byName.set(v.originalName, v);
  const inFile = new Map<string, ManifestEntry>();
  const problems: string[] = [];
  for (const g of groups) {
    for (const e of g.weights) {
      if (e.group === 'optimizer') continue;
      if (inFile.has(e.name)) problems.push(`weight ${e.name} appears twice in the manifest`);
      inFile.set(e.name, e);
    }
  }
  for (const v of model.weights) {
    const e = inFile.get(v.originalName);
    if (!e) problems.push(`missing weight ${v.originalName}: the model expects shape ${shapeString(v.shape)}`);
    else if (!sameShape(e.shape, v.shape)) {
      problems.push(`weight ${e.name} has shape ${shapeString(e.shape)}, model expects ${shapeString(v.shape)}`);
    } else if (e.dtype !== v.dtype) problems.push(`weight ${e.name} has dtype ${e.dtype}, model expects ${v.dtype}`);
  }
  for (const name of inFile.keys()) {
    if (!byName.has(name)) problems.push(`unexpected weight ${name}: the model has no weight of that name`);
  }
  if (problems.length > 0) {
    throw problemError(modelJson, problems, `the saved weights do not match the model '${model.name}'`);
  }

  // 2. Read and decode each group's shards.
  const dir = dirname(modelJson);
  const pairs: { variable: tf.LayerVariable; values: Float32Array }[] = [];
  for (const g of groups) {
    const need = g.weights.reduce((n, e) => n + entryBytes(e, modelJson), 0);
    const shards = g.paths.map((p) => {
      const file = join(dir, p);
      try {
        return readFileSync(file);
      } catch (err) {
        throw new Error(`${file}: cannot read weight shard listed in ${modelJson}: ${(err as Error).message}`, { cause: err });
      }
    });
    const have = shards.reduce((n, b) => n + b.length, 0);
    if (have !== need) {
      const last = join(dir, g.paths[g.paths.length - 1] ?? '?');
      throw new Error(
        `${last}: ${have < need ? 'truncated' : 'too long'}: the weight shards [${g.paths.join(', ')}] hold ${have} bytes, ` +
          `the manifest in ${modelJson} needs ${need}`,
      );
    }
    const buf = new Uint8Array(have);
    let pos = 0;
    for (const b of shards) {
      buf.set(b, pos);
      pos += b.length;
    }
    const decoded = tf.io.decodeWeights(buf.buffer, g.weights as tf.io.WeightsManifestEntry[]);
    try {
      for (const e of g.weights) {
        const v = byName.get(e.name);
        if (!v || e.group === 'optimizer') continue;
        pairs.push({ variable: v, values: Float32Array.from(decoded[e.name].dataSync() as ArrayLike<number>) });
      }
    } finally {
      tf.dispose(decoded);
    }
  }
  assign(pairs);
  return { loaded: pairs.length, ignored: [], metadata: {} };
}

/**
 * Loads pretrained classifier weights from either format: a torchvision state dict in
 * safetensors (a file whose name ends in .safetensors) or a saved tfjs LayersModel (a directory
 * holding model.json, or the model.json file itself).
 */
export function loadClassifierWeights(model: tf.LayersModel, path: string): LoadReport {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch (err) {
    throw new Error(`${path}: cannot read classifier weights: ${(err as Error).message}`, { cause: err });
  }
  if (!isDir && path.toLowerCase().endsWith('.safetensors')) return loadTorchvisionWeights(model, path);
  if (isDir || path.toLowerCase().endsWith('.json')) return loadTfjsWeights(model, path);
  throw new Error(
    `${path}: unknown classifier weights format: expected a torchvision state dict (*.safetensors) ` +
      `or a tfjs LayersModel (a directory with model.json, or model.json)`,
  );
}
