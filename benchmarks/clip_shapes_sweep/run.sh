#!/bin/bash
# Recipe sweep for `visionzoo train clip_tiny data=shapes task=image-text` on one GPU: every run
# of a runs file in parallel, one CPU thread each, then their zero-shot curves.
#
#   benchmarks/clip_shapes_sweep/run.sh benchmarks/clip_shapes_sweep/sweep1.txt [OUT_DIR]
#
# A runs file holds one run a line, `name|config overrides` (added to the clip_tiny_shapes
# recipe); a line `base|overrides` gives overrides every run starts from (the sweeps here pin
# the recipe they were run against that way). Environment: DEVICE (default cuda; cpu works, slowly), RUN_LIMIT (seconds a run may
# take, default 480), PY (default python3). Runs write under $WORK (default /tmp/clip_sweep).
# Accuracy per epoch is what a sweep measures: on a GPU the runs' timings say nothing of the
# 2-core CPU budget, which the recipe's own run measures.
set -u
runs_file=${1:?usage: run.sh RUNS_FILE [OUT_DIR]}
out=${2:-.}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PYTHONPATH=$repo/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PY:-python3}
work=${WORK:-/tmp/clip_sweep}
common="data=shapes task=image-text trainer.device=${DEVICE:-cuda} trainer.threads=1
  trainer.progress=false trainer.tensorboard=false trainer.plots=false"
mkdir -p "$work/logs" "$work/runs" "$out"
# A 3-step smoke run first, so that a broken environment costs seconds, not a sweep.
if ! timeout 120 $py -m visionzoo.cli.main train clip_tiny $common trainer.max_steps=3 \
    data.train_size=256 data.val_size=64 trainer.epochs=1 \
    trainer.output_dir="$work/smoke" > "$work/logs/smoke.log" 2>&1; then
  cat "$work/logs/smoke.log"
  exit 1
fi
base=$(grep '^base|' "$runs_file" | cut -d'|' -f2-)
start=$(date +%s)
while IFS='|' read -r name args; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] || [ "$name" = base ] && continue
  timeout "${RUN_LIMIT:-480}" $py -m visionzoo.cli.main train clip_tiny $common $base $args \
    trainer.output_dir="$work/runs/$name" > "$work/logs/$name.log" 2>&1 &
done < "$runs_file"
wait
echo "all runs done in $(( $(date +%s) - start )) s"
$py "$here/summary.py" "$work/runs" | tee "$out/summary.txt"
