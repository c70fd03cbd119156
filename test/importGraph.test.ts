/**
 * The README's flow as a rule over src/: a module imports only from its own part or from parts
 * earlier in FLOW (data -> models -> casm -> checkpoints -> train -> export -> explain / mask ->
 * eval -> commands -> cli, with the shared low parts first), and no two files import each other in a circle.
 * The rule is checked on a planted back-edge and a planted cycle too, so it can fail.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './helpers/python.js';

/** The parts of src/ (a folder or a top-level file), each allowed to import those before it. */
const FLOW = [
  'util',
  'io',
  'version',
  'boxes',
  'engine',
  'data',
  'log',
  'models',
  'casm',
  'checkpoints',
  'train',
  'export',
  'explain',
  'mask',
  'eval',
  'commands',
  'cli',
];

const src = join(repoRoot, 'src');

/** Every .ts file under src/ (relative to it) with its relative imports (resolved, .ts), type-only ones marked. */
function importGraph(): Map<string, { to: string; typeOnly: boolean }[]> {
  const graph = new Map<string, { to: string; typeOnly: boolean }[]>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) {
        const file = relative(src, path);
        const text = readFileSync(path, 'utf8');
        const edges = [...text.matchAll(/^(import|export)(\s+type)?\b[^;]*?from\s+'(\.[^']+)'/gms)].map((m) => ({
          to: normalize(join(dirname(file), m[3]!)).replace(/\.js$/, '.ts'),
          typeOnly: m[2] !== undefined,
        }));
        graph.set(file, edges);
      }
    }
  };
  walk(src);
  return graph;
}

const part = (file: string) => file.split('/')[0]!.replace(/\.ts$/, '');

/** Imports from a later part of FLOW, and parts FLOW does not name. */
function backEdges(graph: Map<string, { to: string }[]>): string[] {
  const problems: string[] = [];
  for (const [file, edges] of graph) {
    if (!FLOW.includes(part(file))) problems.push(`${file}: part '${part(file)}' is not in FLOW`);
    for (const { to } of edges) {
      if (FLOW.indexOf(part(to)) > FLOW.indexOf(part(file))) problems.push(`${file} -> ${to}`);
    }
  }
  return problems;
}

/** Files that import themselves through others (type-only imports left out: they vanish at run time). */
function cycles(graph: Map<string, { to: string; typeOnly: boolean }[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'open') {
      found.push([...path.slice(path.indexOf(file)), file]);
      return;
    }
    state.set(file, 'open');
    for (const e of graph.get(file) ?? []) if (!e.typeOnly) visit(e.to, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file, []);
  return found;
}

test('src/ follows the flow: no import from a later part, every part named, no import cycle', () => {
  const graph = importGraph();
  assert.ok(graph.size > 50, `read ${graph.size} files`);
  assert.ok(
    (graph.get('commands/train.ts') ?? []).some((e) => e.to === 'train/train.ts'),
    'the graph holds the real imports',
  );
  assert.deepEqual(backEdges(graph), []);
  assert.deepEqual(cycles(graph), []);
  // FLOW names every part there is, and nothing else.
  const parts = readdirSync(src).map((n) => n.replace(/\.ts$/, ''));
  assert.deepEqual([...parts].sort(), [...FLOW].sort());
});

test('the rule fails on a planted back-edge and a planted cycle', () => {
  const graph = importGraph();
  graph.set('models/planted.ts', [{ to: 'eval/localization.ts', typeOnly: false }]);
  assert.deepEqual(backEdges(graph), ['models/planted.ts -> eval/localization.ts']);
  graph.set('models/planted.ts', [{ to: 'models/other.ts', typeOnly: false }]);
  graph.set('models/other.ts', [{ to: 'models/planted.ts', typeOnly: false }]);
  assert.deepEqual(cycles(graph), [['models/planted.ts', 'models/other.ts', 'models/planted.ts']]);
  graph.set('models/other.ts', [{ to: 'models/planted.ts', typeOnly: true }]);
  assert.deepEqual(cycles(graph), [], 'a type-only import closes no cycle');
});

/** The paths the README's layout table names (backticked, in its first column), and the files under src/ none of them covers. */
function unlisted(readme: string, files: string[]): string[] {
  const section = readme.slice(readme.indexOf('\n## Layout'), readme.indexOf('\n## ', readme.indexOf('\n## Layout') + 1));
  const listed = section
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .flatMap((l) => [...l.split('|')[1]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!));
  return files.filter((f) => !listed.some((p) => (p.endsWith('/') ? `src/${f}`.startsWith(p) : `src/${f}` === p)));
}

test("the README's layout table covers every file under src/ (a folder row covers its files)", () => {
  const files = [...importGraph().keys()];
  assert.ok(files.length > 50, `${files.length} files under src/`);
  assert.deepEqual(unlisted(readFileSync(join(repoRoot, 'README.md'), 'utf8'), files), []);
  // It can fail: a table without the casm rows leaves those files unlisted.
  const noCasm = '\n## Layout\n| `src/data/` | x |\n| `src/casm/pool.ts` | y |\n\n## Next\n';
  assert.deepEqual(unlisted(noCasm, ['data/tar.ts', 'casm/pool.ts', 'casm/score.ts']), ['casm/score.ts']);
});
