#!/usr/bin/env bash
# Stand-ins for devices on one machine (as root, Debian 12), idempotently: two more Docker
# engines reached over SSH, as a device's engine is, and an image registry.
#
#   eval "$(bash .ci/devices.sh up)"   # make sure of everything; progress on stderr, exports on stdout
#   bash .ci/devices.sh stop eb-dev1   # stop one device engine (SIGTERM, wait until its socket is gone):
#                                      # calls in flight fail, its containers live on (live-restore)
#   bash .ci/devices.sh start eb-dev1  # start it again (data root kept: images and containers are back)
#   bash .ci/devices.sh pause eb-dev1  # freeze its dockerd (SIGSTOP): connections hang, nothing fails
#   bash .ci/devices.sh resume eb-dev1 # thaw it (SIGCONT); `start` and `up` thaw a frozen engine too
#   bash .ci/devices.sh status         # what runs, one line each
#   bash .ci/devices.sh down           # stop everything this script starts (state and data are kept)
#
# `up` makes sure of:
#   - engines eb-dev1 and eb-dev2: dockerd each with its own data root (/var/lib/eb-devN), exec
#     root, socket (/run/eb-devN.sock), pidfile, log, engine ID (trust key) and bridge
#     (eb-devN, 10.231.N.1/24: an address only on that local bridge, no iptables rules), with
#     the base images loaded by .ci/base-images.sh (from its cached rootfs tarballs);
#   - one sshd per device on 127.0.0.1:220N (Debian's openssh-server, our own config, root
#     with a key only). The key's authorized_keys line sets DOCKER_HOST to that device's
#     socket, so `docker system dial-stdio` over SSH (what docker-py runs for ssh:// URLs)
#     reaches that engine. A managed block in ~/.ssh/config names the hosts eb-dev1 and
#     eb-dev2 (address, port, user, key, known host key), so the device URLs are
#     ssh://root@eb-devN:220N. The port must be in the URL: docker-py turns ssh://HOST into
#     ssh://HOST:22 and runs `ssh -p 22`, which overrides the Port of ~/.ssh/config;
#   - Debian's docker-registry on 127.0.0.1:5055 with storage under $STATE/registry, checked
#     by pushing a base image from the build engine and pulling it on the first device.
# and prints the export lines for the tests:
#   EDGE_BUILDER_TEST_DEVICES           ssh://root@eb-dev1:2201 ssh://root@eb-dev2:2202
#   EDGE_BUILDER_TEST_DEVICE_SOCKETS    unix:///run/eb-dev1.sock unix:///run/eb-dev2.sock (setup/cleanup only)
#   EDGE_BUILDER_TEST_REGISTRY          127.0.0.1:5055
# The build engine is $DOCKER_HOST (as `eval "$(bash .ci/engine.sh)"` leaves it) or the default.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DEVICES=(eb-dev1 eb-dev2)           # device N: bridge 10.231.N.1/24, sshd on 127.0.0.1:220N
SUBNET_PREFIX=10.231
SSH_PORT_BASE=2200
REGISTRY_ADDR=127.0.0.1:5055
STATE=/var/lib/edge-builder-ci      # keys, sshd and registry configs, registry storage
SSH_DIR=$STATE/ssh
CLIENT_KEY=$SSH_DIR/id_ed25519
KNOWN_HOSTS=$SSH_DIR/known_hosts
REGISTRY_DIR=$STATE/registry
REGISTRY_PID=/run/edge-builder-ci-registry.pid
REGISTRY_LOG=/var/log/edge-builder-ci-registry.log
LOCK=/run/edge-builder-ci-devices.lock
BLOCK_BEGIN="# >>> edge-builder CI devices (managed by .ci/devices.sh; replaced on every run) >>>"
BLOCK_END="# <<< edge-builder CI devices <<<"
WAIT_SECONDS=60
BASE_TAG=edge-builder/base:bookworm-amd64

say() { echo "devices: [${SECONDS}s] $*" >&2; }
die() { echo "devices: ERROR: $*" >&2; exit 1; }

# Everything goes to stderr; only `up` prints its export lines, to fd 3 (the real stdout).
# Daemons are started with no inherited fds but stdio (see without_fds), so that neither
# `$(...)` in the caller, nor the lock on fd 9, nor anything else the caller had open waits for them.
exec 3>&1 1>&2

# --- per-device names --------------------------------------------------------------------
dev_index() {  # eb-dev2 -> 2
    local i
    for i in "${!DEVICES[@]}"; do
        [ "${DEVICES[$i]}" = "$1" ] && { echo $((i + 1)); return 0; }
    done
    die "unknown device '$1' (devices: ${DEVICES[*]})"
}
dev_sock() { echo "/run/$1.sock"; }
dev_host() { echo "unix:///run/$1.sock"; }
dev_pidfile() { echo "/run/$1.pid"; }
dev_log() { echo "/var/log/$1-dockerd.log"; }
dev_data_root() { echo "/var/lib/$1"; }
dev_ssh_port() { echo $((SSH_PORT_BASE + $(dev_index "$1"))); }
dev_url() { echo "ssh://root@$1:$(dev_ssh_port "$1")"; }
sshd_pidfile() { echo "/run/$1-sshd.pid"; }

# --- helpers -------------------------------------------------------------------------------
# shellcheck source=lib.sh
. "$HERE/lib.sh"

without_fds() {  # without_fds CMD...: exec CMD with no open fds but 0, 1 and 2 (call it in a subshell)
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$@"
}

running() {  # running PIDFILE COMM -> 0 if the pid in PIDFILE is alive and is COMM
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_pid() {  # stop_pid PIDFILE COMM WHAT: SIGTERM, then wait for the process to exit (no SIGKILL)
    local pidfile=$1 comm=$2 what=$3 pid i
    running "$pidfile" "$comm" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    say "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq $((WAIT_SECONDS * 5))); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || { rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    die "$what (pid $pid) did not exit within ${WAIT_SECONDS}s of SIGTERM"
}

engine_answers() {  # engine_answers HOST
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

http_status() {  # http_status HOST:PORT PATH -> the status code of a plain HTTP GET, or nothing
    local addr=$1 path=$2 line
    # shellcheck disable=SC2016  # expanded by the inner bash
    line=$(timeout 5 bash -c '
        exec 5<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$1" >&5
        head -n1 <&5' _ "$addr" "$path" 2>/dev/null) || return 0
    line=${line#HTTP/* }
    echo "${line%% *}"
}

ssh_banner() {  # ssh_banner PORT -> 0 if an SSH server greets on 127.0.0.1:PORT
    local line
    # shellcheck disable=SC2016  # expanded by the inner bash
    line=$(timeout 5 bash -c 'exec 5<>"/dev/tcp/127.0.0.1/$1" && head -n1 <&5' _ "$1" 2>/dev/null) || return 1
    [[ "$line" == SSH-2.0-* ]]
}

write_if_changed() {  # write_if_changed FILE MODE < content -> 0 if FILE changed
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
}

# --- device engines ----------------------------------------------------------------------
ensure_bridge() {  # ensure_bridge NAME: the device's own bridge, with its address, up
    local name=$1 n addr other
    n=$(dev_index "$name")
    addr="$SUBNET_PREFIX.$n.1/24"
    if ! ip link show dev "$name" >/dev/null 2>&1; then
        other=$(ip -o -4 addr show | awk -v p="$SUBNET_PREFIX.$n." 'index($4, p) == 1 { print $2 }' | head -n1)
        [ -z "$other" ] || die "$SUBNET_PREFIX.$n.0/24 is already on interface $other; cannot give it to bridge $name"
        ip link add "$name" type bridge
    fi
    ip -o -4 addr show dev "$name" | grep -q " $addr " || ip addr add "$addr" dev "$name"
    ip link set "$name" up
}

engine_frozen() {  # engine_frozen NAME -> 0 if its dockerd is stopped by a signal (paused)
    running "$(dev_pidfile "$1")" dockerd \
        && [ "$(awk '/^State:/ { print $2 }' "/proc/$(cat "$(dev_pidfile "$1")")/status" 2>/dev/null)" = T ]
}

engine_pause() {  # engine_pause NAME: SIGSTOP its dockerd (the engine hangs instead of failing)
    running "$(dev_pidfile "$1")" dockerd || die "$1: its dockerd is not running"
    kill -STOP "$(cat "$(dev_pidfile "$1")")"
    say "$1: engine paused (frozen dockerd; resume with: $0 resume $1)"
}

engine_resume() {  # engine_resume NAME: SIGCONT its dockerd
    if running "$(dev_pidfile "$1")" dockerd; then
        kill -CONT "$(cat "$(dev_pidfile "$1")")"
        say "$1: engine resumed"
    fi
}

engine_start() {  # engine_start NAME: make sure the device's dockerd runs and answers
    local name=$1 host pidfile log conf i changed=0
    host=$(dev_host "$name")
    pidfile=$(dev_pidfile "$name")
    log=$(dev_log "$name")
    conf="$STATE/$name/daemon.json"
    command -v dockerd >/dev/null || apt_install docker.io
    command -v ip >/dev/null || apt_install iproute2
    ensure_bridge "$name"
    mkdir -p "$STATE/$name" "$(dev_data_root "$name")" "/run/$name"
    # Its own daemon.json (not /etc/docker's) and its own trust key: engines on one machine
    # otherwise share /etc/docker/key.json and so report the same engine ID. live-restore: on
    # `stop` the engine goes away under its clients at once (their calls fail with a dropped
    # connection, as when a device vanishes) instead of first killing every container (after
    # 10 s, which clients would see as steps that exited 137).
    write_if_changed "$conf" 644 <<EOF && changed=1
{
  "deprecated-key-path": "$STATE/$name/key.json",
  "live-restore": true
}
EOF
    engine_frozen "$name" && engine_resume "$name"
    if engine_answers "$host"; then
        running "$pidfile" dockerd || die "something answers at $host but not the dockerd of $pidfile"
        if [ $changed -eq 1 ]; then
            say "$name: $conf changed; reloading dockerd"
            kill -HUP "$(cat "$pidfile")"
        fi
        return 0
    fi
    if running "$pidfile" dockerd; then
        say "$name: dockerd (pid $(cat "$pidfile")) runs but does not answer yet; waiting"
    else
        say "$name: starting dockerd at $host (log $log)"
        rm -f "$(dev_sock "$name")"
        echo "--- $(date -Is) start" >>"$log"
        without_fds setsid dockerd --config-file "$conf" \
            --data-root "$(dev_data_root "$name")" --exec-root "/run/$name" --pidfile "$pidfile" \
            --host "$host" --bridge "$name" --iptables=false --ip-masq=false --cgroup-parent "/$name" \
            </dev/null >>"$log" 2>&1 &
    fi
    for i in $(seq $((WAIT_SECONDS * 5))); do
        engine_answers "$host" && { say "$name: engine answers at $host"; return 0; }
        sleep 0.2
    done
    tail -n 20 "$log" >&2 || true
    die "$name: dockerd did not answer within ${WAIT_SECONDS}s (log $log)"
}

engine_stop() {  # engine_stop NAME: SIGTERM its dockerd, wait until it is gone and its socket silent
    local name=$1 host
    host=$(dev_host "$name")
    engine_frozen "$name" && engine_resume "$name"   # a frozen process would not see SIGTERM
    stop_pid "$(dev_pidfile "$name")" dockerd "$name dockerd"
    ! engine_answers "$host" || die "$name: something still answers at $host after its dockerd exited"
    say "$name: engine stopped"
}

engine_run_check() {  # engine_run_check NAME: a container runs there
    DOCKER_HOST=$(dev_host "$1") timeout 60 docker run --rm --network none "$BASE_TAG" true \
        || die "$1: 'docker run --rm --network none $BASE_TAG true' failed (log $(dev_log "$1"))"
}

load_base_images() {  # on every device, in parallel: .ci/base-images.sh (fast from its cache)
    local name pids=() failed=0 i cache=/var/cache/edge-builder   # base-images.sh's rootfs cache
    if [ ! -s "$cache/rootfs-bookworm-amd64.tar" ] || [ ! -s "$cache/rootfs-bookworm-arm64.tar" ]; then
        # Not made yet: one base-images.sh makes them (debootstrap, minutes), then the others load.
        say "${DEVICES[0]}: no cached rootfs tarballs yet: .ci/base-images.sh makes them first"
        DOCKER_HOST=$(dev_host "${DEVICES[0]}") bash "$HERE/base-images.sh" amd64 arm64 3>&- 9>&- \
            || die "${DEVICES[0]}: base images failed"
    fi
    for name in "${DEVICES[@]}"; do
        ( set -o pipefail
          DOCKER_HOST=$(dev_host "$name") bash "$HERE/base-images.sh" amd64 arm64 2>&1 \
              | while IFS= read -r line; do say "$name: $line"; done ) 3>&- 9>&- &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { say "${DEVICES[$i]}: base images failed"; failed=1; }
    done
    [ $failed -eq 0 ] || die "base images could not be loaded into every device engine"
}

# --- SSH ---------------------------------------------------------------------------------
ssh_keys() {  # the client key and each device's host key, made once
    local name
    case "$(getent shadow root | cut -d: -f2)" in
        '!'*) die "root's password is locked ('!' in /etc/shadow), so sshd (UsePAM no) refuses root even with" \
                  "a key; allow key logins without setting a password: usermod -p '*' root" ;;
    esac
    mkdir -p "$SSH_DIR" /run/sshd
    chmod 700 "$STATE" "$SSH_DIR"
    [ -s "$CLIENT_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C edge-builder-ci-client -f "$CLIENT_KEY"
    for name in "${DEVICES[@]}"; do
        [ -s "$SSH_DIR/$name.host_ed25519_key" ] \
            || ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$SSH_DIR/$name.host_ed25519_key"
    done
}

sshd_start() {  # sshd_start NAME: the device's sshd on 127.0.0.1, root with the key only
    local name=$1 port conf pidfile log changed=0 i
    port=$(dev_ssh_port "$name")
    conf="$SSH_DIR/$name.sshd_config"
    pidfile=$(sshd_pidfile "$name")
    log="/var/log/$name-sshd.log"
    # The key may only run commands (no forwarding, no pty), and its sessions get DOCKER_HOST.
    # SHLVL=1 makes the session's bash skip root's ~/.bashrc, which Debian's bash otherwise
    # runs for every ssh command (here it runs `pyenv init`: 0.3 s on each docker-py request).
    write_if_changed "$SSH_DIR/$name.authorized_keys" 600 <<EOF || true
restrict,environment="DOCKER_HOST=$(dev_host "$name")",environment="SHLVL=1" $(cat "$CLIENT_KEY.pub")
EOF
    write_if_changed "$conf" 600 <<EOF && changed=1
# $name: managed by .ci/devices.sh
ListenAddress 127.0.0.1
Port $port
HostKey $SSH_DIR/$name.host_ed25519_key
PidFile $pidfile
AuthorizedKeysFile $SSH_DIR/$name.authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitUserEnvironment DOCKER_HOST,SHLVL
# Loopback only: the classic key exchange is 0.1 s faster per connection than the default
# post-quantum one on these CPUs, and docker-py opens one SSH connection per API request.
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
PrintLastLog no
# Do not drop bursts of connections (a test may run several docker-py clients at once).
MaxStartups 200
LoginGraceTime 30
EOF
    /usr/sbin/sshd -t -f "$conf" || die "$name: sshd rejects its config $conf"
    if running "$pidfile" sshd; then
        if [ $changed -eq 1 ]; then
            say "$name: sshd config changed; reloading"
            kill -HUP "$(cat "$pidfile")"
            sleep 0.5
        fi
    else
        ! ssh_banner "$port" || die "$name: port 127.0.0.1:$port is taken by another SSH server"
        say "$name: starting sshd on 127.0.0.1:$port (log $log)"
        # sshd forks into the background itself; -E: its log.
        # shellcheck disable=SC2094  # sshd appends its log (-E), the shell appends its stderr
        (without_fds /usr/sbin/sshd -f "$conf" -p "$port" -E "$log") </dev/null >/dev/null 2>>"$log" \
            || die "$name: sshd did not start (log $log)"
    fi
    for i in $(seq $((WAIT_SECONDS * 5))); do
        ssh_banner "$port" && return 0
        sleep 0.2
    done
    die "$name: sshd does not answer on 127.0.0.1:$port (log $log)"
}

ssh_client_config() {  # known host keys, and host aliases in the managed block of ~/.ssh/config
    local name home cfg
    for name in "${DEVICES[@]}"; do
        echo "$name $(cut -d' ' -f1,2 "$SSH_DIR/$name.host_ed25519_key.pub")"
    done | write_if_changed "$KNOWN_HOSTS" 600 || true
    # ssh reads the config of the passwd entry's home, whatever $HOME says.
    home=$(getent passwd "$(id -u)" | cut -d: -f6)
    cfg="$home/.ssh/config"
    mkdir -p "$home/.ssh"
    chmod 700 "$home/.ssh"
    # The block goes first, since ssh takes the first value it finds for an option, and ends
    # with `Host *` so that whatever followed at the top of the file still applies to all hosts.
    {
        echo "$BLOCK_BEGIN"
        for name in "${DEVICES[@]}"; do
            cat <<EOF
Host $name
    HostName 127.0.0.1
    Port $(dev_ssh_port "$name")
    User root
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    UserKnownHostsFile $KNOWN_HOSTS
    HostKeyAlias $name
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
        done
        echo "Host *"
        echo "$BLOCK_END"
        if [ -f "$cfg" ]; then
            awk -v b="$BLOCK_BEGIN" -v e="$BLOCK_END" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$cfg"
        fi
    } | write_if_changed "$cfg" 600 && say "updated the managed block in $cfg"
    return 0
}

ssh_check() {  # ssh_check NAME: ssh as docker-py runs it reaches that device's engine
    local name=$1 got
    got=$(timeout 30 ssh -l root -p "$(dev_ssh_port "$name")" -- "$name" \
              docker info --format '{{.DockerRootDir}}' 2>&1) \
        || die "$name: 'ssh $name docker info' failed: $got"
    [ "$got" = "$(dev_data_root "$name")" ] \
        || die "$name: over ssh, docker answers with data root '$got', not $(dev_data_root "$name")"
}

# --- registry ----------------------------------------------------------------------------
registry_start() {
    local status i
    apt_install docker-registry
    mkdir -p "$REGISTRY_DIR/data"
    write_if_changed "$REGISTRY_DIR/config.yml" 644 <<EOF || true
# managed by .ci/devices.sh
version: 0.1
log:
  level: info
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $REGISTRY_DIR/data}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: $REGISTRY_ADDR
EOF
    status=$(http_status "$REGISTRY_ADDR" /v2/)
    if running "$REGISTRY_PID" docker-registry; then
        [ "$status" = 200 ] && return 0
        say "registry (pid $(cat "$REGISTRY_PID")) runs but does not answer yet; waiting"
    else
        [ -z "$status" ] || die "something else answers at $REGISTRY_ADDR (HTTP $status)"
        say "starting docker-registry at $REGISTRY_ADDR (storage $REGISTRY_DIR/data, log $REGISTRY_LOG)"
        echo "--- $(date -Is) start" >>"$REGISTRY_LOG"
        without_fds setsid docker-registry serve "$REGISTRY_DIR/config.yml" </dev/null >>"$REGISTRY_LOG" 2>&1 &
        echo $! >"$REGISTRY_PID"
    fi
    for i in $(seq $((WAIT_SECONDS * 5))); do
        [ "$(http_status "$REGISTRY_ADDR" /v2/)" = 200 ] && return 0
        running "$REGISTRY_PID" docker-registry || break
        sleep 0.2
    done
    tail -n 20 "$REGISTRY_LOG" >&2 || true
    die "the registry does not answer at http://$REGISTRY_ADDR/v2/ (log $REGISTRY_LOG)"
}

build_engine() {  # the build engine's DOCKER_HOST, or nothing if none answers
    if [ -n "${DOCKER_HOST:-}" ]; then
        engine_answers "$DOCKER_HOST" || die "the build engine DOCKER_HOST=$DOCKER_HOST does not answer"
        echo "$DOCKER_HOST"
    elif timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "default"
    elif engine_answers unix:///run/edge-builder-docker.sock; then
        echo unix:///run/edge-builder-docker.sock   # the engine .ci/engine.sh starts
    fi
}

REGISTRY_CHECK_TAG=$REGISTRY_ADDR/edge-builder/base:test

registry_push() {  # the build engine pushes its base image to the registry -> 0, or 2 if no build engine
    local build
    build=$(build_engine)
    if [ -z "$build" ]; then
        say "WARNING: no build engine answers: registry push/pull not checked (run .ci/engine.sh first)"
        return 2
    fi
    [ "$build" = default ] && build=""
    DOCKER_HOST=$build docker image inspect "$BASE_TAG" >/dev/null 2>&1 \
        || die "$BASE_TAG is not on the build engine: run .ci/base-images.sh first"
    DOCKER_HOST=$build docker tag "$BASE_TAG" "$REGISTRY_CHECK_TAG"
    DOCKER_HOST=$build timeout 300 docker push -q "$REGISTRY_CHECK_TAG" >/dev/null \
        || die "the build engine cannot push $REGISTRY_CHECK_TAG to $REGISTRY_ADDR"
    DOCKER_HOST=$build docker rmi "$REGISTRY_CHECK_TAG" >/dev/null
    say "registry $REGISTRY_ADDR: the build engine pushed $REGISTRY_CHECK_TAG"
}

registry_pull() {  # registry_pull NAME: that device pulls what the build engine pushed
    local host
    host=$(dev_host "$1")
    DOCKER_HOST=$host timeout 300 docker pull -q "$REGISTRY_CHECK_TAG" >/dev/null \
        || die "$1 cannot pull $REGISTRY_CHECK_TAG"
    DOCKER_HOST=$host docker rmi "$REGISTRY_CHECK_TAG" >/dev/null
    say "registry $REGISTRY_ADDR: $1 pulled $REGISTRY_CHECK_TAG"
}

# --- commands ----------------------------------------------------------------------------
cmd_up() {
    local name started=$SECONDS urls=() socks=() push_pid push_rc=0
    apt_install openssh-server openssh-client docker-registry
    registry_start
    registry_push 3>&- 9>&- &    # on the build engine, while the device engines load their images
    push_pid=$!
    for name in "${DEVICES[@]}"; do engine_start "$name"; done
    load_base_images
    for name in "${DEVICES[@]}"; do engine_run_check "$name"; done
    ssh_keys
    for name in "${DEVICES[@]}"; do sshd_start "$name"; done
    ssh_client_config
    for name in "${DEVICES[@]}"; do ssh_check "$name"; done
    wait "$push_pid" || push_rc=$?
    [ $push_rc -eq 0 ] || [ $push_rc -eq 2 ] || die "the registry check failed (above)"
    [ $push_rc -eq 2 ] || registry_pull "${DEVICES[0]}"
    for name in "${DEVICES[@]}"; do
        urls+=("$(dev_url "$name")")
        socks+=("$(dev_host "$name")")
    done
    say "up in $((SECONDS - started))s: devices ${urls[*]}, registry $REGISTRY_ADDR"
    echo "export EDGE_BUILDER_TEST_DEVICES=\"${urls[*]}\"" >&3
    echo "export EDGE_BUILDER_TEST_DEVICE_SOCKETS=\"${socks[*]}\"" >&3
    echo "export EDGE_BUILDER_TEST_REGISTRY=$REGISTRY_ADDR" >&3
}

cmd_down() {
    local name
    stop_pid "$REGISTRY_PID" docker-registry registry
    for name in "${DEVICES[@]}"; do
        stop_pid "$(sshd_pidfile "$name")" sshd "$name sshd"
        engine_frozen "$name" && engine_resume "$name"
        if engine_answers "$(dev_host "$name")"; then   # live-restore would leave them running
            DOCKER_HOST=$(dev_host "$name") docker ps -q | xargs -r env DOCKER_HOST="$(dev_host "$name")" \
                docker stop -t 5 >/dev/null || true
        fi
        engine_stop "$name"
        # dockerd bind-mounts its data root on itself; with live-restore it leaves it mounted.
        if mountpoint -q "$(dev_data_root "$name")"; then umount "$(dev_data_root "$name")"; fi
        if ip link show dev "$name" >/dev/null 2>&1; then ip link del "$name"; fi
    done
    say "down (kept: $STATE, the data roots, ~/.ssh/config's managed block)"
}

cmd_status() {
    local name port
    for name in "${DEVICES[@]}"; do
        port=$(dev_ssh_port "$name")
        printf '%s: engine %s, sshd %s\n' "$name" \
            "$(if engine_frozen "$name"; then echo paused
               elif engine_answers "$(dev_host "$name")"; then echo "answers at $(dev_host "$name")"
               else echo down; fi)" \
            "$(ssh_banner "$port" && echo "on 127.0.0.1:$port" || echo down)" >&3
    done
    printf 'registry: %s\n' \
        "$([ "$(http_status "$REGISTRY_ADDR" /v2/)" = 200 ] && echo "answers at $REGISTRY_ADDR" || echo down)" >&3
}

[ "$(id -u)" -eq 0 ] || die "needs root (it starts dockerd, sshd and a registry)"
command -v docker >/dev/null || die "docker client not found"
exec 9>"$LOCK"
flock 9   # one devices.sh at a time (tests may stop and start devices concurrently)

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    start) [ $# -eq 2 ] || die "usage: $0 start NAME"; dev_index "$2" >/dev/null; engine_start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop NAME"; dev_index "$2" >/dev/null; engine_stop "$2" ;;
    pause) [ $# -eq 2 ] || die "usage: $0 pause NAME"; dev_index "$2" >/dev/null; engine_pause "$2" ;;
    resume) [ $# -eq 2 ] || die "usage: $0 resume NAME"; dev_index "$2" >/dev/null; engine_resume "$2" ;;
    *) die "usage: $0 up|down|status|start NAME|stop NAME|pause NAME|resume NAME  (devices: ${DEVICES[*]})" ;;
esac
