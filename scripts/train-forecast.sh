#!/usr/bin/env bash
# Train seer-forecast's encrypted LSTM forecaster with libtorch and write its model JSON.
#
#   scripts/train-forecast.sh                    the committed one-step model
#                                                (forecast/models/uci-lstm.json)
#   scripts/train-forecast.sh --horizon 24 --out forecast/models/uci-lstm-day-ahead.json
#   scripts/train-forecast.sh --epsilon 5 --out /tmp/uci-lstm-eps5.json
#
# Arguments are passed to the training example (`--help` lists them). Sets up torch first
# (scripts/setup-torch.sh) and fetches the UCI data if missing (scripts/fetch-data.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(scripts/setup-torch.sh --env)"
scripts/fetch-data.sh >&2
cargo run --release -p seer-forecast --features tch --example train -- "$@"
