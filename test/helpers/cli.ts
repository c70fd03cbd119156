/**
 * The CLI run in-process on the test backend: its exit code and what it printed (console.log
 * and console.error captured for the call).
 */
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
      const code = await main(['node', 'casm', ...args, '--backend', backend]);
      return { code, out: out.join('\n'), err: err.join('\n') };
    } finally {
      [console.log, console.error] = [log, error];
    }
  };
}
