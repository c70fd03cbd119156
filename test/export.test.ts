/**
 * `casm export` and `casm mask`: the exported mask network, loaded through plain tfjs (an IOHandler
 * written here from the files alone, and tfjs-node's file:// on the native backend), gives the
 * training-time masker's masks (max |diff| < 1e-5); masker.json says what it must; quantised
 * exports load; bad checkpoints, missing shards and undecodable images are handled clearly.
 */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { defaultTrainConfig } from '../src/casm/config.js';
import { CasmTrainer } from '../src/casm/trainer.js';
import { CheckpointError, readCheckpoint, readCheckpointState, resolveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { loadCluttered } from '../src/data/clutteredMnist.js';
import { normalizeBytes } from '../src/data/preprocess.js';
import { f16round } from '@petamoriken/float16';
import { maskBox } from '../src/boxes.js';
import { buildMaskNetwork, ExportError, exportMasker, loadMaskNetwork, maxAbsDiff, specBytes, type MaskerMeta } from '../src/export/exportMasker.js';
import { maskCommand, mergeMasks } from '../src/mask/maskCommand.js';
import { webDatasetEntries, writeTar } from '../src/data/tar.js';
import { PROJECT_VERSION } from '../src/version.js';
import { useTestBackend } from './helpers/backend.js';
import { trainTinyRun } from './helpers/tinyRun.js';

const SIZE = 64;
const root = mkdtempSync(join(tmpdir(), 'casm-export-'));
const runDir = join(root, 'run');
const exportDir = join(root, 'exported');
const imageDir = join(root, 'images');
let backend = '';
/** Cluttered digits as RGB pixel values (0..255, the exported network's input) and as [0,1], N x 64 x 64 x 3; as PNG files in imageDir. */
let pixels: tf.Tensor4D;
/** The model input of `pixels`. */
let x: tf.Tensor4D;
const imageFiles: string[] = [];

before(async () => {
  backend = await useTestBackend();
  await trainTinyRun(runDir, { inputSize: SIZE, warmupSteps: 15, maxSteps: 25, trainCount: 128 });
  const set = await loadCluttered({ split: 'test', count: 6, seed: 11, size: SIZE, minDigit: 20, maxDigit: 40 });
  const rgb = new Uint8Array(set.n * SIZE * SIZE * 3);
  for (let p = 0; p < set.n * SIZE * SIZE; p++) rgb.fill(set.images[p], p * 3, p * 3 + 3);
  pixels = tf.tensor4d(Float32Array.from(rgb), [set.n, SIZE, SIZE, 3]);
  x = tf.tensor4d(normalizeBytes(rgb, 3), [set.n, SIZE, SIZE, 3]);
  mkdirSync(imageDir);
  for (let i = 0; i < set.n; i++) {
    const file = join(imageDir, `digit${i}.png`);
    await sharp(Buffer.from(rgb.subarray(i * SIZE * SIZE * 3, (i + 1) * SIZE * SIZE * 3)), { raw: { width: SIZE, height: SIZE, channels: 3 } })
      .png()
      .toFile(file);
    imageFiles.push(file);
  }
});

after(() => {
  tf.dispose([x, pixels]);
  rmSync(root, { recursive: true, force: true });
});

async function loadTrainer(path: string): Promise<CasmTrainer> {
  const dir = resolveCheckpoint(path);
  const state = readCheckpointState(dir);
  const t = new CasmTrainer(state.config);
  await t.restore(readCheckpoint(dir, state));
  return t;
}

function disposeTrainer(t: CasmTrainer): void {
  t.classifier.dispose();
  for (const m of t.masker.models) m.dispose();
}

/** Training-time masks of the model input x (the reference), as casm explain feeds it. */
function referenceMasks(t: CasmTrainer, input: tf.Tensor4D): tf.Tensor4D {
  const { masks, logits } = t.model.inference(input);
  logits.dispose();
  return masks;
}

/**
 * Plain tfjs: model.json + shards read from disk into an IOHandler, nothing of this project's code
 * (what a user's script or a bundler would do).
 */
async function loadPlain(dir: string): Promise<tf.LayersModel> {
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
  const buffers = json.weightsManifest.flatMap((g) => g.paths.map((p) => new Uint8Array(readFileSync(join(dir, p)))));
  const total = buffers.reduce((a, b) => a + b.length, 0);
  const data = new Uint8Array(total);
  let at = 0;
  for (const b of buffers) {
    data.set(b, at);
    at += b.length;
  }
  return tf.loadLayersModel({
    load: async () => ({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
      weightData: data.buffer,
    }),
  });
}

test('export writes model.json, shards and masker.json; plain tfjs reproduces the training-time masks (max |diff| < 1e-5)', async () => {
  const logs: string[] = [];
  const tensorsBefore = tf.memory().numTensors;
  await exportMasker({ checkpoint: runDir, out: exportDir, log: (l) => logs.push(l) });
  assert.equal(tf.memory().numTensors, tensorsBefore, 'export leaks no tensors');
  assert.match(logs.join('\n'), /export: .* -> .*model\.json \+ 1 shard/);
  const files = readdirSync(exportDir).sort();
  assert.deepEqual(files, ['group1-shard1of1.bin', 'masker.json', 'model.json']);

  const meta = JSON.parse(readFileSync(join(exportDir, 'masker.json'), 'utf8')) as MaskerMeta;
  assert.equal(meta.format, 'casm-ts-masker');
  assert.equal(meta.version, 1);
  assert.equal(meta.projectVersion, PROJECT_VERSION);
  assert.deepEqual([meta.input.height, meta.input.width, meta.input.channels], [SIZE, SIZE, 3]);
  assert.deepEqual(meta.input.range, [0, 255]);
  assert.deepEqual(meta.normalization.mean, [0.485, 0.456, 0.406]);
  assert.deepEqual(meta.normalization.std, [0.229, 0.224, 0.225]);
  assert.equal(meta.normalization.inGraph, true);
  assert.equal(meta.threshold.alpha, 1);
  assert.equal(meta.training.thinning, 'L100');
  assert.equal(meta.training.config.arch.inputSize, SIZE);
  assert.equal(meta.source.step, 25);
  assert.equal(meta.source.checkpoint, resolveCheckpoint(runDir));
  assert.ok(meta.exportCheck && meta.exportCheck.maxAbsDiff < 1e-5, `export check ${meta.exportCheck?.maxAbsDiff}`);

  // The topology holds only stock tfjs layer classes (no custom layers, no nested models).
  const topology = (JSON.parse(readFileSync(join(exportDir, 'model.json'), 'utf8')) as tf.io.ModelJSON).modelTopology as {
    config: { layers: { class_name: string }[] };
  };
  const classes = new Set(topology.config.layers.map((l) => l.class_name));
  for (const c of classes) {
    assert.ok(
      [
        'InputLayer',
        'DepthwiseConv2D',
        'Embedding',
        'Reshape',
        'Conv2D',
        'BatchNormalization',
        'ReLU',
        'ZeroPadding2D',
        'MaxPooling2D',
        'Add',
        'Concatenate',
        'UpSampling2D',
        'Activation',
      ].includes(c),
      `unexpected layer class ${c}`,
    );
  }

  const trainer = await loadTrainer(runDir);
  const model = await loadPlain(exportDir);
  const reference = referenceMasks(trainer, x);
  const masks = model.predict(pixels) as tf.Tensor4D;
  try {
    assert.deepEqual(masks.shape, [x.shape[0], SIZE, SIZE, 1]);
    const diff = maxAbsDiff(masks, reference);
    console.log(`# exported (plain tfjs, ${backend}) vs training-time masker: max |diff| = ${diff.toExponential(3)} over ${x.shape[0]} digits`);
    assert.ok(diff < 1e-5, `max |diff| ${diff}`);
    // The comparison can fail: another masker's masks are far from these.
    const other = new CasmTrainer({ ...trainer.config, seed: 99 });
    const otherMasks = referenceMasks(other, x);
    const far = maxAbsDiff(masks, otherMasks);
    otherMasks.dispose();
    disposeTrainer(other);
    assert.ok(far > 1e-3, `an unrelated masker differs by only ${far}`);

    if (backend === 'tensorflow') {
      // tfjs-node's own file:// loader reads the same directory.
      const viaFile = await tf.loadLayersModel(pathToFileURL(join(exportDir, 'model.json')).href);
      const m2 = viaFile.predict(pixels) as tf.Tensor4D;
      const d2 = maxAbsDiff(m2, reference);
      m2.dispose();
      viaFile.dispose();
      console.log(`# exported (tfjs-node file://) vs training-time masker: max |diff| = ${d2.toExponential(3)}`);
      assert.ok(d2 < 1e-5, `file:// max |diff| ${d2}`);
    }
  } finally {
    tf.dispose([masks, reference]);
    model.dispose();
    disposeTrainer(trainer);
  }
});

test('other masker variants export too: own encoder, bilinear, and deconv upsampling at decoder stride 8', async () => {
  for (const masker of [
    { decoderWidth: 4, upsample: 'bilinear' as const, shareEncoder: false, stride: 4 as const },
    { decoderWidth: 4, upsample: 'deconv' as const, shareEncoder: true, stride: 8 as const },
  ]) {
    const t = new CasmTrainer(defaultTrainConfig({ arch: { depths: [1, 1, 1, 1], width: 4, classes: 10, inputSize: SIZE }, masker, seed: 5 }));
    const before = tf.memory().numTensors;
    const model = await buildMaskNetwork(t.model);
    const dir = join(root, `variant-${masker.upsample}`);
    const { writeLayersModel } = await import('../src/export/exportMasker.js');
    await writeLayersModel(model, dir);
    const loaded = await loadPlain(dir);
    const reference = referenceMasks(t, x);
    const masks = loaded.predict(pixels) as tf.Tensor4D;
    const diff = maxAbsDiff(masks, reference);
    tf.dispose([masks, reference]);
    model.dispose();
    loaded.dispose();
    assert.equal(tf.memory().numTensors, before, 'export leaks no tensors');
    disposeTrainer(t);
    console.log(`# variant ${JSON.stringify(masker)}: max |diff| = ${diff.toExponential(3)}`);
    assert.ok(diff < 1e-5, `${masker.upsample}: max |diff| ${diff}`);
  }
});

test('a float16 export is half the size, loads through plain tfjs, and its weights are the float32 ones rounded to nearest even', async () => {
  const full = statSync(join(exportDir, 'group1-shard1of1.bin')).size;
  const plain = await loadPlain(exportDir);
  const reference = plain.predict(pixels) as tf.Tensor4D;
  const dir = join(root, 'q-float16');
  await exportMasker({ checkpoint: runDir, out: dir, quantization: 'float16', checkImages: 0 });
  const size = statSync(join(dir, 'group1-shard1of1.bin')).size;
  // Half the bytes, but for the float32 normalisation layers (index conv 3 + 3, table 768 values).
  assert.equal(size, (full - 4 * 774) / 2 + 4 * 774, 'float16 shard bytes');
  const meta = JSON.parse(readFileSync(join(dir, 'masker.json'), 'utf8')) as MaskerMeta;
  assert.equal(meta.quantization, 'float16');
  const model = await loadPlain(dir);
  // Every weight within float16's half-ulp of the float32 value (2^-11 relative; 2^-25 absolute
  // near zero), the normalisation table exactly.
  assert.equal(model.weights.length, plain.weights.length);
  let worstRel = 0;
  for (const [i, w] of model.weights.entries()) {
    const a = plain.weights[i].read().dataSync();
    const b = w.read().dataSync();
    for (let k = 0; k < a.length; k++) {
      const err = Math.abs(a[k] - b[k]);
      if (w.name.startsWith('normalize')) assert.equal(err, 0, `${w.name} must stay float32`);
      assert.ok(err <= Math.abs(a[k]) * 2 ** -11 + 2 ** -25, `${w.name}[${k}]: ${a[k]} -> ${b[k]}`);
      // Exactly IEEE round-to-nearest-even, as @petamoriken/float16 (the oracle) rounds.
      if (!w.name.startsWith('normalize') && b[k] !== f16round(a[k]!)) assert.fail(`${w.name}[${k}]: ${a[k]} -> ${b[k]}, float16 is ${f16round(a[k]!)}`);
      if (Math.abs(a[k]) > 1e-4) worstRel = Math.max(worstRel, err / Math.abs(a[k]));
    }
  }
  const masks = model.predict(pixels) as tf.Tensor4D;
  const diff = maxAbsDiff(masks, reference);
  tf.dispose([masks, reference]);
  model.dispose();
  plain.dispose();
  console.log(
    `# float16: ${size} bytes (float32 ${full}); weights max rel err ${worstRel.toExponential(2)}; masks max |diff| vs float32 export = ${diff.toExponential(3)}`,
  );
  // Masks: a sanity bound only (how far 2^-11 moves them depends on the network).
  assert.ok(diff < 0.1, `float16: masks max |diff| ${diff}`);
});

test('bad input: an incompatible checkpoint version, missing or truncated shards give clear errors', async () => {
  const ckpt = resolveCheckpoint(runDir);
  const bad = join(root, 'bad-ckpt');
  cpSync(ckpt, bad, { recursive: true });
  const statePath = join(bad, 'state.json');
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as { version: number };
  state.version = 99;
  writeFileSync(statePath, JSON.stringify(state));
  await assert.rejects(exportMasker({ checkpoint: bad, out: join(root, 'never') }), (e: Error) => {
    assert.ok(e instanceof CheckpointError);
    assert.match(e.message, /checkpoint format version 99, this build reads 1/);
    return true;
  });
  assert.equal(existsSync(join(root, 'never')), false);

  const broken = join(root, 'broken-model');
  cpSync(exportDir, broken, { recursive: true });
  rmSync(join(broken, 'group1-shard1of1.bin'));
  await assert.rejects(loadMaskNetwork(broken), (e: Error) => {
    assert.ok(e instanceof ExportError);
    assert.match(e.message, /group1-shard1of1\.bin: weight shard listed in .*model\.json is missing/);
    return true;
  });
  cpSync(join(exportDir, 'group1-shard1of1.bin'), join(broken, 'group1-shard1of1.bin'));
  truncateSync(join(broken, 'group1-shard1of1.bin'), 100);
  await assert.rejects(loadMaskNetwork(broken), /group1-shard1of1\.bin: corrupt \(sha256 differs from .*masker\.json\)/);
  // An export from before masker.json recorded hashes: the manifest's sizes still catch it.
  const metaPath = join(broken, 'masker.json');
  writeFileSync(metaPath, JSON.stringify({ ...(JSON.parse(readFileSync(metaPath, 'utf8')) as MaskerMeta), files: undefined }));
  await assert.rejects(loadMaskNetwork(broken), /weight shards hold 100 bytes, model\.json's manifest needs \d+/);
  rmSync(join(broken, 'masker.json'));
  await assert.rejects(loadMaskNetwork(broken), /masker\.json: missing; is .* a directory written by 'casm export'\?/);
  await assert.rejects(loadMaskNetwork(join(root, 'nowhere')), /no such model directory/);
});

/** A copy of the export with float32 `value` written over the weights whose names match; masker.json's hashes made to agree. */
function editedExport(name: string, weight: RegExp, value: number): string {
  const dir = join(root, name);
  cpSync(exportDir, dir, { recursive: true });
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
  const shard = join(dir, 'group1-shard1of1.bin');
  const bytes = readFileSync(shard);
  let offset = 0;
  let edited = 0;
  for (const spec of json.weightsManifest[0]!.weights) {
    const n = specBytes(spec);
    if (weight.test(spec.name)) {
      for (let i = 0; i < n; i += 4) bytes.writeFloatLE(value, offset + i);
      edited++;
    }
    offset += n;
  }
  assert.ok(edited > 0, `no weight matches ${weight}`);
  writeFileSync(shard, bytes);
  const metaPath = join(dir, 'masker.json');
  const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as MaskerMeta;
  meta.files!['group1-shard1of1.bin'] = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(metaPath, JSON.stringify(meta));
  return dir;
}

test('integrity: an edited shard is refused by its hash; non-finite weights and masks are refused naming the model', async () => {
  const meta = JSON.parse(readFileSync(join(exportDir, 'masker.json'), 'utf8')) as MaskerMeta;
  assert.deepEqual(Object.keys(meta.files!).sort(), ['group1-shard1of1.bin', 'model.json']);
  assert.equal(
    meta.files!['model.json'],
    createHash('sha256')
      .update(readFileSync(join(exportDir, 'model.json')))
      .digest('hex'),
  );

  const tampered = join(root, 'tampered');
  cpSync(exportDir, tampered, { recursive: true });
  const shard = readFileSync(join(tampered, 'group1-shard1of1.bin'));
  shard.writeFloatLE(Number.NaN, 0);
  writeFileSync(join(tampered, 'group1-shard1of1.bin'), shard);
  await assert.rejects(loadMaskNetwork(tampered), /tampered\/group1-shard1of1\.bin: corrupt \(sha256 differs/);

  // Hashes that agree (an export of a diverged run): the weights themselves are checked.
  const nan = editedExport('nan-weights', /decoder_out\/kernel/, Number.NaN);
  await assert.rejects(loadMaskNetwork(nan), /nan-weights: weight .*decoder_out.* holds NaN or infinite values/);

  // Finite weights, NaN masks: a negative BatchNorm variance (sqrt of it) in the decoder.
  const negative = editedExport('nan-masks', /decoder_bn1\/moving_variance/, -1);
  const images = join(root, 'nan-images');
  mkdirSync(images, { recursive: true });
  writeFileSync(
    join(images, 'a.png'),
    await sharp({ create: { width: 40, height: 30, channels: 3, background: '#468' } })
      .png()
      .toBuffer(),
  );
  await assert.rejects(
    maskCommand({ model: negative, inputs: [images], out: join(root, 'nan-out'), batchSize: 2, png: false, npy: false, boxes: false, log: () => {} }),
    /nan-masks: the network gave a non-finite mask value \(NaN\) for .*a\.png/,
  );
});

/** The exported network's masks of the test pixels, read through plain tfjs. */
async function exportedMasks(): Promise<Float32Array> {
  const { model } = await loadMaskNetwork(exportDir);
  const expected = model.predict(pixels) as tf.Tensor4D;
  const values = expected.dataSync() as Float32Array;
  expected.dispose();
  model.dispose();
  return values;
}

test("casm mask: masks equal the exported network's, PNG/NPY/JSON lines written, undecodable files skipped and listed", async () => {
  const inputs = join(root, 'mask-in');
  mkdirSync(inputs);
  for (const f of imageFiles) cpSync(f, join(inputs, f.split('/').pop()!));
  writeFileSync(join(inputs, 'broken.png'), 'not an image');
  const out = join(root, 'mask-out');
  const logs: string[] = [];
  const before = tf.memory().numTensors;
  const result = await maskCommand({ model: exportDir, inputs: [inputs], out, png: true, npy: true, boxes: true, batchSize: 4, log: (l) => logs.push(l) });
  assert.equal(tf.memory().numTensors, before, 'casm mask leaks no tensors');
  assert.deepEqual(result.skipped, [join(inputs, 'broken.png')]);
  assert.match(logs.join('\n'), /skipping .*broken\.png: cannot decode it/);
  assert.match(logs.join('\n'), /mask: 7\/7 images, 6 masks, 1 skipped/);
  assert.match(logs.join('\n'), /skipped 1 image\(s\) that could not be decoded:\n {2}.*broken\.png/);

  const lines = readFileSync(join(out, 'masks.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, 7);
  const skippedLine = lines.find((l) => l.skipped === true)!;
  assert.equal(skippedLine.file, join(inputs, 'broken.png'));
  const records = lines.filter((l) => !l.skipped) as { file: string; name: string; area: number; box: number[] | null; size: number[] }[];
  assert.deepEqual(
    records.map((r) => r.name),
    ['digit0', 'digit1', 'digit2', 'digit3', 'digit4', 'digit5'],
  );

  // Masks written as .npy equal the exported network's masks on the same pixels.
  const values = await exportedMasks();
  let worst = 0;
  for (const [i, r] of records.entries()) {
    const npy = readFileSync(join(out, `${r.name}-mask.npy`));
    const headerLen = npy.readUInt16LE(8);
    assert.match(npy.subarray(10, 10 + headerLen).toString('latin1'), /'descr': '<f4', 'fortran_order': False, 'shape': \(64, 64\)/);
    const body = npy.subarray(10 + headerLen);
    const mask = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    const ref = values.subarray(i * SIZE * SIZE, (i + 1) * SIZE * SIZE);
    for (let p = 0; p < mask.length; p++) worst = Math.max(worst, Math.abs(mask[p] - ref[p]));
    const area = ref.reduce((a, v) => a + v, 0) / ref.length;
    assert.ok(Math.abs(r.area - area) < 1e-5, `${r.name}: area ${r.area} vs ${area}`);
    assert.deepEqual(r.box, maskBox(Float32Array.from(ref), SIZE, SIZE));
    assert.deepEqual(r.size, [SIZE, SIZE]);
    for (const kind of ['mask', 'overlay']) {
      const info = await sharp(join(out, `${r.name}-${kind}.png`)).metadata();
      assert.deepEqual([info.width, info.height], [SIZE, SIZE]);
    }
  }
  console.log(`# casm mask (.npy) vs exported network: max |diff| = ${worst.toExponential(3)}`);
  // images.ts normalises; casm mask rounds back to the pixel bytes, so this is exact in practice.
  assert.ok(worst < 1e-5, `max |diff| ${worst}`);

  // Nothing decodable at all: an error, not an empty success.
  await assert.rejects(
    maskCommand({
      model: exportDir,
      inputs: [join(inputs, 'broken.png')],
      out: join(root, 'mask-none'),
      png: false,
      npy: false,
      boxes: false,
      batchSize: 4,
      log: () => {},
    }),
    /none of the 1 image\(s\) could be decoded/,
  );
});

test("casm mask-merge: the jobs of a sharded casm mask give one masks.jsonl, the records one job writes in the data set's order; bad sets refused", async () => {
  // Three shards of two digits each, one with a corrupt image; two jobs take shards {0, 2} and {1}.
  const spec = join(root, 'merge-{0..2}.tar');
  for (let t = 0; t < 3; t++) {
    const entries = [0, 1].flatMap((k) => webDatasetEntries(`m/s${t}-${k}`, readFileSync(imageFiles[(2 * t + k) % imageFiles.length]!), k, 'png'));
    if (t === 1) entries.splice(2, 0, ...webDatasetEntries('m/broken', Buffer.from('not an image'), 0, 'png'));
    writeTar(join(root, `merge-${t}.tar`), entries);
  }
  const job = (i: number, n: number, out: string) =>
    maskCommand({
      model: exportDir,
      inputs: [],
      data: { spec, shardIndex: i, numShards: n, workers: 1 },
      out,
      png: false,
      npy: false,
      boxes: true,
      batchSize: 2,
      log: () => {},
    });
  const whole = join(root, 'merge-whole');
  await job(0, 1, whole);
  const dirs = [0, 1].map((i) => join(root, `merge-job${i}`));
  for (const [i, dir] of dirs.entries()) await job(i, 2, dir);
  const merged = join(root, 'merge-out');
  assert.deepEqual(
    mergeMasks([...dirs].reverse(), merged, () => {}),
    { lines: 7 },
  );
  const lines = (dir: string) =>
    readFileSync(join(dir, 'masks.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const got = lines(merged);
  // The data set's order: shard, then byte offset (one job lists a skipped image where its decode worker met it).
  const place = (r: Record<string, unknown>) => {
    const [file, offset] = String(r['file']).split('@') as [string, string];
    return Number(file.match(/merge-(\d)\.tar$/)![1]) * 1e9 + Number(offset);
  };
  const ordered = lines(whole).sort((a, b) => place(a) - place(b));
  assert.equal(ordered.filter((r) => r['skipped']).length, 1, 'the corrupt image is listed');
  assert.deepEqual(
    got.map(({ dir: _, ...r }) => r),
    ordered,
    "the one job's records, in the data set's order",
  );
  assert.deepEqual(
    got.map((r) => r['dir']),
    [dirs[0], dirs[0], dirs[1], dirs[1], dirs[1], dirs[0], dirs[0]],
    'each line names the job directory with its files',
  );
  assert.throws(() => mergeMasks([dirs[0]!], join(root, 'x'), () => {}), /job 1 of 2 missing/);
  assert.throws(() => mergeMasks([dirs[0]!, dirs[0]!, dirs[1]!], join(root, 'x'), () => {}), /job 0 of 2 given twice/);
  assert.throws(() => mergeMasks([dirs[0]!, whole], join(root, 'x'), () => {}), /not jobs of one run: .* in 2 jobs against .* in 1/);
  assert.throws(() => mergeMasks([dirs[0]!, root], join(root, 'x'), () => {}), /no mask\.json: not a finished job/);
});

test('casm mask --data: shards through the decode workers give the same masks; a corrupt image is skipped with its offset', async () => {
  const shard = join(root, 'digits-0.tar');
  const entries = imageFiles.flatMap((f, i) => webDatasetEntries(`d/digit${i}`, readFileSync(f), i, 'png'));
  entries.splice(4, 0, ...webDatasetEntries('d/broken', Buffer.from('not an image'), 0, 'png'));
  // A label without an image: reported, but no image of the 7 the progress counts.
  entries.push({ name: 'd/lonely.cls', data: '3' });
  writeTar(shard, entries);
  const out = join(root, 'mask-shards');
  const logs: string[] = [];
  const before = tf.memory().numTensors;
  const result = await maskCommand({
    model: exportDir,
    inputs: [],
    data: { spec: join(root, 'digits-{0..0}.tar'), shardIndex: 0, numShards: 1, workers: 2 },
    out,
    png: false,
    npy: true,
    boxes: true,
    batchSize: 4,
    log: (l) => logs.push(l),
  });
  assert.equal(tf.memory().numTensors, before, 'casm mask --data leaks no tensors');
  assert.deepEqual(
    result.records.map((r) => r.name),
    ['d_digit0', 'd_digit1', 'd_digit2', 'd_digit3', 'd_digit4', 'd_digit5'],
  );
  assert.ok(result.records.every((r) => r.file.startsWith(`${shard}@`)));
  assert.equal(result.skipped.length, 2);
  assert.ok(
    result.skipped.every((s) => s.startsWith(`${shard}@`) && /@\d+$/.test(s)),
    result.skipped.join(),
  );
  assert.match(logs.join('\n'), /mask: 7\/7 images, 6 masks, 2 skipped \(100%\)/);
  assert.ok(!logs.some((l) => /mask: \d+\/7 images.*\((1[0-9][1-9]|[2-9]\d\d)%\)/.test(l)), 'never above 100%');
  const values = await exportedMasks();
  let worst = 0;
  for (const [i, r] of result.records.entries()) {
    const npy = readFileSync(join(out, `${r.name}-mask.npy`));
    const body = npy.subarray(10 + npy.readUInt16LE(8));
    const mask = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    const ref = values.subarray(i * SIZE * SIZE, (i + 1) * SIZE * SIZE);
    for (let p = 0; p < mask.length; p++) worst = Math.max(worst, Math.abs(mask[p]! - ref[p]!));
  }
  assert.ok(worst < 1e-5, `max |diff| ${worst}`);
});

test('the CLI: casm export and casm mask run end to end; bad paths are usage errors, a broken model a clear failure', async () => {
  const { main } = await import('../src/cli.js');
  const out = join(root, 'cli-export');
  const masks = join(root, 'cli-masks');
  const errors: string[] = [];
  const logs: string[] = [];
  const origError = console.error;
  const origLog = console.log;
  console.error = (...a: unknown[]) => void errors.push(a.join(' '));
  console.log = (...a: unknown[]) => void logs.push(a.join(' '));
  try {
    const engine = ['--backend', backend];
    assert.equal(await main(['node', 'casm', 'export', '--checkpoint', runDir, '--out', out, ...engine]), 0, errors.join('\n'));
    assert.ok(existsSync(join(out, 'model.json')) && existsSync(join(out, 'masker.json')));
    assert.equal(await main(['node', 'casm', 'mask', '--model', out, imageDir, '--out', masks, '--png', '--boxes', ...engine]), 0, errors.join('\n'));
    assert.equal(readFileSync(join(masks, 'masks.jsonl'), 'utf8').trim().split('\n').length, imageFiles.length);
    assert.ok(existsSync(join(masks, 'digit0-overlay.png')) && !existsSync(join(masks, 'digit0-mask.npy')));
    assert.match(logs.join('\n'), /mask: 6\/6 images, 6 masks, 0 skipped \(100%\) \| [\d.]+ masks\/s/);

    assert.equal(await main(['node', 'casm', 'export', '--checkpoint', join(root, 'nowhere'), '--out', out, ...engine]), 2);
    assert.match(errors.at(-1)!, /--checkpoint .*nowhere: no such file or directory/);
    assert.equal(await main(['node', 'casm', 'mask', '--model', out, join(root, 'no-such.png'), '--out', masks, ...engine]), 2);
    assert.match(errors.at(-1)!, /no-such\.png: no such file or directory/);
    assert.equal(await main(['node', 'casm', 'mask', '--model', out, '--out', masks, ...engine]), 2);
    assert.match(errors.at(-1)!, /give image files and folders, or --data <spec>, not both/);
    assert.equal(await main(['node', 'casm', 'mask', '--model', out, '--data', join(root, 'none-{0..2}.tar'), '--out', masks, ...engine]), 2);
    assert.match(errors.at(-1)!, /--data: data spec .*none-\{0\.\.2\}\.tar.*: 3 of the 3 names .* match no file/);
    rmSync(join(out, 'group1-shard1of1.bin'));
    assert.equal(await main(['node', 'casm', 'mask', '--model', out, imageDir, '--out', masks, ...engine]), 1);
    assert.match(errors.at(-1)!, /casm: .*group1-shard1of1\.bin: weight shard listed in .*model\.json is missing/);
  } finally {
    console.error = origError;
    console.log = origLog;
  }
});
