#!/usr/bin/env bash
# Copy the Grafana dashboards into the chart. Helm cannot read files outside the chart
# directory, so the chart ships byte-identical copies of dashboards/*.json. (Its rule files,
# files/rules/, are written by `python dashboards/rules.py` with Helm placeholders for the
# chart's knobs, not copied.) tests/test_helm.py fails when the copies differ.
#
#   helm/sync-assets.sh          refresh the copies
#   helm/sync-assets.sh --check  exit 1 if they are out of date, changing nothing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(dirname "$here")/dashboards"
dst="$here/gme-recwatch/files/dashboards"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# Keeps the directory in git even when it is empty.
touch "$stage/.gitkeep"
shopt -s nullglob
for f in "$src"/*.json; do
    cp -p "$f" "$stage/"
done

if [[ "${1:-}" == "--check" ]]; then
    mkdir -p "$dst"
    if ! diff -r "$stage" "$dst" >/dev/null; then
        echo "helm/gme-recwatch/files/dashboards is out of date; run helm/sync-assets.sh" >&2
        diff -rq "$stage" "$dst" >&2 || true
        exit 1
    fi
    exit 0
fi

rm -rf "${dst:?}"
mkdir -p "$dst"
cp -pR "$stage"/. "$dst/"
echo "synced $(ls "$dst" | wc -l) dashboard(s) into helm/gme-recwatch/files/dashboards/"
