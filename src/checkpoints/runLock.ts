/**
 * One run per directory. `run.lock` holds its owner's pid, host and process start time and is
 * created exclusively (O_EXCL), so of two runs racing for a directory exactly one wins. A lock
 * whose process is gone from this host (a killed run) is stale and taken over; the start time
 * tells a reused pid from the owner. A lock from another host cannot be checked from here: it is
 * refused, naming its holder and the file to delete once that run is known to be gone.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'run.lock';

export interface LockHolder {
  pid: number;
  host: string;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22); null off Linux. */
  processStart: string | null;
  started: string;
}

/** The directory is held by a live run (or by one this host cannot check). */
export class RunLockError extends Error {}

export interface RunLock {
  path: string;
  /** Removes the lock if it is still this process's. */
  release(): void;
}

function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function alive(h: LockHolder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
  const now = processStart(h.pid);
  return h.processStart === null || now === null || now === h.processStart;
}

function readHolder(path: string): { raw: string; holder: LockHolder | null } | null {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch {
    return null; // released meanwhile
  }
  try {
    const h = JSON.parse(raw) as LockHolder;
    return { raw, holder: Number.isInteger(h.pid) && typeof h.host === 'string' ? h : null };
  } catch {
    return { raw, holder: null }; // a writer killed between create and write: nobody holds it
  }
}

function inUse(dir: string, path: string, h: LockHolder, here: string): RunLockError {
  return new RunLockError(
    `${dir} is in use by pid ${h.pid} on ${h.host} since ${h.started} (${path}); wait for that run or pick another --out` +
      (h.host !== here ? `; this host cannot check it: delete ${path} once that run is gone` : ''),
  );
}

/** Throws RunLockError if a live run holds dir's lock: a check before reading a run that may be starting. */
export function assertUnlocked(dir: string): void {
  const path = join(dir, LOCK_FILE);
  const h = readHolder(path)?.holder;
  if (h && (h.host !== hostname() || alive(h))) throw inUse(dir, path, h, hostname());
}

/** Takes the lock of run directory `dir` (created if missing), or throws RunLockError naming the holder. */
export function lockRun(dir: string, log: (line: string) => void = () => {}): RunLock {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), processStart: processStart(process.pid), started: new Date().toISOString() };
  const mine = JSON.stringify(me) + '\n';
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, mine);
      } finally {
        closeSync(fd);
      }
      return {
        path,
        release: () => {
          if (readHolder(path)?.raw === mine) rmSync(path, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`${path}: cannot create the run lock: ${(err as Error).message}`);
    }
    const seen = readHolder(path);
    if (seen === null) continue;
    const h = seen.holder;
    if (h && (h.host !== me.host || alive(h))) throw inUse(dir, path, h, me.host);
    // Re-read just before removing, so a lock another run has just taken over is not deleted.
    if (readHolder(path)?.raw !== seen.raw) continue;
    rmSync(path, { force: true });
    log(`${path}: took over the stale lock of ${h ? `pid ${h.pid} (no longer running)` : 'a run killed while locking'}`);
  }
  throw new RunLockError(`${path}: the lock changed hands while this run tried to take it; is another run starting on ${dir}?`);
}
