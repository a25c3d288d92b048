#!/usr/bin/env bash
# Installs the programs SEER's tests drive besides its own: Debian's Chromium and ChromeDriver
# (the dashboards' browser tests run headless Chromium through WebDriver), xmllint (the Green
# Button export is validated against the ESPI schema) and pdftotext (the statements' text is
# read back). Idempotent, runnable from any directory, prints nothing when all are present.
# Without root (or password-less sudo) it prints the command to run and exits 1.
set -euo pipefail

say() { printf 'test-tools: %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
# The pages' text renders in DejaVu Sans (the stylesheet's fallback); a machine without any
# font would screenshot empty boxes.
compgen -G '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf' >/dev/null || missing+=(fonts-dejavu-core)
((${#missing[@]} == 0)) && exit 0

install_cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
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
"${sudo[@]}" "${install_cmd[@]}" -qq >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" "${install_cmd[@]}" -qq >/dev/null; }
