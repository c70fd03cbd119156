/**
 * `casm explain`: saliency maps of image files by CASM and the gradient baselines.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKEND_CHOICES, initEngine, type BackendChoice } from '../engine/engine.js';
import { COLORMAPS } from '../explain/display.js';
import { explainCommand, METHODS, parseMethods, type ExplainOptions, type Method } from '../explain/explainCommand.js';
import { SMOOTHGRAD_DEFAULTS } from '../explain/smoothGrad.js';
import { expandInputs } from '../explain/images.js';
import { int, num, requirePaths } from './options.js';

/** `casm explain`. */
export function registerExplain(program: Command, _argv: string[]): void {
  program
    .command('explain')
    .description('saliency maps of images: CASM masks and gradient baselines (spec section 3) as heatmaps, overlays and a grid')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, ...) and folders of them; one that cannot be decoded is reported and skipped')
    .requiredOption('--checkpoint <dir>', 'a run directory (its latest checkpoint) or one checkpoint')
    .requiredOption('--out <dir>', 'directory for <image>-<method>-{heatmap,overlay}.png and grid.png')
    .addOption(
      new Option('--method <list>', `comma-separated methods: ${[...METHODS, 'all'].join(', ')}`)
        .argParser((v: string) => {
          try {
            return parseMethods<Method>(v);
          } catch (e) {
            throw new InvalidArgumentError((e as Error).message);
          }
        })
        .default([...METHODS], 'all'),
    )
    .option('--layer <name>', 'Grad-CAM layer (default: the last spatial layer, stage 4)')
    .option('--target <class>', "class explained in every image (default: each image's top class)", int(0))
    .option('--samples <n>', 'SmoothGrad noise samples', int(1), SMOOTHGRAD_DEFAULTS.samples)
    .option('--spread <s>', 'SmoothGrad noise level: sigma = spread * (max(x) - min(x))', num(0), SMOOTHGRAD_DEFAULTS.spread)
    .option('--magnitude', 'SmoothGrad: average squared gradients', false)
    .addOption(new Option('--colormap <name>', 'heatmap colours').choices(COLORMAPS).default('jet'))
    .option('--batch-size <n>', 'images per pass', int(1), 8)
    .option('--seed <n>', 'seed of the SmoothGrad noise', int(0), 0)
    .addOption(new Option('--backend <name>', 'compute engine').choices(BACKEND_CHOICES).default('auto'))
    .action(async (images: string[], o: Omit<ExplainOptions, 'images' | 'methods' | 'log'> & { method: Method[]; backend: BackendChoice }) => {
      requirePaths({ '--checkpoint': o.checkpoint });
      const files = await expandInputs(images);
      const log = (line: string) => console.log(line);
      await initEngine(o.backend, log);
      await explainCommand({ ...o, images: files, methods: o.method, log });
    });
}
