#!/usr/bin/env bash
# `casm experiment unseen|sweep` on Slurm: one array task per training (experiment-task.sbatch,
# `--task $SLURM_ARRAY_TASK_ID`) and the report (experiment-merge.sbatch, `--merge`) once every
# task succeeded (afterok).
#
#   scripts/slurm/experiment.sh --tasks n [--gpus g] [--cpus c] [--wait] [--sbatch 'OPTIONS'] \
#       -- <unseen|sweep> <experiment options, with --out DIR>
#
# n = the number of trainings (unseen: of --trainings; sweep: thinnings x scores x lambdas; the
# first line of a run lists them). --gpus asks each training for g GPUs (--gres=gpu:g). --sbatch
# adds options to both submissions. --wait returns when the report job has ended, with its
# status. Job output goes to DIR/logs/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CASM_ROOT=${CASM_ROOT:-$(cd "$here/../.." && pwd)}
source "$here/lib.sh"
parse_options --tasks 2 "$@"
[[ ${args[0]:-} =~ ^(unseen|sweep)$ ]] || { echo "experiment.sh: after --, the experiment: unseen or sweep, got '${args[0]:-}'" >&2; exit 2; }
out=''
for ((i = 1; i + 1 < ${#args[@]}; i++)); do [ "${args[i]}" = --out ] && out=${args[i + 1]}; done
[ -n "$out" ] || { echo "experiment.sh: give the experiment's --out DIR" >&2; exit 2; }
task_args=("${args[@]}")
final_args=("${args[@]}")
array_then "$out/logs" "$here/experiment-task.sbatch" "$here/experiment-merge.sbatch"
