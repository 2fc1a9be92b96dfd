#!/usr/bin/env bash
# Start-up check of the two ImageNet presets on a synthetic ImageNet-layout folder of 100,000
# training files (benches/py/imagenet_layout.py): each preset runs its first two steps at a small
# batch (--stop-at 2), twice: the first run lists the folder and writes the file-list cache, the
# second reads it. Prints the wall time of each run (start, listing, model, two steps,
# checkpoint) and its peak RSS (GNU time). Results: benches/RESULTS.md ("ImageNet presets on
# 100k files").
#
# usage: bash benches/imagenet-start.sh [BATCH]   (from the repository root; default batch 8)
set -euo pipefail
batch=${1:-8}
root=target/tmp/imagenet-synthetic
runs=target/tmp/imagenet-start-runs
py=.contrast/venv/bin/python
"$py" benches/py/imagenet_layout.py "$root" >/dev/null
rm -f "target/tmp/imagenet-synthetic/.train.contrast-files.json" \
  "target/tmp/imagenet-synthetic/.val.contrast-files.json"
cargo build --release -q -p patchmix -p spps
rm -rf "$runs"
for m in "patchmix paper-imagenet-vit-s" "spps paper-imagenet"; do
  set -- $m
  for attempt in first cached; do
    log="$runs/$1-$attempt.log"
    mkdir -p "$runs"
    start=$(date +%s.%N)
    /usr/bin/time -v "target/release/$1" pretrain --preset "$2" --name "$attempt" \
      --runs-dir "$runs" --stop-at 2 \
      --set "data.root=\"$PWD/$root\"" --set "optim.batch_size=$batch" >"$log" 2>&1 || {
      tail -20 "$log"; exit 1; }
    end=$(date +%s.%N)
    rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
    streamed=$(grep -c "data: streaming" "$log" || true)
    printf '%-8s %-22s %-6s wall %6.1f s  peak RSS %5d MiB  streamed splits %s\n' \
      "$1" "$2" "$attempt" "$(echo "$end - $start" | bc)" "$((rss / 1024))" "$streamed"
  done
done
