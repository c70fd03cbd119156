/**
 * A small TensorBoard event-file writer (no npm dependency).
 *
 * Event files are TFRecord-framed `tensorflow.Event` protos. Each record is
 *   uint64 LE length | uint32 LE masked CRC32C(length bytes) | data | uint32 LE masked CRC32C(data)
 * The first record is an Event carrying only wall_time and file_version "brain.Event:2".
 *
 * Proto field numbers (tensorboard/compat/proto/event.proto and summary.proto):
 *   Event         { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; SessionLog session_log = 7; }
 *   SessionLog    { SessionStatus status = 1; }   START = 1
 *   Summary       { repeated Value value = 1; }
 *   Summary.Value { string tag = 1; float simple_value = 2; Image image = 4; }
 *   Summary.Image { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { encodeTfRecord } from '../data/tfrecord.js';

// ---------------------------------------------------------------------------------------------
// Minimal protobuf writer
// ---------------------------------------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const textEncoder = new TextEncoder();

/** Appends protobuf wire-format fields into a growable byte buffer. */
export class ProtoWriter {
  private buf = new Uint8Array(64);
  private len = 0;

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private byte(b: number): void {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  /** Unsigned varint of a value in [0, 2^64). */
  rawVarint(value: bigint): void {
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  private tag(field: number, wire: number): void {
    this.rawVarint(BigInt((field << 3) | wire));
  }

  /** int64 / int32 field (negative values are encoded as 10-byte two's complement, like protobuf). */
  int64(field: number, value: number | bigint): void {
    const v = typeof value === 'bigint' ? value : BigInt(checkInteger(value));
    this.tag(field, WIRE_VARINT);
    this.rawVarint(BigInt.asUintN(64, v));
  }

  int32(field: number, value: number): void {
    this.int64(field, value);
  }

  double(field: number, value: number): void {
    this.tag(field, WIRE_FIXED64);
    this.ensure(8);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 8).setFloat64(0, value, true);
    this.len += 8;
  }

  float(field: number, value: number): void {
    this.tag(field, WIRE_FIXED32);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.rawVarint(BigInt(data.length));
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, textEncoder.encode(s));
  }

  /** Embedded message field. */
  message(field: number, msg: ProtoWriter): void {
    this.bytes(field, msg.finish());
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function checkInteger(v: number): number {
  if (!Number.isSafeInteger(v)) throw new RangeError(`expected a safe integer, got ${v}`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Event encoding
// ---------------------------------------------------------------------------------------------

function eventProto(wallTime: number, step: number | undefined, fill: (ev: ProtoWriter) => void): Uint8Array {
  const ev = new ProtoWriter();
  ev.double(1, wallTime);
  if (step !== undefined && step !== 0) ev.int64(2, step);
  fill(ev);
  return ev.finish();
}

function summaryEvent(wallTime: number, step: number, value: ProtoWriter): Uint8Array {
  return eventProto(wallTime, step, (ev) => {
    const summary = new ProtoWriter();
    summary.message(1, value);
    ev.message(5, summary);
  });
}

const FLUSH_THRESHOLD = 1 << 20; // 1 MiB

/** Process-wide counter appended to file names, so writers created in the same second differ. */
let fileCounter = 0;

/**
 * Writes TensorBoard event files, synchronously. Records are buffered in memory and appended to
 * the file by flush(), which also happens automatically once more than 1 MiB is buffered, and on
 * close().
 */
export class SummaryWriter {
  readonly logdir: string;
  readonly path: string;
  private fd: number | null;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  constructor(logdir: string) {
    this.logdir = logdir;
    mkdirSync(logdir, { recursive: true });
    const now = Date.now() / 1000;
    const secs = String(Math.floor(now)).padStart(10, '0');
    const name = `events.out.tfevents.${secs}.${hostname()}.${process.pid}.${fileCounter++}`;
    this.path = join(logdir, name);
    this.fd = openSync(this.path, 'a');
    this.push(eventProto(now, undefined, (ev) => ev.string(3, 'brain.Event:2')));
    this.flush();
  }

  /** Logs a scalar (stored as float32 simple_value; NaN and infinities are written as they are). */
  scalar(tag: string, value: number, step: number): void {
    const v = new ProtoWriter();
    v.string(1, tag);
    v.float(2, value);
    this.push(summaryEvent(Date.now() / 1000, checkInteger(step), v));
  }

  /**
   * Logs an image already encoded (PNG, or any format TensorBoard's browser can display).
   * channels is stored as the colorspace: 1 grayscale, 2 grayscale+alpha, 3 RGB, 4 RGBA.
   */
  image(tag: string, png: Uint8Array, height: number, width: number, channels: number, step: number): void {
    checkInteger(height);
    checkInteger(width);
    if (!Number.isInteger(channels) || channels < 1 || channels > 4) {
      throw new RangeError(`channels must be 1, 2, 3 or 4, got ${channels}`);
    }
    const img = new ProtoWriter();
    img.int32(1, height);
    img.int32(2, width);
    img.int32(3, channels);
    img.bytes(4, png);
    const v = new ProtoWriter();
    v.string(1, tag);
    v.message(4, img);
    this.push(summaryEvent(Date.now() / 1000, checkInteger(step), v));
  }

  /**
   * Marks a restart at `step` (a resumed run): TensorBoard then drops every point of this logdir
   * at `step` or later written before it, the steps the interrupted run logged past its last
   * checkpoint, instead of showing them twice.
   */
  sessionStart(step: number): void {
    this.push(
      eventProto(Date.now() / 1000, checkInteger(step), (ev) => {
        const log = new ProtoWriter();
        log.int32(1, 1);
        ev.message(7, log);
      }),
    );
  }

  /** Appends all buffered records to the event file. Cheap when nothing is buffered. */
  flush(): void {
    if (this.fd === null) throw new Error(`SummaryWriter for ${this.path} is closed`);
    if (this.pending.length === 0) return;
    const data = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    let off = 0;
    while (off < data.length) off += writeSync(this.fd, data, off, data.length - off);
  }

  /** Flushes and closes the file. Further calls to close() do nothing; other calls throw. */
  close(): void {
    if (this.fd === null) return;
    try {
      this.flush();
    } finally {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  private push(eventBytes: Uint8Array): void {
    if (this.fd === null) throw new Error(`SummaryWriter for ${this.path} is closed`);
    const rec = encodeTfRecord(eventBytes);
    this.pending.push(rec);
    this.pendingBytes += rec.length;
    if (this.pendingBytes > FLUSH_THRESHOLD) this.flush();
  }
}
