#!/usr/bin/env bash
# Ensures an MQTT broker (Mosquitto) answers on 127.0.0.1:1883 for live meters
# (`meter-client run --source mqtt://127.0.0.1:1883 ...`).
#
# - If something already answers on the port, nothing is done.
# - Otherwise Debian's `mosquitto` is installed when missing (apt-get as root, or `sudo -n`),
#   and started in the background with a configuration of its own: one listener on loopback
#   only, anonymous clients (loopback only), persistence on (queued QoS 1 messages of
#   persistent sessions survive a broker restart), and no limit on the messages queued for a
#   disconnected persistent session (Mosquitto's default, 1000, would drop readings published
#   while a meter is down for longer than that).
#
# Environment: SEER_MQTT_PORT (default 1883), SEER_MQTT_DIR (default
# ${XDG_STATE_HOME:-$HOME/.local/state}/seer/mosquitto: configuration, persistence, log, pid).
# Idempotent and runnable from any directory; exits 0 once the port answers.
set -euo pipefail

say() { printf 'mosquitto: %s\n' "$*" >&2; }

port="${SEER_MQTT_PORT:-1883}"
dir="${SEER_MQTT_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/seer/mosquitto}"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if answers; then
    exit 0
fi

find_mosquitto() {
    command -v mosquitto 2>/dev/null && return 0
    [[ -x /usr/sbin/mosquitto ]] && { echo /usr/sbin/mosquitto; return 0; }
    return 1
}

if ! bin="$(find_mosquitto)"; then
    if [[ "$(id -u)" == 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        say "mosquitto is not installed; run: sudo apt-get install -y mosquitto"
        exit 1
    fi
    say "installing Debian's mosquitto"
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q mosquitto >/dev/null \
        || { "${as_root[@]}" apt-get update -q >/dev/null \
            && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q mosquitto >/dev/null; }
    bin="$(find_mosquitto)" || { say "mosquitto still not found after installing"; exit 1; }
fi

mkdir -p "$dir"
chmod 700 "$dir"
cat >"$dir/mosquitto.conf" <<CONF
# Written by scripts/mosquitto.sh: a loopback broker for SEER's live meters.
listener $port 127.0.0.1
allow_anonymous true
# Started as root, Mosquitto would switch to user mosquitto, which cannot write to \$dir.
user $(id -un)
persistence true
persistence_location $dir/
autosave_interval 10
max_queued_messages 0
log_dest file $dir/mosquitto.log
pid_file $dir/mosquitto.pid
CONF

say "starting $bin on 127.0.0.1:$port (state in $dir)"
nohup "$bin" -c "$dir/mosquitto.conf" >/dev/null 2>&1 &

for _ in $(seq 1 50); do
    if answers; then
        exit 0
    fi
    sleep 0.1
done
say "the broker did not answer on 127.0.0.1:$port; see $dir/mosquitto.log"
exit 1
