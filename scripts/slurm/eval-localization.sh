#!/usr/bin/env bash
# Sharded `casm eval localization` on Slurm: an array of n shard jobs (eval-shard.sbatch) and a
# merge job (eval-merge.sbatch) that runs once every shard succeeded (afterok) and writes the
# report one process would have written.
#
#   scripts/slurm/eval-localization.sh --shards n --out DIR [--cpus c] [--wait] [--sbatch 'OPTIONS'] \
#       -- <eval localization options, without --out>
#
# DIR/shard-<i>/ holds the shares, DIR/ the report, DIR/logs/ the jobs' output. --sbatch adds
# options to both submissions (a partition, an account, --time). --wait returns when the merge
# has ended, with its exit status. Prints the two job ids.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
shards='' out='' cpus=1 wait=0 extra=''
while [ $# -gt 0 ]; do
  case $1 in
    --shards) shards=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --wait) wait=1; shift ;;
    --sbatch) extra=${2:?}; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "eval-localization.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
  esac
done
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "eval-localization.sh: --shards must be a positive integer, got '$shards'" >&2; exit 2; }
[ -n "$out" ] || { echo "eval-localization.sh: give --out DIR" >&2; exit 2; }
[ -f "$root/dist/src/cli.js" ] || { echo "eval-localization.sh: $root/dist/src/cli.js is missing: run npm run build" >&2; exit 1; }
mkdir -p "$out/logs"
out=$(realpath "$out")
# shellcheck disable=SC2086 # --sbatch is a list of options
array=$(sbatch --parsable $extra --export=ALL,CASM_ROOT="$root" --cpus-per-task="$cpus" --array=0-$((shards - 1)) \
  --output="$out/logs/shard-%a.out" "$here/eval-shard.sbatch" "$out" "$@")
array=${array%%;*}
echo "shards: job $array (array 0-$((shards - 1)), logs $out/logs/shard-<i>.out)"
status=0
# shellcheck disable=SC2086
merge=$(sbatch --parsable $extra --export=ALL,CASM_ROOT="$root" --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
  --output="$out/logs/merge.out" $([ $wait = 1 ] && echo --wait) "$here/eval-merge.sbatch" "$out" "$shards") || status=$?
merge=${merge%%;*}
if [ $wait = 1 ]; then
  # A merge cancelled because a shard failed (afterok never satisfied) "exits" 0: ask its state.
  state=$(scontrol show job "$merge" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
  if [ "$status" = 0 ] && [ "$state" != COMPLETED ]; then status=1; fi
fi
echo "merge: job $merge -> $out/report.json$([ "$status" != 0 ] && echo " (failed: exit $status, job ${state:-?}, see $out/logs)")"
exit "$status"
