#!/usr/bin/env node
// Generates the photo-objects benchmark (src/data/photoObjects.ts): real photo cut-outs on real
// background photos, exact masks and boxes, 10 seen + 3 unseen classes, as an ImageFolder with VOC
// XML boxes and as WebDataset shards. Sources: `bash scripts/fetch-photo-sources.sh` (Debian
// packages). Needs the compiled project: run `npm run build` first.
//
//   node data/make-photo-objects.mjs [--out data/cache/photo-objects] [--sources data/cache/photo-sources]
//        [--train-per-class 250] [--val-per-class 40] [--width 200] [--height 150]
//        [--area 0.1-0.45] [--classes bird,fruit,...] [--seed 0] [--preview out.png]
//        [--val-on-train-backgrounds]   (a diagnostic: the validation objects on training backgrounds)
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { intOption, scriptArgs } from './scriptArgs.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const values = scriptArgs(import.meta.url, {
  out: { type: 'string', default: join(root, 'data', 'cache', 'photo-objects') },
  sources: { type: 'string', default: join(root, 'data', 'cache', 'photo-sources') },
  'train-per-class': { type: 'string', default: '250' },
  'val-per-class': { type: 'string', default: '40' },
  width: { type: 'string', default: '200' },
  height: { type: 'string', default: '150' },
  area: { type: 'string', default: '0.1-0.45' },
  classes: { type: 'string' },
  seed: { type: 'string', default: '0' },
  preview: { type: 'string' },
  'val-on-train-backgrounds': { type: 'boolean', default: false },
});
const lib = join(root, 'dist', 'src', 'data', 'photoObjects.js');
if (!existsSync(lib)) {
  console.error(`${lib} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const { makePhotoObjects, previewPhotoObjects } = await import(lib);

const int = (k) => intOption(import.meta.url, values, k);
const area = values.area.split('-').map(Number);
if (area.length !== 2 || !area.every((a) => a > 0 && a <= 1)) {
  console.error(`make-photo-objects: --area must be min-max in (0, 1], got '${values.area}'`);
  process.exit(2);
}
try {
  const t0 = performance.now();
  const m = await makePhotoObjects({
    sources: values.sources,
    out: values.out,
    trainPerClass: int('train-per-class'),
    valPerClass: int('val-per-class'),
    width: int('width'),
    height: int('height'),
    area,
    seed: int('seed'),
    valOnTrainBackgrounds: values['val-on-train-backgrounds'],
    ...(values.classes ? { classes: values.classes.split(',') } : {}),
    log: (l) => console.log(l),
  });
  const seen = m.classes.filter((c) => c.seen).map((c) => `${c.name} (${c.instances.length})`);
  const unseen = m.classes.filter((c) => !c.seen).map((c) => `${c.name} (${c.instances.length})`);
  console.log(`wrote ${m.images.length} images in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${values.out}`);
  console.log(`seen classes (cut-outs): ${seen.join(', ')}`);
  console.log(`unseen classes: ${unseen.join(', ')}`);
  console.log(`backgrounds: ${m.backgrounds.train.length} train, ${m.backgrounds.val.length} val`);
  if (values.preview) {
    await previewPhotoObjects(values.out, values.preview);
    console.log(`preview -> ${values.preview}`);
  }
} catch (e) {
  console.error(`make-photo-objects: ${e.message}`);
  process.exit(1);
}
