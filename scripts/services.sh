#!/usr/bin/env bash
# Makes sure PostgreSQL listens on 127.0.0.1:5432 with a database `test` and trust
# authentication for local test connections, for the test suite's PostgreSQL variants (the
# SQLite variants need nothing), and that it speaks TLS with a certificate the suite can verify
# (`sslmode=verify-full`, CA in target/postgres-tls/ca.pem). Idempotent, runnable from any
# directory.
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

# TLS for the suite's `sslmode=verify-full` test: a CA of its own (kept in
# target/postgres-tls/, its certificate readable by the tests) and a server certificate for
# 127.0.0.1 and localhost in the cluster's data directory, switched on with ALTER SYSTEM and a
# reload (existing connections and plaintext clients carry on). Idempotent: nothing happens
# when the server already uses this certificate. Needs root (to write into the data directory)
# and openssl; without them the TLS test is skipped with a note (failed under CI=true).
enable_tls() {
    local user=$1 tls_dir ca server datadir owner current
    tls_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/postgres-tls"
    ca="$tls_dir/ca.pem"
    datadir=$(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "show data_directory") || return 1
    server="$datadir/seer-server.pem"
    current=$(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "show ssl_cert_file") || return 1
    # Already set up for this checkout: the server uses our certificate file, and it chains to
    # this checkout's CA (another checkout on the same machine may have replaced both).
    if [[ "$current" == "$server" && -s "$ca" ]] && as_root test -s "$server" \
        && [[ $(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "show ssl") == "on" ]] \
        && as_root openssl verify -CAfile "$ca" "$server" >/dev/null 2>&1; then
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || { say "openssl is missing: PostgreSQL TLS not set up"; return 1; }
    as_root true 2>/dev/null || { say "not root: PostgreSQL TLS not set up"; return 1; }
    say "enabling TLS on PostgreSQL with a test CA in $tls_dir"
    mkdir -p "$tls_dir" && chmod 700 "$tls_dir"
    local work
    work=$(mktemp -d)
    (
        set -e
        cd "$work"
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=SEER test PostgreSQL CA" -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
            -extfile ext -out server.pem 2>/dev/null
    ) || { rm -rf "$work"; say "openssl failed: PostgreSQL TLS not set up"; return 1; }
    owner=$(as_root stat -c %U "$datadir")
    as_root install -o "$owner" -m 0644 "$work/server.pem" "$server" \
        && as_root install -o "$owner" -m 0600 "$work/server.key" "$datadir/seer-server.key" \
        && install -m 0644 "$work/ca.pem" "$ca" \
        || { rm -rf "$work"; say "could not install the certificates"; return 1; }
    rm -rf "$work"
    psql -h 127.0.0.1 -U "$user" -d postgres -q \
        -c "alter system set ssl_cert_file = '$server'" \
        -c "alter system set ssl_key_file = '$datadir/seer-server.key'" \
        -c "alter system set ssl = on" \
        -c "select pg_reload_conf()" >/dev/null || return 1
    # The reload is asynchronous: wait until the server reports the new certificate.
    for _ in $(seq 1 20); do
        [[ $(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "show ssl_cert_file") == "$server" ]] && return 0
        sleep 0.25
    done
    say "PostgreSQL did not pick up the TLS settings"
    return 1
}

# The database the suite connects to for administration (it creates one per test).
if command -v psql >/dev/null 2>&1; then
    for user in postgres root; do
        if psql -h 127.0.0.1 -U "$user" -d postgres -tAc "select 1" >/dev/null 2>&1; then
            if [[ -z $(psql -h 127.0.0.1 -U "$user" -d postgres -tAc "select 1 from pg_database where datname = 'test'") ]]; then
                psql -h 127.0.0.1 -U "$user" -d postgres -qc "create database test" >/dev/null
            fi
            if ! enable_tls "$user"; then
                if [[ "${CI:-}" == "true" ]]; then exit 1; fi
                say "continuing: the PostgreSQL TLS test will be skipped"
            fi
            exit 0
        fi
    done
    give_up "PostgreSQL listens on 127.0.0.1:5432 but accepts neither user postgres nor root without a password"
fi
