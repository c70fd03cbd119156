/**
 * Runs the test oracles: Python scripts in test/helpers, with the interpreter of the project's
 * virtual environment (made by scripts/setup.sh). Input and output travel as files or JSON on
 * stdout, so the oracle never shares code with what it checks.
 */
import { execFileSync, spawnSync } from 'node:child_process';
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

/**
 * The first interpreter that can run `helper probe` (a script of test/helpers that imports torch and
 * torchvision and prints their versions as JSON); the reasons for the others are kept.
 */
export function findTorchPython(helper: string): { python: string; versions: string } {
  const candidates = [process.env['CASM_TORCH_PYTHON'], '/usr/bin/python3', join(repoRoot, '.venv', 'bin', 'python')];
  const tried: string[] = [];
  for (const py of [...new Set(candidates)]) {
    if (!py) continue;
    if (!existsSync(py)) {
      tried.push(`${py}: not found`);
      continue;
    }
    const r = spawnSync(py, [helper, 'probe'], { encoding: 'utf8', timeout: 120_000 });
    if (r.status === 0) {
      const info = JSON.parse(r.stdout) as { torch: string; torchvision: string; python: string };
      return { python: py, versions: `python ${info.python}, torch ${info.torch}, torchvision ${info.torchvision}` };
    }
    const why = (r.stdout.trim() || r.stderr.trim().split('\n').pop() || String(r.error ?? `exit ${r.status}`)).slice(0, 300);
    tried.push(`${py}: ${why}`);
  }
  throw new Error(
    `no Python with torch + torchvision for the torchvision oracle; run: bash scripts/setup-oracles.sh ` +
      `(or set CASM_TORCH_PYTHON). Tried: ${tried.join(' | ')}`,
  );
}
