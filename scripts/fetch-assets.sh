#!/usr/bin/env bash
# Fetches front-end packages from the npm registry into target/assets/ (never committed):
# MapLibre GL JS, which hdx-jobs-server embeds and serves for /preview/{layer} (no CDN).
set -euo pipefail
cd "$(dirname "$0")/.."

version=5.9.0
dest=target/assets/maplibre-gl
if [ -f "$dest/maplibre-gl.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "[fetch-assets] npm is missing (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[fetch-assets] maplibre-gl@$version from the npm registry" >&2
(cd "$work" && npm pack --silent "maplibre-gl@$version" >/dev/null)
tar -xzf "$work"/maplibre-gl-*.tgz -C "$work"
mkdir -p "$dest"
cp "$work/package/dist/maplibre-gl.js" "$work/package/dist/maplibre-gl.css" "$work/package/LICENSE.txt" "$dest/"
echo "$version" > "$dest/VERSION"
