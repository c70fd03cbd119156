/**
 * Training from shards end to end: the loop takes its batches from the worker DataLoader, a
 * resumed run sees the same batches as an uninterrupted one, TensorBoard shows how long every
 * step waited for data, and bad samples are skipped, counted and reported with file and offset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { readCheckpointState } from '../src/checkpoints/checkpoint.js';
import { defaultTrainConfig } from '../src/casm/config.js';
import { runTraining, type RunOptions } from '../src/train/train.js';
import { openTrainData, type ShardsPlan } from '../src/data/trainData.js';
import { openEvalData, type EvalBatch } from '../src/eval/evalData.js';
import { seedFrom } from '../src/util/rng.js';
import { webDatasetEntries, writeTar, type TarEntry } from '../src/data/tar.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { useTestBackend } from './helpers/backend.js';
import { digitJpeg, digitLabel } from './helpers/images.js';
import { runPython } from './helpers/python.js';

await useTestBackend();
const root = mkdtempSync(join(tmpdir(), 'casm-train-shards-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

/** 6 shards of 8 digits (48 images, 10 classes); `bad` adds a corrupt JPEG and an unlabelled image to shard 0. */
async function shards(dir: string, bad: boolean): Promise<string> {
  mkdirSync(dir, { recursive: true });
  for (let s = 0; s < 6; s++) {
    const entries: TarEntry[] = [];
    for (let k = 0; k < 8; k++) {
      const i = s * 8 + k;
      entries.push(...webDatasetEntries(`d${String(i).padStart(3, '0')}`, await digitJpeg(i, 48 + (i % 4) * 8, 40 + (i % 3) * 8), digitLabel(i)));
    }
    if (bad && s === 0) {
      entries.push(...webDatasetEntries('zz_corrupt', Buffer.from([0xff, 0xd8, 0xff, 0xdb, 1, 2, 3]), 3));
      entries.push({ name: 'zz_unlabelled.jpg', data: await digitJpeg(99, 40, 40) });
    }
    writeTar(join(dir, `train-${s}.tar`), entries);
  }
  return join(dir, 'train-{0..5}.tar');
}

function options(outDir: string, spec: string, over: Partial<RunOptions> = {}, log: (l: string) => void = () => {}): RunOptions {
  const plan: ShardsPlan = {
    kind: 'shards',
    train: spec,
    trainOptions: {},
    valOptions: {},
    valCount: 8,
    workers: 2,
    shuffleBuffer: 8,
    prefetchBatches: 2,
    epochFraction: 0.5,
  };
  return {
    config: defaultTrainConfig({
      arch: { depths: [1, 1, 1, 1], width: 8, classes: 10, inputSize: 32 },
      masker: { decoderWidth: 8, upsample: 'nearest', shareEncoder: true, stride: 4 },
      batchSize: 8,
      warmupSteps: 2,
      epochs: 3,
      stepsPerEpoch: Number.MAX_SAFE_INTEGER,
      seed: 5,
    }),
    outDir,
    data: plan,
    checkpointEvery: 1000,
    logEvery: 1,
    imageEvery: 1000,
    log,
    ...over,
  };
}

const weights = (ckpt: string) => readSafetensors(join(ckpt, 'classifier.safetensors')).tensors;

test('shards: 9 steps straight = 5 steps, resume, 4 more (same batches mid-epoch); data wait in TensorBoard', async () => {
  const spec = await shards(join(root, 'clean'), false);
  const a = join(root, 'a');
  const lines: string[] = [];
  const before = tf.memory().numTensors;
  const resA = await runTraining(options(a, spec, { checkpointEvery: 5 }, (l) => lines.push(l)));
  const afterA = tf.memory().numTensors;
  // 48 images, half an epoch each: 24 images = 3 steps of 8 per epoch, 3 epochs.
  assert.equal(readCheckpointState(resA.checkpoint).step, 9);
  assert.ok(
    lines.some((l) => /6 of 6 shards, 48 images .* 24 per epoch; 2 decode workers/.test(l)),
    lines.join('\n'),
  );
  const b = join(root, 'b');
  const resB = await runTraining(options(b, spec, { resume: join(a, 'ckpt-00000005') }));
  const afterB = tf.memory().numTensors;
  // What a run leaves is its trainer's state, the same after 9 steps as after 4: no step leaks.
  const resC = await runTraining(options(join(root, 'short'), spec, { maxSteps: 4 }));
  assert.equal(tf.memory().numTensors - afterB, afterA - before);
  resC.trainer.classifier.dispose();
  for (const m of resC.trainer.masker.models) m.dispose();
  const wa = weights(resA.checkpoint);
  const wb = weights(resB.checkpoint);
  for (const [k, t] of wa) assert.deepEqual(Array.from(wb.get(k)!.data), Array.from(t.data), k);
  assert.deepEqual(resB.last, resA.last);
  for (const r of [resA, resB]) {
    r.trainer.classifier.dispose();
    for (const m of r.trainer.masker.models) m.dispose();
  }

  const events = JSON.parse(runPython('read_events.py', [join(a, 'tb')])) as { scalars: Record<string, [number, number][]> };
  const wait = events.scalars['data/wait_ms']!;
  assert.deepEqual(
    wait.map(([s]) => s),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  assert.ok(wait.every(([, v]) => v >= 0 && v < 60_000));
  assert.deepEqual(
    events.scalars['data/problems']!.map(([, v]) => v),
    Array(9).fill(0),
  );
});

test('shards: a corrupt JPEG and an unlabelled image are skipped, counted in the log and TensorBoard, and training goes on', async () => {
  const spec = await shards(join(root, 'bad'), true);
  const out = join(root, 'c');
  const lines: string[] = [];
  // a whole epoch per pass so shard 0 (with the bad samples) is read every epoch
  const res = await runTraining(options(out, spec, { maxSteps: 6 }, (l) => lines.push(l)));
  assert.equal(res.last!.step, 6);
  const shard0 = join(root, 'bad', 'train-0.tar');
  const printed = lines.filter((l) => l.startsWith('data: ') && l.includes('@'));
  assert.ok(
    printed.some((l) => l.startsWith(`data: ${shard0}@`) && l.includes('decode-error: zz_corrupt')),
    printed.join('\n'),
  );
  assert.ok(
    printed.some((l) => l.startsWith(`data: ${shard0}@`) && l.includes('incomplete-sample')),
    printed.join('\n'),
  );
  const summary = lines.find((l) => l.startsWith('data problems: '));
  assert.ok(summary, lines.join('\n'));
  const count = Number(/data problems: (\d+)/.exec(summary)![1]);
  assert.ok(count >= 2 && count === printed.length, `${count} problems, ${printed.length} printed`);
  const events = JSON.parse(runPython('read_events.py', [join(out, 'tb')])) as { scalars: Record<string, [number, number][]> };
  const problems = events.scalars['data/problems']!;
  assert.equal(problems.at(-1)![1], count);
  assert.ok(
    problems.every(([, v], i) => i === 0 || v >= problems[i - 1]![1]),
    'a running count',
  );
  const evalJson = JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8')) as { images: number; withBoxes: number; casm: number | null };
  assert.deepEqual([evalJson.images, evalJson.withBoxes, evalJson.casm], [8, 0, null]);
  res.trainer.classifier.dispose();
  for (const m of res.trainer.masker.models) m.dispose();
  writeFileSync(join(root, 'done'), '');
});

test('shards: the held-out images are the evaluation images, normalised as the evaluation normalises them', async () => {
  // Once, the held-out check fed raw 0..255 pixels to the classifier (accuracy at chance while
  // `casm eval` of the same checkpoint gave 0.50): its input must equal the evaluation's.
  const spec = await shards(join(root, 'held'), false);
  const plan: ShardsPlan = { ...(options(join(root, 'held-run'), spec).data as ShardsPlan), val: spec };
  const data = await openTrainData(plan, { size: 32, batchSize: 8, seed: 5, log: () => {} });
  const evalData = await openEvalData({ spec, size: 32, preprocess: 'eval', limit: 8, seed: seedFrom('held-out', 5), workers: 2, batchSize: 8 });
  try {
    const x = data.heldOut.batch([0, 1, 2, 3, 4, 5, 6, 7]);
    const ours = x.dataSync() as Float32Array;
    x.dispose();
    const batches: EvalBatch[] = [];
    for await (const b of evalData.batches()) batches.push(b);
    assert.equal(batches.length, 1);
    assert.deepEqual(Array.from(data.heldOut.labels), Array.from(batches[0]!.labels));
    assert.equal(ours.length, batches[0]!.x.length);
    let maxDiff = 0;
    for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours[i]! - batches[0]!.x[i]!));
    assert.equal(maxDiff, 0);
    // And by hand: pixel 0 of image 0, channel 0, is (v / 255 - 0.485) / 0.229.
    const v = batches[0]!.pixels[0]!;
    assert.ok(Math.abs(ours[0]! - (v / 255 - 0.485) / 0.229) < 1e-6, `${ours[0]} for pixel ${v}`);
  } finally {
    await data.close();
    await evalData.close();
  }
});
