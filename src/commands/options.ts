/**
 * Option parsers and checks every command shares: integers, numbers, lists, the preset an option
 * falls back to, paths that must exist.
 */
import { InvalidArgumentError } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { PRESET_NAMES, PRESETS, type Preset, type PresetName } from '../casm/presets.js';
import { BUILTIN_DATA } from '../data/trainData.js';
import { MASK_STRIDES, type MaskStride } from '../models/masker.js';
import { UsageError } from '../util/usageError.js';

/** The preset a run uses: the one named, else digits for the built-in data and imagenet for shards. */
export function presetOf(o: { preset?: PresetName; data: string }): Preset {
  return PRESETS[o.preset ?? (o.data === BUILTIN_DATA ? 'digits' : 'imagenet')];
}

export const presetHelp = (key: keyof Preset) => {
  const v = (p: Preset) => (Array.isArray(p[key]) ? (p[key] as number[]).join(',') : String(p[key]));
  return ` (default: the preset's; ${PRESET_NAMES.map((n) => `${n} ${v(PRESETS[n])}`).join(', ')})`;
};

export function int(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

export function num(min: number, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Infinity ? `expected a finite number >= ${min}` : `expected a number in [${min}, ${max}]`);
    }
    return n;
  };
}

/** A comma-separated list of some of `choices`, each once. */
export function listOf<T extends string>(choices: readonly T[]) {
  return (v: string): T[] => {
    const items = v.split(',');
    for (const x of items) if (!choices.includes(x as T)) throw new InvalidArgumentError(`unknown '${x}': valid are ${choices.join(', ')}`);
    if (new Set(items).size !== items.length) throw new InvalidArgumentError('an item is given twice');
    return items as T[];
  };
}

export function stride(v: string): MaskStride {
  const n = MASK_STRIDES.find((s) => String(s) === v);
  if (n === undefined) throw new InvalidArgumentError(`expected one of ${MASK_STRIDES.join(', ')}`);
  return n;
}

export function intList(v: string): number[] {
  const parts = v.split(',').map(Number);
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new InvalidArgumentError('expected four positive integers, e.g. 3,4,6,3');
  }
  return parts;
}

/** Checks every command shares: this job's share of the shards, and an output folder that can be one. */
export function checkCommonOptions(o: { shardIndex?: number; numShards?: number; out?: string }): void {
  if (o.shardIndex !== undefined && o.numShards !== undefined && o.shardIndex >= o.numShards) {
    throw new UsageError(`--shard-index ${o.shardIndex}: must be below --num-shards ${o.numShards}`);
  }
  if (o.out !== undefined && existsSync(o.out) && !statSync(o.out).isDirectory()) throw new UsageError(`--out ${o.out}: exists and is not a directory`);
}

/** Paths given on the command line must exist: a usage error naming the flag otherwise. */
export function requirePaths(paths: Record<string, string | undefined>): void {
  for (const [flag, path] of Object.entries(paths)) {
    if (path !== undefined && !existsSync(path)) throw new UsageError(`${flag} ${path}: no such file or directory`);
  }
}
