#!/usr/bin/env bash
# Fetches the real photos the photo-objects benchmark (data/make-photo-objects.mjs) is made of,
# from Debian's packages, into data/cache/photo-sources/ (git-ignored):
#   stamps/       photo cut-outs with an alpha channel: Tux Paint's stamps (tuxpaint-stamps-default)
#   backgrounds/  background photos: MATE's nature wallpapers (mate-backgrounds), Tux Paint's
#                 photo templates (tuxpaint-data), and the photographs among KDE Plasma's
#                 (plasma-workspace-wallpapers) and Ubuntu Touch's (lomiri-wallpapers-16.04)
#                 wallpapers. A background must show no object of a benchmark class: the boxes
#                 are those of the pasted object only, and a class-agnostic mask is right to mark
#                 a flower or a sheep in the background (EXCLUDED below says which and why).
# The .deb files are fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
# installed, no root needed once the package lists exist); only the files used are kept
# (about 45 MB of 325 MB). sources.json records each package's version and sha256.
# Skipped when sources.json of this layout exists; --force fetches again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CASM_PHOTO_SOURCES:-$ROOT/data/cache/photo-sources}"
PACKAGES=(tuxpaint-stamps-default mate-backgrounds tuxpaint-data plasma-workspace-wallpapers lomiri-wallpapers-16.04)
# Bumped when the selection changes, so that an older cache is fetched again.
LAYOUT=2
# Photographs without a benchmark object (the others in these packages are drawings and renders,
# or show a bird, a dog, a fig, brushes, dandelions, a dragonfly's leaves or the night sky).
PLASMA=(BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite Path Volna summer_1am)
LOMIRI=(Bridge_by_Sander_Klootwijk Wine_by_Jakkub_Mede aitzgorri_by_Aitzol_Berasategi life_by_Aitzol_Berasategi
  picosdeeuropa_by_Aitzol_Berasategi sunset_by_Aitzol_Berasategi)
# MATE and Tux Paint photos whose subject is an object of a class (flower, insect, bovine/mammal,
# fish-like animals): left out.
EXCLUDED=(FreshFlower.jpg Garden.jpg YellowFlower.jpg TwoWings.jpg LadyBird.jpg sheep.jpg jellyfish.jpg)

say() { echo "[photo-sources] $*"; }
die() { echo "[photo-sources] FAILED: $*" >&2; exit 1; }

if [ -f "$DEST/sources.json" ] && grep -q "\"layout\": $LAYOUT" "$DEST/sources.json" && [ "${1:-}" != "--force" ]; then
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
  echo "{ \"layout\": $LAYOUT, \"packages\": ["
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
for f in "${EXCLUDED[@]}"; do
  [ -f "$DEST.tmp/backgrounds/$f" ] || die "$f is not in mate-backgrounds or tuxpaint-data any more: update EXCLUDED"
  rm "$DEST.tmp/backgrounds/$f"
done
# One size of each Plasma wallpaper: 1280x1024 where there is one, else its only picture.
for w in "${PLASMA[@]}"; do
  d="$TMP/x/usr/share/wallpapers/$w/contents/images"
  f="$d/1280x1024.jpg"
  [ -f "$f" ] || f="$(ls "$d"/*.jpg 2>/dev/null | head -1)"
  [ -f "$f" ] || die "plasma-workspace-wallpapers has no $w photo"
  cp "$f" "$DEST.tmp/backgrounds/plasma_$w.jpg"
done
for w in "${LOMIRI[@]}"; do
  cp "$TMP/x/usr/share/backgrounds/$w.jpg" "$DEST.tmp/backgrounds/" || die "lomiri-wallpapers-16.04 has no $w.jpg"
done
mv "$TMP/sources.json" "$DEST.tmp/sources.json"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
say "$(find "$DEST/stamps" -name '*.png' | wc -l) stamps, $(ls "$DEST/backgrounds" | wc -l) backgrounds -> $DEST ($(du -sh "$DEST" | cut -f1))"
