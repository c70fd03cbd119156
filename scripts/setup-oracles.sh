#!/usr/bin/env bash
# Installs torch + torchvision for the torchvision oracle (test/resnetOracle.test.ts, helper
# test/helpers/torchvision_resnet.py), which checks our ResNet against torchvision's own resnet50.
#
# Route (default, CASM_ORACLE_ROUTE=auto):
#   0. nothing to do when an interpreter already imports both (CASM_TORCH_PYTHON, /usr/bin/python3,
#      then the venv) -- a re-run takes seconds;
#   1. apt: Debian's python3-torchvision 0.14.1 + python3-torch 1.13.1 (+ python3-numpy), for
#      /usr/bin/python3. A coherent, distribution-built pair; ~150 MB download, ~660 MB on disk,
#      about 1 minute. Needs root (or passwordless sudo) and the Debian mirror.
#   2. pip (fallback when apt is unavailable or fails): torch==2.13.0+cpu (local wheel in
#      /opt/wheels) + torchvision==0.28.0 (local index) into the venv; ~700 MB, ~2 minutes, no
#      network. That torchvision wheel is a CUDA build whose C++ ops cannot load against CPU torch;
#      the helper works around it (models need no C++ ops). torch 2.14.1 + torchvision 0.29.x is
#      not an option here: that torch is a CUDA 13 build needing cuda-bindings, absent from the
#      local index.
# CASM_ORACLE_ROUTE=apt|pip forces one route. CASM_VENV: venv for the pip route (default .venv).
# Exit status: 0 when an interpreter imports torch and torchvision at the end, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${CASM_VENV:-$ROOT/.venv}"
ROUTE="${CASM_ORACLE_ROUTE:-auto}"
HELPER="$ROOT/test/helpers/torchvision_resnet.py"
TORCH_PIN="torch==2.13.0+cpu"
TORCHVISION_PIN="torchvision==0.28.0"
APT_PACKAGES=(python3-torchvision python3-torch python3-numpy)

say() { echo "[setup-oracles] $*"; }
die() { echo "[setup-oracles] FAILED: $*" >&2; exit 1; }

case "$ROUTE" in auto | apt | pip) ;; *) die "CASM_ORACLE_ROUTE must be auto, apt or pip (got '$ROUTE')" ;; esac

# Prints the probe's JSON and succeeds when $1 imports torch + torchvision.
probe() { [ -x "$1" ] && "$1" "$HELPER" probe 2>/dev/null; }

found() {
  local py
  for py in "${CASM_TORCH_PYTHON:-}" /usr/bin/python3 "$VENV/bin/python"; do
    [ -n "$py" ] || continue
    if [ "$ROUTE" = apt ] && [ "$py" != /usr/bin/python3 ]; then continue; fi
    if [ "$ROUTE" = pip ] && [ "$py" != "$VENV/bin/python" ]; then continue; fi
    local info
    if info="$(probe "$py")"; then
      say "torch + torchvision ready: $info"
      return 0
    fi
  done
  return 1
}

install_apt() {
  command -v apt-get >/dev/null || { say "apt-get not found"; return 1; }
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || { say "apt route needs root or passwordless sudo"; return 1; }
    sudo=(sudo -n)
  fi
  say "apt-get install ${APT_PACKAGES[*]} (about a minute)"
  "${sudo[@]}" apt-get update -q >/dev/null || { say "apt-get update failed"; return 1; }
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null ||
    { say "apt-get install failed"; return 1; }
  probe /usr/bin/python3 >/dev/null || { say "/usr/bin/python3 still cannot import torch + torchvision"; return 1; }
}

install_pip() {
  [ -x "$VENV/bin/python" ] || { say "no venv at $VENV (run scripts/setup.sh first)"; return 1; }
  # Same rule as setup.sh: with pypi.org unreachable, don't let pip retry it for minutes.
  if [ -z "${PIP_RETRIES:-}" ] && ! timeout 10 "$VENV/bin/python" -c 'import socket; socket.getaddrinfo("pypi.org", 443)' 2>/dev/null; then
    export PIP_RETRIES=0
  fi
  say "pip install $TORCH_PIN $TORCHVISION_PIN into $VENV (a few minutes)"
  "$VENV/bin/python" -m pip install -q --progress-bar off "$TORCH_PIN" "$TORCHVISION_PIN" || { say "pip install failed"; return 1; }
  probe "$VENV/bin/python" >/dev/null || { say "$VENV/bin/python still cannot import torch + torchvision"; return 1; }
}

t=$SECONDS
if found; then exit 0; fi
case "$ROUTE" in
  apt) install_apt || die "apt route failed (see above)" ;;
  pip) install_pip || die "pip route failed (see above)" ;;
  auto) install_apt || { say "apt route failed; trying pip"; install_pip; } || die "neither apt nor pip could install torch + torchvision" ;;
esac
found || die "torch + torchvision installed but not importable"
say "done in $((SECONDS - t)) s"
