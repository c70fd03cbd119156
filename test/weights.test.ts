/**
 * safetensors reader/writer (against the reference `safetensors` library, via the project .venv)
 * and the weight loaders' layout checks: a missing key, a changed shape, an unexpected key, a
 * truncated file -> an Error naming the file and the offending tensor; nothing written on failure.
 */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initEngine } from '../src/engine/engine.js';
import { parseSafetensors, readSafetensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { buildResNet, type ResNetConfig } from '../src/models/resnet.js';
import { loadClassifierWeights, loadTfjsWeights, loadTorchvisionWeights, saveTorchvisionWeights, torchvisionStateDict } from '../src/models/weights.js';
import { runPython } from './helpers/python.js';

const SMALL: ResNetConfig = { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 };

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'casm-weights-'));
  tmpRoots.push(d);
  return d;
}
before(async () => {
  await initEngine('cpu', () => {});
});
after(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

/** Builds safetensors bytes by hand (header object as given, data appended). */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLen?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function weightsOf(model: tf.LayersModel): Float32Array[] {
  return model.getWeights().map((t) => Float32Array.from(t.dataSync() as Float32Array));
}

function predict(model: tf.LayersModel, seed = 3): Float32Array {
  return tf.tidy(() => {
    const x = tf.randomNormal([2, SMALL.inputSize, SMALL.inputSize, 3], 0, 1, 'float32', seed);
    const outs = model.predict(x) as tf.Tensor[];
    return Float32Array.from(outs[outs.length - 1].dataSync() as Float32Array);
  });
}

function modified(entries: TensorToWrite[], fn: (e: TensorToWrite[]) => TensorToWrite[]): TensorToWrite[] {
  return fn(entries.map((e) => ({ ...e })));
}

describe('safetensors', () => {
  test('round trip: shapes, values, metadata, scalars and empty tensors; 8-byte aligned data', () => {
    const dir = tempDir();
    const path = join(dir, 't.safetensors');
    const tensors: TensorToWrite[] = [
      { name: 'w', shape: [2, 3], data: new Float32Array([1, -2, 3.5, 1e-30, -0, Math.PI]) },
      { name: 's', shape: [], data: new Float32Array([7]) },
      { name: 'empty', shape: [0, 5], data: new Float32Array(0) },
      { name: 'layer1.0.conv1.weight', shape: [1, 1, 1, 1], data: new Float32Array([NaN]) },
    ];
    writeSafetensors(path, tensors, { format: 'pt', who: 'casm-ts' });
    const bytes = readFileSync(path);
    assert.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
    const { tensors: got, metadata } = readSafetensors(path);
    assert.deepEqual(metadata, { format: 'pt', who: 'casm-ts' });
    assert.deepEqual(
      [...got.keys()],
      tensors.map((t) => t.name),
    );
    for (const t of tensors) {
      const g = got.get(t.name)!;
      assert.equal(g.dtype, 'F32');
      assert.deepEqual(g.shape, t.shape);
      assert.deepEqual(g.data, t.data);
    }
    assert.deepEqual(readdirSync(dir), ['t.safetensors'], 'no temporary file left');
  });

  test('atomic write: overwrite replaces the file; a failing write leaves the old file and no temp', () => {
    const dir = tempDir();
    const path = join(dir, 'a.safetensors');
    writeSafetensors(path, [{ name: 'x', shape: [1], data: new Float32Array([1]) }]);
    writeSafetensors(path, [{ name: 'x', shape: [2], data: new Float32Array([2, 3]) }]);
    assert.deepEqual(readSafetensors(path).tensors.get('x')!.data, new Float32Array([2, 3]));
    assert.throws(
      () => writeSafetensors(path, [{ name: 'y', shape: [3], data: new Float32Array([1]) }]),
      (e: Error) => e.message.startsWith(path) && /tensor y has shape \[3\]/.test(e.message),
    );
    assert.throws(() => writeSafetensors(join(dir, 'no', 'such', 'dir.safetensors'), []), /cannot write/);
    assert.deepEqual(readSafetensors(path).tensors.get('x')!.data, new Float32Array([2, 3]));
    assert.deepEqual(readdirSync(dir), ['a.safetensors']);
  });

  test('reads what the reference library writes (F32, F64, F16, I64, I32, empty) and vice versa', () => {
    const dir = tempDir();
    const theirs = join(dir, 'theirs.safetensors');
    const expected = JSON.parse(runPython('torchvision_resnet.py', ['st-write', theirs])) as Record<string, { shape: number[]; values: number[] }>;
    const { tensors, metadata } = readSafetensors(theirs);
    assert.deepEqual(metadata, { format: 'pt', note: 'written by safetensors.numpy' });
    assert.deepEqual([...tensors.keys()].sort(), Object.keys(expected).sort());
    for (const [name, e] of Object.entries(expected)) {
      const t = tensors.get(name)!;
      assert.equal(t.dtype, { f32: 'F32', f64: 'F64', f16: 'F16', i64: 'I64', i32: 'I32', empty: 'F32' }[name.split('.')[1]]);
      assert.deepEqual(t.shape, e.shape);
      assert.deepEqual(t.data, Float32Array.from(e.values), name);
    }

    const ours = join(dir, 'ours.safetensors');
    const data = new Float32Array([0.1, -2, 3e38, 1e-40, -0.5, 6]);
    writeSafetensors(
      ours,
      [
        { name: 'b', shape: [3, 2], data },
        { name: 'a', shape: [], data: new Float32Array([-1]) },
      ],
      { k: 'v' },
    );
    const back = JSON.parse(runPython('torchvision_resnet.py', ['st-read', ours])) as {
      tensors: Record<string, { dtype: string; shape: number[]; values: number[] }>;
      metadata: Record<string, string>;
    };
    assert.deepEqual(back.metadata, { k: 'v' });
    assert.deepEqual(back.tensors['b'], { dtype: 'float32', shape: [3, 2], values: [...data] });
    assert.deepEqual(back.tensors['a'], { dtype: 'float32', shape: [], values: [-1] });
  });

  test('BF16 and U8/BOOL conversion', () => {
    // bf16 = upper half of the float32 bits: 1.0 = 0x3f80, -2.5 = 0xc020, 3.140625 = 0x4049, NaN = 0x7fc0.
    const bf = new Uint8Array([0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40, 0xc0, 0x7f]);
    const f = parseSafetensors(
      rawFile(
        { b: { dtype: 'BF16', shape: [4], data_offsets: [0, 8] }, u: { dtype: 'BOOL', shape: [2], data_offsets: [8, 10] } },
        new Uint8Array([...bf, 1, 0]),
      ),
      'mem',
    );
    const b = f.tensors.get('b')!.data;
    assert.deepEqual([...b.subarray(0, 3)], [1, -2.5, 3.140625]);
    assert.ok(Number.isNaN(b[3]));
    assert.deepEqual([...f.tensors.get('u')!.data], [1, 0]);
  });

  test('malformed files: errors name the file and the problem', () => {
    const dir = tempDir();
    const good = join(dir, 'good.safetensors');
    writeSafetensors(good, [
      { name: 'a', shape: [4], data: new Float32Array([1, 2, 3, 4]) },
      { name: 'b', shape: [2, 2], data: new Float32Array([5, 6, 7, 8]) },
    ]);
    const bytes = readFileSync(good);
    const cases: [string, Uint8Array, RegExp][] = [
      ['truncated-data', bytes.subarray(0, bytes.length - 3), /truncated: tensor b needs bytes \[16,32\) of the data section, but only 29/],
      ['truncated-header', bytes.subarray(0, 20), /truncated: the header claims \d+ bytes but only 12 follow/],
      ['tiny', bytes.subarray(0, 5), /truncated: 5 bytes/],
      ['huge-header', rawFile({}, new Uint8Array(0), 1n << 40n), /header too large/],
      ['bad-json', rawFile('{"a": {"dtype": "F32", '), /invalid header: not valid UTF-8 JSON/],
      ['not-object', rawFile('[1, 2]'), /invalid header: the JSON header is not an object/],
      [
        'overlap',
        rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
        /tensor b at \[4,12\) overlaps tensor a/,
      ],
      ['hole', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), /bytes \[0,4\) of the data section belong to no tensor/],
      [
        'size',
        rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        /tensor a: data_offsets \[0,8\] span 8 bytes, but F32 \[3\] needs 12/,
      ],
      ['dtype', rawFile({ a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /tensor a: unsupported dtype F8_E4M3/],
      ['trailing', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(6)), /2 trailing bytes/],
      ['metadata', rawFile({ __metadata__: { n: 1 } }), /__metadata__\.n is not a string/],
      ['offsets', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4)), /data_offsets \[4,0\] is not \[begin, end\]/],
    ];
    for (const [name, data, re] of cases) {
      const path = join(dir, `${name}.safetensors`);
      writeFileSync(path, data);
      assert.throws(
        () => readSafetensors(path),
        (e: Error) => {
          assert.ok(e.message.startsWith(`${path}: `), `${name}: message should start with the path: ${e.message}`);
          assert.match(e.message, re, name);
          return true;
        },
      );
    }
    assert.throws(() => readSafetensors(join(dir, 'absent.safetensors')), /absent\.safetensors: cannot read safetensors file/);
  });
});

describe('loadTorchvisionWeights', () => {
  test('save -> load round trip restores every weight exactly (BN statistics included)', () => {
    const dir = tempDir();
    const file = join(dir, 'small.safetensors');
    const src = buildResNet(SMALL);
    // Non-trivial BN statistics, so they are not equal by accident (init: zeros and ones).
    for (const w of src.nonTrainableWeights) {
      w.write(tf.tidy(() => tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', 11)));
    }
    saveTorchvisionWeights(src, file, { source: 'test' });
    const dst = buildResNet(SMALL);
    const report = loadTorchvisionWeights(dst, file);
    assert.equal(report.loaded, src.weights.length);
    assert.deepEqual(report.metadata, { source: 'test' });
    assert.deepEqual(weightsOf(dst), weightsOf(src));
    assert.deepEqual(predict(dst), predict(src));
    // Layout: the kernel of conv1 is [7,7,3,8] here and [8,3,7,7] in the file.
    const st = readSafetensors(file).tensors;
    assert.deepEqual(st.get('conv1.weight')!.shape, [8, 3, 7, 7]);
    assert.deepEqual(st.get('fc.weight')!.shape, [10, 256]);
    assert.ok(st.has('layer1.0.downsample.0.weight') && st.has('layer4.0.bn3.running_var'));
    const k = src.getLayer('conv1').getWeights()[0].arraySync() as number[][][][];
    const t = st.get('conv1.weight')!.data;
    // torch index [o=5, i=2, y=4, x=1] == tfjs [y=4, x=1, i=2, o=5]
    assert.equal(t[((5 * 3 + 2) * 7 + 4) * 7 + 1], k[4][1][2][5]);
    const fc = src.getLayer('fc').getWeights()[0].arraySync() as number[][];
    assert.equal(st.get('fc.weight')!.data[7 * 256 + 100], fc[100][7]);
    src.dispose();
    dst.dispose();
  });

  test('layout errors name the file and the first offending tensor; the model is left untouched', () => {
    const dir = tempDir();
    const model = buildResNet(SMALL);
    const base = torchvisionStateDict(model);
    const target = buildResNet(SMALL);
    const before = weightsOf(target);
    const cases: [string, TensorToWrite[], RegExp][] = [
      [
        'missing',
        modified(base, (e) => e.filter((t) => t.name !== 'layer2.0.bn2.running_var')),
        /: missing tensor layer2\.0\.bn2\.running_var: model layer layer2_0_bn2 needs its moving_variance, shape \[16\]/,
      ],
      [
        'shape',
        modified(base, (e) => e.map((t) => (t.name === 'layer1.0.conv2.weight' ? { ...t, shape: [8, 8, 1, 9] } : t))),
        /: tensor layer1\.0\.conv2\.weight has shape \[8,8,1,9\], model expects \[8,8,3,3\] \(layer layer1_0_conv2 kernel, \[3,3,8,8\] in tfjs layout\)/,
      ],
      [
        'unexpected',
        [...base, { name: 'layer5.0.conv1.weight', shape: [1], data: new Float32Array(1) }],
        /: unexpected tensor layer5\.0\.conv1\.weight \(shape \[1\]\): the model has no layer layer5_0_conv1/,
      ],
      [
        'classes',
        modified(base, (e) =>
          e.map((t) =>
            t.name === 'fc.weight'
              ? { ...t, shape: [5, 256], data: t.data.subarray(0, 5 * 256) }
              : t.name === 'fc.bias'
                ? { ...t, shape: [5], data: t.data.subarray(0, 5) }
                : t,
          ),
        ),
        /: tensor fc\.weight has shape \[5,256\], model expects \[10,256\].* \(and 1 more problem\)/,
      ],
    ];
    for (const [name, entries, re] of cases) {
      const file = join(dir, `${name}.safetensors`);
      writeSafetensors(file, entries);
      assert.throws(
        () => loadTorchvisionWeights(target, file),
        (e: Error) => {
          assert.ok(e.message.startsWith(`${file}: `), `${name}: ${e.message}`);
          assert.match(e.message, re, name);
          return true;
        },
      );
    }
    // A truncated file: the error names the file.
    const full = join(dir, 'full.safetensors');
    writeSafetensors(full, base);
    const truncated = join(dir, 'truncated.safetensors');
    const bytes = readFileSync(full);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
    assert.throws(
      () => loadTorchvisionWeights(target, truncated),
      (e: Error) => e.message.startsWith(`${truncated}: truncated`),
    );
    assert.deepEqual(weightsOf(target), before, 'a failed load writes nothing');

    // num_batches_tracked (int64 in torch) is accepted and ignored.
    const withCounters = join(dir, 'counters.safetensors');
    writeSafetensors(withCounters, [...base, { name: 'bn1.num_batches_tracked', shape: [], data: new Float32Array([3]) }]);
    assert.deepEqual(loadTorchvisionWeights(target, withCounters).ignored, ['bn1.num_batches_tracked']);
    assert.deepEqual(weightsOf(target), weightsOf(model));
    model.dispose();
    target.dispose();
  });
});

describe('loadTfjsWeights', () => {
  async function saveTfjs(model: tf.LayersModel, dir: string): Promise<void> {
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        const data = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData!));
        writeFileSync(join(dir, 'weights.bin'), data);
        const json = {
          modelTopology: artifacts.modelTopology,
          format: artifacts.format,
          generatedBy: artifacts.generatedBy,
          convertedBy: artifacts.convertedBy,
          weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        };
        writeFileSync(join(dir, 'model.json'), JSON.stringify(json));
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
  }

  test('model.save artifacts load back by layer name (directory or model.json)', async () => {
    const dir = tempDir();
    const src = buildResNet(SMALL);
    for (const w of src.nonTrainableWeights) {
      w.write(tf.tidy(() => tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', 5)));
    }
    await saveTfjs(src, dir);
    const a = buildResNet(SMALL);
    assert.equal(loadTfjsWeights(a, dir).loaded, src.weights.length);
    assert.deepEqual(weightsOf(a), weightsOf(src));
    assert.deepEqual(predict(a), predict(src));
    const b = buildResNet(SMALL);
    loadClassifierWeights(b, join(dir, 'model.json'));
    assert.deepEqual(weightsOf(b), weightsOf(src));
    // and the torchvision route through the same entry point
    const st = join(dir, 'w.safetensors');
    saveTorchvisionWeights(src, st);
    const c = buildResNet(SMALL);
    loadClassifierWeights(c, st);
    assert.deepEqual(weightsOf(c), weightsOf(src));
    assert.throws(() => loadClassifierWeights(c, join(dir, 'weights.bin')), /unknown classifier weights format/);
    for (const m of [src, a, b, c]) m.dispose();
  });

  test('mismatches and truncated shards name the offending weight / file', async () => {
    const dir = tempDir();
    const src = buildResNet(SMALL);
    await saveTfjs(src, dir);
    const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as {
      weightsManifest: { paths: string[]; weights: { name: string; shape: number[] }[] }[];
    };
    const target = buildResNet(SMALL);
    const before = weightsOf(target);
    /** A model.json variant next to the original (same shard). */
    const variant = (name: string, edit: (j: typeof json) => void): string => {
      const j = structuredClone(json);
      edit(j);
      const file = join(dir, `${name}.json`);
      writeFileSync(file, JSON.stringify(j));
      return file;
    };
    const shape = variant('shape', (j) => {
      const w = j.weightsManifest[0].weights.find((e) => e.name === 'layer3_0_conv2/kernel')!;
      w.shape = [3, 3, 32, 16];
    });
    assert.throws(
      () => loadTfjsWeights(target, shape),
      (e: Error) => e.message.startsWith(`${shape}: weight layer3_0_conv2/kernel has shape [3,3,32,16], model expects [3,3,32,32]`),
    );
    const missing = variant('missing', (j) => {
      j.weightsManifest[0].weights = j.weightsManifest[0].weights.filter((e) => e.name !== 'bn1/moving_mean');
    });
    assert.throws(
      () => loadTfjsWeights(target, missing),
      (e: Error) => e.message.startsWith(`${missing}: missing weight bn1/moving_mean: the model expects shape [8]`),
    );
    const renamed = variant('renamed', (j) => {
      j.weightsManifest[0].weights.find((e) => e.name === 'fc/bias')!.name = 'head/bias';
    });
    assert.throws(() => loadTfjsWeights(target, renamed), /missing weight fc\/bias.*\(and 1 more problem\)/);

    writeFileSync(join(dir, 'weights.bin'), readFileSync(join(dir, 'weights.bin')).subarray(0, 1000));
    const shard = join(dir, 'weights.bin');
    assert.throws(
      () => loadTfjsWeights(target, dir),
      (e: Error) => e.message.startsWith(`${shard}: truncated`),
    );
    assert.deepEqual(weightsOf(target), before, 'a failed load writes nothing');
    src.dispose();
    target.dispose();
  });
});
