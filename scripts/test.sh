#!/usr/bin/env bash
# SEER's test suite: installs what the build needs, makes sure PostgreSQL runs (the storage
# suites run against SQLite and PostgreSQL), installs the browser and tools the dashboards'
# tests drive and starts an MQTT broker, builds every binary (the integration tests start
# them as separate processes) and runs all tests, in release mode (SEAL's C++
# build follows the cargo profile, and homomorphic code is many times slower in debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The UCI data set: the end-to-end suites bill every complete month of it (tests/uci_bills.rs).
scripts/fetch-data.sh
# PostgreSQL for the storage suites' PostgreSQL variants (started or installed when missing).
scripts/services.sh
# Headless Chromium and chromedriver (the dashboards' browser tests), xmllint (the Green
# Button export against the ESPI schema), pdftotext (the statements' text).
scripts/test-tools.sh
# Mosquitto on 127.0.0.1:1883 for the live-meter test (started, or installed, when missing).
scripts/mosquitto.sh
if (($# > 0)); then
    # A selection (`scripts/test.sh --test mtls`, `scripts/test.sh -p seer-core`): the programs
    # the end-to-end suites start are built first, then cargo test runs what was asked.
    echo "test: building SEER (release; the first build compiles Microsoft SEAL, a few minutes)" >&2
    cargo build --release --locked --workspace --bins
    exec cargo test --release --locked --workspace "$@"
fi

echo "test: building SEER and its tests (release; the first build compiles Microsoft SEAL, a few minutes)" >&2
# One build: `cargo test` also builds every program whose package has integration tests (all
# four do) with the tests' own features, so nothing is compiled twice.
cargo test --release --locked --workspace --no-run

# Two lanes at once, with the same cargo arguments (nothing is rebuilt). The deep CKKS suites
# (n = 32768) evaluate in SEAL on one core for minutes each, so one lane would leave a core
# idle. Tests named `deep_*` (the streamed forecast job and the two engines' encrypted twins,
# about 700 s) run in the second lane; the anomaly and forecast release suites stay with the
# rest in the first (about 780 s), so that the lanes end together.
deep_log=$(mktemp -t seer-deep-tests.XXXXXX)
trap 'rm -f "$deep_log"' EXIT
echo "test: the deep lane (tests named deep_*) runs in the background; its output follows the rest" >&2
cargo test --release --locked --workspace --tests -- deep_ >"$deep_log" 2>&1 &
deep=$!
status=0
cargo test --release --locked --workspace -- --skip deep_ || status=$?
deep_status=0
wait "$deep" || deep_status=$?
echo "test: the deep lane (tests named deep_*):" >&2
# Only the binaries that ran a deep test, and every failure.
grep -v -E '^(running 0 tests|test result: ok\. 0 passed.*)$' "$deep_log" | grep -v -E '^\s*$' || true
if ((status != 0 || deep_status != 0)); then
    echo "test: FAILED (main lane exit $status, deep lane exit $deep_status)" >&2
    exit 1
fi
# At least the known deep suites ran: a renamed test must not drop out of both lanes.
deep_ran=$(grep -c -E '^test deep_.* \.\.\. ok$' "$deep_log" || true)
if ((deep_ran < 3)); then
    echo "test: only $deep_ran deep tests ran (expected at least 3)" >&2
    exit 1
fi

# seer-forecast's training runs on libtorch (PyPI torch==2.13.0 in .venv, installed on first
# use: a large download); the rest of the suite needs none. Smoke test: a few epochs on a
# month, the loss falls, the exported model's Rust forward pass equals tch's.
echo "test: seer-forecast training smoke test (libtorch via scripts/setup-torch.sh)" >&2
eval "$(scripts/setup-torch.sh --env)"
cargo test --release --locked -p seer-forecast --features tch --test train_smoke
