#!/usr/bin/env bash
# Set up edge-builder in ./.venv: the CLI, the pinned ML toolchain (for the local runner) and the tests.
# The toolchain versions are the image lock (dockerfiles/locks/toolchain-amd64.txt), used as constraints,
# so the host and the toolchain image run the same converters (and the same MLCommons LoadGen).
# PyTorch is the CPU build (torch==2.13.0+cpu): where it is not on a local wheel index, add
#   PIP_EXTRA_INDEX_URL=<your PyTorch CPU wheel index>
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c dockerfiles/locks/toolchain-amd64.txt -e '.[pytorch,loadgen,test]'
.venv/bin/builder --version
