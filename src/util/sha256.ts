/** sha256 in hex: of bytes, of a file (the weights and shares a run records and checks). */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
export const sha256File = (path: string) => sha256(readFileSync(path));
