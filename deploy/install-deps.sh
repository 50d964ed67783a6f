#!/usr/bin/env bash
# Installs every Debian package that chunkgrpo's build and tests need.
# Idempotent: when everything is present it only checks and returns (no apt-get update).
# Optional extras: CHUNKGRPO_WITH_TORCH=1 also installs python3-torch (reference fixtures
# and benchmark peers; the tests themselves never need it).
set -euo pipefail

packages=(
  build-essential pkg-config
  libopenblas-dev      # engine: cblas_sgemm (pthread build)
  libjansson-dev       # safetensors headers, configs, JSON everywhere
  libpng-dev           # sample images
  libmicrohttpd-dev libuv1-dev libsqlite3-dev libcurl4-openssl-dev   # server and uplink
  libopenmpi-dev openmpi-bin          # data-parallel grpo ranks (bin/libchunkgrpo_mpi.so, mpirun)
  curl jq
  procps                              # pkill: the resume tests kill the worker itself
  python3                             # the command-line tests compare safetensors files
  python3-jsonschema                  # server tests: real answers against schema/openapi.json
  wrk                                 # make bench-server
  clang libclang-rt-14-dev            # libFuzzer: `make test` replays the fuzz corpus
  nodejs                              # the dashboard's build (make web: esbuild, uPlot)
  chromium                            # tests/cli/browser.sh drives it headless (playwright-core)
)
# Debian's npm package, unless npm is already there (NodeSource's nodejs bundles its own and
# conflicts with Debian's)
command -v npm >/dev/null || packages+=(npm)
if [ "${CHUNKGRPO_WITH_TORCH:-0}" = 1 ]; then
  packages+=(python3-torch python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
