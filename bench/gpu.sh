#!/usr/bin/env bash
# One command for a lent GPU machine: picks a Python with TensorFlow (and a GPU), then runs
# bench/gpu.py with it. Offline machines are fine: nothing is installed unless a fresh venv is
# the only way left (see 4 below).
#
# Usage: bash bench/gpu.sh [--smoke] [--skip STEP,...] [--only STEP,...] [--out DIR]
#                          [--budget STEP=S ...] [--total S]
# Steps: env, fg_vgg16, bench, tests, memory, generation, weight_draws. Output: bench/results/gpu/ (--smoke: gpu-smoke/).
#
# The interpreter, first that works:
#   0. $PYTHON, if set (and only it: fails if it lacks TensorFlow, or a GPU without --smoke);
#   1. python3 on PATH, 2. ./.venv/bin/python, 3. ./.venv-bench/bin/python, 4. ./.venv-gpu
#      (${GPU_VENV}), created if absent with `pip install -e ".[gpu,test]"`: from
#      ${WHEELS} (a local wheel folder, --no-index) when set, else from the index; skipped with
#      GPU_VENV_CREATE=0 (and, without --smoke, where nvidia-smi is absent). Without --smoke a
#      candidate must see a GPU; if none does but one has
#      TensorFlow, that one runs, and the env step stops the run with exit 2 ("no GPU").
# tfmollify comes from this checkout (PYTHONPATH), never from an install.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
ROOT=$PWD

SMOKE=0
for a in "$@"; do [[ $a == --smoke ]] && SMOKE=1; done

HAS_TF='import tensorflow'
HAS_GPU='import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else 3)'

check() {  # check PY -> 0: usable (TF, and a GPU unless smoke); 3: TF but no GPU; 1: no TF
  local py=$1
  [[ -n $py ]] && command -v "$py" >/dev/null 2>&1 || return 1
  TF_CPP_MIN_LOG_LEVEL=3 "$py" -c "$HAS_TF" >/dev/null 2>&1 || return 1
  ((SMOKE)) && return 0
  TF_CPP_MIN_LOG_LEVEL=3 "$py" -c "$HAS_GPU" >/dev/null 2>&1 && return 0
  return 3
}

PY=""
TF_ONLY=""
if [[ -n ${PYTHON:-} ]]; then
  check "$PYTHON"; rc=$?
  if ((rc == 1)); then
    echo "gpu.sh: PYTHON=$PYTHON cannot import tensorflow" >&2; exit 3
  fi
  ((rc == 3)) && echo "gpu.sh: PYTHON=$PYTHON sees no GPU; running it anyway" >&2
  PY=$PYTHON
else
  for cand in python3 "$ROOT/.venv/bin/python" "$ROOT/.venv-bench/bin/python" \
              "${GPU_VENV:-$ROOT/.venv-gpu}/bin/python"; do
    check "$cand"; rc=$?
    if ((rc == 0)); then PY=$cand; break; fi
    if ((rc == 3)) && [[ -z $TF_ONLY ]]; then TF_ONLY=$cand; fi
  done
  VENV=${GPU_VENV:-$ROOT/.venv-gpu}
  CREATE=${GPU_VENV_CREATE:-1}
  if ((!SMOKE)) && ! command -v nvidia-smi >/dev/null 2>&1; then
    CREATE=0  # no NVIDIA driver: a GPU build of TensorFlow cannot help
  fi
  if [[ -z $PY && $CREATE != 0 && ! -x $VENV/bin/python ]]; then
    echo "gpu.sh: no Python with TensorFlow$( ((SMOKE)) || echo ' and a GPU'); trying a fresh venv in $VENV" >&2
    extra=".[gpu,test]"; ((SMOKE)) && extra=".[cpu,test]"
    pipargs=(--retries 0 --timeout 10)
    [[ -n ${WHEELS:-} ]] && pipargs+=(--no-index --find-links "$WHEELS")
    if python3 -m venv "$VENV" >&2 &&
       timeout "${GPU_PIP_TIMEOUT:-300}" "$VENV/bin/pip" install "${pipargs[@]}" -e "$extra" >&2; then
      check "$VENV/bin/python"; rc=$?
      ((rc == 0)) && PY=$VENV/bin/python
      ((rc == 3)) && [[ -z $TF_ONLY ]] && TF_ONLY=$VENV/bin/python
    else
      echo "gpu.sh: creating $VENV failed (offline? set WHEELS=/path/to/wheels)" >&2
      rm -rf "$VENV"  # ours, and broken: the next run tries again
    fi
  fi
  if [[ -z $PY && -n $TF_ONLY ]]; then
    echo "gpu.sh: TensorFlow without a visible GPU in $TF_ONLY; its env step will say so" >&2
    PY=$TF_ONLY
  fi
fi
if [[ -z $PY ]]; then
  cat >&2 <<EOF
gpu.sh: no usable Python found. Tried: \$PYTHON, python3, .venv, .venv-bench, ${GPU_VENV:-.venv-gpu}
(and pip into a fresh venv unless GPU_VENV_CREATE=0). Set PYTHON=/path/to/python with
TensorFlow (GPU build), or WHEELS=/path/to/wheel/folder for an offline install.
EOF
  exit 3
fi

echo "gpu.sh: using $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))" >&2
export PYTHONPATH="$ROOT:$ROOT/bench${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=tensorflow
exec "$PY" "$ROOT/bench/gpu.py" "$@"
