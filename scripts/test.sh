#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need
# (redis-server, nginx, a Kafka-protocol broker), then formatting, lints,
# docs, a build with the minimum supported Rust version, and every test of
# every crate. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies"
./scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== minimum supported Rust version"
# Cargo.toml's rust-version is a promise: check the workspace builds with it.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if rustup toolchain list 2>/dev/null | grep -q "^$msrv" \
    || rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
    cargo +"$msrv" check --workspace --all-targets --quiet --target-dir target/msrv
else
    echo "warning: could not install Rust $msrv with rustup; the MSRV check did not run" >&2
fi
echo "== tests"
# As root, the executor's cgroup and run-as tests must run, never skip; so
# must the interpreter tests, whose interpreters install-test-deps.sh installed,
# and the chaos soak's partitions and full disks (network namespaces, a tmpfs).
if [ "$(id -u)" -eq 0 ]; then
    export DTS_TEST_REQUIRE_CGROUPS=1 DTS_TEST_REQUIRE_INTERPRETERS=1 DTS_TEST_REQUIRE_ROOT_FAULTS=1
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
