/**
 * Our ResNet (src/models/resnet.ts) against torchvision's own, an independent implementation:
 * test/helpers/torchvision_resnet.py builds torchvision's ResNet with random weights and
 * non-trivial BatchNorm, saves the state dict as safetensors plus an input batch and torchvision's
 * outputs; we load the state dict with loadTorchvisionWeights, run the same batch (NHWC) and compare
 * logits and all five feature maps (error relative to the largest |value| of each output).
 *
 * Python: torch + torchvision come from Debian's python3-torchvision (/usr/bin/python3) or the
 * pip pair in .venv (scripts/setup-oracles.sh installs them); CASM_TORCH_PYTHON overrides.
 * Backend: the native 'tensorflow' engine when it is built, else the pure-JS 'cpu' one
 * (CASM_TEST_BACKEND=cpu|tensorflow forces one).
 */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initEngine } from '../src/engine/engine.js';
import { buildResNet, countTrainableParams, FEATURE_NAMES, RESNET50, type ResNetConfig } from '../src/models/resnet.js';
import { loadTorchvisionWeights } from '../src/models/weights.js';
import { findTorchPython, repoRoot } from './helpers/python.js';

const HELPER = join(repoRoot, 'test', 'helpers', 'torchvision_resnet.py');
const TOLERANCE = 1e-3;

interface OutputInfo {
  file: string;
  shape: number[];
  max_abs: number;
}
interface Manifest {
  builder: string;
  params: number;
  trainable_params: number;
  buffers: Record<string, number[]>;
  state_dict_keys: number;
  torch: string;
  torchvision: string;
  weights_writer: string;
  torch_f32_vs_f64_logits_rel: number;
  outputs: Record<string, OutputInfo>;
}

const tmpRoots: string[] = [];
let python = '';

before(async () => {
  const forced = process.env['CASM_TEST_BACKEND'];
  if (forced === 'cpu' || forced === 'tensorflow') {
    await initEngine(forced, (l) => console.log(l));
  } else {
    try {
      await initEngine('tensorflow', (l) => console.log(l));
    } catch (err) {
      console.log(`native engine unavailable (${(err as Error).message.split('\n')[0]}); using cpu`);
      await initEngine('cpu', (l) => console.log(l));
    }
  }
  const found = findTorchPython(HELPER);
  python = found.python;
  console.log(`torchvision oracle: ${found.python} (${found.versions})`);
});

after(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

/** Runs the oracle for a config; returns its output directory and manifest. */
function oracle(cfg: ResNetConfig, batch: number, seed: number): { dir: string; manifest: Manifest } {
  const dir = mkdtempSync(join(tmpdir(), 'casm-tv-'));
  tmpRoots.push(dir);
  const args = [HELPER, 'make', dir, '--depths', cfg.depths.join(','), '--classes', String(cfg.classes)];
  args.push('--size', String(cfg.inputSize), '--batch', String(batch), '--seed', String(seed));
  const r = spawnSync(python, args, { encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`torchvision oracle failed (${python} ${args.join(' ')}):\n${r.stderr}`);
  return { dir, manifest: JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest };
}

function readF32(dir: string, info: OutputInfo): Float32Array {
  const buf = readFileSync(join(dir, info.file));
  const n = info.shape.reduce((a, b) => a * b, 1);
  assert.equal(buf.length, 4 * n, `${info.file}: size`);
  const own = new Uint8Array(buf.length);
  own.set(buf);
  return new Float32Array(own.buffer);
}

/** max |ours - ref| / max |ref|. */
function relError(ours: Float32Array, ref: Float32Array): number {
  assert.equal(ours.length, ref.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return diff / scale;
}

/** Builds cfg, loads the oracle's weights, runs its input; returns relative errors per output. */
function compare(cfg: ResNetConfig, dir: string, manifest: Manifest): Record<string, number> {
  const model = buildResNet(cfg);
  try {
    const report = loadTorchvisionWeights(model, join(dir, 'weights.safetensors'));
    // Every state-dict entry is used except BN's num_batches_tracked counters.
    const nbt = Object.keys(manifest.buffers).filter((k) => k.endsWith('.num_batches_tracked')).length;
    assert.equal(report.ignored.length, nbt);
    assert.equal(report.loaded + nbt, manifest.state_dict_keys);

    const inInfo = manifest.outputs['input'];
    const x = tf.tensor(readF32(dir, inInfo), inInfo.shape, 'float32');
    const t0 = Date.now();
    const outs = model.predict(x) as tf.Tensor[];
    const names = [...FEATURE_NAMES, 'logits'];
    const errors: Record<string, number> = {};
    try {
      assert.equal(outs.length, names.length);
      names.forEach((name, i) => {
        const info = manifest.outputs[name];
        assert.deepEqual(outs[i].shape, info.shape, `${name}: shape`);
        errors[name] = relError(outs[i].dataSync() as Float32Array, readF32(dir, info));
      });
    } finally {
      tf.dispose([x, ...outs]);
    }
    console.log(
      `${manifest.builder} (torch ${manifest.torch}, torchvision ${manifest.torchvision}) on ${tf.getBackend()}: ` +
        `inference ${Date.now() - t0} ms; max rel error ` +
        names.map((n) => `${n} ${errors[n].toExponential(2)}`).join(', ') +
        `; torch f32 vs f64 logits ${manifest.torch_f32_vs_f64_logits_rel.toExponential(2)}`,
    );
    return errors;
  } finally {
    model.dispose();
  }
}

function paramsOf(cfg: ResNetConfig): number {
  const model = buildResNet(cfg);
  try {
    return countTrainableParams(model);
  } finally {
    model.dispose();
  }
}

function assertClose(errors: Record<string, number>): void {
  for (const [name, err] of Object.entries(errors)) {
    assert.ok(err < TOLERANCE, `${name}: max relative error ${err.toExponential(3)} >= ${TOLERANCE}`);
  }
}

describe('ResNet vs torchvision (independent implementation)', () => {
  test('ResNet-50: logits and the five feature maps match torchvision resnet50 (2 images, 224px)', () => {
    const { dir, manifest } = oracle(RESNET50, 2, 0);
    assert.equal(manifest.builder, 'torchvision.models.resnet50(weights=None)');
    assertClose(compare(RESNET50, dir, manifest));

    // Parameter count: ours, torchvision's (computed by Python), and the known figure agree.
    const model = buildResNet(RESNET50);
    try {
      assert.equal(countTrainableParams(model), 25_557_032);
      assert.equal(manifest.params, 25_557_032);
      assert.equal(manifest.trainable_params, 25_557_032);
      // Non-trainable weights = BN running statistics (torchvision buffers minus the counters).
      const stats = Object.entries(manifest.buffers)
        .filter(([k]) => !k.endsWith('.num_batches_tracked'))
        .reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);
      const ours = model.nonTrainableWeights.reduce((n, w) => n + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
      assert.equal(ours, stats);
    } finally {
      model.dispose();
    }
  });

  test('ResNet(Bottleneck, [1,1,1,1], 10 classes), 64px, batch 3', () => {
    // torchvision's ResNet has a fixed stem width of 64, so the width-8 variant has no torchvision
    // counterpart; depths, classes and input size are what it can vary.
    const cfg: ResNetConfig = { depths: [1, 1, 1, 1], width: 64, classes: 10, inputSize: 64 };
    const { dir, manifest } = oracle(cfg, 3, 1);
    assert.equal(paramsOf(cfg), manifest.params);
    assertClose(compare(cfg, dir, manifest));
  });

  test('ResNet(Bottleneck, [2,1,3,1], 7 classes), 80px: odd maps (stage3 5x5 -> stage4 3x3)', () => {
    // 80 -> 40 (conv1) -> 20 (maxpool) -> 20 -> 10 -> 5 -> 3: strided convs on odd inputs, where
    // padding conventions differ most ('same' in tfjs would pad differently from PyTorch).
    const cfg: ResNetConfig = { depths: [2, 1, 3, 1], width: 64, classes: 7, inputSize: 80 };
    const { dir, manifest } = oracle(cfg, 2, 2);
    assert.deepEqual(manifest.outputs['stage4'].shape, [2, 3, 3, 2048]);
    assert.equal(paramsOf(cfg), manifest.params);
    assertClose(compare(cfg, dir, manifest));
  });
});
