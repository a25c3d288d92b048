#!/usr/bin/env bash
# Makes sure PostgreSQL listens on 127.0.0.1:5432 with a database `test` and trust
# authentication for local test connections, for the test suite's PostgreSQL variants (the
# SQLite variants need nothing). Idempotent, runnable from any directory.
#
# - Already listening: nothing to do.
# - Installed but stopped (a Debian cluster): starts it.
# - Not installed: installs Debian's `postgresql` with apt-get when running as root, creates a
#   cluster that trusts local connections (a test machine only), and starts it; otherwise
#   prints the command to run.
# Without PostgreSQL the suite still runs: its PostgreSQL tests print a note and skip, except
# under CI=true, where they fail. So this script fails under CI=true, and only warns otherwise.
set -euo pipefail

say() { printf 'services: %s\n' "$*" >&2; }
listening() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
give_up() {
    say "$1"
    if [[ "${CI:-}" == "true" ]]; then exit 1; fi
    say "continuing: the PostgreSQL tests will be skipped"
    exit 0
}
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1
    fi
}
wait_listening() {
    for _ in $(seq 1 60); do
        listening && return 0
        sleep 0.5
    done
    return 1
}

if ! listening; then
    if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
        say "PostgreSQL is not installed; installing Debian's postgresql"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
            || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
            || give_up "could not install PostgreSQL; run: sudo apt-get install -y postgresql"
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        # A fresh cluster on a test machine: trust local connections as the suite expects.
        as_root sed -i -E 's/^(local|host)(\s+all\s+all\s+.*\s)(peer|md5|scram-sha-256)$/\1\2trust/' "$hba" \
            || give_up "could not configure $hba"
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || as_root pg_ctlcluster "$version" main start \
        || give_up "could not start PostgreSQL; run: sudo pg_ctlcluster $version main start"
    wait_listening || give_up "PostgreSQL did not start listening on 127.0.0.1:5432"
fi

# The database the suite connects to for administration (it creates one per test).
if command -v psql >/dev/null 2>&1; then
    for user in postgres root; do
        if psql -h 127.0.0.1 -U "$user" -d postgres -tAc "select 1" >/dev/null 2>&1; then
            if [[ -z $(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "select 1 from pg_database where datname = 'test'") ]]; then
                psql -h 127.0.0.1 -U "$user" -d postgres -qc "create database test" >/dev/null
            fi
            exit 0
        fi
    done
    give_up "PostgreSQL listens on 127.0.0.1:5432 but accepts neither user postgres nor root without a password"
fi
