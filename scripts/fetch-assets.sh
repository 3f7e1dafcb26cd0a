#!/usr/bin/env bash
# Fetches front-end packages from the npm registry into target/assets/ (never committed), which
# hdx-jobs-server embeds and serves for /preview/{layer} (no CDN):
#   - target/assets/maplibre-gl/: MapLibre GL JS (BSD-3-Clause, LICENSE.txt alongside);
#   - target/assets/countries/countries.geojson: Natural Earth 1:110m country boundaries (public
#     domain, https://www.naturalearthdata.com/), the map's reference layer, from the TopoJSON of
#     the world-atlas package (ISC) converted to GeoJSON by topojson-client's topo2geo (ISC),
#     coordinates rounded to 3 decimals (~100 m, far below the 1:110m detail) to stay ~190 KB.
# Each asset is skipped when already there with its pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

maplibre_version=5.9.0
world_atlas_version=2.0.2
topojson_client_version=3.1.0
commander_version=2.20.3 # topojson-client's dependency, pinned too

fresh() { # fresh DIR FILE VERSION: DIR/FILE exists and DIR/VERSION says VERSION
  [ -f "$1/$2" ] && [ "$(cat "$1/VERSION" 2>/dev/null)" = "$3" ]
}

maplibre=target/assets/maplibre-gl
countries=target/assets/countries
countries_version="world-atlas@$world_atlas_version countries-110m topojson-client@$topojson_client_version"
if fresh "$maplibre" maplibre-gl.js "$maplibre_version" &&
  fresh "$countries" countries.geojson "$countries_version"; then
  exit 0
fi
command -v npm >/dev/null || { echo "[fetch-assets] npm is missing (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! fresh "$maplibre" maplibre-gl.js "$maplibre_version"; then
  echo "[fetch-assets] maplibre-gl@$maplibre_version from the npm registry" >&2
  mkdir -p "$work/maplibre"
  (cd "$work/maplibre" && npm pack --silent "maplibre-gl@$maplibre_version" >/dev/null)
  tar -xzf "$work"/maplibre/maplibre-gl-*.tgz -C "$work/maplibre"
  mkdir -p "$maplibre"
  cp "$work/maplibre/package/dist/maplibre-gl.js" "$work/maplibre/package/dist/maplibre-gl.css" \
    "$work/maplibre/package/LICENSE.txt" "$maplibre/"
  echo "$maplibre_version" > "$maplibre/VERSION"
fi

if ! fresh "$countries" countries.geojson "$countries_version"; then
  echo "[fetch-assets] world-atlas@$world_atlas_version (Natural Earth countries) and" \
    "topojson-client@$topojson_client_version from the npm registry" >&2
  mkdir -p "$work/countries"
  (cd "$work/countries" && npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
    "world-atlas@$world_atlas_version" "topojson-client@$topojson_client_version" \
    "commander@$commander_version" >/dev/null)
  modules="$work/countries/node_modules"
  "$modules/.bin/topo2geo" -i "$modules/world-atlas/countries-110m.json" \
    "countries=$work/countries/full.geojson"
  node -e '
    const fs = require("fs");
    const [from, to] = process.argv.slice(1);
    const round = (c) => (typeof c[0] === "number" ? c.map((v) => Math.round(v * 1000) / 1000) : c.map(round));
    const collection = JSON.parse(fs.readFileSync(from, "utf8"));
    if (collection.type !== "FeatureCollection" || collection.features.length < 100) {
      throw new Error("unexpected countries GeoJSON: " + collection.type);
    }
    for (const feature of collection.features) feature.geometry.coordinates = round(feature.geometry.coordinates);
    fs.writeFileSync(to, JSON.stringify(collection));
  ' "$work/countries/full.geojson" "$work/countries/countries.geojson"
  mkdir -p "$countries"
  cp "$work/countries/countries.geojson" "$countries/"
  {
    echo "countries.geojson: Natural Earth 1:110m Admin 0 country boundaries (public domain,"
    echo "https://www.naturalearthdata.com/about/terms-of-use/), as redistributed in TopoJSON by the"
    echo "npm package world-atlas@$world_atlas_version, converted to GeoJSON with"
    echo "topojson-client@$topojson_client_version (topo2geo), coordinates rounded to 3 decimals."
    echo
    echo "world-atlas's licence:"
    cat "$modules/world-atlas/LICENSE"
  } > "$countries/LICENSE.txt"
  echo "$countries_version" > "$countries/VERSION"
fi
