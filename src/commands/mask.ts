/**
 * `casm mask`: masks of images or shards by an exported mask network.
 */
import { Command, Option } from 'commander';
import { availableParallelism } from 'node:os';
import { resolveDataSpec } from '../data/spec.js';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from '../engine/engine.js';
import { maskCommand, mergeMasks } from '../mask/maskCommand.js';
import { UsageError } from '../util/usageError.js';
import { int, requirePaths } from './options.js';

export interface MaskCliOptions {
  model: string;
  out: string;
  png: boolean;
  npy: boolean;
  boxes: boolean;
  batchSize: number;
  data?: string;
  shardIndex: number;
  numShards: number;
  workers: number;
  backend: BackendChoice;
}

/** `casm mask`, and `casm mask-merge` of its sharded jobs. */
export function registerMask(program: Command, _argv: string[]): void {
  program
    .command('mask')
    .description("masks of images with an exported mask network ('casm export'): masks.jsonl of areas and boxes, PNGs, .npy")
    .argument('[images...]', 'image files and folders; a file that cannot be decoded is skipped and listed')
    .option('--data <spec>', 'instead of files: shards or an ImageFolder (spec section 5), read by decode workers')
    .option('--shard-index <i>', "with --data: this job's share of the shards", int(0), 0)
    .option('--num-shards <n>', 'with --data: jobs the shards are split across', int(1), 1)
    .option('--workers <n>', 'with --data: decode worker threads', int(0), Math.max(1, Math.min(4, availableParallelism())))
    .requiredOption('--model <dir>', "a directory written by 'casm export'")
    .requiredOption('--out <dir>', 'directory for masks.jsonl and the per-image files')
    .option('--png', 'write <image>-mask.png and <image>-overlay.png', false)
    .option('--npy', 'write <image>-mask.npy (float32 H x W)', false)
    .option('--boxes', "add each mask's box (largest component of mask >= mean) to masks.jsonl and the overlays", false)
    .option('--batch-size <n>', 'images per pass', int(1), 16)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (images: string[], o: MaskCliOptions) => {
      requirePaths({ '--model': o.model });
      if (images.length > 0 === (o.data !== undefined)) throw new UsageError('give image files and folders, or --data <spec>, not both');
      if (o.data !== undefined) {
        try {
          resolveDataSpec(o.data);
        } catch (e) {
          throw new UsageError(`--data: ${(e as Error).message}`);
        }
      }
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      const { data, shardIndex, numShards, workers, ...rest } = o;
      await maskCommand({ ...rest, inputs: images, ...(data !== undefined ? { data: { spec: data, shardIndex, numShards, workers } } : {}), log });
    });
  program
    .command('mask-merge')
    .description("one masks.jsonl of the jobs of 'casm mask --data --num-shards n' (their --out directories), in the data set's order")
    .argument('<jobs...>', "the jobs' directories, each holding mask.json")
    .requiredOption('--out <dir>', 'directory for the merged masks.jsonl')
    .action((dirs: string[], o: { out: string }) => {
      for (const dir of dirs) requirePaths({ '<jobs>': dir });
      mergeMasks(dirs, o.out, (line) => console.log(line));
    });
}
