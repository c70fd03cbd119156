# Sourced by eval.sh and experiment.sh: their common options, and the pattern both
# submit: a job array, then one job that runs once every task succeeded (afterok).

# parse_options <count option> <default cpus> "$@": sets count, gpus, cpus, wait, extra, and
# args (what follows --). Exits 2 on a bad option.
parse_options() {
  local flag=$1 script
  script=$(basename "$0")
  cpus=$2
  shift 2
  count='' gpus=0 wait=0 extra='' args=()
  while [ $# -gt 0 ]; do
    case $1 in
      "$flag") count=${2:?}; shift 2 ;;
      --gpus) gpus=${2:?}; shift 2 ;;
      --cpus) cpus=${2:?}; shift 2 ;;
      --wait) wait=1; shift ;;
      --sbatch) extra=${2:?}; shift 2 ;;
      --) shift; args=("$@"); break ;;
      -h | --help) sed -n '2,/^set -/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) echo "$script: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
  done
  [[ $count =~ ^[1-9][0-9]*$ ]] || { echo "$script: $flag must be a positive integer, got '$count'" >&2; exit 2; }
  [ -f "$CASM_ROOT/dist/src/cli.js" ] || { echo "$script: $CASM_ROOT/dist/src/cli.js is missing: run npm run build" >&2; exit 1; }
}

# array_then <logs dir> <array script> <final script>: submits tasks 0..count-1 of the array
# script with the arguments in the array task_args, and the final script with final_args after
# them; prints both job ids; with --wait returns the final job's status (non-zero when it was
# cancelled because a task failed).
array_then() {
  local logs=$1 array_script=$2 final_script=$3 array final status=0 state=''
  local gres=()
  [ "$gpus" != 0 ] && gres=(--gres="gpu:$gpus")
  mkdir -p "$logs"
  # shellcheck disable=SC2086 # --sbatch is a list of options
  array=$(sbatch --parsable $extra "${gres[@]}" --export=ALL,CASM_ROOT="$CASM_ROOT" --cpus-per-task="$cpus" --array=0-$((count - 1)) \
    --output="$logs/$(basename "$array_script" .sbatch)-%a.out" "$array_script" "${task_args[@]}")
  array=${array%%;*}
  echo "array: job $array (tasks 0-$((count - 1)), logs $logs/)"
  # shellcheck disable=SC2086
  final=$(sbatch --parsable $extra --export=ALL,CASM_ROOT="$CASM_ROOT" --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
    --output="$logs/$(basename "$final_script" .sbatch).out" $([ "$wait" = 1 ] && echo --wait) "$final_script" "${final_args[@]}") || status=$?
  final=${final%%;*}
  if [ "$wait" = 1 ]; then
    # A job cancelled because a task failed (afterok never satisfied) "exits" 0: ask its state.
    state=$(scontrol show job "$final" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
    if [ "$status" = 0 ] && [ "$state" != COMPLETED ]; then status=1; fi
  fi
  echo "then: job $final$([ "$status" != 0 ] && echo " (failed: exit $status, job ${state:-?}, see $logs/)")"
  return "$status"
}
