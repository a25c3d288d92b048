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
exec cargo test --release --locked --workspace "$@"
