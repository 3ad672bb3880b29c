#!/usr/bin/env bash
# Create (once) a venv with Ray Train 2.60 + CPU torch 2.13.0 for the baseline benchmarks.
#
#   RAYTRAIN_VENV=/path/to/venv bash bench/baselines/setup_raytrain_venv.sh
#
# Default venv: $HOME/.cache/rafter-bench/raytrain-venv (kept outside the repo).
# Idempotent: if the venv already imports ray.train.torch with the pinned versions,
# nothing is done. torch is pinned through a pip constraints file so that resolving
# ray[train] can never upgrade it (an unpinned torch would pull a multi-GB CUDA build).
# Prints the venv's python path as its last line.
set -euo pipefail

VENV="${RAYTRAIN_VENV:-$HOME/.cache/rafter-bench/raytrain-venv}"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
RAY_SPEC="ray[train]==2.60.*"

check() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PYEOF >/dev/null 2>&1
import ray, torch, ray.train.torch  # noqa: F401
assert ray.__version__.startswith("2.60."), ray.__version__
assert torch.__version__.split("+")[0] == "$TORCH_VERSION", torch.__version__
PYEOF
}

if check; then
  echo "raytrain venv already OK: $VENV" >&2
  echo "$VENV/bin/python"
  exit 0
fi

echo "creating raytrain venv at $VENV" >&2
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

# torch first (CPU build from the local wheel cache/index), then ray; the constraint
# file (-c, added on top of any pip.conf constraints) stops the second resolve from
# touching torch.
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION"
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "$RAY_SPEC"

if ! check; then
  echo "raytrain venv at $VENV does not import ray.train.torch with the pinned versions" >&2
  exit 1
fi
echo "$VENV/bin/python"
