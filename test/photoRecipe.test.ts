/**
 * The real-photo path end to end on a tiny photo-objects set: `casm train --preset small-photos`
 * on its shards (the preset's mask terms and crop scale in the run's config, explicit options
 * winning), then `casm eval localization --seen seen.txt --compare` on its ImageFolder + VOC XML:
 * seen and unseen classes apart, F1 a number for every method. Tiny models: it checks wiring and
 * figures' consistency, not mask quality (README "A recipe for small real-photo sets" has those).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readCheckpointState, resolveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { makePhotoObjects } from '../src/data/photoObjects.js';
import type { LocalizationReport } from '../src/eval/localizationCommand.js';
import { useTestBackend } from './helpers/backend.js';
import { inProcessCli } from './helpers/cli.js';

const backend = await useTestBackend();
const { PRESETS } = await import('../src/casm/presets.js');
const casm = inProcessCli(backend);
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = mkdtempSync(join(tmpdir(), 'casm-photo-recipe-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

test('small-photos preset on photo objects: trained from shards, evaluated on seen and unseen classes', async () => {
  const set = join(root, 'set');
  await makePhotoObjects({
    sources: process.env['CASM_PHOTO_SOURCES'] ?? join(repo, 'data', 'cache', 'photo-sources'),
    out: set,
    classes: ['bird', 'fruit', 'planet'],
    trainPerClass: 8,
    valPerClass: 4,
    width: 80,
    height: 60,
    seed: 3,
  });
  const run = join(root, 'run');
  // The preset's recipe at a tiny scale; --lambda-in and --color-jitter given explicitly win over the preset's;
  // the class count comes from --synsets (no --num-classes).
  const r = await casm(
    'train',
    '--preset',
    'small-photos',
    '--data',
    join(set, 'shards', 'train-000000.tar'),
    '--synsets',
    join(set, 'classes.txt'),
    '--val',
    join(set, 'shards', 'val-000000.tar'),
    '--boxes',
    join(set, 'val_xml'),
    '--width',
    '4',
    '--input-size',
    '32',
    '--decoder-width',
    '4',
    '--batch-size',
    '4',
    '--warmup-steps',
    '2',
    '--max-steps',
    '5',
    '--lambda-in',
    '0.25',
    '--color-jitter',
    '0.3',
    '--workers',
    '1',
    '--out',
    run,
  );
  assert.equal(r.code, 0, r.err);
  const preset = PRESETS['small-photos'];
  const config = readCheckpointState(resolveCheckpoint(run)).config;
  assert.notEqual(preset.lambdaIn, 0.25);
  assert.deepEqual(config.maskTerms, { tv: preset.lambdaTv, maskedIn: 0.25 });
  assert.ok(preset.cutMix > 0, 'the preset CutMixes, so the next line checks that it reaches the run');
  assert.equal(config.cutMix, preset.cutMix, "the preset's CutMix share when --cutmix is not given");
  assert.match(r.out, new RegExp(`CutMix on ${preset.cutMix} of the warm-up batches`));
  assert.equal(config.arch.classes, 3, 'a 3-way classifier for 3 synsets');
  assert.deepEqual([config.optim.classifierLr, config.optim.lrDecayEpochs, config.thinning], [preset.classifierLr, preset.lrDecayEpochs, 'L100']);
  assert.match(r.out, new RegExp(`RandomResizedCrop 32 \\(area ${preset.cropScale}-1\\) \\+ flip \\+ ColorJitter 0.3`));
  assert.match(r.out, /tv [\d.]+ in-CE [\d.]+/, 'the progress line shows the mask terms');

  const out = join(root, 'eval');
  const e = await casm(
    'eval',
    'localization',
    '--checkpoint',
    run,
    '--compare',
    run,
    '--data',
    join(set, 'val'),
    '--boxes',
    join(set, 'val_xml'),
    '--synsets',
    join(set, 'classes.txt'),
    '--seen',
    join(set, 'seen.txt'),
    '--methods',
    'casm,gradcam,vanilla,centre,full',
    '--samples',
    '2',
    '--workers',
    '1',
    '--out',
    out,
  );
  assert.equal(e.code, 0, e.err);
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as LocalizationReport;
  assert.deepEqual(report.images, { read: 12, scored: 12, withoutBoxes: 0 });
  assert.deepEqual(report.bySplit!.seenClasses, [0, 1], 'bird and fruit; planet (2) unseen');
  assert.equal(report.bySplit!.seen!.images, 8);
  assert.equal(report.bySplit!.unseen!.images, 4);
  for (const [name, m] of Object.entries(report.methods)) {
    // A 1x1 stage-4 map at 32 px can give Grad-CAM an all-zero map (F1 0); a number all the same.
    assert.ok(Number.isFinite(m.f1) && m.f1 >= 0 && m.f1 <= 1, `${name}: F1 ${m.f1}`);
    assert.ok(Number.isFinite(m.f1a) && m.f1a <= m.f1 + 1e-12, `${name}: F1a ${m.f1a}`);
  }
  assert.ok(report.methods['full']!.f1 > 0 && report.methods['centre']!.f1 > 0);
  assert.deepEqual(report.methods['casm-L100'], report.methods['casm']);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /## Unseen classes \(4 images/);
});
