/**
 * What every evaluation report carries (the command, the project version, the engine, when) and
 * its Markdown tables. Reports are written atomically: a reader never sees half of one.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { PROJECT_VERSION } from '../version.js';

export interface Provenance {
  command: string;
  projectVersion: string;
  tfjsVersion: string;
  backend: string;
  date: string;
}

/** This command's provenance; `engine`: the versions and backend of the jobs whose results it merges. */
export function provenance(argv: string[], engine?: Pick<Provenance, 'projectVersion' | 'tfjsVersion' | 'backend'>): Provenance {
  return {
    command: ['casm', ...argv].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' '),
    projectVersion: engine?.projectVersion ?? PROJECT_VERSION,
    tfjsVersion: engine?.tfjsVersion ?? tf.version.tfjs,
    backend: engine?.backend ?? tf.getBackend(),
    date: new Date().toISOString(),
  };
}

/** The engine of a provenance: casm-ts and tfjs versions and the backend (shares of one merge must agree on it). */
export const engineText = (p: Provenance) => `casm-ts ${p.projectVersion}, tfjs ${p.tfjsVersion} (${p.backend})`;

/** The first lines of every report.md: the command, and the engine and date. */
export const provenanceLines = (p: Provenance): string[] => [`- command: \`${p.command}\``, `- ${engineText(p)}, ${p.date}`];

/** A Markdown table; numbers with `digits` decimals (pass counts as strings), null as "n/a". */
export function markdownTable(header: string[], rows: (string | number | null)[][], digits = 3): string {
  const cell = (v: string | number | null) => (v === null ? 'n/a' : typeof v === 'number' ? v.toFixed(digits) : v);
  const lines = [header, header.map(() => '---'), ...rows.map((r) => r.map(cell))];
  return lines.map((l) => `| ${l.join(' | ')} |`).join('\n') + '\n';
}

/** Writes report.json, report.md and the figures into `out` (created), atomically each. */
export function writeReport(out: string, json: unknown, markdown: string, figures: Record<string, Buffer>): void {
  mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, 'report.json'), JSON.stringify(json, null, 2) + '\n');
  writeFileAtomic(join(out, 'report.md'), markdown);
  for (const [name, png] of Object.entries(figures)) writeFileAtomic(join(out, name), png);
}
