#!/usr/bin/env bash
# Installs the PyTorch reference of `npm run bench` (bench/reference/casm_iteration.py) into its own
# venv, .venv-bench, so the project's .venv (what CI installs) stays small. Needed for the bench only.
#
#   bash scripts/setup-bench.sh
#
# What: torch==2.13.0+cpu (the local wheel in /opt/wheels, pip's find-links) + torchvision==0.28.0
# (pip's configured local index) and their dependencies (numpy, pillow, sympy, ...): about 1 GB on
# disk (torch alone 754 MB), ~40 s here, no network needed. That torchvision wheel is a CUDA build
# whose C++ ops cannot load against CPU torch; casm_iteration.py works around it the way
# test/helpers/torchvision_resnet.py does (the models need none of the C++ ops).
#
# Idempotent: when .venv-bench already imports both at the pinned versions it only says so (seconds).
#
# Environment:
#   CASM_BENCH_VENV   the venv (default: <repo>/.venv-bench)
#   PYTHON            interpreter that creates it (default: python3; the wheels are cp311: Python 3.11)
# Exit status: 0 when the venv imports torch + torchvision at the end, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${CASM_BENCH_VENV:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3}"
REFERENCE="$ROOT/bench/reference/casm_iteration.py"
TORCH_PIN="torch==2.13.0+cpu"
TORCHVISION_PIN="torchvision==0.28.0"

say() { echo "[setup-bench] $*"; }
die() { echo "[setup-bench] FAILED: $*" >&2; exit 1; }

[ -f "$REFERENCE" ] || die "$REFERENCE is missing"

# Succeeds (printing the probe's JSON) when the venv imports the pinned torch + torchvision.
ready() {
  [ -x "$VENV/bin/python" ] || return 1
  local info
  info="$("$VENV/bin/python" "$REFERENCE" --probe 2>/dev/null)" || return 1
  case "$info" in
    *'"torch": "2.13.0+cpu"'*'"torchvision": "0.28.0'*) echo "$info" ;;
    *) return 1 ;;
  esac
}

t=$SECONDS
if info="$(ready)"; then
  say "already set up: $info"
  exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON is not on PATH"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' ||
  die "$PYTHON is $("$PYTHON" --version 2>&1); the local torch/torchvision wheels are cp311 (set PYTHON=python3.11)"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "python -m venv $VENV failed"
fi

# As setup.sh: with pypi.org unreachable, don't let pip retry it for minutes (everything we need
# lies on the local index / find-links).
if [ -z "${PIP_RETRIES:-}" ] && ! timeout 10 "$VENV/bin/python" -c 'import socket; socket.getaddrinfo("pypi.org", 443)' 2>/dev/null; then
  export PIP_RETRIES=0
fi

say "pip install $TORCH_PIN $TORCHVISION_PIN into $VENV (about 1 GB on disk, under a minute here)"
# (pip's notes that the local index lacks a package the other one has are noise: filtered out.)
"$VENV/bin/python" -m pip install -q --progress-bar off "$TORCH_PIN" "$TORCHVISION_PIN" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) ||
  die "pip install failed (are /opt/wheels and the local index configured? see 'pip config list')"

info="$(ready)" || die "$VENV/bin/python still cannot import $TORCH_PIN + $TORCHVISION_PIN (try: $VENV/bin/python $REFERENCE --probe)"
say "ready: $info"
say "done in $((SECONDS - t)) s; $(du -sh "$VENV" 2>/dev/null | cut -f1) in $VENV"
