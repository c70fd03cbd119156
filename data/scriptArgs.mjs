// Argument parsing for the data scripts: node's parseArgs plus --help, which prints the script's
// header comment (the usage lives there once), and a clear exit 2 on an unknown option or a value
// that is not a whole number where one is needed.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export function scriptArgs(scriptUrl, options) {
  const path = fileURLToPath(scriptUrl);
  const name = basename(path, '.mjs');
  let values;
  try {
    ({ values } = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h', default: false } } }));
  } catch (e) {
    console.error(`${name}: ${e.message} (--help lists the options)`);
    process.exit(2);
  }
  if (values.help) {
    const header = readFileSync(path, 'utf8').split('\n').slice(1);
    const end = header.findIndex((l) => !l.startsWith('//'));
    console.log(
      header
        .slice(0, end < 0 ? header.length : end)
        .map((l) => l.replace(/^\/\/ ?/, ''))
        .join('\n'),
    );
    process.exit(0);
  }
  return values;
}

/** values[key] as an integer >= min; otherwise the script says so and exits 2. */
export function intOption(scriptUrl, values, key, min = 0) {
  const v = Number(values[key]);
  if (!Number.isInteger(v) || v < min) {
    console.error(`${basename(fileURLToPath(scriptUrl), '.mjs')}: --${key} must be an integer >= ${min}, got '${values[key]}'`);
    process.exit(2);
  }
  return v;
}
