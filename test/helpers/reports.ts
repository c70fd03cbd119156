/** Reading evaluation reports back in tests: what two runs of one evaluation must share. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalizationReport } from '../../src/eval/localizationCommand.js';

export const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

/** A report without what differs between any two runs of one evaluation: when, how long, by which command, in how many jobs. */
export function reportFigures(dir: string): Omit<LocalizationReport, 'provenance' | 'seconds' | 'shards'> {
  const { provenance: _p, seconds: _s, shards: _n, ...rest } = readJson<LocalizationReport>(join(dir, 'report.json'));
  // Each problem's file, offset and kind; not its message: libvips words one corrupt JPEG differently from run to run.
  return { ...rest, problems: { ...rest.problems, first: rest.problems.first.map((l) => l.split(': ').slice(0, 2).join(': ')) } };
}

/** report.md without its command and engine lines. */
export const markdownBody = (dir: string) => readFileSync(join(dir, 'report.md'), 'utf8').replace(/^- (command:|casm-ts) .*$/gm, '');

/** The two directories' reports are one: every figure, the markdown, both PNG figures byte for byte. */
export function sameReport(a: string, b: string): { figures: boolean; markdown: boolean; pngs: string[] } {
  const pngs = ['examples.png', 'le.png'].filter((png) => !readFileSync(join(a, png)).equals(readFileSync(join(b, png))));
  return { figures: JSON.stringify(reportFigures(a)) === JSON.stringify(reportFigures(b)), markdown: markdownBody(a) === markdownBody(b), pngs };
}
