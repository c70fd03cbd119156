/**
 * `casm export`: the mask network alone, for inference anywhere tfjs runs.
 */
import { Command, Option } from 'commander';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from '../engine/engine.js';
import { exportMasker, QUANTIZATIONS, type Quantization } from '../export/exportMasker.js';
import { requirePaths } from './options.js';

/** `casm export`. */
export function registerExport(program: Command, _argv: string[]): void {
  program
    .command('export')
    .description('write the mask network alone (RGB pixels 0..255 in, normalisation inside, mask out) as a tfjs LayersModel + masker.json')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for model.json, weight shards and masker.json')
    .addOption(new Option('--quantize <kind>', 'weight storage').choices(QUANTIZATIONS).default('none'))
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (o: { checkpoint: string; out: string; quantize: Quantization; backend: BackendChoice }) => {
      requirePaths({ '--checkpoint': o.checkpoint });
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      await exportMasker({ checkpoint: o.checkpoint, out: o.out, quantization: o.quantize, log });
    });
}
