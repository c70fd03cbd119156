#!/usr/bin/env node
/**
 * casm: the command line. `casm train --help` lists every option with its default; a bad option
 * or value prints what is wrong and exits with code 2; a run that fails exits with code 1.
 */
import { Command } from 'commander';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { registerData } from './commands/data.js';
import { registerEval } from './commands/eval.js';
import { registerExperiment } from './commands/experiment.js';
import { registerExplain } from './commands/explain.js';
import { registerExport } from './commands/export.js';
import { registerMask } from './commands/mask.js';
import { checkCommonOptions } from './commands/options.js';
import { registerTrain } from './commands/train.js';
import { UsageError } from './util/usageError.js';
import { PROJECT_VERSION } from './version.js';

/** Each command, in the order `casm --help` lists them: one file under src/commands/ each. */
const COMMANDS = [registerTrain, registerData, registerExplain, registerExport, registerMask, registerEval, registerExperiment];

/** The CLI; `argv` (after `casm`) is what reports record as their command. */
export function buildProgram(argv: string[] = []): Command {
  const program = new Command('casm')
    .description('Classifier-agnostic saliency masks (CASM) on TensorFlow.js')
    .version(PROJECT_VERSION)
    .exitOverride()
    .showHelpAfterError()
    .hook('preAction', (_, command) => checkCommonOptions(command.opts()));
  for (const register of COMMANDS) register(program, argv);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram(argv.slice(2));
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    if (e.code?.startsWith('commander.')) return 2; // commander printed the message already
    if (err instanceof UsageError) {
      console.error(`casm: ${err.message}`);
      return 2;
    }
    console.error(`casm: ${e.message ?? String(err)}`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = await main(process.argv);
}
