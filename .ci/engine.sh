#!/usr/bin/env bash
# Make a Docker engine available on a Debian 12 machine (as root), idempotently.
#
#   eval "$(bash .ci/engine.sh)"     # progress goes to stderr, the export line to stdout
#
# If an engine already answers at $DOCKER_HOST (or the default socket), it is used
# as it is. Otherwise Debian's docker.io is installed if needed and a private
# dockerd is started with its own data root, exec root and socket, so that no
# other engine on the machine is touched. The data root persists between runs,
# so images built earlier (base images, toolchains) are still there.
# QEMU user emulation for arm64 is registered either way (binfmt_misc).
set -euo pipefail

SOCK=/run/edge-builder-docker.sock
OWN_HOST="unix://$SOCK"
DATA_ROOT=/var/lib/edge-builder-docker
EXEC_ROOT=/run/edge-builder-docker
PIDFILE=/run/edge-builder-docker.pid
LOG=/var/log/edge-builder-dockerd.log
WAIT_SECONDS=60

say() { echo "engine: $*" >&2; }
die() { echo "engine: ERROR: $*" >&2; exit 1; }

answers() {  # answers HOST -> 0 if `docker info` works there
    DOCKER_HOST="$1" timeout 10 docker info >/dev/null 2>&1
}

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ensure_arm64_emulation() {
    [ "$(id -u)" -eq 0 ] || { say "not root: skipping QEMU/binfmt setup"; return 0; }
    [ "$(uname -m)" = aarch64 ] && return 0
    apt_install qemu-user-static binfmt-support debootstrap
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc (is this a container without privileges?)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >&2 || update-binfmts --enable >&2 || true
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
        || die "binfmt handler qemu-aarch64 not registered; try: update-binfmts --enable qemu-aarch64"
    say "arm64 emulation: $(head -n1 /proc/sys/fs/binfmt_misc/qemu-aarch64)"
}

start_own_dockerd() {
    [ "$(id -u)" -eq 0 ] || die "no engine answers and starting one needs root"
    command -v dockerd >/dev/null || apt_install docker.io
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$(dirname "$LOG")"
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        say "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
    else
        say "starting dockerd at $OWN_HOST (data root $DATA_ROOT, log $LOG)"
        echo "--- $(date -Is) start" >>"$LOG"
        # All fds go to the log so nothing waiting on our output is held open.
        setsid dockerd \
            --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
            --host "$OWN_HOST" </dev/null >>"$LOG" 2>&1 &
    fi
    for _ in $(seq "$WAIT_SECONDS"); do
        answers "$OWN_HOST" && return 0
        sleep 1
    done
    tail -n 20 "$LOG" >&2 || true
    die "dockerd did not answer within ${WAIT_SECONDS}s (log: $LOG)"
}

ensure_arm64_emulation

if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then
    host="$DOCKER_HOST"
elif answers "$OWN_HOST"; then
    host="$OWN_HOST"
elif [ -z "${DOCKER_HOST:-}" ] && timeout 10 docker info >/dev/null 2>&1; then
    host=""   # the default socket or current context answers: leave it as it is
else
    [ -n "${DOCKER_HOST:-}" ] && say "DOCKER_HOST=$DOCKER_HOST does not answer; using a private engine"
    start_own_dockerd
    host="$OWN_HOST"
fi

version=$(DOCKER_HOST="${host:-${DOCKER_HOST:-}}" docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
if [ -n "$host" ]; then
    say "engine $version answers at $host"
    echo "export DOCKER_HOST=$host"
else
    say "engine $version answers at the default socket/context"
fi
