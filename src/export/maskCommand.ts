/**
 * `casm mask --model <dir> <images | folders> --out <dir> [--png] [--npy] [--boxes]`: batch
 * inference with an exported mask network (exportMasker.ts) on any backend. Images are decoded
 * like `casm explain`'s (images.ts: short side resized to the model's size, centre-cropped) and fed
 * as pixel values 0..255; the network normalises them itself. Writes
 *   <out>/masks.jsonl           one line per file: {file, name, size, area[, box]} or {file, skipped, reason}
 *   <out>/<name>-mask.png       the mask in gray (--png)
 *   <out>/<name>-overlay.png    jet mask over the image, the box drawn in white with --boxes (--png)
 *   <out>/<name>-mask.npy       the mask, float32 H x W (--npy)
 * `area` is the mean of the mask; `box` is [x0, y0, x1, y1] (x1, y1 exclusive) in model-input
 * pixels, from the largest component of mask >= mean (maskBox), null for a flat mask.
 * Files that cannot be decoded are skipped, logged, listed at the end and in masks.jsonl.
 */
import * as tf from '@tensorflow/tfjs';
import { appendFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { denormalize } from '../data/normalize.js';
import { maskBox, type Box } from '../eval/localization.js';
import { colorize, imagesToRgb, overlay, png } from '../explain/display.js';
import { loadImages, uniqueStems } from '../explain/images.js';
import { formatDuration } from '../log/progress.js';
import { loadMaskNetwork } from './exportMasker.js';

/** A wrong path or option: the CLI turns it into a usage error (exit code 2). */
export class MaskUsageError extends Error {}

export interface MaskOptions {
  /** A directory written by `casm export`. */
  model: string;
  /** Image files and folders (a folder contributes its files, sorted; hidden ones skipped). */
  inputs: string[];
  out: string;
  png: boolean;
  npy: boolean;
  boxes: boolean;
  batchSize: number;
  log: (line: string) => void;
}

export interface MaskRecord {
  file: string;
  name: string;
  /** [height, width] of the mask (the model's input size). */
  size: [number, number];
  area: number;
  box?: Box | null;
}

export interface MaskResult {
  records: MaskRecord[];
  skipped: string[];
  jsonl: string;
}

/** Files and folders -> files. */
export function expandInputs(inputs: string[]): string[] {
  const files: string[] = [];
  for (const p of inputs) {
    if (!existsSync(p)) throw new MaskUsageError(`${p}: no such file or directory`);
    if (statSync(p).isDirectory()) {
      const inside = readdirSync(p)
        .filter((f) => !f.startsWith('.'))
        .sort()
        .map((f) => join(p, f))
        .filter((f) => statSync(f).isFile());
      files.push(...inside);
    } else {
      files.push(p);
    }
  }
  if (files.length === 0) throw new MaskUsageError(`no image files in ${inputs.join(', ')}`);
  return files;
}

/** A float32 H x W array as NumPy .npy (format 1.0). */
export function npyBytes(data: Float32Array, shape: number[]): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header = header + ' '.repeat(pad % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

function drawBox(rgb: Uint8Array, w: number, box: Box): void {
  const [x0, y0, x1, y1] = box;
  const put = (x: number, y: number) => rgb.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3);
  for (let x = x0; x < x1; x++) {
    put(x, y0);
    put(x, y1 - 1);
  }
  for (let y = y0; y < y1; y++) {
    put(x0, y);
    put(x1 - 1, y);
  }
}

export async function maskCommand(o: MaskOptions): Promise<MaskResult> {
  const files = expandInputs(o.inputs);
  const { model, meta } = await loadMaskNetwork(o.model);
  try {
    const h = meta.input.height;
    const w = meta.input.width;
    o.log(
      `mask: ${o.model} (${meta.training.thinning}/${meta.training.score}, step ${meta.source.step}, ${w}x${h}, ` +
        `casm-ts ${meta.projectVersion}${meta.quantization !== 'none' ? `, ${meta.quantization}` : ''}) on ${tf.getBackend()}: ${files.length} file(s)`,
    );
    mkdirSync(o.out, { recursive: true });
    const jsonl = join(o.out, 'masks.jsonl');
    writeFileSync(jsonl, '');
    const names = uniqueStems(files);
    const result: MaskResult = { records: [], skipped: [], jsonl };
    const t0 = performance.now();
    for (let start = 0; start < files.length; start += o.batchSize) {
      const batchFiles = files.slice(start, start + o.batchSize);
      const lines: string[] = [];
      const decoded = await loadImages(batchFiles, [h, w, 3], (file, reason) => {
        o.log(`skipping ${file}: cannot decode it (${reason})`);
        result.skipped.push(file);
        lines.push(JSON.stringify({ file, skipped: true, reason }));
      });
      if (decoded) {
        const { x, indices } = decoded;
        let values: Float32Array;
        let pictures: Uint8Array[] = [];
        try {
          // images.ts hands out normalised images; the network takes the pixel bytes back (exact after rounding).
          const x01 = denormalize(x);
          const pixels = tf.tidy(() => tf.round(tf.mul(x01, 255)));
          try {
            const masks = model.predict(pixels) as tf.Tensor4D;
            values = masks.dataSync() as Float32Array;
            masks.dispose();
            if (o.png) pictures = imagesToRgb(x01);
          } finally {
            tf.dispose([x01, pixels]);
          }
        } finally {
          x.dispose();
        }
        for (const [k, i] of indices.entries()) {
          const file = files[start + i];
          const name = names[start + i];
          const mask = values.slice(k * h * w, (k + 1) * h * w);
          let sum = 0;
          for (const v of mask) sum += v;
          const record: MaskRecord = { file, name, size: [h, w], area: sum / mask.length };
          const box = o.boxes ? maskBox(mask, h, w, meta.threshold?.alpha ?? 1) : null;
          if (o.boxes) record.box = box;
          if (o.png) {
            writeFileSync(join(o.out, `${name}-mask.png`), await png(colorize(mask, 'gray'), w, h));
            const over = overlay(pictures[k], colorize(mask, 'jet'));
            if (o.boxes && box) drawBox(over, w, box);
            writeFileSync(join(o.out, `${name}-overlay.png`), await png(over, w, h));
          }
          if (o.npy) writeFileSync(join(o.out, `${name}-mask.npy`), npyBytes(mask, [h, w]));
          result.records.push(record);
          lines.push(JSON.stringify(record));
        }
      }
      // One line per file, in input order (skipped ones were pushed first; sort them into place).
      const order = new Map(batchFiles.map((f, i) => [f, i]));
      lines.sort((a, b) => order.get((JSON.parse(a) as { file: string }).file)! - order.get((JSON.parse(b) as { file: string }).file)!);
      if (lines.length) appendFileSync(jsonl, lines.join('\n') + '\n');
      const done = start + batchFiles.length;
      const secs = (performance.now() - t0) / 1000;
      const rate = result.records.length / Math.max(secs, 1e-9);
      const eta = ((files.length - done) * secs) / done;
      o.log(
        `mask: ${done}/${files.length} files, ${result.records.length} masks, ${result.skipped.length} skipped ` +
          `(${Math.round((100 * done) / files.length)}%) | ${rate.toFixed(1)} masks/s | ETA ${formatDuration(eta)}`,
      );
    }
    if (result.records.length === 0) throw new Error(`none of the ${files.length} file(s) could be decoded`);
    if (result.skipped.length) o.log(`skipped ${result.skipped.length} file(s) that could not be decoded:\n${result.skipped.map((f) => `  ${f}`).join('\n')}`);
    o.log(`mask: ${result.records.length} mask(s) -> ${o.out} (masks.jsonl${o.png ? ', PNGs' : ''}${o.npy ? ', .npy' : ''})`);
    return result;
  } finally {
    model.dispose();
  }
}
