#!/usr/bin/env bash
# GPU verification bundle (made by `cargo xtask gpu-bundle <method>`): runs ours, our baseline and
# the official code for the same epochs and writes $OUT/verify-<method>.json + .png.
#   bash run.sh           the GPU run (calibrates, then fits the three runs in the bundle's minutes)
#   bash run.sh --tiny    a few steps of each on a few images, CPU or GPU: does the bundle work?
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x /opt/torch/.venv/bin/python3 ]; then py=/opt/torch/.venv/bin/python3; else py=python3; fi
fi
exec "$py" "$here/run.py" "$@"
