#!/usr/bin/env bash
# SEER's test suite: installs what the build needs, makes sure PostgreSQL runs (the storage
# suites run against SQLite and PostgreSQL), builds every binary (the integration tests start
# them as separate processes) and runs all tests, in release mode (SEAL's C++
# build follows the cargo profile, and homomorphic code is many times slower in debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The UCI data set: the end-to-end suites bill every complete month of it (tests/uci_bills.rs).
scripts/fetch-data.sh
# PostgreSQL for the storage suites' PostgreSQL variants (started or installed when missing).
scripts/services.sh
echo "test: building SEER (release; the first build compiles Microsoft SEAL, a few minutes)" >&2
cargo build --release --locked --workspace --bins
cargo test --release --locked --workspace "$@"
if (($# == 0)); then
    # seer-forecast's training runs on libtorch (PyPI torch==2.13.0 in .venv, installed on first
    # use: a large download); the rest of the suite needs none. Smoke test: a few epochs on a
    # month, the loss falls, the exported model's Rust forward pass equals tch's.
    echo "test: seer-forecast training smoke test (libtorch via scripts/setup-torch.sh)" >&2
    eval "$(scripts/setup-torch.sh --env)"
    cargo test --release --locked -p seer-forecast --features tch --test train_smoke
fi
