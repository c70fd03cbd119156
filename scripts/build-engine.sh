#!/usr/bin/env bash
# Builds the native TensorFlow engine of casm-ts: the @tensorflow/tfjs-node N-API binding
# (tfjs_binding.node), compiled from the sources shipped in the npm package and linked against
# the libtensorflow that ships inside the TensorFlow pip wheel installed in .venv.
#
# Why: tfjs-node@4.22.0's own install script downloads libtensorflow 2.9.1 (and a prebuilt
# binding) from a cloud bucket. That does not work offline, and 2.9.1 is old. The TensorFlow
# wheel already carries a complete libtensorflow (libtensorflow_cc.so.2 exports the whole C API,
# TF_* and TFE_*; libtensorflow_framework.so.2 is its companion) plus the C API headers, so we
# stage those where binding.gyp looks for them and run node-gyp ourselves. Nothing downloads:
# the repo's .npmrc has ignore-scripts=true, and we call node-gyp directly with the local Node
# headers (--nodedir), never node-pre-gyp / scripts/install.js.
#
# Layout produced, in node_modules/@tensorflow/tfjs-node/ (binding.gyp's expectations):
#   deps/lib/libtensorflow_cc.so.2, libtensorflow_framework.so.2   hard links (or copies) of
#                                                                   the wheel's libraries
#   deps/lib/libtensorflow.so, libtensorflow.so.2 -> libtensorflow_cc.so.2   (-ltensorflow)
#   deps/lib/libtensorflow_framework.so -> libtensorflow_framework.so.2     (-ltensorflow_framework)
#   deps/include/...        the C API headers the binding includes, and what they include
#   lib/napi-v<N>/tfjs_binding.node   where the package's dist/index.js looks (node-pre-gyp find)
#   deps/.casm-engine-stamp  what it was built from; a re-run with the same inputs only checks
#                            that the binding still loads
# The binding's RUNPATH is $ORIGIN/../../deps/lib, so it finds the staged libraries with no
# LD_LIBRARY_PATH. Hard links cost no disk when .venv and node_modules share a file system, and
# keep working if .venv is later changed or removed (~850 MB if it has to copy).
#
# Usage: bash scripts/build-engine.sh [--force]
#   CASM_GPU=1   also build @tensorflow/tfjs-node-gpu (when installed) against the same wheel
#                libraries (the wheel must then be the CUDA `tensorflow` one; see setup.sh).
#                The GPU route cannot be tested on our CPU-only machines: it is written to be
#                reasonable, not proven.
#   CASM_VENV    virtual environment holding the TensorFlow wheel (default: <repo>/.venv)
# Exit status: 0 when every requested binding is built (or already was) and passes the check
# (loads, runs a conv2d and its gradient, compared with the pure-JS cpu backend); non-zero
# otherwise, after a loud message. scripts/setup.sh decides what a failure means for the install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${CASM_VENV:-$ROOT/.venv}"
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-engine: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "[build-engine] $*"; }
die() {
  {
    echo
    echo "########################################################################"
    echo "## build-engine: FAILED to build the native TensorFlow engine"
    while [ $# -gt 0 ]; do echo "##   $1"; shift; done
    echo "## Without it, casm-ts falls back to the pure-JS 'cpu' backend (correct but"
    echo "## much slower). Fix the cause above, then: bash scripts/build-engine.sh --force"
    echo "########################################################################"
    echo
  } >&2
  exit 1
}

# ---------------------------------------------------------------- tools
command -v node >/dev/null || die "node is not on PATH"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY is missing: create the venv with the TensorFlow wheel first (bash scripts/setup.sh)"
for tool in make c++; do
  command -v "$tool" >/dev/null || die "'$tool' is not on PATH: install a C++ toolchain (Debian: apt-get install build-essential)"
done

# node-gyp: npm bundles one; node-pre-gyp uses the same search order.
NODE_GYP=""
for cand in "${npm_config_node_gyp:-}" \
            "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js" \
            "$(npm root -g 2>/dev/null || true)/npm/node_modules/node-gyp/bin/node-gyp.js"; do
  if [ -n "$cand" ] && [ -f "$cand" ]; then NODE_GYP="$cand"; break; fi
done
if [ -z "$NODE_GYP" ] && command -v node-gyp >/dev/null; then NODE_GYP="$(command -v node-gyp)"; fi
[ -n "$NODE_GYP" ] || die "node-gyp not found (it ships with npm; or: npm install -g node-gyp)"

# Node headers: use the ones installed with node so node-gyp does not download them.
NODEDIR="${npm_config_nodedir:-}"
if [ -z "$NODEDIR" ]; then
  NODEDIR="$(node -p 'require("path").resolve(process.execPath, "..", "..")')"
fi
if [ ! -f "$NODEDIR/include/node/node_api.h" ] || [ ! -f "$NODEDIR/include/node/common.gypi" ]; then
  say "WARNING: no Node headers under $NODEDIR/include/node; node-gyp will try to download them (needs internet)"
  NODEDIR=""
fi

# ---------------------------------------------------------------- the wheel's libtensorflow
# find_spec locates the package without importing TensorFlow (an import takes seconds).
read -r TF_DIR TF_DIST TF_PKG_VERSION < <("$PY" - <<'EOF'
import importlib.util, importlib.metadata, os
spec = importlib.util.find_spec("tensorflow")
d = os.path.dirname(spec.origin) if spec and spec.origin else "-"
dist, ver = "-", "-"
for name in ("tensorflow-cpu", "tensorflow", "tf-nightly", "tf-nightly-cpu"):
    try:
        ver = importlib.metadata.version(name); dist = name; break
    except importlib.metadata.PackageNotFoundError:
        pass
print(d, dist, ver)
EOF
) || die "could not query $PY for the tensorflow package"
[ "$TF_DIR" != "-" ] || die "no 'tensorflow' package in $VENV (pip install -r requirements.txt)"
LIB_CC="$TF_DIR/libtensorflow_cc.so.2"
LIB_FW="$TF_DIR/libtensorflow_framework.so.2"
INC="$TF_DIR/include"
for f in "$LIB_CC" "$LIB_FW" "$INC/tensorflow/c/c_api.h" "$INC/tensorflow/c/eager/c_api.h"; do
  [ -e "$f" ] || die "the TensorFlow wheel in $VENV lacks $f"
done
say "TensorFlow wheel: $TF_DIST $TF_PKG_VERSION at $TF_DIR"

# ---------------------------------------------------------------- per package
PACKAGES=("@tensorflow/tfjs-node")
if [ "${CASM_GPU:-0}" = "1" ]; then
  PACKAGES=("@tensorflow/tfjs-node-gpu" "@tensorflow/tfjs-node")
fi

# Header closure: the headers the binding's sources include, and everything they include.
header_closure() {
  printf '#include "tensorflow/c/c_api.h"\n#include "tensorflow/c/eager/c_api.h"\n#include "tensorflow/core/platform/ctstring_internal.h"\n' |
    c++ -std=c++17 -MM -I"$INC" -x c++ - |
    tr ' \\' '\n\n' | grep -F "$INC/" | sed "s#^$INC/##" | sort -u
}

stage_lib() {  # stage_lib SRC DEST: hard link, or copy across file systems
  local src="$1" dst="$2"
  rm -f "$dst"
  ln "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
}

# Loads the binding the way the package's dist/index.js does; prints TF_Version.
binding_loads() {  # binding_loads PKGDIR
  node -e '
    const p = require(process.argv[1] + "/package.json");
    const b = require(require("@mapbox/node-pre-gyp").find(process.argv[1] + "/package.json"));
    if (typeof b.TF_Version !== "string") throw new Error("binding has no TF_Version");
    console.log(b.TF_Version);' "$1" 2>/dev/null
}

# Full check through the package itself: conv2d forward + gradients vs the pure-JS cpu backend.
verify_package() {  # verify_package NAME
  TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" node --input-type=module -e '
    const name = process.argv[1];
    const tfn = await import(name);
    const tf = await import("@tensorflow/tfjs");
    if (tf.getBackend() !== "tensorflow") throw new Error(`backend is ${tf.getBackend()}, not tensorflow`);
    const x0 = Array.from({ length: 2 * 7 * 7 * 3 }, (_, i) => Math.sin(i * 0.37));
    const w0 = Array.from({ length: 3 * 3 * 3 * 4 }, (_, i) => Math.cos(i * 0.53));
    const run = () => tf.tidy(() => {
      const x = tf.tensor4d(x0, [2, 7, 7, 3]), w = tf.tensor4d(w0, [3, 3, 3, 4]);
      const f = (a, b) => tf.conv2d(a, b, [2, 1], "same").square().sum();
      const y = tf.conv2d(x, w, [2, 1], "same");
      const [gx, gw] = tf.grads(f)([x, w]);
      return [y, gx, gw].map((t) => Array.from(t.dataSync()));
    });
    const version = tf.backend().binding.TF_Version;
    const nat = run();
    await tf.setBackend("cpu");
    tf.backend().firstUse = false;  // skip the cpu backend "install the node backend" notice
    const ref = run();
    let worst = 0;
    for (let k = 0; k < 3; k++) {
      if (nat[k].length !== ref[k].length) throw new Error("shape mismatch");
      for (let i = 0; i < ref[k].length; i++)
        worst = Math.max(worst, Math.abs(nat[k][i] - ref[k][i]) / Math.max(1, Math.abs(ref[k][i])));
    }
    if (!(worst < 1e-4)) throw new Error(`native conv2d/gradient differ from cpu: ${worst}`);
    console.log(`ok: libtensorflow ${version}, conv2d+grads match cpu (max rel err ${worst.toExponential(1)})`);
  ' "$1"
}

built_any=0
for PKG in "${PACKAGES[@]}"; do
  PKGDIR="$ROOT/node_modules/$PKG"
  if [ ! -f "$PKGDIR/package.json" ]; then
    if [ "$PKG" = "@tensorflow/tfjs-node" ]; then
      die "$PKGDIR is missing: run npm ci first"
    fi
    die "$PKGDIR is missing (GPU route): npm install --no-save $PKG@4.22.0"
  fi
  PKG_VERSION="$(node -p "require('$PKGDIR/package.json').version")"
  # Where dist/index.js will look for the binding (lib/napi-v<N>/tfjs_binding.node).
  BINDING="$(cd "$PKGDIR" && node -p 'require("@mapbox/node-pre-gyp").find(require("path").resolve("package.json"))')"
  MODULE_PATH="$(dirname "$BINDING")"
  NAPI="${MODULE_PATH##*napi-v}"
  case "$NAPI" in ''|*[!0-9]*) die "unexpected binding path $BINDING";; esac

  DEPS="$PKGDIR/deps"
  STAMP="$DEPS/.casm-engine-stamp"
  WANT="pkg=$PKG@$PKG_VERSION tf=$TF_DIST@$TF_PKG_VERSION from=$TF_DIR cc=$(stat -c '%s:%Y' "$LIB_CC") fw=$(stat -c '%s:%Y' "$LIB_FW") node_abi=$(node -p process.versions.modules) napi=$NAPI gpu=${CASM_GPU:-0}"

  if [ "$FORCE" = 0 ] && [ -f "$BINDING" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    if v="$(binding_loads "$PKGDIR")"; then
      say "$PKG: up to date (libtensorflow $v, $BINDING); --force rebuilds"
      continue
    fi
    say "$PKG: stamp matches but the binding does not load; rebuilding"
  fi

  t0=$SECONDS
  say "$PKG $PKG_VERSION: staging libtensorflow from the wheel into $DEPS"
  rm -rf "$DEPS/include" "$STAMP"
  mkdir -p "$DEPS/lib" "$DEPS/include"
  stage_lib "$LIB_CC" "$DEPS/lib/libtensorflow_cc.so.2"
  stage_lib "$LIB_FW" "$DEPS/lib/libtensorflow_framework.so.2"
  ln -sfn libtensorflow_cc.so.2 "$DEPS/lib/libtensorflow.so"
  ln -sfn libtensorflow_cc.so.2 "$DEPS/lib/libtensorflow.so.2"
  ln -sfn libtensorflow_framework.so.2 "$DEPS/lib/libtensorflow_framework.so"
  if [ "${CASM_GPU:-0}" = "1" ]; then
    # GPU wheel (untested here): libtensorflow finds the CUDA libraries of the nvidia-* wheels
    # through RUNPATH entries relative to its own location in site-packages, which do not hold
    # for our staged copy; its RUNPATH also has $ORIGIN/, so link them next to it.
    SITE="$(dirname "$TF_DIR")"
    n=0
    for so in "$SITE"/nvidia/*/lib/lib*.so*; do
      [ -e "$so" ] || continue
      ln -sfn "$so" "$DEPS/lib/$(basename "$so")"; n=$((n + 1))
    done
    say "GPU: linked $n CUDA libraries from $SITE/nvidia into $DEPS/lib"
    [ "$n" -gt 0 ] || say "WARNING: no nvidia/*/lib in $SITE: is the wheel tensorflow[and-cuda]?"
  fi
  HEADERS="$(header_closure)" || die "could not resolve the C API headers in $INC"
  while IFS= read -r h; do
    mkdir -p "$DEPS/include/$(dirname "$h")"
    cp "$INC/$h" "$DEPS/include/$h"
  done <<<"$HEADERS"
  say "staged 2 libraries and $(wc -l <<<"$HEADERS") headers ($((SECONDS - t0)) s)"

  say "$PKG: compiling the binding with node-gyp (napi $NAPI, nodedir ${NODEDIR:-<download>})"
  rm -f "$BINDING"
  GYP_ARGS=(rebuild "--directory=$PKGDIR" "--jobs=$(nproc 2>/dev/null || echo 2)"
            --module_name=tfjs_binding "--module_path=$MODULE_PATH" "--napi_build_version=$NAPI")
  [ -n "$NODEDIR" ] && GYP_ARGS+=("--nodedir=$NODEDIR")
  LOG="$DEPS/build.log"
  if ! node "$NODE_GYP" "${GYP_ARGS[@]}" >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    die "node-gyp failed for $PKG (full log: $LOG)"
  fi
  [ -f "$BINDING" ] || die "node-gyp succeeded but $BINDING is missing (log: $LOG)"
  rm -rf "$PKGDIR/build/Release/obj.target" "$PKGDIR/build/Release/.deps"  # objects; keep the .node
  say "$PKG: built $BINDING ($((SECONDS - t0)) s)"

  # (stderr is libtensorflow's start-up chatter unless the check fails)
  if ! out="$(verify_package "$PKG" 2>"$DEPS/verify.log")"; then
    { echo "$out"; tail -20 "$DEPS/verify.log"; } >&2
    die "the built $PKG does not work (see above)"
  fi
  say "$PKG: $out"
  echo "$WANT" >"$STAMP"
  built_any=1
done

[ "$built_any" = 1 ] && say "native engine ready" || true
exit 0
