import { renameSync, writeFileSync } from 'node:fs';

/** Writes a file so that readers see the old content or the new, never a part: temp file + rename. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}
