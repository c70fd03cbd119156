/**
 * The CLI run in-process on the test backend: its exit code and what it printed (console.log
 * and console.error captured for the call).
 */
/** Commands that run no model, and so take no --backend. */
const ENGINE_FREE = ['eval merge'];

export function inProcessCli(backend: string): (...args: string[]) => Promise<{ code: number; out: string; err: string }> {
  return async (...args) => {
    const out: string[] = [];
    const err: string[] = [];
    const [log, error] = [console.log, console.error];
    console.log = (...a: unknown[]) => void out.push(a.join(' '));
    console.error = (...a: unknown[]) => void err.push(a.join(' '));
    try {
      // Imported on first use, after the caller chose the backend (as the tests always did).
      const { main } = await import('../../src/cli.js');
      const engine = !ENGINE_FREE.includes(args.slice(0, 2).join(' '));
      const code = await main(['node', 'casm', ...args, ...(engine ? ['--backend', backend] : [])]);
      return { code, out: out.join('\n'), err: err.join('\n') };
    } finally {
      [console.log, console.error] = [log, error];
    }
  };
}
