/**
 * `casm export`: the mask network of a checkpoint alone, as a plain tfjs LayersModel that loads
 * with `@tensorflow/tfjs` (browser) or `@tensorflow/tfjs-node` and none of this project's code.
 *
 *   <out>/model.json            tfjs "layers-model" topology + weights manifest
 *   <out>/group1-shard<i>of<n>.bin   weight shards (4 MiB each at most)
 *   <out>/masker.json           metadata (MASKER_FORMAT): input size and range, normalisation,
 *                               box threshold, training config and thinning, source checkpoint,
 *                               project version, sha256 of model.json and the shards
 *
 * The graph: image N x S x S x 3, float32 holding the 8-bit pixel values 0..255 (RGB, NHWC; what
 * tf.browser.fromPixels gives) -> the ImageNet normalisation inside the graph, as a per-channel
 * lookup table of the 256 byte values with stock layers (no custom classes; see buildMaskNetwork)
 * -> the encoder trunk up to its five feature maps (the
 * classifier's trunk when the masker shares it, else the masker's own encoder) -> the decoder ->
 * mask N x S x S x 1 in [0, 1]. It is built flat, from the two models' own configs spliced
 * together (the classifier's avgpool/fc dropped), and the trained weights are copied layer by
 * layer, so nothing nested or custom reaches model.json.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { TrainConfig } from '../casm/config.js';
import { loadCasmModel } from '../checkpoints/checkpoint.js';
import { IMAGENET_MEAN, IMAGENET_STD, normalizationTable, normalizeBytes } from '../data/preprocess.js';
import type { CasmModel } from '../models/casmModel.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { PROJECT_VERSION } from '../version.js';
import { sha256File } from '../util/sha256.js';

export const MASKER_FORMAT = 'casm-ts-masker';
export const MASKER_FORMAT_VERSION = 1;
export const SHARD_BYTES = 4 * 1024 * 1024;
/**
 * Weight storage: float32, or float16 (half the bytes; tfjs decodes it back to float32 on load;
 * the normalisation table stays float32).
 * Per-tensor uint8 was tried and dropped: on BN statistics it moved masks by ~0.1.
 */
export const QUANTIZATIONS = ['none', 'float16'] as const;
export type Quantization = (typeof QUANTIZATIONS)[number];

/** An export that cannot be made or an exported model directory that cannot be used. */
export class ExportError extends Error {}

export interface MaskerMeta {
  format: typeof MASKER_FORMAT;
  version: number;
  projectVersion: string;
  tfjsVersion: string;
  exportedAt: string;
  model: 'model.json';
  /** Pixel values 0..255 in a float32 tensor (integers; a fraction is truncated; outside 0..255 is invalid). */
  input: { name: string; height: number; width: number; channels: 3; layout: 'NHWC'; range: [0, 255]; dtype: 'float32'; colorSpace: 'sRGB RGB' };
  output: { name: string; shape: [number, number, 1]; range: [0, 1]; meaning: string };
  /** Inside the graph: the model takes bytes v; it computes (v / 255 - mean) / std itself (by table). */
  normalization: { mean: number[]; std: number[]; inGraph: true; formula: string; layers: string[] };
  /** How a box is read off a mask (the project's localisation rule). */
  threshold: { rule: 'relative-to-mean'; alpha: number; description: string };
  quantization: Quantization;
  training: { config: TrainConfig; thinning: string; score: string; step: number };
  source: { checkpoint: string; step: number; checkpointVersion: number; projectVersion: string };
  /** Exported model vs the training-time masker on random images, measured at export. */
  exportCheck: { images: number; maxAbsDiff: number } | null;
  /** sha256 (hex) of model.json and every weight shard, checked on load (absent in older exports). */
  files?: Record<string, string>;
}

type Json = Record<string, unknown>;
interface LayerJson extends Json {
  name: string;
  class_name: string;
  config: Json;
  inbound_nodes: [string, number, number, Json][][];
}
interface ModelJson {
  class_name: string;
  config: { name: string; layers: LayerJson[]; input_layers: [string, number, number][]; output_layers: [string, number, number][] };
  keras_version?: string;
  backend?: string;
}

const modelJson = (m: tf.LayersModel) => structuredClone(m.toJSON(null, false) as unknown as ModelJson);

/** Renames every reference to layer `from` in the inbound nodes to the tensor `to`. */
function rewire(layers: LayerJson[], map: Map<string, [string, number, number]>): void {
  for (const l of layers) {
    l.inbound_nodes = l.inbound_nodes.map((node) =>
      node.map(([name, n, t, kw]) => {
        const to = map.get(name);
        if (!to) return [name, n, t, kw] as [string, number, number, Json];
        if (n !== 0 || t !== 0) throw new Error(`export: unexpected reference ${name}[${n}][${t}]`);
        return [to[0], to[1], to[2], kw] as [string, number, number, Json];
      }),
    );
  }
}

/**
 * The mask network of a trained CasmModel as one flat LayersModel, image bytes 0..255 in, mask out,
 * sharing no variables with the model (the weights are copies).
 */
export async function buildMaskNetwork(casm: CasmModel, name = 'casm_masker'): Promise<tf.LayersModel> {
  const trunk = casm.masker.encoder ?? casm.classifier;
  const decoder = casm.masker.decoder;
  const t = modelJson(trunk);
  const d = modelJson(decoder);
  if (t.config.input_layers.length !== 1) throw new Error('export: the trunk must have one input');
  const imageName = t.config.input_layers[0][0];
  const features = t.config.output_layers.slice(0, 5);
  // A decoder with a stride above 4 leaves the finer maps unconnected, and its JSON lists only
  // the inputs it uses: each one names the feature map it reads (`<decoder>_in<k>`).
  const decoderInputs = d.config.input_layers.map((r) => r[0]);
  const featureOf = decoderInputs.map((n) => {
    const k = /_in([0-4])$/.exec(n)?.[1];
    if (k === undefined) throw new Error(`export: decoder input ${n} names none of the five feature maps`);
    return features[Number(k)];
  });

  // The normalisation, three stock layers (built for real, so their configs are what tfjs writes):
  //   normalize_index   1x1 DepthwiseConv2D, kernel 1, bias [0, 256, 512]: byte v of channel c -> v + 256 c
  //   normalize_lookup  Embedding(768, 1): preprocess.ts's table, the model input of every byte value
  //   normalize         Reshape to S x S x 3
  // A lookup reproduces the project's preprocessing bit for bit; multiplying by 1/std
  // instead rounds differently for a third of the byte values, and an untrained network
  // amplifies those last-bit differences to ~1e-5 in the masks.
  const [s1, s2, s3] = (trunk.inputs[0].shape as number[]).slice(1);
  const probeIn = tf.input({ shape: [s1, s2, s3] });
  const indexed = tf.layers.depthwiseConv2d({ name: 'normalize_index', kernelSize: 1, depthMultiplier: 1, useBias: true }).apply(probeIn) as tf.SymbolicTensor;
  const looked = tf.layers.embedding({ name: 'normalize_lookup', inputDim: 256 * s3, outputDim: 1 }).apply(indexed) as tf.SymbolicTensor;
  const normalized = tf.layers.reshape({ name: 'normalize', targetShape: [s1, s2, s3] }).apply(looked) as tf.SymbolicTensor;
  const probe = tf.model({ inputs: probeIn, outputs: normalized });
  const normLayers = modelJson(probe).config.layers.filter((l) => l.name.startsWith('normalize'));
  probe.dispose();
  normLayers[0].inbound_nodes = [[[imageName, 0, 0, {}]]];
  normLayers[1].inbound_nodes = [[['normalize_index', 0, 0, {}]]];
  normLayers[2].inbound_nodes = [[['normalize_lookup', 0, 0, {}]]];

  // Keep only the trunk layers the five feature maps depend on.
  const byName = new Map(t.config.layers.map((l) => [l.name, l]));
  const needed = new Set<string>();
  const stack = features.map((f) => f[0]);
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    needed.add(n);
    for (const node of byName.get(n)!.inbound_nodes) for (const [src] of node) stack.push(src);
  }
  const trunkLayers = t.config.layers.filter((l) => needed.has(l.name));
  rewire(
    trunkLayers.filter((l) => l.name !== imageName),
    new Map([[imageName, ['normalize', 0, 0]]]),
  );
  const decoderLayers = d.config.layers.filter((l) => !decoderInputs.includes(l.name));
  rewire(decoderLayers, new Map(decoderInputs.map((n, i) => [n, featureOf[i]])));
  const input = trunkLayers.find((l) => l.name === imageName)!;
  const layers = [input, ...normLayers, ...trunkLayers.filter((l) => l !== input), ...decoderLayers];
  const names = new Set<string>();
  for (const l of layers) {
    if (names.has(l.name)) throw new Error(`export: layer name ${l.name} occurs in both the trunk and the decoder`);
    names.add(l.name);
  }
  const topology: ModelJson = {
    class_name: 'Model',
    config: { name, layers, input_layers: [[imageName, 0, 0]], output_layers: d.config.output_layers },
    keras_version: t.keras_version,
    backend: t.backend,
  };
  const model = await tf.models.modelFromJSON({ modelTopology: topology as unknown as tf.io.ModelJSON['modelTopology'] } as tf.io.ModelJSON);

  // Weights: every layer from its namesake; the normalisation's from the ImageNet statistics.
  const sources = new Map<string, tf.layers.Layer>();
  for (const m of [trunk, decoder]) for (const l of m.layers) sources.set(l.name, l);
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    if (layer.name === 'normalize_index') {
      tf.tidy(() => layer.setWeights([tf.ones([1, 1, s3, 1]), tf.tensor1d(Array.from({ length: s3 }, (_, c) => 256 * c))]));
      continue;
    }
    if (layer.name === 'normalize_lookup') {
      tf.tidy(() => layer.setWeights([tf.tensor2d(normalizationTable(s3), [256 * s3, 1])]));
      continue;
    }
    const src = sources.get(layer.name);
    if (!src) throw new Error(`export: no trained layer named ${layer.name}`);
    // getWeights() hands out the source's variables themselves (not copies): never dispose them.
    layer.setWeights(src.getWeights());
  }
  return model;
}

/** Max |a - b| over two tensors of one shape (read back as numbers). */
export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  if (a.shape.join(',') !== b.shape.join(',')) throw new Error(`shapes differ: [${a.shape}] vs [${b.shape}]`);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/** Exported network on pixel values (0..255) vs casm.inference of their model input: max |diff| of the masks. */
export function compareWithModel(model: tf.LayersModel, casm: CasmModel, pixels: tf.Tensor4D): number {
  const exported = model.predict(pixels) as tf.Tensor4D;
  const x = tf.tensor4d(normalizeBytes(Uint8Array.from(pixels.dataSync()), pixels.shape[3]), pixels.shape);
  const { masks, logits } = casm.inference(x);
  try {
    return maxAbsDiff(exported, masks);
  } finally {
    tf.dispose([exported, x, masks, logits]);
  }
}

// --- quantisation (tfjs's own weight-manifest encodings, decoded by plain tf.io) -------------

/** float32 bits -> float16 bits, rounding to nearest even (IEEE 754); NaN stays a (quiet) NaN. */
export function toFloat16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half >>> 10;
  return sign | (e >= 0x1f ? 0x7c00 : half);
}

function quantize(specs: tf.io.WeightsManifestEntry[], data: ArrayBuffer, q: Quantization): { specs: tf.io.WeightsManifestEntry[]; data: ArrayBuffer } {
  if (q === 'none') return { specs, data };
  const parts: Uint8Array[] = [];
  const out: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  for (const spec of specs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.dtype !== 'float32') throw new Error(`quantize: ${spec.name} is ${spec.dtype}`);
    const v = new Float32Array(data.slice(offset, offset + 4 * n));
    offset += 4 * n;
    if (spec.name.startsWith('normalize')) {
      // The normalisation table stays exact (3 KiB).
      parts.push(new Uint8Array(v.buffer));
      out.push(spec);
      continue;
    }
    const bits = new Uint32Array(v.buffer);
    const h = new Uint16Array(n);
    for (let i = 0; i < n; i++) h[i] = toFloat16Bits(bits[i]!);
    parts.push(new Uint8Array(h.buffer));
    out.push({ ...spec, quantization: { dtype: 'float16', original_dtype: 'float32' } } as tf.io.WeightsManifestEntry);
  }
  const total = parts.reduce((a, p) => a + p.length, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return { specs: out, data: all.buffer };
}

/** Bytes a manifest entry takes in the shards. */
export function specBytes(spec: tf.io.WeightsManifestEntry): number {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const dtype = (spec.quantization?.dtype ?? spec.dtype) as string;
  const per: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };
  if (!(dtype in per)) throw new ExportError(`weight ${spec.name}: unsupported dtype ${dtype}`);
  return n * per[dtype];
}

/** Writes a LayersModel as model.json + shards into dir (files written atomically). Returns the shard names. */
export async function writeLayersModel(model: tf.LayersModel, dir: string, quantization: Quantization = 'none'): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  let shards: string[] = [];
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const raw = artifacts.weightData;
      const joined = raw === undefined ? new ArrayBuffer(0) : Array.isArray(raw) ? tf.io.concatenateArrayBuffers(raw) : raw;
      const { specs, data } = quantize(artifacts.weightSpecs ?? [], joined, quantization);
      const count = Math.max(1, Math.ceil(data.byteLength / SHARD_BYTES));
      shards = Array.from({ length: count }, (_, i) => `group1-shard${i + 1}of${count}.bin`);
      shards.forEach((s, i) => writeFileAtomic(join(dir, s), new Uint8Array(data, i * SHARD_BYTES, Math.min(SHARD_BYTES, data.byteLength - i * SHARD_BYTES))));
      const json = {
        format: 'layers-model',
        generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
        convertedBy: `casm-ts ${PROJECT_VERSION} (casm export)`,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: shards, weights: specs }],
      };
      writeFileAtomic(join(dir, 'model.json'), JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: data.byteLength } };
    }),
  );
  // Shards of an earlier export into the same directory would only mislead.
  for (const f of readdirSync(dir)) if (/^group\d+-shard\d+of\d+\.bin$/.test(f) && !shards.includes(f)) rmSync(join(dir, f));
  return shards;
}

export interface ExportOptions {
  /** A run directory (its latest checkpoint) or one checkpoint. */
  checkpoint: string;
  out: string;
  quantization?: Quantization;
  /** Random images compared with the training-time masker at export (0: skip). */
  checkImages?: number;
  log?: (line: string) => void;
}

export interface ExportResult {
  dir: string;
  meta: MaskerMeta;
  shards: string[];
}

/** Loads a checkpoint (CheckpointError for a bad or incompatible one) and writes its mask network. */
export async function exportMasker(o: ExportOptions): Promise<ExportResult> {
  const log = o.log ?? (() => {});
  const quantization = o.quantization ?? 'none';
  const { model: casm, dir: ckpt, state } = loadCasmModel(o.checkpoint);
  const model = await buildMaskNetwork(casm);
  try {
    const size = state.config.arch.inputSize;
    let exportCheck: MaskerMeta['exportCheck'] = null;
    const n = o.checkImages ?? 2;
    if (n > 0) {
      const pixels = tf.tidy(() => tf.floor(tf.randomUniform([n, size, size, 3], 0, 256, 'float32', 7))) as tf.Tensor4D;
      try {
        exportCheck = { images: n, maxAbsDiff: compareWithModel(model, casm, pixels) };
      } finally {
        pixels.dispose();
      }
      if (!(exportCheck.maxAbsDiff < 1e-5)) {
        throw new ExportError(`export check failed: exported masks differ from the training-time masker by ${exportCheck.maxAbsDiff}`);
      }
    }
    const dir = resolve(o.out);
    const shards = await writeLayersModel(model, dir, quantization);
    const meta: MaskerMeta = {
      format: MASKER_FORMAT,
      version: MASKER_FORMAT_VERSION,
      projectVersion: PROJECT_VERSION,
      tfjsVersion: tf.version_layers,
      exportedAt: new Date().toISOString(),
      model: 'model.json',
      input: { name: model.inputNames[0], height: size, width: size, channels: 3, layout: 'NHWC', range: [0, 255], dtype: 'float32', colorSpace: 'sRGB RGB' },
      output: { name: model.outputNames[0], shape: [size, size, 1], range: [0, 1], meaning: 'saliency mask: 1 = the classifier needs this pixel' },
      normalization: {
        mean: IMAGENET_MEAN.slice(),
        std: IMAGENET_STD.slice(),
        inGraph: true,
        formula: '(v / 255 - mean) / std per channel, float32',
        layers: ['normalize_index', 'normalize_lookup', 'normalize'],
      },
      threshold: {
        rule: 'relative-to-mean',
        alpha: 1,
        description: 'box = tight box of the largest 4-connected component of mask >= alpha * mean(mask)',
      },
      quantization,
      training: { config: state.config, thinning: state.config.thinning, score: state.config.score, step: state.step },
      source: { checkpoint: resolve(ckpt), step: state.step, checkpointVersion: state.version, projectVersion: state.projectVersion },
      exportCheck,
      files: Object.fromEntries(['model.json', ...shards].map((f) => [f, sha256File(join(dir, f))])),
    };
    writeFileAtomic(join(dir, 'masker.json'), JSON.stringify(meta, null, 2) + '\n');
    log(
      `export: ${ckpt} (step ${state.step}) -> ${dir}: model.json + ${shards.length} shard(s)` +
        (quantization !== 'none' ? ` (${quantization})` : '') +
        (exportCheck ? `; check vs training-time masker: max |diff| ${exportCheck.maxAbsDiff.toExponential(2)} on ${exportCheck.images} images` : ''),
    );
    return { dir, meta, shards };
  } finally {
    model.dispose();
    casm.dispose();
  }
}

/**
 * Reads an exported model directory and loads its network (any backend: files read here, handed
 * to tfjs from memory). Missing or short shards, a missing/foreign masker.json or a newer format
 * are ExportErrors naming the file.
 */
export async function loadMaskNetwork(dir: string): Promise<{ model: tf.LayersModel; meta: MaskerMeta }> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ExportError(`${dir}: no such model directory`);
  const metaPath = join(dir, 'masker.json');
  const modelPath = join(dir, 'model.json');
  for (const p of [metaPath, modelPath]) if (!existsSync(p)) throw new ExportError(`${p}: missing; is ${dir} a directory written by 'casm export'?`);
  let meta: MaskerMeta;
  let json: tf.io.ModelJSON;
  try {
    meta = JSON.parse(readFileSync(metaPath, 'utf8')) as MaskerMeta;
    json = JSON.parse(readFileSync(modelPath, 'utf8')) as tf.io.ModelJSON;
  } catch (e) {
    throw new ExportError(`${dir}: unreadable masker.json or model.json (${(e as Error).message})`);
  }
  if (meta.format !== MASKER_FORMAT) throw new ExportError(`${metaPath}: not a ${MASKER_FORMAT} file`);
  if (meta.version !== MASKER_FORMAT_VERSION) {
    throw new ExportError(
      `${metaPath}: masker format version ${meta.version} (written by casm-ts ${meta.projectVersion}); this build (${PROJECT_VERSION}) reads version ${MASKER_FORMAT_VERSION}`,
    );
  }
  // A missing shard is reported by readLayersModel, naming the manifest that lists it.
  for (const [file, hash] of Object.entries(meta.files ?? {})) {
    const p = join(dir, file);
    if (existsSync(p) && sha256File(p) !== hash) throw new ExportError(`${p}: corrupt (sha256 differs from ${metaPath})`);
  }
  const model = await readLayersModel(dir, json);
  const bad = model.weights.find((w) => tf.tidy(() => tf.logicalNot(tf.all(tf.isFinite(w.read()))).dataSync()[0] === 1));
  if (bad) {
    model.dispose();
    throw new ExportError(`${dir}: weight ${bad.originalName} holds NaN or infinite values; this export cannot give masks`);
  }
  return { model, meta };
}

/** Masks from an exported network must be numbers: a non-finite one names the model and the image. */
export function checkMasksFinite(values: Float32Array, modelDir: string, what: string): void {
  const i = values.findIndex((v) => !Number.isFinite(v));
  if (i >= 0) throw new ExportError(`${modelDir}: the network gave a non-finite mask value (${values[i]}) for ${what}`);
}

/**
 * A tfjs LayersModel directory (model.json + weight shards) read from disk and loaded from memory
 * (any backend). Missing or short shards are ExportErrors naming the file.
 */
export async function readLayersModel(dir: string, json?: tf.io.ModelJSON): Promise<tf.LayersModel> {
  const modelPath = join(dir, 'model.json');
  if (json === undefined) {
    if (!existsSync(modelPath)) throw new ExportError(`${modelPath}: missing; is ${dir} a tfjs model directory?`);
    try {
      json = JSON.parse(readFileSync(modelPath, 'utf8')) as tf.io.ModelJSON;
    } catch (e) {
      throw new ExportError(`${modelPath}: unreadable (${(e as Error).message})`);
    }
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) throw new ExportError(`${modelPath}: not a tfjs layers-model file`);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const shard = join(dir, p);
      if (!existsSync(shard)) throw new ExportError(`${shard}: weight shard listed in ${modelPath} is missing (${group.paths.length} shard(s) expected)`);
      const b = readFileSync(shard);
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
    specs.push(...group.weights);
  }
  const data = tf.io.concatenateArrayBuffers(buffers);
  const expected = specs.reduce((a, s) => a + specBytes(s), 0);
  if (data.byteLength !== expected) {
    throw new ExportError(`${dir}: weight shards hold ${data.byteLength} bytes, model.json's manifest needs ${expected} (truncated or foreign shard?)`);
  }
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: specs, weightData: data }));
}
