/** Reading evaluation reports back in tests: what two runs of one evaluation must share. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProblemsRecord } from '../../src/eval/shares.js';

export const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

/** A report without what differs between any two runs of one evaluation: when, how long, by which command, in how many jobs. */
export function reportFigures(dir: string): Record<string, unknown> {
  const { provenance: _p, seconds: _s, shards: _n, ...rest } = readJson<{ problems: ProblemsRecord } & Record<string, unknown>>(join(dir, 'report.json'));
  // Each problem's file, offset and kind; not its message: libvips words one corrupt JPEG differently from run to run.
  return { ...rest, problems: { ...rest.problems, first: rest.problems.first.map((l) => l.split(': ').slice(0, 2).join(': ')) } };
}

/** report.md without its command and engine lines. */
export const markdownBody = (dir: string) => readFileSync(join(dir, 'report.md'), 'utf8').replace(/^- (command:|casm-ts) .*$/gm, '');

/** The two directories' reports are one: every figure, the markdown, the PNG figures byte for byte (returns those that differ). */
export function sameReport(a: string, b: string, figures = ['examples.png', 'le.png']): { figures: boolean; markdown: boolean; pngs: string[] } {
  const pngs = figures.filter((png) => !readFileSync(join(a, png)).equals(readFileSync(join(b, png))));
  return { figures: JSON.stringify(reportFigures(a)) === JSON.stringify(reportFigures(b)), markdown: markdownBody(a) === markdownBody(b), pngs };
}
