#!/usr/bin/env bash
# `make image`: builds the Dockerfile with whichever engine works here, docker (only when its
# daemon answers: the CLI alone is not enough), then podman, then buildah.
#   IMAGE   tag to build (default gme-recwatch:<version>)
#   BASE    base image (default: the Dockerfile's, python:3.12-slim-bookworm)
#   ENGINE  docker, podman or buildah, to skip the detection
#   NO_CACHE=1  build every step again (docker and podman reuse the layers of earlier builds;
#               buildah, without --layers, builds every step anyway)
# `tools/build-image.sh --which` prints the engine it would use and exits.
# Files in the image are dated with the last commit's time (SOURCE_DATE_EPOCH), so building
# the same commit twice gives the same layers.
set -euo pipefail
cd "$(dirname "$0")/.."

detect() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
  elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then echo podman
  elif command -v buildah >/dev/null 2>&1; then echo buildah
  else
    echo "make image: no container engine works here: docker needs a running daemon" \
         "(\`docker info\` fails), podman and buildah are not installed" \
         "(Debian: apt-get install buildah)" >&2
    return 1
  fi
}

engine=${ENGINE:-}
[ -n "$engine" ] || engine=$(detect)
if [ "${1:-}" = "--which" ]; then
  echo "$engine"
  exit 0
fi
case $engine in docker | podman | buildah) ;; *)
  echo "make image: ENGINE=$engine: expected docker, podman or buildah" >&2; exit 2 ;;
esac

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/gme_recwatch/__init__.py)
image=${IMAGE:-gme-recwatch:$version}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
args=(--file Dockerfile --tag "$image"
      --build-arg "SOURCE_DATE_EPOCH=$epoch"
      --label "org.opencontainers.image.version=$version"
      --label "org.opencontainers.image.revision=$revision")
[ -z "${BASE:-}" ] || args+=(--build-arg "BASE=$BASE")
# podman and buildah date every file in the layers, and the image, with it.
[ "$engine" = docker ] || args+=(--timestamp "$epoch")
[ -z "${NO_CACHE:-}" ] || args+=(--no-cache)

echo "make image: building $image with $engine${BASE:+ on $BASE}"
case $engine in
  docker) docker build "${args[@]}" . ;;
  podman) podman build "${args[@]}" . ;;
  buildah) buildah bud "${args[@]}" . ;;
esac
echo "make image: built $image"
