#!/usr/bin/env bash
# Train the folds of one model preset, one process per fold. With GPUs: FOLDS_PER_GPU folds per GPU at
# a time, each with that share of its memory, the rest queued and started as slots free up. Without:
# CPU_JOBS processes of THREADS threads each.
# Only scheduling lives here; the work is `python -m src.train`.
set -u

usage() {
  cat <<'TXT'
usage: ./run_folds.sh MODEL [--cluster ADDRESS] [FOLD ...] [-- TRAIN_OPTIONS ...]

  MODEL          a preset of src.base.config (1d, 2d, logmel, envnet, aisfx)
  FOLD ...       folds to train (default: all folds in data/folds.csv)
  TRAIN_OPTIONS  passed to every `python -m src.train` (e.g. --epochs 20 --data-dir data --force)
  --cluster ADDRESS
                 send the folds to the Dask scheduler at ADDRESS (tcp://HOST:8786) instead of local
                 processes: one fold per worker offering GPU=1 (see `python -m src.tools.cluster --help`)

Environment:
  PYTHON      interpreter (default: python3)
  GPUS        GPU ids to use, e.g. "0 1" (default: every GPU `nvidia-smi -L` lists)
  FOLDS_PER_GPU
              fold processes sharing one GPU, each given 1/FOLDS_PER_GPU of its memory (default: 5;
              see docs/speed.md)
  NVIDIA_SMI  the nvidia-smi command used to find GPUs (default: nvidia-smi)
  THREADS     threads per CPU fold process (default: 2)
  CPU_JOBS    CPU fold processes at once when there is no GPU (default: cores / THREADS, at least 1)

Each fold logs to predictions/MODEL/logs/foldK.log; a table of fold, status, validation score
(MAP@3, or lwlrap for a multi-label dataset) and minutes closes the run. Exit status 1 if any fold
failed; finished folds are kept and skipped on the next run.
TXT
}

[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; [[ $# -ge 1 ]]; exit $?; }
(( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )) \
  || { echo "run_folds.sh needs bash >= 5.1 (for wait -n -p); this is $BASH_VERSION" >&2; exit 2; }

model=$1; shift
cluster=
if [[ ${1:-} == --cluster ]]; then
  [[ $# -ge 2 ]] || { echo "--cluster needs the scheduler's address, e.g. tcp://HOST:8786" >&2; exit 2; }
  cluster=$2; shift 2
fi
folds=()
while [[ $# -gt 0 && $1 != -- ]]; do folds+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
options=("$@")
PYTHON=${PYTHON:-python3}
THREADS_SET=${THREADS:+1}
THREADS=${THREADS:-2}
# The package comes from the installed project (`pip install -r requirements.txt`) or, uninstalled, from the
# folder this runs in when that is the repository root.
"$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("src.train") is None)' 2>/dev/null || {
  echo "$PYTHON cannot import this project (src.train): install it from the repository root with" \
    "python3 -m pip install -r requirements.txt, or run ./run_folds.sh from the repository root" >&2; exit 2; }

if [[ -n $cluster ]]; then  # the same fold job, scheduled by Dask instead of this script
  exec "$PYTHON" -m src.tools.cluster "$cluster" --model "$model" ${THREADS_SET:+--threads "$THREADS"} \
    ${folds[@]+--folds "${folds[@]}"} -- "${options[@]}"
fi

# Build caches and folds once, before fold processes start reading them; the plan (fold ids, folders)
# comes back as JSON in a file.
plan=$(mktemp) || exit 2
trap 'rm -f "$plan"' EXIT
"$PYTHON" -m src.train --model "$model" --prepare --plan "$plan" "${options[@]}" || exit 2
field() { "$PYTHON" -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(*v) if isinstance(v, list) else print(v)' "$plan" "$1"; }
read -r -a all_folds <<<"$(field folds)"
log_dir=$(field log_dir)
# One run of a model at a time (a second terminal, or a --cluster run beside this one): the lock names
# this shell; each fold process also holds its fold's own lock.
run_lock=$(field run_lock)
"$PYTHON" -m src.training.runs lock "$run_lock" $$ "./run_folds.sh $model" || exit 2
trap 'rm -f "$plan" "$run_lock"' EXIT
(( ${#folds[@]} )) || folds=("${all_folds[@]}")
mkdir -p "$log_dir" 2>/dev/null || { echo "cannot create the log folder $log_dir: check --out-dir and its permissions" >&2; exit 2; }

if [[ -n ${GPUS+set} ]]; then
  read -r -a slots <<<"$GPUS"
else
  mapfile -t slots < <(${NVIDIA_SMI:-nvidia-smi} -L 2>/dev/null | sed -n 's/^GPU \([0-9]\+\):.*/\1/p')
fi
if (( ${#slots[@]} )); then
  device=gpu
  per_gpu=${FOLDS_PER_GPU:-5}
  [[ $per_gpu =~ ^[1-9][0-9]*$ ]] || { echo "FOLDS_PER_GPU must be a whole number >= 1, not '$per_gpu'" >&2; exit 2; }
  gpus=("${slots[@]}"); slots=()
  for (( i = 0; i < per_gpu; i++ )); do slots+=("${gpus[@]}"); done
  share=$(awk -v n="$per_gpu" 'BEGIN { printf "%.4f", 1 / n }')
  echo "$model: ${#folds[@]} fold(s) on ${#gpus[@]} GPU(s): ${gpus[*]}, $per_gpu at a time on each"
else
  device=cpu
  jobs=${CPU_JOBS:-$(( $(nproc) / THREADS ))}
  (( jobs >= 1 )) || jobs=1
  slots=(); for (( i = 0; i < jobs; i++ )); do slots+=("cpu$i"); done
  echo "$model: ${#folds[@]} fold(s) on CPU, $jobs process(es) of $THREADS thread(s)"
fi

status_file=$(mktemp)
declare -A fold_of slot_of start_of
free=("${slots[@]}")

launch() {  # fold slot
  local fold=$1 slot=$2 log=$log_dir/fold$1.log
  # Appended, never replaced: a rerun's log follows the killed attempt's.
  echo "=== $(date '+%F %T') attempt on ${slot}" >>"$log"
  if [[ $device == gpu ]]; then
    echo "fold $fold -> GPU $slot (log: $log)"
    CUDA_VISIBLE_DEVICES=$slot GPU_SHARE=$share "$PYTHON" -m src.train --model "$model" --fold "$fold" "${options[@]}" \
      >>"$log" 2>&1 &
  else
    echo "fold $fold -> $slot (log: $log)"
    CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=$THREADS TF_NUM_INTRAOP_THREADS=$THREADS \
      TF_NUM_INTEROP_THREADS=$THREADS "$PYTHON" -m src.train --model "$model" --fold "$fold" \
      "${options[@]}" >>"$log" 2>&1 &
  fi
  fold_of[$!]=$fold; slot_of[$!]=$slot; start_of[$!]=$SECONDS
}

reap() {  # wait for any fold process; record it and free its slot
  local pid code
  wait -n -p pid; code=$?
  [[ -n ${pid:-} && -n ${fold_of[$pid]+set} ]] || return
  local fold=${fold_of[$pid]}
  echo "$fold $code $(( SECONDS - start_of[$pid] ))" >>"$status_file"
  if (( code == 0 )); then echo "fold $fold done"; else echo "fold $fold FAILED (exit $code): see $log_dir/fold$fold.log"; fi
  free+=("${slot_of[$pid]}")
  unset "fold_of[$pid]" "slot_of[$pid]" "start_of[$pid]"
}

trap 'echo "interrupted: stopping fold processes" >&2; kill "${!fold_of[@]}" 2>/dev/null; exit 130' INT TERM

for fold in "${folds[@]}"; do
  while (( ${#free[@]} == 0 )); do reap; done
  launch "$fold" "${free[0]}"
  free=("${free[@]:1}")
done
while (( ${#fold_of[@]} )); do reap; done

"$PYTHON" -m src.training.runs "$plan" "$status_file"
code=$?
rm -f "$status_file"
exit $code
