/**
 * The CASM iteration: eq. 8 is what moves the classifier, the masker never touches the classifier,
 * a non-finite loss stops before any update, and tensors do not leak over many iterations.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { defaultTrainConfig, type TrainConfig } from '../src/casm/config.js';
import { crossEntropy } from '../src/casm/score.js';
import { DivergenceError, HealthWatch } from '../src/casm/divergence.js';
import { CasmTrainer, NonFiniteLossError, type StepStats } from '../src/casm/trainer.js';
import { buildResNet } from '../src/models/resnet.js';
import { useTestBackend } from './helpers/backend.js';

before(async () => {
  await useTestBackend();
});

const TINY = { depths: [1, 1, 1, 1], width: 4, classes: 5, inputSize: 32 };

function tinyConfig(over: Partial<TrainConfig> = {}): TrainConfig {
  return defaultTrainConfig({ arch: TINY, batchSize: 4, stepsPerEpoch: 1000, epochs: 1, ...over });
}

function batch(seed: number): { x: tf.Tensor4D; y: tf.Tensor1D } {
  return {
    x: tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', seed) as tf.Tensor4D,
    y: tf.tensor1d([0, 1, 2, 3], 'int32'),
  };
}

const values = (m: tf.LayersModel) => m.getWeights().map((w) => Float32Array.from(w.dataSync()));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

test('the classifier step is SGD on eq. 8 with the mask held fixed (plus weight decay)', () => {
  const lr = 0.05;
  const wd = 1e-3;
  const cfg = tinyConfig({ thinning: 'L', optim: { ...defaultTrainConfig().optim, classifierLr: lr, weightDecay: wd } });
  const trainer = new CasmTrainer(cfg);
  const { x, y } = batch(7);
  // Independent expectation: a twin classifier with the same weights, masks from the trainer's
  // masker (training mode, as the iteration uses them), gradient of eq. 8 by tf.grads here.
  const twin = buildResNet(TINY, 'twin');
  twin.setWeights(trainer.classifier.getWeights());
  const before = trainer.classifier.trainableWeights.map((w) => Float32Array.from(w.read().dataSync()));
  const expectedGrads = tf.tidy(() => {
    const masks = trainer.masker.apply(x, (twin.apply(x, { training: true }) as tf.Tensor[]).slice(0, 5), true);
    const maskedOut = tf.mul(tf.sub(1, masks), x);
    const { grads } = tf.variableGrads(
      () => {
        const clean = (twin.apply(x, { training: true }) as tf.Tensor[])[5] as tf.Tensor2D;
        const masked = (twin.apply(maskedOut, { training: true }) as tf.Tensor[])[5] as tf.Tensor2D;
        return tf.mul(0.5, tf.add(crossEntropy(clean, y), crossEntropy(masked, y))) as tf.Scalar;
      },
      twin.trainableWeights.map((w) => w.read() as tf.Variable),
    );
    return twin.trainableWeights.map((w) => tf.keep(grads[(w.read() as tf.Variable).name]));
  });
  trainer.iteration(x, y);
  const after = trainer.classifier.trainableWeights.map((w) => Float32Array.from(w.read().dataSync()));
  let worst = 0;
  after.forEach((a, i) => {
    const g = expectedGrads[i].dataSync();
    // Momentum's first step: w1 = w0 - lr * (g + wd * w0).
    const expected = before[i].map((w0, j) => w0 - lr * (g[j] + wd * w0));
    const scale = Math.max(1e-3, ...Array.from(g, (v) => Math.abs(lr * v)));
    worst = Math.max(worst, maxAbsDiff(a, expected) / scale);
  });
  assert.ok(worst < 2e-3, `classifier update differs from SGD on eq. 8 by ${worst} (relative)`);
  tf.dispose([x, y, ...expectedGrads]);
  twin.dispose();
});

test('F keeps the classifier fixed; the masker update never changes classifier weights', () => {
  const trainer = new CasmTrainer(tinyConfig({ thinning: 'F' }));
  const cls0 = values(trainer.classifier);
  const dec0 = values(trainer.masker.decoder);
  for (let i = 0; i < 3; i++) {
    const { x, y } = batch(i);
    const s = trainer.iteration(x, y);
    assert.equal(s.scoredBy, 'snapshot');
    tf.dispose([x, y]);
  }
  values(trainer.classifier).forEach((w, i) => assert.equal(maxAbsDiff(w, cls0[i]), 0, `classifier weight ${i} moved`));
  const moved = values(trainer.masker.decoder).some((w, i) => maxAbsDiff(w, dec0[i]) > 0);
  assert.ok(moved, 'the masker learned nothing');
});

test('statistics of an iteration are in range', () => {
  const trainer = new CasmTrainer(tinyConfig({ thinning: 'L100' }));
  const { x, y } = batch(1);
  const s = trainer.iteration(x, y);
  assert.equal(s.step, 1);
  assert.ok(s.areaMean > 0 && s.areaMean < 1);
  assert.ok(s.entropy >= 0 && s.entropy <= Math.log(5) + 1e-5);
  for (const v of [s.accClean, s.accMasked, s.gated]) assert.ok(v >= 0 && v <= 1);
  assert.equal(s.lambda, (10 * Math.log(5)) / Math.log(1000), 'L100 entropy preset scaled to 5 classes');
  assert.ok(s.gated <= s.accClean + 1e-6, 'gated images are a subset of the clean-correct ones');
  tf.dispose([x, y]);
});

test("maskerImages: 'correct' learns nothing from images the classifier gets wrong; 'all' scores every image", () => {
  const { x } = batch(3);
  // Labels the untrained classifier gets wrong, every one (its training-mode argmax, as the iteration computes it, plus 1).
  const probe = new CasmTrainer(tinyConfig());
  const predicted = tf.tidy(() => tf.argMax((probe.classifier.apply(x, { training: true }) as tf.Tensor[])[5]!, 1).dataSync());
  probe.dispose();
  const y = tf.tensor1d(
    Array.from(predicted, (p) => (p + 1) % TINY.classes),
    'int32',
  );
  const run = (maskerImages: 'correct' | 'all') => {
    const trainer = new CasmTrainer(tinyConfig({ thinning: 'L', maskerImages }));
    const s = trainer.iteration(x, y);
    trainer.dispose();
    return { s };
  };
  const correct = run('correct');
  assert.equal(correct.s.accClean, 0);
  assert.equal(correct.s.maskerLoss, 0, 'no image counts: the loss is 0');
  assert.equal(correct.s.gated, 0);
  const all = run('all');
  assert.equal(all.s.accClean, 0);
  // Every image counts: L = -mean H + lambda * mean(g * area), g = the masked-out image is wrong.
  assert.ok(all.s.gated > 0, `gated ${all.s.gated}`);
  assert.ok(all.s.maskerLoss < 0 && all.s.maskerLoss >= -all.s.entropy - 1e-6, `loss ${all.s.maskerLoss}, entropy ${all.s.entropy}`);
  if (all.s.gated === 1) assert.ok(Math.abs(all.s.maskerLoss - (-all.s.entropy + all.s.lambda * all.s.areaMean)) < 1e-5);
  tf.dispose([x, y]);
});

const trainable = (m: tf.LayersModel) => m.trainableWeights.map((w) => Float32Array.from(w.read().dataSync()));

// BN statistics may have seen the bad batch (the forward pass updates them); the run stops anyway
// and what must survive is the last checkpoint, which the training-run tests check.
test('a non-finite loss stops the iteration before any optimiser step, naming the step', () => {
  const trainer = new CasmTrainer(tinyConfig({ thinning: 'L' }));
  const good = batch(2);
  trainer.iteration(good.x, good.y);
  const w0 = trainable(trainer.classifier);
  const m0 = trainable(trainer.masker.decoder);
  const bad = tf.fill([4, 32, 32, 3], NaN) as tf.Tensor4D;
  assert.throws(
    () => trainer.iteration(bad, good.y),
    (e: Error) => e instanceof NonFiniteLossError && /step 2: classifier loss is NaN/.test(e.message),
  );
  assert.equal(trainer.step, 1);
  trainable(trainer.classifier).forEach((w, i) => assert.equal(maxAbsDiff(w, w0[i]), 0));
  trainable(trainer.masker.decoder).forEach((w, i) => assert.equal(maxAbsDiff(w, m0[i]), 0));
  tf.dispose([good.x, good.y, bad]);
});

test('mask terms: the masked-in pass moves the masker, not the classifier or its BatchNorm statistics', () => {
  const run = (maskedIn: number) => {
    const trainer = new CasmTrainer(tinyConfig({ thinning: 'L', maskTerms: { tv: 0.1, maskedIn } }));
    const { x, y } = batch(5);
    const s = trainer.iteration(x, y);
    const out = { s, classifier: values(trainer.classifier), decoder: values(trainer.masker.decoder) };
    trainer.dispose();
    tf.dispose([x, y]);
    return out;
  };
  const [off, on] = [run(0), run(1)];
  assert.equal(off.s.maskedIn, 0);
  assert.ok(on.s.maskedIn > 0 || on.s.accClean === 0, `masked-in CE ${on.s.maskedIn}`);
  assert.ok(on.s.tv > 0 && Math.abs(on.s.tv - off.s.tv) < 1e-6, 'the same masks before the update');
  // Every classifier weight, BN moving statistics included, as without the term.
  on.classifier.forEach((w, i) => assert.equal(maxAbsDiff(w, off.classifier[i]!), 0, `classifier weight ${i}`));
  if (on.s.accClean > 0)
    assert.ok(
      on.decoder.some((w, i) => maxAbsDiff(w, off.decoder[i]!) > 0),
      'the term changed the masker update',
    );
});

test("bnStatistics 'clean': the classifier's moving statistics see the clean batch only, not the masked-out ones", () => {
  const stats = (m: tf.LayersModel) => m.nonTrainableWeights.map((w) => Float32Array.from(w.read().dataSync()));
  const { x, y } = batch(6);
  // What one training-mode forward of the clean batch makes of a fresh classifier's statistics.
  const cfg = tinyConfig({ thinning: 'L' });
  const fresh = buildResNet(cfg.arch, 'classifier', cfg.seed * 10_000);
  tf.tidy(() => void fresh.apply(x, { training: true }));
  const expected = stats(fresh);
  const after = (bnStatistics: 'all' | 'clean') => {
    const trainer = new CasmTrainer({ ...cfg, bnStatistics });
    trainer.iteration(x, y);
    const out = { stats: stats(trainer.classifier), weights: trainable(trainer.classifier) };
    trainer.dispose();
    return out;
  };
  const [all, clean] = [after('all'), after('clean')];
  clean.stats.forEach((s, i) => assert.ok(maxAbsDiff(s, expected[i]!) < 1e-6, `statistic ${i}: ${maxAbsDiff(s, expected[i]!)}`));
  assert.ok(
    all.stats.some((s, i) => maxAbsDiff(s, expected[i]!) > 1e-4),
    "'all' averages the masked-out batches in too",
  );
  // Training-mode forwards normalise with the batch's own statistics: the update is the same.
  clean.weights.forEach((w, i) => assert.ok(maxAbsDiff(w, all.weights[i]!) < 1e-6, `weight ${i}`));
  fresh.dispose();
  tf.dispose([x, y]);
});

test('tf.memory().numTensors stays flat over 200 iterations', () => {
  const trainer = new CasmTrainer(tinyConfig({ thinning: 'L100', trainNoise: 0.1, maskTerms: { tv: 0.1, maskedIn: 1 } }));
  const { x, y } = batch(3);
  // Warm-up builds the optimiser slots and the snapshot model.
  for (let i = 0; i < 20; i++) trainer.iteration(x, y);
  const start = tf.memory().numTensors;
  for (let i = 0; i < 200; i++) trainer.iteration(x, y);
  assert.equal(tf.memory().numTensors, start);
  tf.dispose([x, y]);
});

test('health: runaway weights and saturated masks are warned about once per episode; non-finite weights stop', () => {
  const trainer = new CasmTrainer(tinyConfig({ thinning: 'L' }));
  const watch = new HealthWatch({ maxAbsWeight: 100, saturatedArea: 0.02, saturatedChecks: 2 });
  const stats = (areaMean: number) => ({ areaMean }) as StepStats;
  assert.deepEqual(watch.check(trainer, stats(0.3)).warnings, []);
  const kernel = trainer.masker.decoder.getLayer('decoder_out').getWeights()[0]!;
  const big = tf.tidy(() => tf.mul(kernel, 0).add(1e3));
  const bias = trainer.masker.decoder.getLayer('decoder_out').getWeights()[1]!;
  trainer.masker.decoder.getLayer('decoder_out').setWeights([big, bias]);
  const first = watch.check(trainer, stats(0.999));
  assert.equal(first.maskerMaxAbs, 1e3);
  assert.equal(first.warnings.length, 1);
  assert.match(first.warnings[0]!, /masker weights have diverged \(max \|w\| = 1\.00e\+3 > 100\)/);
  // Still diverged: no repeat; the second saturated check in a row warns about the masks.
  const second = watch.check(trainer, stats(0.001));
  assert.deepEqual(
    second.warnings.map((w) => w.split(' ')[0]),
    ['masks'],
  );
  assert.match(second.warnings[0]!, /all-0 or all-1 for 2 checks/);
  assert.deepEqual(watch.check(trainer, stats(0.001)).warnings, []);
  const nan = tf.tidy(() => tf.mul(kernel, Number.NaN));
  trainer.masker.decoder.getLayer('decoder_out').setWeights([nan, bias]);
  assert.throws(
    () => watch.check(trainer, stats(0.3)),
    (e: Error) => e instanceof DivergenceError && /step 0: masker weights are no longer finite/.test(e.message),
  );
  tf.dispose([big, nan]);
  trainer.dispose();
});
