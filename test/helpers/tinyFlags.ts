/** The command-line flags of the tiny training the CLI tests run (a [1,1,1,1] width-4 ResNet, 64 digits, 3 steps); no tfjs here, for tests that only spawn the CLI. */
export const TINY_TRAIN_FLAGS = [
  '--depths',
  '1,1,1,1',
  '--width',
  '4',
  '--decoder-width',
  '8',
  '--batch-size',
  '8',
  '--train-count',
  '64',
  '--warmup-steps',
  '2',
  '--max-steps',
  '3',
  '--log-every',
  '100',
];
