/**
 * `casm data make-shards | inspect`: data sets as WebDataset shards, and what any data spec holds.
 */
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { formatInspect, inspectData, makeShards } from '../data/dataCommand.js';
import { resolveDataSpec } from '../data/spec.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { UsageError } from '../util/usageError.js';
import { int } from './options.js';

/** `casm data`. */
export function registerData(program: Command, _argv: string[]): void {
  const data = program.command('data').description('data sets as shards: write WebDataset shards, inspect any spec (spec section 5)');
  data
    .command('make-shards')
    .description('write an ImageFolder (root/<synset>/<image>) as shuffled WebDataset tar shards + synsets.txt')
    .argument('<imagefolder>', 'ImageFolder root')
    .argument('<out>', 'output folder (must not hold shards with the same prefix)')
    .option('--shard-size <n>', 'samples per shard', int(1), 1000)
    .option('--prefix <name>', 'shard file names <prefix>-000000.tar', 'shard')
    .option('--synsets <file>', 'synset list fixing the class indices (default: the folder names)')
    .option('--no-shuffle', 'keep the folder order (default: a seeded shuffle, so shards mix classes)')
    .option('--seed <n>', 'seed of the shuffle', int(0), 0)
    .action(async (root: string, out: string, o: { shardSize: number; prefix: string; synsets?: string; shuffle: boolean; seed: number }) => {
      if (!existsSync(root)) throw new UsageError(`${root}: no such file or directory`);
      const log = (line: string) => console.log(line);
      const r = await makeShards({ root, out, ...o, log });
      if (r.problems.count > 0) {
        log(`skipped ${r.problems.count}: ${JSON.stringify(r.problems.byKind)}`);
        for (const line of r.problems.format().slice(0, 20)) log(`  ${line}`);
      }
    });
  data
    .command('inspect')
    .description('read every sample of a spec: counts, classes, image sizes, formats, boxes and problems')
    .argument('<spec>', 'shards or an ImageFolder, as for train --data')
    .option('--synsets <file>', 'synset list')
    .option('--classes <list>', "only these classes: ranges like '0-99,200' or a file")
    .option('--boxes <path>', 'a folder of VOC XML files or LOC_val_solution.csv')
    .option('--shard-index <i>', "this job's share of the shards", int(0), 0)
    .option('--num-shards <n>', 'jobs the shards are split across', int(1), 1)
    .option('--json <file>', 'also write the report as JSON')
    .action(async (spec: string, o: { synsets?: string; classes?: string; boxes?: string; shardIndex: number; numShards: number; json?: string }) => {
      try {
        resolveDataSpec(spec);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const log = (line: string) => console.log(line);
      const { json, ...rest } = o;
      const report = await inspectData(spec, { ...rest, log });
      log(formatInspect(report));
      if (json) writeFileAtomic(json, JSON.stringify(report, null, 2));
    });
}
