#!/usr/bin/env bash
# casm-ts: the one install command (README): bash scripts/setup.sh   (or: npm run setup)
#
# Steps, each skipped when already done, so a re-run takes seconds:
#   1. npm ci                         node packages from package-lock.json. The repo's .npmrc has
#                                     ignore-scripts=true (and we pass --ignore-scripts too), so
#                                     @tensorflow/tfjs-node's install script, which would download
#                                     libtensorflow 2.9.1 from a cloud bucket, never runs.
#                                     Skipped while node_modules matches package.json + lock.
#   2. .venv + requirements.txt       python3 -m venv .venv; pip install -r requirements.txt
#                                     (the TensorFlow wheel, tensorboard, numpy, safetensors...).
#                                     Skipped while .venv/.casm-requirements-stamp holds the
#                                     sha256 of requirements.txt.
#   3. native engine                  scripts/build-engine.sh: compiles tfjs-node's binding against
#                                     the libtensorflow inside the wheel from step 2.
#   4. test oracles                   scripts/setup-oracles.sh: torch + torchvision, which the tests
#                                     compare our ResNet with (Debian's packages, else pip).
#   5. photo sources                  scripts/fetch-photo-sources.sh: the real photos of the
#                                     photo-objects benchmark (Debian packages, unpacked into
#                                     data/cache/photo-sources/; about 45 MB kept).
#   6. npm run build                  tsc -> dist/
#
# If step 3 fails, the install still completes, with a big WARNING: casm-ts then runs on the
# pure-JS 'cpu' backend of TensorFlow.js (correct, much slower). CASM_REQUIRE_NATIVE=1 makes that
# a hard failure instead (for CI).
#
# Environment:
#   CASM_GPU=1            GPU route: the CUDA `tensorflow[and-cuda]` wheel (same version as the
#                         tensorflow-cpu pin in requirements.txt) instead of tensorflow-cpu, and
#                         @tensorflow/tfjs-node-gpu (same version as tfjs-node, installed with
#                         --no-save, so package.json and the lock stay as they are) built against
#                         it. NOT TESTED: our machines have no GPU. Written to be reasonable only.
#   CASM_REQUIRE_NATIVE=1 fail (exit 1) when the native engine cannot be built.
#   PYTHON=python3.11     interpreter used to create .venv (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GPU="${CASM_GPU:-0}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
T_START=$SECONDS
TIMINGS=()

step() { echo; echo "==> [setup] $*"; }
info() { echo "    $*"; }
fail() { echo; echo "!!! [setup] FAILED: $*" >&2; exit 1; }
timed() { TIMINGS+=("$(printf '%-16s %4ds' "$1" "$2")"); }
sha() { sha256sum "$@" | sha256sum | cut -c1-64; }

[ "$GPU" = "0" ] || [ "$GPU" = "1" ] || fail "CASM_GPU must be 0 or 1 (got '$GPU')"

# ------------------------------------------------------------------ prerequisites
step "checking prerequisites"
command -v node >/dev/null || fail "node is not on PATH (Node.js >= 20 is required)"
command -v npm >/dev/null || fail "npm is not on PATH"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 20 ] || fail "Node.js >= 20 is required (found $(node --version))"
command -v "$PYTHON" >/dev/null || fail "$PYTHON is not on PATH (Python 3.10-3.13 is needed for TensorFlow 2.21)"
"$PYTHON" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
  fail "$PYTHON is $("$PYTHON" --version 2>&1); TensorFlow 2.21 needs Python >= 3.10 (with the venv module)"
info "node $(node --version), npm $(npm --version 2>/dev/null), $("$PYTHON" --version 2>&1), route: $([ "$GPU" = 1 ] && echo 'GPU (CUDA)' || echo CPU)"

# ------------------------------------------------------------------ 1. node packages
step "1/6 node packages (npm ci)"
t=$SECONDS
NPM_STAMP="$ROOT/node_modules/.casm-npm-stamp"
NPM_KEY="$(sha package.json package-lock.json) node=$(node -p process.versions.modules) gpu=$GPU"
if [ -f "$NPM_STAMP" ] && [ "$(cat "$NPM_STAMP")" = "$NPM_KEY" ] && [ -d node_modules/@tensorflow/tfjs-node ]; then
  info "node_modules matches package-lock.json: skipped"
else
  # npm ci removes node_modules first, which also removes a previously built native engine.
  npm ci --ignore-scripts --no-audit --no-fund || fail "npm ci failed"
  if [ "$GPU" = 1 ]; then
    TFJS_NODE_VERSION="$(node -p "require('@tensorflow/tfjs-node/package.json').version")"
    info "GPU route: adding @tensorflow/tfjs-node-gpu@$TFJS_NODE_VERSION (--no-save)"
    npm install --no-save --ignore-scripts --no-audit --no-fund "@tensorflow/tfjs-node-gpu@$TFJS_NODE_VERSION" ||
      fail "npm install @tensorflow/tfjs-node-gpu@$TFJS_NODE_VERSION failed"
  fi
  echo "$NPM_KEY" >"$NPM_STAMP"
fi
timed "npm" $((SECONDS - t))

# ------------------------------------------------------------------ 2. python venv
step "2/6 Python environment (.venv, requirements.txt)"
t=$SECONDS
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
  info ".venv exists but its interpreter does not run (was its Python removed?): recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  info "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || fail "python -m venv failed (Debian: apt-get install python3-venv)"
fi
PIP_STAMP="$VENV/.casm-requirements-stamp"
PIP_KEY="$(sha requirements.txt) gpu=$GPU"
if [ -f "$PIP_STAMP" ] && [ "$(cat "$PIP_STAMP")" = "$PIP_KEY" ]; then
  info "requirements.txt unchanged since the last install: skipped"
else
  REQ="requirements.txt"
  if [ "$GPU" = 1 ]; then
    # Swap the tensorflow-cpu pin for the CUDA wheel of the same version (same `tensorflow`
    # module; the two distributions must not be installed together).
    TF_SPEC="$(sed -n -E 's/^[[:space:]]*tensorflow-cpu[[:space:]]*([=<>!~][^;#[:space:]]*).*/\1/p' requirements.txt | head -1)"
    REQ="$(mktemp)"
    trap 'rm -f "$REQ"' EXIT
    grep -v -E '^[[:space:]]*tensorflow-cpu([^A-Za-z0-9_.-]|$)' requirements.txt >"$REQ" || true
    echo "tensorflow[and-cuda]${TF_SPEC}" >>"$REQ"
    info "GPU route: tensorflow[and-cuda]${TF_SPEC} instead of tensorflow-cpu"
    if "$VENV/bin/python" -m pip show -q tensorflow-cpu >/dev/null 2>&1; then
      "$VENV/bin/python" -m pip uninstall -y -q tensorflow-cpu
    fi
  elif "$VENV/bin/python" -m pip show -q tensorflow >/dev/null 2>&1; then
    info "removing the GPU 'tensorflow' wheel left by a CASM_GPU=1 install"
    "$VENV/bin/python" -m pip uninstall -y -q tensorflow
  fi
  # On machines that reach only a local package index (like ours), pip would retry pypi.org
  # five times per package with back-off: minutes of waiting. Turn retries off in that case.
  if [ -z "${PIP_RETRIES:-}" ] && [ -z "${PIP_INDEX_URL:-}" ] &&
     [ -z "$("$VENV/bin/python" -m pip config get global.index-url 2>/dev/null || true)" ] &&
     ! timeout 10 "$VENV/bin/python" -c 'import socket; socket.getaddrinfo("pypi.org", 443)' 2>/dev/null; then
    info "pypi.org is unreachable: pip uses only the configured local indexes (PIP_RETRIES=0)"
    export PIP_RETRIES=0
  fi
  info "pip install -r requirements.txt (first time: a few minutes, TensorFlow is ~250 MB)"
  "$VENV/bin/python" -m pip install -q --progress-bar off -r "$REQ" ||
    fail "pip install -r requirements.txt failed (see pip's message above)"
  echo "$PIP_KEY" >"$PIP_STAMP"
fi
info "$("$VENV/bin/python" -m pip list 2>/dev/null | grep -i -E '^tensorflow([-_]cpu)? ' | tr -s ' ' || true)"
timed "python venv" $((SECONDS - t))

# ------------------------------------------------------------------ 3. native engine
step "3/6 native engine (tfjs-node binding on the wheel's libtensorflow)"
t=$SECONDS
ENGINE_OK=1
CASM_GPU="$GPU" CASM_VENV="$VENV" bash "$ROOT/scripts/build-engine.sh" || ENGINE_OK=0
timed "native engine" $((SECONDS - t))
if [ "$ENGINE_OK" = 0 ]; then
  cat >&2 <<'EOF'

***************************************************************************************
*  WARNING: the native TensorFlow engine could NOT be built (see the message above).  *
*  casm-ts still works, on the pure-JS 'cpu' backend of TensorFlow.js, which is       *
*  MUCH slower. Backend `auto` says so at start-up; asking for backend                *
*  `tensorflow` explicitly fails.                                                     *
*  After fixing the cause: bash scripts/build-engine.sh --force                       *
***************************************************************************************

EOF
  [ "${CASM_REQUIRE_NATIVE:-0}" = 1 ] && fail "native engine required (CASM_REQUIRE_NATIVE=1)"
fi

# ------------------------------------------------------------------ 4. test oracles
step "4/6 test oracles (torch + torchvision for the ResNet-50 oracle test)"
t=$SECONDS
# Only the tests need them: training runs without. A failure here shows again as a failing test.
CASM_VENV="$VENV" bash "$ROOT/scripts/setup-oracles.sh" ||
  echo "WARNING: torch/torchvision oracles could not be installed; the oracle tests will fail" >&2
timed "test oracles" $((SECONDS - t))
# Debian packages some tests drive: installed as root with apt-get, else a warning (those tests fail).
debian_tool() { # debian_tool <path of its binary> <what for> <apt-get install options and packages...>
  local bin=$1 why=$2
  shift 2
  if [ -x "$bin" ]; then
    info "$why: $bin present"
  elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    info "$why: apt-get install $*"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } ||
      echo "WARNING: $* could not be installed; the $why will fail" >&2
  else
    echo "WARNING: $bin is missing (as root: apt-get install $*); the $why will fail" >&2
  fi
}
t=$SECONDS
# test/exportBrowser.test.ts: the web/ page end to end in Debian's chromium.
debian_tool /usr/bin/chromium "browser test" chromium
# test/slurm.test.ts: sharded evaluation on a single-node Slurm cluster started by the test.
debian_tool /usr/sbin/slurmctld "Slurm test" --no-install-recommends slurmctld slurmd slurm-client munge
timed "browser, Slurm" $((SECONDS - t))

# ------------------------------------------------------------------ 5. photo sources
step "5/6 photo sources (Debian packages for the photo-objects benchmark)"
t=$SECONDS
# The benchmark's tests and `node data/make-photo-objects.mjs` need them; training on digits does not.
bash "$ROOT/scripts/fetch-photo-sources.sh" ||
  echo "WARNING: the photo sources could not be fetched; the photo-objects tests will fail" >&2
timed "photo sources" $((SECONDS - t))

# ------------------------------------------------------------------ 6. TypeScript
step "6/6 TypeScript build (npm run build)"
t=$SECONDS
npm run build --silent || fail "npm run build (tsc) failed"
timed "tsc" $((SECONDS - t))

echo
echo "==> [setup] done in $((SECONDS - T_START)) s:"
for line in "${TIMINGS[@]}"; do info "$line"; done
if [ "$ENGINE_OK" = 1 ]; then
  info "engine: native libtensorflow ($([ "$GPU" = 1 ] && echo "GPU route" || echo CPU))"
else
  info "engine: pure-JS cpu fallback (SLOW) -- see the WARNING above"
fi
