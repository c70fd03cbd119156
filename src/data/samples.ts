/**
 * Common types of the streaming data pipeline: one encoded sample as every layout
 * reader yields it, the problems a reader skips over, and a small pull-based byte reader over
 * an async stream of chunks (a file read stream), shared by the tar and TFRecord readers.
 *
 * Nothing here depends on tfjs, so the readers can run in a worker thread.
 */
import { open, type FileHandle } from 'node:fs/promises';

/** [x0, y0, x1, y1] in pixels of the original (stored, upright) image; x1, y1 exclusive. */
export type PixelBox = [number, number, number, number];

/** Where a sample or a problem is: the file and the byte offset (of the tar header / record). */
export interface SampleSource {
  file: string;
  offset: number;
}

/** One encoded sample, as every layout reader yields it. */
export interface Sample {
  key: string;
  /** The encoded image (JPEG or PNG bytes). */
  image: Uint8Array;
  /** 0-based class index. */
  label: number;
  synset?: string;
  /** Ground-truth boxes of the sample's class, original pixels. */
  boxes?: PixelBox[];
  /** Original size where the layout records it (TFRecord); the decoder measures it anyway. */
  width?: number;
  height?: number;
  source: SampleSource;
}

export type ProblemKind =
  | 'truncated'
  | 'bad-header'
  | 'unsafe-path'
  | 'unsupported-entry'
  | 'too-large'
  | 'incomplete-sample'
  | 'bad-label'
  | 'bad-crc'
  | 'bad-record'
  | 'no-label'
  | 'unknown-synset'
  | 'unreadable'
  | 'symlink-cycle'
  | 'no-class-box'
  | 'no-annotation'
  | 'duplicate-key'
  | 'bad-annotation'
  | 'decode-error';

export interface Problem {
  kind: ProblemKind;
  file: string;
  offset: number;
  message: string;
}

/**
 * What a reader skipped and why. `count` is exact; `list` keeps the first `maxKept` entries so a
 * huge broken data set cannot fill memory. Plain data (JSON-able) so a worker can post it back.
 */
export class Problems {
  count = 0;
  readonly list: Problem[] = [];
  readonly byKind: Partial<Record<ProblemKind, number>> = {};

  constructor(
    readonly maxKept = 1000,
    private readonly onProblem?: (p: Problem) => void,
  ) {}

  add(kind: ProblemKind, file: string, offset: number, message: string): void {
    const p: Problem = { kind, file, offset, message };
    this.count++;
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    if (this.list.length < this.maxKept) this.list.push(p);
    this.onProblem?.(p);
  }

  /** One line per problem, `file@offset: kind: message`. */
  format(): string[] {
    return this.list.map((p) => `${p.file}@${p.offset}: ${p.kind}: ${p.message}`);
  }
}

/** An async iterable of samples with the problems met so far (read it during or after iteration). */
export interface SampleStream extends AsyncIterable<Sample> {
  readonly problems: Problems;
}

/** Wraps an async generator factory into a SampleStream sharing one Problems object. */
export function sampleStream(problems: Problems, gen: () => AsyncGenerator<Sample>): SampleStream {
  return {
    problems,
    [Symbol.asyncIterator]: gen,
  };
}

export type ByteSource = string | Uint8Array | AsyncIterable<Uint8Array>;

/** A chunk source that can jump ahead without reading (a file): lets readers count cheaply. */
interface Seekable {
  advance(n: number): Promise<number>;
}

/**
 * A file's chunks by positional reads. `advance(n)` moves the position without reading, so a
 * reader that only needs the headers (counting samples) does not read the image bytes.
 */
class FileChunks implements AsyncIterable<Uint8Array>, Seekable {
  private fh: FileHandle | null = null;
  private pos = 0;
  private size = 0;

  constructor(
    private readonly path: string,
    private readonly chunk: number,
  ) {}

  private async handle(): Promise<FileHandle> {
    if (this.fh === null) {
      this.fh = await open(this.path, 'r');
      this.size = (await this.fh.stat()).size;
    }
    return this.fh;
  }

  async advance(n: number): Promise<number> {
    await this.handle();
    const step = Math.max(0, Math.min(n, this.size - this.pos));
    this.pos += step;
    return step;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    const fh = await this.handle();
    try {
      for (;;) {
        const buf = new Uint8Array(Math.min(this.chunk, Math.max(0, this.size - this.pos)));
        if (buf.length === 0) return;
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.pos);
        if (bytesRead === 0) return;
        this.pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      this.fh = null;
      await fh.close();
    }
  }
}

/** File path -> positional file chunks; bytes -> one chunk; an async iterable as is. */
export function chunksOf(src: ByteSource, chunkBytes = 1 << 20): AsyncIterable<Uint8Array> {
  if (typeof src === 'string') return new FileChunks(src, chunkBytes);
  if (src instanceof Uint8Array) {
    return (async function* () {
      yield src;
    })();
  }
  return src;
}

/**
 * Pull-based reader over chunks: `read(n)` returns exactly n bytes, or fewer only at the end of
 * the stream; `offset` is the position of the next unread byte. Copies only when a read spans
 * chunks.
 */
export class ByteReader {
  private it: AsyncIterator<Uint8Array>;
  private readonly seekable: Seekable | null;
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private done = false;
  offset = 0;

  constructor(chunks: AsyncIterable<Uint8Array>) {
    this.it = chunks[Symbol.asyncIterator]();
    this.seekable = chunks instanceof FileChunks ? chunks : null;
  }

  private async fill(): Promise<boolean> {
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      if (r.value.length === 0) continue;
      this.buf = r.value;
      this.pos = 0;
      return true;
    }
    return false;
  }

  async read(n: number): Promise<Uint8Array> {
    if (this.pos >= this.buf.length && !(await this.fill())) return new Uint8Array(0);
    if (this.buf.length - this.pos >= n) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.pos >= this.buf.length && !(await this.fill())) break;
      const take = Math.min(n - got, this.buf.length - this.pos);
      out.set(this.buf.subarray(this.pos, this.pos + take), got);
      this.pos += take;
      got += take;
    }
    this.offset += got;
    return got === n ? out : out.subarray(0, got);
  }

  /** Skips n bytes; returns how many were skipped (fewer only at the end). A file is not read. */
  async skip(n: number): Promise<number> {
    let left = n;
    const buffered = Math.min(left, this.buf.length - this.pos);
    this.pos += buffered;
    left -= buffered;
    if (left > 0 && this.seekable !== null && !this.done) left -= await this.seekable.advance(left);
    while (left > 0) {
      if (this.pos >= this.buf.length && !(await this.fill())) break;
      const take = Math.min(left, this.buf.length - this.pos);
      this.pos += take;
      left -= take;
    }
    this.offset += n - left;
    return n - left;
  }

  /** Stops the underlying stream (closes the file) when the reader is abandoned early. */
  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }
}
