/** ClassifierPool and thinning: sizes, replacement, and which classifier the masker sees. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClassifierPool, type Thinning } from '../src/casm/pool.js';
import { Rng } from '../src/util/rng.js';

/** Runs `steps` pool updates; weights are tagged with their step so snapshots can be told apart. */
function run(thinning: Thinning, steps: number, seed = 1) {
  const pool = new ClassifierPool(thinning);
  const rng = new Rng(seed);
  let takes = 0;
  let current = -1;
  const take = () => {
    takes++;
    return [new Float32Array([current])];
  };
  pool.initialize(take);
  for (let s = 0; s < steps; s++) {
    current = s;
    pool.update(s, take, rng);
  }
  return { pool, takes, rng };
}

function drawCounts(pool: ClassifierPool, rng: Rng, n: number) {
  let current = 0;
  const bySnapshot = new Array(pool.snapshots.length).fill(0);
  for (let i = 0; i < n; i++) {
    const c = pool.choose(rng);
    if (c.kind === 'current') current++;
    else bySnapshot[c.index]++;
  }
  return { current, bySnapshot };
}

test('F: the pool is f_0 alone, taken once, and the masker always sees it', () => {
  const { pool, takes, rng } = run('F', 500);
  assert.equal(takes, 1);
  assert.deepEqual(
    pool.snapshots.map((s) => s.step),
    [-1],
  );
  assert.equal(pool.snapshots[0].weights[0][0], -1);
  const { current, bySnapshot } = drawCounts(pool, rng, 1000);
  assert.equal(current, 0);
  assert.deepEqual(bySnapshot, [1000]);
});

test('L: no snapshots, the masker always sees the current classifier', () => {
  const { pool, takes, rng } = run('L', 500);
  assert.equal(takes, 0);
  assert.equal(pool.snapshots.length, 0);
  assert.equal(drawCounts(pool, rng, 1000).current, 1000);
});

test('FL: f_1 after its first update, then current or f_1 with probability 1/2 each', () => {
  const { pool, takes, rng } = run('FL', 500);
  assert.equal(takes, 1);
  assert.deepEqual(
    pool.snapshots.map((s) => s.step),
    [0],
  );
  assert.equal(pool.snapshots[0].weights[0][0], 0, 'the snapshot holds the weights after update 0');
  const n = 20_000;
  const { current } = drawCounts(pool, rng, n);
  // Binomial(n, 1/2): 5 standard deviations is 354.
  assert.ok(Math.abs(current - n / 2) < 5 * Math.sqrt(n / 4), `current ${current} of ${n}`);
});

test('choose before any snapshot falls back to the current classifier', () => {
  const pool = new ClassifierPool('L100');
  const { current } = drawCounts(pool, new Rng(3), 100);
  assert.equal(current, 100);
});

test('L100: a snapshot every 100 iterations, at most 30, full pool replaces a random entry', () => {
  const { pool, takes, rng } = run('L100', 10_000);
  assert.equal(takes, 100, 'copies are taken only when a snapshot is due');
  assert.equal(pool.snapshots.length, 30);
  const steps = pool.snapshots.map((s) => s.step);
  assert.ok(steps.every((s) => s % 100 === 0));
  assert.equal(new Set(steps).size, 30);
  assert.ok(steps.includes(9_900), 'the newest snapshot always enters');
  pool.snapshots.forEach((s) => assert.equal(s.weights[0][0], s.step));
  // Random replacement (not FIFO) keeps some snapshots older than the last 30.
  assert.ok(Math.min(...steps) < 7_000, `oldest kept ${Math.min(...steps)}`);
  // The first 30 snapshots fill the pool in order.
  const early = run('L100', 3_000).pool.snapshots.map((s) => s.step);
  assert.deepEqual(
    early,
    Array.from({ length: 30 }, (_, i) => i * 100),
  );

  const n = 60_000;
  const { current, bySnapshot } = drawCounts(pool, rng, n);
  assert.ok(Math.abs(current - n / 2) < 5 * Math.sqrt(n / 4), `current ${current} of ${n}`);
  // Each snapshot expects n/2/30 = 1000 draws; 5 sd of Binomial(30000, 1/30) is about 155.
  for (const c of bySnapshot) assert.ok(Math.abs(c - 1000) < 160, `snapshot drawn ${c} times`);
});

test('L1000: a snapshot every 1000 iterations', () => {
  const { pool, takes } = run('L1000', 5_500);
  assert.equal(takes, 6);
  assert.deepEqual(
    pool.snapshots.map((s) => s.step),
    [0, 1000, 2000, 3000, 4000, 5000],
  );
});

test('replacement over many seeds is uniform over the pool slots', () => {
  // After 31 snapshots exactly one of the first 30 was replaced; which one should be uniform.
  const replaced = new Array(30).fill(0);
  for (let seed = 0; seed < 3000; seed++) {
    const { pool } = run('L100', 3_001, seed);
    const slot = pool.snapshots.findIndex((s) => s.step === 3_000);
    replaced[slot]++;
  }
  for (const c of replaced) assert.ok(Math.abs(c - 100) < 50, `slot replaced ${c} times of 3000 (expected 100)`);
});
