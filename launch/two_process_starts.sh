#!/usr/bin/env bash
# Starts the same two-process run N times in a row on this machine, as two hosts would run it
# (one CPU device per process, a shared workdir, --config.mesh.distributed=True), and compares
# each start with one process with two devices. A process still running after LIMIT seconds
# (default 300) is killed and counted as a hang. From the repository root:
#
#   bash launch/two_process_starts.sh 20
#
# Prints one line per start (both exit codes, seconds, whether both processes printed the
# one-process metrics exactly) and a summary line; logs go to runs/two_process_starts/.
set -uo pipefail

starts="${1:-20}"
limit="${LIMIT:-300}"
flags=(--config=configs/synthetic.py:tiny --config.train.num_epochs=1)
out=runs/two_process_starts
rm -rf "$out" && mkdir -p "$out"

JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 timeout -s KILL "$limit" \
    python -m sine_jax.main "${flags[@]}" --workdir="$out/one_process" \
    > "$out/one_process.out" 2> "$out/one_process.err" \
    || { echo "one process with two devices failed: see $out/one_process.err"; exit 1; }
reference="$(tail -n 1 "$out/one_process.out")"
echo "one process, two devices: $reference"

same=0 hung=0 seconds=()
for run in $(seq "$starts"); do
  port=$((20000 + RANDOM % 20000))
  started=$(date +%s)
  pids=()
  for process in 0 1; do
    JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=1 JAX_COORDINATOR_ADDRESS="localhost:$port" \
    JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$process timeout -s KILL "$limit" \
        python -m sine_jax.main "${flags[@]}" --config.mesh.distributed=True \
        --workdir="$out/run$run" > "$out/run$run.$process.out" 2> "$out/run$run.$process.err" &
    pids+=($!)
  done
  codes=()
  for pid in "${pids[@]}"; do
    wait "$pid"
    codes+=($?)
  done
  took=$(($(date +%s) - started))
  seconds+=("$took")
  verdict="differ from one process"
  if [[ "$(tail -n 1 "$out/run$run.0.out")" == "$reference" \
        && "$(tail -n 1 "$out/run$run.1.out")" == "$reference" ]]; then
    verdict="the one-process metrics"
    same=$((same + 1))
  fi
  [[ " ${codes[*]} " == *" 137 "* ]] && hung=$((hung + 1)) && verdict="hung (killed)"
  echo "start $run: exit codes ${codes[*]}, ${took} s, $verdict"
  rm -rf "${out:?}/run$run"  # the logs stay
done
sorted=$(printf '%s\n' "${seconds[@]}" | sort -n | tr '\n' ' ')
echo "$same of $starts starts finished with the one-process metrics, $hung hung;" \
     "seconds per start: $sorted"
