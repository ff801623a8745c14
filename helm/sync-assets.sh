#!/usr/bin/env bash
# Copy the monitoring assets into the chart. Helm cannot read files outside the chart
# directory, so the chart ships copies of dashboards/rules/*.yaml (rule files: those with a
# top-level `groups:`; promtool test files are left out) and dashboards/*.json.
# tests/test_helm.py fails when the copies differ from dashboards/.
#
#   helm/sync-assets.sh          refresh the copies
#   helm/sync-assets.sh --check  exit 1 if they are out of date, changing nothing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(dirname "$here")/dashboards"
dst="$here/gme-recwatch/files"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rules" "$stage/dashboards"
# Keeps each directory in git even when it is empty.
touch "$stage/rules/.gitkeep" "$stage/dashboards/.gitkeep"

shopt -s nullglob
for f in "$src"/rules/*.yaml; do
    if grep -q '^groups:' "$f"; then
        cp -p "$f" "$stage/rules/"
    fi
done
for f in "$src"/*.json; do
    cp -p "$f" "$stage/dashboards/"
done

if [[ "${1:-}" == "--check" ]]; then
    for sub in rules dashboards; do
        mkdir -p "$dst/$sub"
        if ! diff -r "$stage/$sub" "$dst/$sub" >/dev/null; then
            echo "helm/gme-recwatch/files/$sub is out of date; run helm/sync-assets.sh" >&2
            diff -rq "$stage/$sub" "$dst/$sub" >&2 || true
            exit 1
        fi
    done
    exit 0
fi

for sub in rules dashboards; do
    rm -rf "${dst:?}/$sub"
    mkdir -p "$dst/$sub"
    cp -pR "$stage/$sub"/. "$dst/$sub/"
done
echo "synced $(ls "$dst/rules" | wc -l) rule file(s) and $(ls "$dst/dashboards" | wc -l) dashboard(s) into helm/gme-recwatch/files/"
