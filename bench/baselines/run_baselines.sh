#!/usr/bin/env bash
# Run every baseline once, sequentially, and print the numbers NOTES.md records.
#   bash bench/baselines/run_baselines.sh [LOG_DIR]
# Needs the Ray Train venv (setup_raytrain_venv.sh; RAYTRAIN_VENV picks it).
# Ray runs use RAY_TMPDIR=/tmp/rafter-bench-ray so they never touch another Ray
# user's /tmp/ray (ray_current_cluster, sessions).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${RAYTRAIN_VENV:-$HOME/.cache/rafter-bench/raytrain-venv}"
LOGS="${1:-$(mktemp -d /tmp/rafter-baselines.XXXX)}"
mkdir -p "$LOGS"
export PATH="$VENV/bin:$PATH" RAY_TMPDIR="${RAY_TMPDIR:-/tmp/rafter-bench-ray}"
PY="$VENV/bin/python"

run() {  # run NAME TIMEOUT CMD... : whole-command wall time, exit code, load average
  local name=$1 to=$2; shift 2
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$to" "$@" >"$LOGS/$name.log" 2>&1; rc=$?
  t1=$(date +%s.%N)
  printf '%-34s rc=%-3s script_s=%6.2f load1=%s  %s\n' "$name" "$rc" "$(echo "$t1 - $t0" | bc)" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$(grep -hoE '^(FIT_WALL_S|RECOVERY_S)=[0-9.]+' "$LOGS/$name.log" | tr '\n' ' ')"
}
fault() {  # fault NAME : seconds from the fault timestamp to the end of the run, and the first error line
  local end; end=$(date +%s.%N)
  printf '  %s: fault->exit %.2fs\n  first line: %s\n' "$1" "$(echo "$end - $(cat "$LOGS/fault.txt")" | bc)" \
    "$("$PY" "$HERE/firstline.py" "$LOGS/$1.log" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["first_line"])')"
}

run torchrun_quickstart 300 torchrun --standalone --nproc_per_node=4 "$HERE/torchrun_quickstart.py"
run raytrain_quickstart 300 "$PY" "$HERE/raytrain_quickstart.py"
run raytrain_cluster_quickstart 300 "$PY" "$HERE/raytrain_cluster_quickstart.py"
rm -f "$LOGS"/death.txt "$LOGS"/first.txt
BENCH_DEATH_FILE="$LOGS/death.txt" BENCH_FIRST_STEP_FILE="$LOGS/first.txt" TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 \
  run torchrun_recovery 180 torchrun --standalone --nproc_per_node=2 --max-restarts=1 "$HERE/torchrun_recovery.py"
BENCH_DEATH_FILE="$LOGS/death.txt" BENCH_FIRST_STEP_FILE="$LOGS/first.txt" \
  run raytrain_recovery 300 "$PY" "$HERE/raytrain_recovery.py"
for mode in sigkill exception; do
  rm -f "$LOGS/fault.txt"
  BENCH_DEATH_FILE="$LOGS/fault.txt" run "torchrun_diagnose_$mode" 180 \
    torchrun --standalone --nproc_per_node=2 "$HERE/torchrun_diagnose.py" "$mode"
  fault "torchrun_diagnose_$mode"
  rm -f "$LOGS/fault.txt"
  BENCH_DEATH_FILE="$LOGS/fault.txt" run "raytrain_diagnose_$mode" 300 "$PY" "$HERE/raytrain_diagnose.py" "$mode"
  fault "raytrain_diagnose_$mode"
done
echo "logs: $LOGS"
