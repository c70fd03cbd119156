/** The command line as a user meets it: help with defaults, exit code 2 for bad invocations. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bf16Support, EMULATION_ENV } from '../src/engine/mixedPrecision.js';
import { repoRoot } from './helpers/python.js';
import { TINY_TRAIN_FLAGS } from './helpers/tinyFlags.js';

const cli = join(repoRoot, 'dist', 'src', 'cli.js');
const tmp = mkdtempSync(join(tmpdir(), 'casm-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function casm(...args: string[]) {
  return casmWith(process.env, ...args);
}

function casmWith(env: NodeJS.ProcessEnv, ...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000, env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('casm train --help lists every option with its default', () => {
  const { code, out: raw } = casm('train', '--help');
  assert.equal(code, 0);
  const out = raw.replace(/\s+/g, ' '); // commander wraps lines to the terminal width
  for (const flag of [
    '--thinning',
    '--score',
    '--lambda-r',
    '--train-noise',
    '--resume',
    '--classifier-weights',
    '--backend',
    '--no-share-encoder',
    '--upsample',
    '--warmup-steps',
    '--seed',
    '--preset',
    '--lambda-tv',
    '--lambda-in',
    '--bn-statistics',
    '--crop-scale',
    '--color-jitter',
    '--masker-images',
    '--decoder-stride',
  ]) {
    assert.ok(out.includes(flag), `help lacks ${flag}`);
  }
  assert.match(out, /--thinning <strategy> classifier pool strategy \(choices: "F", "L", "FL", "L100", "L1000", default: "L100"\)/);
  assert.match(out, /--backend <name> compute engine \(choices: "auto", "tensorflow", "tensorflow-gpu", "cpu", default: "auto"\)/);
  assert.match(out, /--batch-size <n> images per iteration \(default: the preset's; digits 32, imagenet 128, small-photos 32\)/);
  assert.match(out, /--preset <name> .*\(choices: "digits", "imagenet", "small-photos"\)/);
  assert.match(out, /--lambda-r <x> area penalty lambda_R \(default: the preset of thinning and score, scaled by log\(classes\)\/log\(1000\)\)/);
});

test('--training-path picks the training path, says so and records it in config.json; CASM_FUSED=0 makes composed the default', () => {
  const out = join(tmp, 'composed');
  const tiny = [...TINY_TRAIN_FLAGS, '--val-count', '8', '--backend', 'tensorflow'];
  const r = casm('train', ...tiny, '--training-path', 'composed', '--out', out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out + r.err, /engine: backend=tensorflow .*; training: tfjs composed ops; precision fp32\n/);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { options: { trainingPath: string } };
  assert.equal(config.options.trainingPath, 'composed');
  const fusedHelp = casm('train', '--help').out.replace(/\s+/g, ' ');
  assert.match(fusedHelp, /--training-path <path> .*\(choices: "fused", "composed", default: "fused"\)/);
  const aliasHelp = casmWith({ ...process.env, CASM_FUSED: '0' }, 'train', '--help').out.replace(/\s+/g, ' ');
  assert.match(aliasHelp, /--training-path <path> .*\(choices: "fused", "composed", default: "composed"\)/);
});

test('--precision bf16: refused with the reason where the CPU would emulate it; run (emulated on request) and recorded in config.json', () => {
  const tiny = [...TINY_TRAIN_FLAGS, '--val-count', '8', '--backend', 'tensorflow', '--precision', 'bf16'];
  const env = { ...process.env };
  delete env[EMULATION_ENV];
  if (!bf16Support().ok) {
    const refused = casmWith(env, 'train', ...tiny, '--out', join(tmp, 'bf16-refused'));
    assert.equal(refused.code, 1);
    assert.match(refused.err, /--precision bf16: .* has neither AMX-BF16 nor AVX512-BF16 .*Use --precision fp32, or set CASM_BF16_EMULATION=1/);
    assert.equal(existsSync(join(tmp, 'bf16-refused', 'config.json')), false, 'nothing written');
    env[EMULATION_ENV] = '1';
  }
  const out = join(tmp, 'bf16');
  const r = casmWith(env, 'train', ...tiny, '--out', out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /; precision bf16 \(convolutions and their gradients in bfloat16, the rest float32; /);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { precision: string; options: { precision: string } };
  assert.deepEqual([config.precision, config.options.precision], ['bf16', 'bf16']);
});

test('casm --help names the train command', () => {
  const { code, out } = casm('--help');
  assert.equal(code, 0);
  assert.match(out, /train \[options\]/);
});

test('bad invocations exit with code 2 and say what is wrong', () => {
  writeFileSync(join(tmp, 'one.tar'), '');
  writeFileSync(join(tmp, 'synsets.txt'), 'n01\nn02\nn03\n');
  for (const d of ['classes/n01', 'classes/n02', 'no-images']) mkdirSync(join(tmp, d), { recursive: true });
  writeFileSync(join(tmp, 'a-file'), '');
  const cases: [string[], RegExp][] = [
    [['train', '--thinning', 'L7'], /argument 'L7' is invalid.*Allowed choices are F, L, FL, L100, L1000/],
    [['train', '--batch-size', 'many'], /--batch-size.*expected an integer >= 1/],
    [['train', '--frobnicate'], /unknown option '--frobnicate'/],
    [['train', '--decoder-stride', '2'], /--decoder-stride <n>' argument '2' is invalid\. expected one of 4, 8, 16, 32/],
    [['train', '--input-size', '100'], /--input-size 100: must be a multiple of 32/],
    [['train', '--data', join(tmp, 'missing')], /--data: data spec ".*missing": ".*missing" does not exist/],
    [['train', '--data', join(tmp, 'shard-{000..002}.tar')], /--data: data spec .*: 3 of the 3 names of the brace pattern .* match no file/],
    [['train', '--data', join(tmp, '*.tfrecord')], /--data: data spec .*matches no file/],
    [['train', '--shard-index', '2', '--num-shards', '2'], /--shard-index 2: must be below --num-shards 2/],
    [['train', '--classes', '0-9', '--epoch-fraction', '0'], /--epoch-fraction.*expected a number in/],
    [['train', '--resume', join(tmp, 'nowhere')], /--resume .*nowhere: no such file or directory/],
    [
      ['train', '--data', join(tmp, 'one.tar'), '--synsets', join(tmp, 'synsets.txt'), '--num-classes', '2'],
      /--num-classes 2: fewer than the 3 classes of --synsets .*synsets.txt/,
    ],
    [['train', '--lambda-r', 'Infinity'], /--lambda-r <x>' argument 'Infinity' is invalid\. expected a finite number >= 0/],
    [['train', '--data', join(tmp, 'classes')], /--data: .*image folder .*classes": none of its 2 class folders holds an image file/],
    [['train', '--data', join(tmp, 'no-images')], /--data: .*no-images" is empty/],
    [['data', 'inspect', join(tmp, 'one.tar'), '--shard-index', '3', '--num-shards', '2'], /--shard-index 3: must be below --num-shards 2/],
    [['export', '--checkpoint', tmp, '--out', join(tmp, 'a-file')], /--out .*a-file: exists and is not a directory/],
    [['explain', join(tmp, 'no-images'), '--checkpoint', tmp, '--out', join(tmp, 'ex')], /no image files in .*no-images/],
    [
      ['experiment', 'sweep', '--thinnings', 'F,L7', '--out', join(tmp, 'sw')],
      /--thinnings <list>' argument 'F,L7' is invalid\. unknown 'L7': valid are F, L, FL, L100, L1000/,
    ],
    [
      ['experiment', 'sweep', '--scores', 'entropy,entropy', '--out', join(tmp, 'sw')],
      /--scores <list>' argument 'entropy,entropy' is invalid\. an item is given twice/,
    ],
    [['experiment', 'sweep', '--task', '0', '--merge', '--out', join(tmp, 'sw')], /experiment sweep: --task runs one training, --merge none: give one of them/],
    [['eval', 'localization', '--shard-index', '1', '--out', join(tmp, 'ev')], /--shard-index and --num-shards go together/],
  ];
  for (const [args, message] of cases) {
    const { code, err } = casm(...args);
    assert.equal(code, 2, `${args.join(' ')} exited ${code}: ${err}`);
    assert.match(err, message);
  }
});

test('a corrupt checkpoint to resume from: one line naming the file, exit code 1', () => {
  const dir = join(tmp, 'bad-ckpt');
  mkdirSync(dir);
  writeFileSync(join(dir, 'state.json'), 'not json');
  const { code, err } = casm('train', '--resume', dir, '--backend', 'cpu');
  assert.equal(code, 1);
  const lines = err
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('casm:'));
  assert.equal(lines.length, 1, err);
  assert.match(lines[0], /state\.json: unreadable checkpoint state/);
});
