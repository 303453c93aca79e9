#!/usr/bin/env bash
# Time to accuracy, side by side: `lenet5 train --preset PRESET` and the same run specification in PyTorch
# (bench/pytorch_fast.py, preloaded tensors, in its default and its channels-last layout), for seeds 0..SEEDS-1,
# taking turns seed by seed so that both see the same state of a shared machine. Each run is a whole process
# (start, reading the data, training, the test evaluation, writing the run) timed by /usr/bin/time; the test
# accuracy is the one evaluation after the last epoch (the preset chooses nothing on the test set). Prints each
# run, then the mean, minimum and maximum of the accuracies and times, and the ratio of the medians.
#
#   bench/time_to_accuracy.sh [SEEDS] [THREADS] [PRESET]
#
# PyTorch is installed into a virtual environment outside the repository ($LENET5_BENCH_VENV, default
# ~/.cache/lenet5-bench-venv) on first use; CI never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}
threads=${2:-2}
preset=${3:-fast}
for arg in "$seeds" "$threads"; do
  case $arg in
    '' | *[!0-9]* | 0) echo "time_to_accuracy.sh: SEEDS and THREADS must be positive integers, got '$arg'" >&2; exit 2 ;;
  esac
done
venv=${LENET5_BENCH_VENV:-$HOME/.cache/lenet5-bench-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi
cargo build --release -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./target/release/lenet5 train --preset "$preset" --print-config > "$out/spec.json"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$threads, preset=$preset"
echo "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

run_ours() {
  /usr/bin/time -f "%e" -o "$out/time" ./target/release/lenet5 train --preset "$preset" --seed "$1" \
    --threads "$threads" --out "$out/run" --force --progress plain > "$out/log"
  # The run's one evaluation, after its last epoch, is on the test set.
  acc=$(python3 -c "import json;print(json.loads(open('$out/run/metrics.jsonl').read().splitlines()[-1])['val_acc'])")
  echo "lenet5 $1 $acc $(cat "$out/time")"
}
run_torch() {
  local name=$1 seed=$2
  shift 2
  /usr/bin/time -f "%e" -o "$out/time" "$venv/bin/python" bench/pytorch_fast.py --spec "$out/spec.json" \
    --data data/MNIST/raw --seed "$seed" --threads "$threads" "$@" > "$out/torch.json" 2> "$out/torch.err"
  acc=$(python3 -c "import json;print(json.load(open('$out/torch.json'))['test_acc'])")
  echo "$name $seed $acc $(cat "$out/time")"
}
for seed in $(seq 0 $((seeds - 1))); do
  run_ours "$seed"
  run_torch pytorch "$seed"
  run_torch pytorch-channels-last "$seed" --channels-last
done | tee "$out/runs.txt"
python3 - "$out/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, _, acc, seconds = line.split()
    runs.setdefault(name, []).append((float(acc), float(seconds)))
print()
print(f"{'program':24} {'test accuracy: mean':>19} {'min':>7} {'max':>7}   {'seconds: median':>15} {'mean':>6} {'min':>6} {'max':>6}")
for name, r in runs.items():
    acc, sec = [a for a, _ in r], [s for _, s in r]
    print(f"{name:24} {statistics.mean(acc):19.4f} {min(acc):7.4f} {max(acc):7.4f}   "
          f"{statistics.median(sec):15.2f} {statistics.mean(sec):6.2f} {min(sec):6.2f} {max(sec):6.2f}")
ours = statistics.median(s for _, s in runs["lenet5"])
fastest = min((statistics.median(s for _, s in r), n) for n, r in runs.items() if n != "lenet5")
print(f"\nlenet5 reaches its accuracy {fastest[0] / ours:.1f}x faster than the fastest PyTorch setting ({fastest[1]}), "
      f"whole process, median of {len(runs['lenet5'])} seeds")
PY
