/**
 * End to end in a real browser: Debian's chromium (/usr/bin/chromium, driven headless by
 * playwright-core; no browser download) loads web/index.html from a local server on 127.0.0.1,
 * which loads an exported mask network with plain tfjs; an image of real handwritten digits is
 * picked through the page's file input, and the page's mask must match Node's (the same exported
 * network through loadMaskNetwork) within 1e-3. A screenshot is written to the test's temp dir and
 * copied to checkpoints/browser-test.png. A missing chromium is a failure: bash scripts/setup.sh
 * installs it.
 */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize, sep } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { loadCluttered } from '../src/data/clutteredMnist.js';
import { maskBox } from '../src/boxes.js';
import { exportMasker, loadMaskNetwork } from '../src/export/exportMasker.js';
import { REPO_ROOT } from '../src/version.js';
import { useTestBackend } from './helpers/backend.js';
import { trainTinyRun } from './helpers/tinyRun.js';

const CHROMIUM = process.env.CASM_CHROMIUM ?? '/usr/bin/chromium';
const SIZE = 64;
const root = mkdtempSync(join(tmpdir(), 'casm-browser-'));
const exportDir = join(root, 'exported');
const tamperedDir = join(root, 'tampered');
const imagePath = join(root, 'digits.png');
let server: Server | null = null;
let base = '';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.bin': 'application/octet-stream',
  '.png': 'image/png',
  '.map': 'application/json',
};

/** /web/model/* -> the export; /web/* and tfjs's dist/ -> the repository; nothing else. */
function serve(): Promise<string> {
  const mounts: [string, string][] = [
    ['/web/model/', exportDir],
    ['/web/tampered/', tamperedDir],
    ['/web/', join(REPO_ROOT, 'web')],
    ['/node_modules/@tensorflow/tfjs/dist/', join(REPO_ROOT, 'node_modules/@tensorflow/tfjs/dist')],
  ];
  server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const mount = mounts.find(([prefix]) => path.startsWith(prefix));
    const file = mount ? normalize(join(mount[1], path.slice(mount[0].length))) : null;
    if (!mount || !file || !(file + sep).startsWith(mount[1] + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server!.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server!.address() as AddressInfo).port}`)));
}

before(async () => {
  await useTestBackend();
  const runDir = join(root, 'run');
  await trainTinyRun(runDir, { inputSize: SIZE });
  await exportMasker({ checkpoint: runDir, out: exportDir });
  // One weight byte changed after export: the page must refuse it.
  cpSync(exportDir, tamperedDir, { recursive: true });
  const shard = readFileSync(join(tamperedDir, 'group1-shard1of1.bin'));
  shard[shard.length - 1] ^= 0x01;
  writeFileSync(join(tamperedDir, 'group1-shard1of1.bin'), shard);
  // A canvas of real MNIST handwriting (cluttered digits), RGB PNG at the model's size.
  const set = await loadCluttered({ split: 'test', count: 2, seed: 5, size: SIZE, minDigit: 20, maxDigit: 40 });
  const rgb = Buffer.alloc(SIZE * SIZE * 3);
  for (let p = 0; p < SIZE * SIZE; p++) rgb.fill(set.images[SIZE * SIZE + p], p * 3, p * 3 + 3);
  await sharp(rgb, { raw: { width: SIZE, height: SIZE, channels: 3 } })
    .png()
    .toFile(imagePath);
  writeFileSync(join(root, 'broken.png'), 'not an image');
  base = await serve();
});

after(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  rmSync(root, { recursive: true, force: true });
});

interface PageResult {
  mask: number[];
  box: [number, number, number, number] | null;
  area: number;
  backend: string;
  size: [number, number];
  ms: number;
}

test("the web page runs the exported network in headless chromium; its mask matches Node's within 1e-3", async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is not installed (bash scripts/setup.sh installs Debian's chromium)`);
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(root, 'profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 900, height: 700 },
  });
  const consoleLines: string[] = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    // Nothing but our server: any other request is a failure of the no-network rule.
    const foreign: string[] = [];
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(base + '/') || url.startsWith('blob:') || url.startsWith('data:')) return route.continue();
      foreign.push(url);
      return route.abort();
    });
    await page.goto(`${base}/web/index.html`);
    const ready = (await page.evaluate(() => (window as unknown as { casm: { ready: Promise<unknown> } }).casm.ready)) as { backend: string };
    assert.match((await page.textContent('#status')) ?? '', /model: .*, sha256 checked\) on /);

    await page.setInputFiles('#file', imagePath);
    await page.waitForFunction(
      () => (window as unknown as { casm: { last: unknown; error: unknown } }).casm.last || (window as unknown as { casm: { error: unknown } }).casm.error,
      null,
      {
        timeout: 60_000,
      },
    );
    const result = (await page.evaluate(() => (window as unknown as { casm: { last: unknown; error: unknown } }).casm.last)) as PageResult | null;
    assert.ok(result, `page error: ${await page.evaluate(() => (window as unknown as { casm: { error: unknown } }).casm.error)}\n${consoleLines.join('\n')}`);
    assert.deepEqual(result.size, [SIZE, SIZE]);
    assert.match((await page.textContent('#status')) ?? '', /digits\.png: mask area .*%, box /);

    const shot = join(root, 'browser-test.png');
    await page.screenshot({ path: shot, fullPage: true });
    mkdirSync(join(REPO_ROOT, 'checkpoints'), { recursive: true });
    copyFileSync(shot, join(REPO_ROOT, 'checkpoints', 'browser-test.png'));
    const info = await sharp(shot).metadata();
    assert.ok((info.width ?? 0) >= 600 && (info.height ?? 0) >= 300, `screenshot ${info.width}x${info.height}`);

    // Node: the same file, decoded by sharp, its pixel values through the same exported network.
    const { data } = await sharp(imagePath).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const { model } = await loadMaskNetwork(exportDir);
    const x01 = tf.tensor4d(Float32Array.from(data), [1, SIZE, SIZE, 3]);
    const out = model.predict(x01) as tf.Tensor4D;
    const nodeMask = out.dataSync() as Float32Array;
    tf.dispose([x01, out]);
    model.dispose();
    let worst = 0;
    for (let i = 0; i < nodeMask.length; i++) worst = Math.max(worst, Math.abs(nodeMask[i] - result.mask[i]));
    console.log(
      `# browser (chromium, tfjs backend ${ready.backend}, ${result.ms.toFixed(0)} ms) vs Node: max |diff| = ${worst.toExponential(3)}; ` +
        `area ${result.area.toFixed(4)}, box ${JSON.stringify(result.box)}; screenshot ${shot} -> checkpoints/browser-test.png`,
    );
    assert.equal(result.mask.length, SIZE * SIZE);
    assert.ok(worst < 1e-3, `browser vs Node max |diff| ${worst}`);
    // The page's box rule is the project's maskBox.
    assert.deepEqual(result.box, maskBox(Float32Array.from(result.mask), SIZE, SIZE));
    const nodeArea = nodeMask.reduce((a, v) => a + v, 0) / nodeMask.length;
    assert.ok(Math.abs(result.area - nodeArea) < 1e-3, `area ${result.area} vs ${nodeArea}`);

    // An undecodable file: an error on the page, not a crash.
    await page.evaluate(() => ((window as unknown as { casm: { last: unknown } }).casm.last = null));
    await page.setInputFiles('#file', join(root, 'broken.png'));
    await page.waitForFunction(() => (window as unknown as { casm: { error: unknown } }).casm.error);
    assert.match((await page.textContent('#status')) ?? '', /broken\.png: cannot decode it as an image/);

    // A tampered export: refused before tfjs sees it, naming the file.
    await page.goto(`${base}/web/index.html?model=tampered/`);
    await page.waitForFunction(() => (window as unknown as { casm: { error: unknown } }).casm.error);
    assert.match(
      (await page.textContent('#status')) ?? '',
      /cannot load the model: .*\/web\/tampered\/group1-shard1of1\.bin: corrupt \(sha256 differs from masker\.json\)/,
    );
    assert.deepEqual(foreign, [], 'the page requested nothing outside the local server');
  } finally {
    await context.close();
  }
});
