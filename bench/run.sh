#!/usr/bin/env bash
# The dts benchmark, in one command:
#
#   ./bench/run.sh                  # full run (3 runs per row; writes BENCHMARKS.md)
#   ./bench/run.sh --quick          # smoke check: fewer items, one run, prints only
#   ./bench/run.sh --runs 5 --only W1,W2,LAT --skip-w4
#   ./bench/run.sh --only scheduling   # makespan ÷ ideal, latency behind a big task, 32 workers
#
# Options (passed to bench/bench.py): --quick, --runs N (default 3),
# --long-runs N (the scheduling section's long cases; default 1),
# --only W1,W2,W3,W4,LAT,READS,SCHEDULING (any case), --skip-w4, --w4-complete (run the
# 1,000,000-item task to the end: many minutes), --no-profile (skip the perf
# profile and A/B of a full run), --runners, --output FILE, --json FILE.
# See `python3 bench/bench.py --help`.
#
# It builds dts in release mode, installs what is missing (GNU parallel and
# wrk from apt; redis-server and the tansu broker with
# scripts/install-test-deps.sh), then runs bench/bench.py. Nobody else should
# load the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
    case "$arg" in
        -h|--help) exec python3 bench/bench.py --help ;;
    esac
done

for tool in python3 cargo git bash xargs; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed" >&2; exit 1; }
done

missing=()
command -v parallel >/dev/null 2>&1 || missing+=(parallel)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${missing[*]} missing and not running as root; install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# DTS_TANSU names a broker binary to use instead of .tools/bin/tansu (as the tests do).
if ! command -v redis-server >/dev/null 2>&1 || [ ! -x "${DTS_TANSU:-.tools/bin/tansu}" ]; then
    ./scripts/install-test-deps.sh >&2
fi

echo "building dts (cargo build --release)" >&2
cargo build --release --quiet

BENCH_COMMAND="./bench/run.sh"
if [ $# -gt 0 ]; then BENCH_COMMAND+="$(printf ' %q' "$@")"; fi
export BENCH_COMMAND
exec python3 bench/bench.py "$@"
