#!/usr/bin/env bash
# Peak resident memory of a command and every process it starts (DataLoader workers included),
# sampled every 100 ms as the sum of VmRSS over its session:
#   bash benches/peak-rss.sh CMD [ARGS...]
# The command's output passes through; the last line (stderr) is "peak RSS (process tree): N MiB".
set -u
setsid "$@" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  kb=$(ps -o rss= --sid "$pid" 2>/dev/null | awk '{s += $1} END {print s + 0}')
  [ "$kb" -gt "$peak" ] && peak=$kb
  sleep 0.1
done
wait "$pid"
rc=$?
echo "peak RSS (process tree): $((peak / 1024)) MiB" >&2
exit $rc
