/**
 * node dist/bench/libraries.js
 * The hand-written parts measured against the npm library for each, side by side in one process
 * (the README's table of hand-written code): tar reading against tar-stream, float16 conversion
 * against @petamoriken/float16, CRC32C (now @node-rs/crc32) against the table-driven JavaScript
 * it replaced, brace expansion against braces. Not a test: nothing here asserts a speed.
 */
import { setFloat16 } from '@petamoriken/float16';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import braces from 'braces';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import tarStream from 'tar-stream';
import { expandBraces } from '../src/data/spec.js';
import { readTarMembers } from '../src/data/tar.js';
import { toFloat16Bits } from '../src/export/exportMasker.js';

const ROUNDS = 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function timed(f: () => unknown): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}
async function row(what: string, bytes: number, ours: () => unknown, lib: () => unknown, libName: string): Promise<void> {
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    a.push(await timed(ours));
    b.push(await timed(lib));
  }
  const rate = (ms: number) => (bytes > 0 ? `${(bytes / 1e6 / (ms / 1e3)).toFixed(0)} MB/s` : `${ms.toFixed(0)} ms`);
  console.log(`${what}: ours ${rate(median(a))}, ${libName} ${rate(median(b))} (medians of ${ROUNDS} rounds; ours ${a.map(rate).join(' / ')})`);
}

// tar: 4,000 members of 2-14 KB (a WebDataset shard's shape), written by tar-stream, read by both.
const members = Array.from({ length: 4000 }, (_, i) => randomBytes(2048 + ((i * 2654435761) % 12288)));
const pack = tarStream.pack();
const chunks: Buffer[] = [];
pack.on('data', (c: unknown) => chunks.push(c as Buffer));
members.forEach((m, i) => pack.entry({ name: `${String(i).padStart(6, '0')}.jpg`, size: m.length }, m));
pack.finalize();
await new Promise<void>((res) => pack.on('end', () => res()));
// Read from a file, as shards are (page cache warm after the first round).
const tarFile = join(mkdtempSync(join(tmpdir(), 'casm-bench-tar-')), 'shard.tar');
writeFileSync(tarFile, Buffer.concat(chunks));
const tarBytes = statSync(tarFile).size;
const payload = members.reduce((n, m) => n + m.length, 0);
let seen = 0;
await row(
  `tar file, ${members.length} members in ${(tarBytes / 1e6).toFixed(1)} MB`,
  tarBytes,
  async () => {
    for await (const m of readTarMembers(tarFile)) seen += m.data.length;
  },
  () =>
    new Promise<void>((resolve, reject) => {
      const ex = tarStream.extract();
      ex.on('entry', (_h, stream, next) => {
        stream.on('data', (c: unknown) => (seen += (c as Buffer).length));
        stream.on('end', next);
      });
      ex.on('finish', resolve);
      ex.on('error', reject);
      createReadStream(tarFile).pipe(ex);
    }),
  'tar-stream',
);
if (seen !== 2 * ROUNDS * payload) throw new Error(`tar: read ${seen} bytes, expected ${2 * ROUNDS * payload}`);
rmSync(dirname(tarFile), { recursive: true });

// float16: a ResNet-50's 25.6M weights, and every 61st float32 bit pattern for agreement.
const weights = Float32Array.from({ length: 25_557_032 }, (_, i) => Math.sin(i) * 0.1);
const bits = new Uint32Array(weights.buffer);
const half = new Uint16Array(weights.length);
const view = new DataView(new ArrayBuffer(2 * weights.length));
await row(
  'float16, 25.6M weights',
  0,
  () => {
    for (let i = 0; i < bits.length; i++) half[i] = toFloat16Bits(bits[i]!);
  },
  () => {
    for (let i = 0; i < weights.length; i++) setFloat16(view, 2 * i, weights[i]!, true);
  },
  '@petamoriken/float16 setFloat16',
);
const one = new DataView(new ArrayBuffer(2));
const u = new Uint32Array(1);
const f = new Float32Array(u.buffer);
let differ = 0;
let patterns = 0;
for (let b = 0; b < 2 ** 32; b += 61, patterns++) {
  u[0] = b;
  setFloat16(one, 0, f[0]!);
  if (one.getUint16(0) !== toFloat16Bits(b) && !Number.isNaN(f[0])) differ++;
}
console.log(`float16: ${differ} of ${patterns} float32 patterns (NaNs aside) convert differently`);

// CRC32C: 64 MB in 16 KB records (a TFRecord file's shape).
const TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c >>> 0;
});
const tableCrc32c = (bytes: Uint8Array) => {
  let c = ~0 >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
};
const records = Array.from({ length: 4096 }, () => randomBytes(16 << 10));
await row(
  'CRC32C, 4096 records of 16 KB',
  64 << 20,
  () => records.forEach((r) => nativeCrc32c(r)),
  () => records.forEach((r) => tableCrc32c(r)),
  'the former table-driven JavaScript',
);
const mismatches = records.filter((r) => tableCrc32c(r) !== nativeCrc32c(r) >>> 0).length;
console.log(`CRC32C: @node-rs/crc32 and the table disagree on ${mismatches} of ${records.length} records`);

// Brace expansion: the same names on well-formed patterns; malformed ones and long ranges differ.
for (const p of ['train-{000000..001281}.tar', 'a{1..10..3}b', '{a,{b,c}}d', 'x{a}y', 'a{b', 'a}b{c,d}']) {
  const show = (f: () => string[]) => {
    try {
      const r = f();
      return `${r.length} names (${r.slice(0, 2).join(', ')}${r.length > 2 ? ', ...' : ''})`;
    } catch (e) {
      return `error: ${(e as Error).message.slice(0, 90)}`;
    }
  };
  console.log(`braces ${JSON.stringify(p)}: ours ${show(() => expandBraces(p))} | braces ${show(() => braces(p, { expand: true }))}`);
}
