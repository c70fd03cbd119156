#!/usr/bin/env bash
# Fetches the real photos the photo-objects benchmark (data/make-photo-objects.mjs) is made of,
# from Debian's packages, into data/cache/photo-sources/ (git-ignored):
#   stamps/       photo cut-outs with an alpha channel: Tux Paint's stamps (tuxpaint-stamps-default)
#   backgrounds/  background photos: MATE's nature wallpapers (mate-backgrounds) and Tux Paint's
#                 photo templates (tuxpaint-data)
# The .deb files are fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
# installed, no root needed once the package lists exist); only the folders used are kept
# (about 31 MB of 215 MB). sources.json records each package's version and sha256.
# Skipped when sources.json exists; --force fetches again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CASM_PHOTO_SOURCES:-$ROOT/data/cache/photo-sources}"
PACKAGES=(tuxpaint-stamps-default mate-backgrounds tuxpaint-data)

say() { echo "[photo-sources] $*"; }
die() { echo "[photo-sources] FAILED: $*" >&2; exit 1; }

if [ -f "$DEST/sources.json" ] && [ "${1:-}" != "--force" ]; then
  say "present: $DEST (sources.json); --force to fetch again"
  exit 0
fi
command -v apt-get >/dev/null || die "apt-get not found: the photo sources are Debian packages (${PACKAGES[*]})"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP" # apt's download user must be able to write there
download() { (cd "$TMP" && apt-get download -qq "${PACKAGES[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true); }
download
if [ "$(ls "$TMP"/*.deb 2>/dev/null | wc -l)" -ne "${#PACKAGES[@]}" ]; then
  say "package lists lack them: apt-get update"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo -n apt-get update -qq || die "apt-get update needs root"; fi
  rm -f "$TMP"/*.deb
  download
fi
[ "$(ls "$TMP"/*.deb 2>/dev/null | wc -l)" -eq "${#PACKAGES[@]}" ] || die "apt-get download ${PACKAGES[*]} fetched $(ls "$TMP"/*.deb 2>/dev/null | wc -l) of ${#PACKAGES[@]} packages"

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/stamps" "$DEST.tmp/backgrounds"
{
  echo '{ "packages": ['
  first=1
  for deb in "$TMP"/*.deb; do
    name="$(dpkg-deb -f "$deb" Package)"
    [ $first = 1 ] || echo ','
    first=0
    printf '  { "package": "%s", "version": "%s", "sha256": "%s" }' "$name" "$(dpkg-deb -f "$deb" Version)" "$(sha256sum "$deb" | cut -c1-64)"
    dpkg-deb -x "$deb" "$TMP/x"
    rm -f "$deb"
  done
  echo
  echo '] }'
} >"$TMP/sources.json"
cp -r "$TMP/x/usr/share/tuxpaint/stamps/." "$DEST.tmp/stamps/"
# Only the pictures: the stamps' sounds, descriptions and cartoon (drawn) variants are not used.
find "$DEST.tmp/stamps" -type f ! -name '*.png' -delete
find "$DEST.tmp/stamps" -depth -type d -name cartoon -exec rm -rf {} +
cp "$TMP/x/usr/share/backgrounds/mate/nature/"*.jpg "$TMP/x/usr/share/tuxpaint/templates/"*.jpg "$DEST.tmp/backgrounds/"
mv "$TMP/sources.json" "$DEST.tmp/sources.json"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
say "$(find "$DEST/stamps" -name '*.png' | wc -l) stamps, $(ls "$DEST/backgrounds" | wc -l) backgrounds -> $DEST ($(du -sh "$DEST" | cut -f1))"
