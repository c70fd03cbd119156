/**
 * CRC32C (Castagnoli), as used by TFRecord framing: @node-rs/crc32 (the CPU's CRC32 instruction;
 * 10x our former table-driven JS on this machine, same values, see the README's table of
 * hand-written code). Known vector: crc32c("123456789") === 0xE3069283.
 */
import { crc32c as native } from '@node-rs/crc32';

/** CRC32C of bytes (optionally continuing from a previous crc value). Returns an unsigned 32-bit number. */
export function crc32c(data: Uint8Array | string, crc = 0): number {
  const input = typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return native(input, crc) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}
