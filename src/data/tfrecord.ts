/**
 * TFRecord files and the tf.train.Example protobuf, enough for the ImageNet shards written by
 * TensorFlow's build_imagenet_data.py.
 *
 * Framing of one record: uint64 LE length, uint32 LE masked CRC32C of the 8 length bytes, the
 * data, uint32 LE masked CRC32C of the data. A record whose length CRC fails ends the file (the
 * next record boundary is unknown); one whose data CRC fails, that does not parse, or that has no
 * label is skipped; each is recorded in Problems with the file and the record's byte offset.
 */
import { maskedCrc32c } from '../util/crc32c.js';
import { ByteReader, chunksOf, Problems, sampleStream, type ByteSource, type PixelBox, type Sample, type SampleStream } from './samples.js';

export interface TfRecord {
  /** Byte offset of the record's length field. */
  offset: number;
  data: Uint8Array;
}

export interface TfRecordReadOptions {
  file?: string;
  problems?: Problems;
  /** Records longer than this are treated as corrupt framing (default 256 MiB). */
  maxRecordBytes?: number;
  /** Check the data CRC (default true). */
  verify?: boolean;
  /** false: records are yielded with empty data, the data not read (counting). Default true. */
  readData?: boolean;
}

/** The raw records of a TFRecord file (path, bytes or chunk stream). */
export async function* readTfRecords(src: ByteSource, opts: TfRecordReadOptions = {}): AsyncGenerator<TfRecord> {
  const file = opts.file ?? (typeof src === 'string' ? src : '<tfrecord>');
  const problems = opts.problems ?? new Problems();
  const maxBytes = opts.maxRecordBytes ?? 256 * 1024 * 1024;
  const verify = opts.verify ?? true;
  const r = new ByteReader(chunksOf(src));
  try {
    for (;;) {
      const offset = r.offset;
      const head = await r.read(12);
      if (head.length === 0) return;
      if (head.length < 12) {
        problems.add('truncated', file, offset, `file ends inside a record header (${head.length} of 12 bytes)`);
        return;
      }
      const view = new DataView(head.buffer, head.byteOffset, 12);
      const lenCrc = view.getUint32(8, true);
      if (maskedCrc32c(head.subarray(0, 8)) !== lenCrc) {
        problems.add('bad-crc', file, offset, 'length CRC mismatch: record framing lost, rest of file skipped');
        return;
      }
      const len64 = view.getBigUint64(0, true);
      if (len64 > BigInt(maxBytes)) {
        problems.add('too-large', file, offset, `record of ${len64} bytes (limit ${maxBytes}), rest of file skipped`);
        return;
      }
      const len = Number(len64);
      if (opts.readData === false) {
        const got = await r.skip(len + 4);
        if (got < len + 4) {
          problems.add('truncated', file, offset, `file ends inside a record (${got} of ${len + 4} bytes)`);
          return;
        }
        yield { offset, data: new Uint8Array(0) };
        continue;
      }
      const body = await r.read(len + 4);
      if (body.length < len + 4) {
        problems.add('truncated', file, offset, `file ends inside a record (${body.length} of ${len + 4} bytes)`);
        return;
      }
      const data = body.subarray(0, len);
      if (verify) {
        const dataCrc = new DataView(body.buffer, body.byteOffset + len, 4).getUint32(0, true);
        if (maskedCrc32c(data) !== dataCrc) {
          problems.add('bad-crc', file, offset, `data CRC mismatch in a record of ${len} bytes: record skipped`);
          continue;
        }
      }
      yield { offset, data: data.slice() };
    }
  } finally {
    await r.close();
  }
}

/** One record's framing: length, masked CRC of the length, data, masked CRC of the data. */
export function encodeTfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(data.length), true);
  v.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  v.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Protobuf: tf.train.Example { Features features = 1 }; Features { map<string, Feature> feature = 1 };
// Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3 } };
// XList { repeated X value = 1 } (floats and int64s packed or not).

export type Feature = { kind: 'bytes'; value: Uint8Array[] } | { kind: 'float'; value: number[] } | { kind: 'int64'; value: number[] };

class Pb {
  p: number;
  constructor(
    readonly b: Uint8Array,
    start = 0,
    readonly end = b.length,
  ) {
    this.p = start;
  }
  get more(): boolean {
    return this.p < this.end;
  }
  varint(): bigint {
    let v = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.p >= this.end) throw new Error('varint runs past the end');
      const byte = this.b[this.p++]!;
      v |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
      shift += 7n;
    }
    throw new Error('varint longer than 10 bytes');
  }
  /** Small varint (tags, lengths). */
  uint(): number {
    const v = this.varint();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('length too large');
    return Number(v);
  }
  bytes(): Pb {
    const n = this.uint();
    if (this.p + n > this.end) throw new Error('length-delimited field runs past the end');
    const sub = new Pb(this.b, this.p, this.p + n);
    this.p += n;
    return sub;
  }
  view(): Uint8Array {
    return this.b.subarray(this.p, this.end);
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.p += 8;
    else if (wire === 2) this.p += this.uint();
    else if (wire === 5) this.p += 4;
    else throw new Error(`unsupported wire type ${wire}`);
    if (this.p > this.end) throw new Error('field runs past the end');
  }
  float32(): number {
    if (this.p + 4 > this.end) throw new Error('float runs past the end');
    const v = new DataView(this.b.buffer, this.b.byteOffset + this.p, 4).getFloat32(0, true);
    this.p += 4;
    return v;
  }
}

const int64 = (v: bigint): number => Number(BigInt.asIntN(64, v));

function decodeFeature(m: Pb): Feature | null {
  let f: Feature | null = null;
  while (m.more) {
    const tag = m.uint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (wire !== 2 || field < 1 || field > 3) {
      m.skip(wire);
      continue;
    }
    const list = m.bytes();
    if (field === 1) {
      const value: Uint8Array[] = [];
      while (list.more) {
        const t = list.uint();
        if (t === (1 << 3) + 2) value.push(list.bytes().view());
        else list.skip(t & 7);
      }
      f = { kind: 'bytes', value };
    } else if (field === 2) {
      const value: number[] = [];
      while (list.more) {
        const t = list.uint();
        if (t === (1 << 3) + 2) {
          const packed = list.bytes();
          while (packed.more) value.push(packed.float32());
        } else if (t === (1 << 3) + 5) value.push(list.float32());
        else list.skip(t & 7);
      }
      f = { kind: 'float', value };
    } else {
      const value: number[] = [];
      while (list.more) {
        const t = list.uint();
        if (t === (1 << 3) + 2) {
          const packed = list.bytes();
          while (packed.more) value.push(int64(packed.varint()));
        } else if (t === (1 << 3) + 0) value.push(int64(list.varint()));
        else list.skip(t & 7);
      }
      f = { kind: 'int64', value };
    }
  }
  return f;
}

const utf8 = new TextDecoder('utf-8');

/** tf.train.Example bytes -> its features by name. Throws on malformed protobuf. */
export function decodeExample(data: Uint8Array): Map<string, Feature> {
  const out = new Map<string, Feature>();
  const ex = new Pb(data);
  while (ex.more) {
    const tag = ex.uint();
    if (tag !== (1 << 3) + 2) {
      ex.skip(tag & 7);
      continue;
    }
    const features = ex.bytes();
    while (features.more) {
      const t = features.uint();
      if (t !== (1 << 3) + 2) {
        features.skip(t & 7);
        continue;
      }
      const entry = features.bytes();
      let key = '';
      let value: Feature | null = null;
      while (entry.more) {
        const et = entry.uint();
        if (et === (1 << 3) + 2) key = utf8.decode(entry.bytes().view());
        else if (et === (2 << 3) + 2) value = decodeFeature(entry.bytes());
        else entry.skip(et & 7);
      }
      if (value !== null) out.set(key, value);
    }
  }
  return out;
}

export interface ImagenetExample {
  image: Uint8Array;
  /** 0-based (the record's 1..1000 minus labelOffset). */
  label: number;
  synset?: string;
  width?: number;
  height?: number;
  /** Relative [0,1] boxes as stored: [xmin, ymin, xmax, ymax]. */
  relBoxes: [number, number, number, number][];
  filename?: string;
}

function bytesOf(f: Map<string, Feature>, k: string): Uint8Array | undefined {
  const v = f.get(k);
  return v?.kind === 'bytes' ? v.value[0] : undefined;
}
function intOf(f: Map<string, Feature>, k: string): number | undefined {
  const v = f.get(k);
  return v?.kind === 'int64' ? v.value[0] : undefined;
}
function floatsOf(f: Map<string, Feature>, k: string): number[] {
  const v = f.get(k);
  return v?.kind === 'float' ? v.value : [];
}

/**
 * The fields of build_imagenet_data.py. Returns a string (why) when the example is unusable:
 * no image, or no label.
 */
export function imagenetFromExample(f: Map<string, Feature>, labelOffset = 1): ImagenetExample | string {
  const image = bytesOf(f, 'image/encoded');
  if (image === undefined || image.length === 0) return 'no image/encoded bytes';
  const raw = intOf(f, 'image/class/label');
  if (raw === undefined) return 'no image/class/label';
  const label = raw - labelOffset;
  if (label < 0) return `image/class/label ${raw} is below ${labelOffset}`;
  const ex: ImagenetExample = { image, label, relBoxes: [] };
  const syn = bytesOf(f, 'image/class/synset');
  if (syn !== undefined) ex.synset = utf8.decode(syn);
  const fn = bytesOf(f, 'image/filename');
  if (fn !== undefined) ex.filename = utf8.decode(fn);
  const w = intOf(f, 'image/width');
  const h = intOf(f, 'image/height');
  if (w !== undefined && w > 0) ex.width = w;
  if (h !== undefined && h > 0) ex.height = h;
  const [x0, y0, x1, y1] = ['xmin', 'ymin', 'xmax', 'ymax'].map((c) => floatsOf(f, `image/object/bbox/${c}`));
  const n = Math.min(x0!.length, y0!.length, x1!.length, y1!.length);
  for (let i = 0; i < n; i++) ex.relBoxes.push([x0![i]!, y0![i]!, x1![i]!, y1![i]!]);
  return ex;
}

export interface TfRecordSampleOptions extends TfRecordReadOptions {
  /** Subtracted from image/class/label (default 1: build_imagenet_data.py labels are 1..1000). */
  labelOffset?: number;
}

/**
 * TFRecord shard (build_imagenet_data.py) -> samples. Boxes come out in pixels (relative x
 * width/height of the record); the key is image/filename, or `<file>@<offset>` without one.
 */
export function readTfRecord(src: ByteSource, opts: TfRecordSampleOptions = {}): SampleStream {
  const problems = opts.problems ?? new Problems();
  const file = opts.file ?? (typeof src === 'string' ? src : '<tfrecord>');
  return sampleStream(problems, async function* () {
    for await (const rec of readTfRecords(src, { ...opts, file, problems })) {
      let ex: ImagenetExample | string;
      try {
        ex = imagenetFromExample(decodeExample(rec.data), opts.labelOffset ?? 1);
      } catch (e) {
        problems.add('bad-record', file, rec.offset, `not a tf.train.Example: ${(e as Error).message}`);
        continue;
      }
      if (typeof ex === 'string') {
        problems.add(ex.includes('label') ? 'no-label' : 'bad-record', file, rec.offset, `record skipped: ${ex}`);
        continue;
      }
      const s: Sample = {
        key: ex.filename ?? `${file}@${rec.offset}`,
        image: ex.image,
        label: ex.label,
        source: { file, offset: rec.offset },
      };
      if (ex.synset !== undefined) s.synset = ex.synset;
      if (ex.width !== undefined) s.width = ex.width;
      if (ex.height !== undefined) s.height = ex.height;
      if (ex.relBoxes.length > 0 && ex.width !== undefined && ex.height !== undefined) {
        const w = ex.width;
        const h = ex.height;
        s.boxes = ex.relBoxes.map((b): PixelBox => [b[0] * w, b[1] * h, b[2] * w, b[3] * h]);
      }
      yield s;
    }
  });
}
