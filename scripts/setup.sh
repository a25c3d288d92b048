#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine with only the Rust toolchain lacks to build SEER.
#
# `sealy` compiles Microsoft SEAL (C++) with cmake and generates its bindings with bindgen, so
# the build needs cmake, make, a C++ compiler and libclang. The .proto files are compiled by
# the pure-Rust `protox`, so no system `protoc` is needed.
#
# Idempotent and runnable from any directory. Prints nothing and exits 0 when everything is
# present. Otherwise installs the missing Debian packages with apt-get when running as root
# (or through `sudo -n` when that works without a password); failing that, prints the exact
# command to run and exits 1.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

# libclang as bindgen (clang-sys) finds it: LIBCLANG_PATH, the linker cache, or LLVM's dirs.
have_libclang() {
    if [[ -n "${LIBCLANG_PATH:-}" ]] && { compgen -G "${LIBCLANG_PATH}/libclang.so*" >/dev/null \
        || compgen -G "${LIBCLANG_PATH}/libclang-[0-9]*.so*" >/dev/null; }; then
        return 0
    fi
    if command -v ldconfig >/dev/null 2>&1 \
        && ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
        return 0
    fi
    # Only the names bindgen loads: libclang.so*, libclang-<version>.so* (libclang-cpp.so.*,
    # which Debian installs alone with other LLVM tools, is not one of them).
    local dir
    for dir in /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu; do
        if compgen -G "$dir/libclang.so*" >/dev/null \
            || compgen -G "$dir/libclang-[0-9]*.so*" >/dev/null; then
            return 0
        fi
    done
    return 1
}

have_cxx() {
    command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
        || command -v clang++ >/dev/null 2>&1
}

# Fills the global array `missing` with the Debian packages that provide what is absent.
find_missing() {
    missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    have_cxx || missing+=(g++)
    have_libclang || missing+=(libclang-dev)
}

if ! command -v cargo >/dev/null 2>&1; then
    say "warning: cargo not on PATH; SEER needs the Rust toolchain (1.95 or newer, via rustup)"
fi

find_missing
if ((${#missing[@]} == 0)); then
    exit 0
fi

install_cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]} (Debian package names); this script installs them only with apt-get"
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    say "missing: ${missing[*]}; run:"
    printf '  sudo apt-get update && sudo %s\n' "${install_cmd[*]}" >&2
    exit 1
fi

say "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" "${install_cmd[@]}" -qq >/dev/null

find_missing
if ((${#missing[@]} != 0)); then
    say "still missing after apt-get install: ${missing[*]}"
    exit 1
fi
