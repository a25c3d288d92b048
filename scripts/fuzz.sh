#!/usr/bin/env bash
# Coverage-guided fuzzing of SEER's decoders with libFuzzer (see SECURITY.md, "Fuzzing").
#
#   scripts/fuzz.sh [--runs N | --time SECONDS | --ci] [TARGET...]
#
# Builds the harness in fuzz/ (its own cargo workspace) with the SanitizerCoverage flags that
# cargo-fuzz passes, on the stable toolchain — no nightly, no cargo-fuzz install needed (with
# cargo-fuzz installed, `cargo fuzz run TARGET --sanitizer none` runs the same targets) —
# writes the seed corpora, then runs each target in turn, one process each, and prints how
# many inputs each executed. Defaults: every target, 10^7 runs each. --ci: 15 s per target.
# Exit status 1 when a target crashed (the input is kept under fuzz/artifacts/TARGET/).
#
# Environment: SEER_FUZZ_TARGET_DIR (cargo's build directory for the harness, default
# fuzz/target; CI keeps it in its cache so SEAL is not rebuilt), SEER_FUZZ_ARGS (extra
# libFuzzer options).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=10000000
time_limit=
targets=()
while (($#)); do
    case "$1" in
        --runs) runs="$2"; time_limit=; shift 2 ;;
        --time) time_limit="$2"; runs=; shift 2 ;;
        --ci) time_limit=15; runs=; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(csv_loaders auth rpc ckks_frames)
((${#targets[@]})) || targets=("${all[@]}")

command -v cargo >/dev/null || { echo "fuzz: cargo is required (rustup)" >&2; exit 1; }
# SEAL's build (cmake, libclang for bindgen) and libFuzzer's C++ (a C++ compiler).
scripts/setup.sh
command -v c++ >/dev/null || { echo "fuzz: a C++ compiler is required for libFuzzer" >&2; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="${SEER_FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
# What `cargo fuzz build --sanitizer none` passes: SanitizerCoverage (inline 8-bit counters,
# PC table, comparison tracing) for libFuzzer, cfg(fuzzing), assertions and overflow checks.
# --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks \
-Cforce-frame-pointers=yes"
echo "fuzz: building the harness (release, $host; the first build compiles SEAL, minutes)" >&2
cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$host" --bins
bin="$CARGO_TARGET_DIR/$host/release"

# Seeds: the committed small ones (fuzz/seeds) and freshly generated CKKS frames.
"$bin/seeds" fuzz/generated >/dev/null

mkdir -p fuzz/logs
declare -A max_len=([ckks_frames]=8192)
status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "fuzz/seeds/$target" "fuzz/generated/$target"
    limit=()
    if [ -n "$time_limit" ]; then limit=(-max_total_time="$time_limit"); else limit=(-runs="$runs"); fi
    log="fuzz/logs/$target.log"
    echo "fuzz: $target (${time_limit:+$time_limit s}${runs:+$runs runs}), log $log" >&2
    rc=0
    # shellcheck disable=SC2086 # SEER_FUZZ_ARGS is a list of options
    "$bin/$target" "fuzz/corpus/$target" "fuzz/seeds/$target" "fuzz/generated/$target" \
        "${limit[@]}" -max_len="${max_len[$target]:-4096}" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" ${SEER_FUZZ_ARGS:-} \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    seconds=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
    summary+=("$(printf '%-12s %12s executions %8s exec/s  exit %d  %d crash/timeout/oom inputs' \
        "$target" "${execs:-?}" "${seconds:-?}" "$rc" "$crashes")")
    if ((rc != 0)); then
        status=1
        echo "fuzz: $target failed (exit $rc); the last lines of $log:" >&2
        tail -n 30 "$log" >&2
    fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit "$status"
