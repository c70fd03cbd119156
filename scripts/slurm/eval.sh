#!/usr/bin/env bash
# Sharded `casm eval localization` or `casm eval classifiers` on Slurm: an array of n shard jobs
# (eval-shard.sbatch) and a merge job (eval-merge.sbatch) that runs once every shard succeeded
# (afterok) and writes the report one process would have written.
#
#   scripts/slurm/eval.sh localization|classifiers --shards n --out DIR [--cpus c] [--wait] \
#       [--sbatch 'OPTIONS'] -- <options of that command, without --out>
#
# DIR/shard-<i>/ holds the shares, DIR/ the report, DIR/logs/ the jobs' output. --sbatch adds
# options to both submissions (a partition, an account, --time). --wait returns when the merge
# has ended, with its status (non-zero when a shard failed and the merge was cancelled).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CASM_ROOT=${CASM_ROOT:-$(cd "$here/../.." && pwd)}
source "$here/lib.sh"
command=${1:-}
case $command in
  localization | classifiers) shift ;;
  -h | --help) sed -n '2,/^set -/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "eval.sh: first say which evaluation: localization or classifiers (got '$command')" >&2; exit 2 ;;
esac
out=''
rest=()
while [ $# -gt 0 ]; do # --out is this script's; the rest goes to parse_options
  if [ "$1" = --out ]; then out=${2:?}; shift 2; elif [ "$1" = -- ]; then rest+=("$@"); break; else rest+=("$1"); shift; fi
done
parse_options --shards 1 "${rest[@]}"
[ -n "$out" ] || { echo "eval.sh: give --out DIR" >&2; exit 2; }
mkdir -p "$out"
out=$(realpath "$out")
task_args=("$out" "$command" "${args[@]}")
final_args=("$out" "$count")
array_then "$out/logs" "$here/eval-shard.sbatch" "$here/eval-merge.sbatch"
