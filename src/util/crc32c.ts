/**
 * CRC32C (Castagnoli), as used by TFRecord framing. Table-driven, reflected polynomial 0x82F63B78.
 * Known vector: crc32c("123456789") === 0xE3069283.
 */

const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32C of bytes (optionally continuing from a previous crc value). Returns an unsigned 32-bit number. */
export function crc32c(data: Uint8Array | string, crc = 0): number {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}
