#!/usr/bin/env bash
# Create local Debian base images, since no image registry is reachable:
#
#   edge-builder/base:bookworm-amd64   edge-builder/base:bookworm-arm64
#
# Each is a debootstrap rootfs (minbase + python3, venv, pip, CA certificates)
# from the Debian mirror apt already uses, loaded into the engine.
# An image that exists is skipped; rootfs tarballs are cached in $CACHE so a
# re-run on the same machine (or after the engine's data root was wiped) is fast.
# Needs root, debootstrap and, for arm64 on x86, QEMU binfmt (see engine.sh).
#
#   bash .ci/base-images.sh [ARCH...]     # default: amd64 arm64
set -euo pipefail

SUITE=bookworm
REPO=edge-builder/base
CACHE=/var/cache/edge-builder
INCLUDE=python3,python3-venv,python3-pip,ca-certificates

say() { echo "base-images: $*" >&2; }
die() { echo "base-images: ERROR: $*" >&2; exit 1; }

debian_mirror() {  # the first bookworm (non-security) URI apt is configured with
    local uri
    uri=$(awk '
        /^URIs:/    { uris = $2 }
        /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == "'$SUITE'") { print uris; exit } }
        /^deb /     { for (i = 2; i <= NF; i++) if ($i == "'$SUITE'") { print $(i - 1); exit } }
    ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
    [ -n "$uri" ] || die "apt names no $SUITE mirror (in /etc/apt/sources.list or /etc/apt/sources.list.d/):" \
        "configure apt with the Debian mirror this machine may use, then run again"
    echo "$uri"
}

make_rootfs_tar() {  # make_rootfs_tar ARCH TARBALL
    local arch=$1 tarball=$2 root="$CACHE/rootfs-$1" log="$CACHE/debootstrap-$1.log"
    local mirror start
    mirror=$(debian_mirror)
    start=$(date +%s)
    say "debootstrap $SUITE/$arch from $mirror (log: $log)"
    rm -rf "$root"
    if ! debootstrap --arch="$arch" --variant=minbase --include="$INCLUDE" \
            "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "debootstrap for $arch failed (arm64 on x86 needs: apt-get install qemu-user-static binfmt-support)"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    say "rootfs $arch ready in $(( $(date +%s) - start ))s: $(du -h "$tarball" | cut -f1)"
}

load_image() {  # load_image ARCH TARBALL TAG: the rootfs as a one-layer image
    # `docker load` of a hand-made docker-archive rather than `docker import`:
    # Debian's engine (20.10) ignores import's --platform architecture and would
    # label an arm64 rootfs amd64.
    local arch=$1 tarball=$2 tag=$3 dir diff cfg created
    dir=$(mktemp -d)
    diff=$(sha256sum "$tarball" | cut -d' ' -f1)
    created=$(date -u -r "$tarball" +%Y-%m-%dT%H:%M:%SZ)
    cat >"$dir/config.json" <<EOF
{"architecture": "$arch", "os": "linux", "created": "$created",
 "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["/bin/bash"]},
 "rootfs": {"type": "layers", "diff_ids": ["sha256:$diff"]},
 "history": [{"created": "$created", "created_by": "debootstrap --variant=minbase --include=$INCLUDE $SUITE"}]}
EOF
    cfg=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
    mv "$dir/config.json" "$dir/$cfg.json"
    printf '[{"Config": "%s.json", "RepoTags": ["%s"], "Layers": ["layer.tar"]}]\n' "$cfg" "$tag" >"$dir/manifest.json"
    ln -s "$tarball" "$dir/layer.tar"
    tar -C "$dir" -ch manifest.json "$cfg.json" layer.tar | docker load >/dev/null
    rm -rf "$dir"
}

ensure_image() {  # ensure_image ARCH
    local arch=$1 tag="$REPO:$SUITE-$1" tarball="$CACHE/rootfs-$SUITE-$1.tar" got
    got=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$tag" 2>/dev/null || true)
    if [ "$got" = "linux/$arch" ]; then
        say "$tag exists"
        return 0
    elif [ -n "$got" ]; then
        say "$tag exists as $got, not linux/$arch: replacing it"
        docker rmi "$tag" >/dev/null
    fi
    [ -s "$tarball" ] || make_rootfs_tar "$arch" "$tarball"
    load_image "$arch" "$tarball" "$tag"
    got=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$tag")
    [ "$got" = "linux/$arch" ] || die "$tag was loaded as $got, not linux/$arch"
    say "$tag loaded ($got)"
}

command -v docker >/dev/null || die "docker client not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (run: eval \"\$(bash .ci/engine.sh)\")"
mkdir -p "$CACHE"
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)
for arch in "${archs[@]}"; do ensure_image "$arch"; done
