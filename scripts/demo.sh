#!/usr/bin/env bash
# Builds dts, starts it embedded (`dts up`, in memory), submits
# examples/hello.json, shows the task going from submitted to finished and
# its first results, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

# Not --quiet: the first build compiles librdkafka and SQLite for minutes,
# and cargo's progress shows it is working.
echo "building dts (release; the first build takes a few minutes)..."
cargo build --release
bin=target/release/dts

work=$(mktemp -d)
"$bin" up --ephemeral --port 0 >"$work/stdout" 2>"$work/log" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 100); do
    grep -q '^dts listening on ' "$work/stdout" && break
    sleep 0.1
done
server=$(sed -n 's/^dts listening on //p' "$work/stdout")
[ -n "$server" ] || { echo "dts up did not start:"; cat "$work/log"; exit 1; }
echo "dts up is listening on $server"
export DTS_SERVER="$server"

echo
echo "\$ dts submit examples/hello.json --wait"
"$bin" submit examples/hello.json --wait --json >"$work/task.json"
id=$(sed -n 's/^  "id": "\(.*\)",$/\1/p' "$work/task.json")
"$bin" status "$id"

echo
echo "\$ dts results $id | head"
"$bin" results "$id" | head -n 10
echo
echo "\$ dts workers"
"$bin" workers
