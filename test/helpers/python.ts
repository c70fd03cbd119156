/**
 * Runs the test oracles: Python scripts in test/helpers, with the interpreter of the project's
 * virtual environment (made by scripts/setup.sh). Input and output travel as files or JSON on
 * stdout, so the oracle never shares code with what it checks.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file is compiled to dist/test/helpers). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function pythonPath(): string {
  const venv = join(repoRoot, '.venv', 'bin', 'python');
  if (!existsSync(venv)) {
    throw new Error(`${venv} is missing: run the README's install command (bash scripts/setup.sh) first`);
  }
  return venv;
}

/** Runs test/helpers/<script> with args; returns stdout. Throws with stderr on failure. */
export function runPython(script: string, args: string[], timeoutMs = 300_000): string {
  const path = join(repoRoot, 'test', 'helpers', script);
  return execFileSync(pythonPath(), [path, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 256 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
