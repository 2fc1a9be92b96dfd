#!/usr/bin/env bash
# The distributed check of one GPU, for a machine with PyTorch 2.11 (no Rust, no network):
# the core example widened to a 2.7 M-parameter MLP, trained 300 steps on cuda:0 as a plain run
# and as one NCCL rank under torchrun (CONTRAST_DIST=1: a group of one, so every step pays the
# gradient all-reduce, the loss-term mean and the gathers), then the two runs' samples/s, step
# time and all-reduce time into $OUT/dist-check.json. NCCL refuses two ranks on one GPU, so
# this is what one GPU can show. Folder: this script, contrast-toy (stripped), toy.toml.
#   DEVICE=cpu bash dist-check.sh   runs the same on the CPU (Gloo), as a dry run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-/opt/torch/.venv}
[ -x "$venv/bin/python" ] || venv=${CONTRAST_VENV:?no Python: set VENV to a venv with torch 2.11}
torch=$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH="$torch/lib:${LD_LIBRARY_PATH:-}"
out=${OUT:-$here/out}
mkdir -p "$out"
device=${DEVICE:-cuda}
steps=${STEPS:-300}
args=(pretrain --preset "$here/toy.toml" --runs-dir "$out/runs" --device "$device"
  --set "steps=$steps" --set batch=1024 --set dim=512 --set hidden=4096 --set out_dim=128
  --set log.checkpoint_every=0 --set log.log_every=50)
rm -rf "$out/runs"
echo "== plain run on $device"
"$here/contrast-toy" "${args[@]}" --name plain 2>&1 | tail -3
echo "== one rank under torchrun (NCCL on cuda, Gloo on cpu)"
CONTRAST_DIST=1 GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} "$venv/bin/torchrun" --no-python \
  --nproc-per-node 1 --master-port "${MASTER_PORT:-29511}" \
  "$here/contrast-toy" "${args[@]}" --name one-rank 2>&1 | tail -3
"$venv/bin/python" - "$out" "$device" "$steps" <<'PY'
import json, sys, pathlib
out, device, steps = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = {}
for name in ["plain", "one-rank"]:
    r = json.loads((out / "runs/toy" / name / "report.json").read_text())
    sps = r["samples_per_s"]
    rows[name] = {
        "samples_per_s": sps,
        "step_ms": 1000 * 1024 / sps,
        "world_size": r.get("world_size", 1),
        "allreduce_s": r.get("allreduce_s", 0.0),
        "device": r["device"],
        "value": r["value"],
    }
rows["one_rank_over_plain_step_time"] = rows["one-rank"]["step_ms"] / rows["plain"]["step_ms"]
rows["settings"] = {"steps": steps, "batch": 1024, "model": "MLP 512-4096-128 (2.7 M parameters)", "device": device}
(out / "dist-check.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=2))
PY
