#!/usr/bin/env bash
# Build, push and check vitbench's container images with whichever engine is present:
# docker (when its daemon answers), else podman (builds run through buildah inside podman).
#
#   scripts/images.sh build [IMAGE...]     build (default: every image) tagged with the package version
#   scripts/images.sh push REGISTRY [IMAGE...]   retag as REGISTRY/NAME:TAG and push
#   scripts/images.sh check                build service-cpu + mlflow, run them, check them (CI)
#   scripts/images.sh check-trainer        build trainer-cpu, run `model summary` + a 5-iteration train in it
#   scripts/images.sh install-tools        apt-get the engine and friends on a fresh Debian machine (root)
#
# IMAGE is one of: service-cpu mlflow trainer-cpu service trainer (the docker/NAME.Dockerfile files).
# Tags: vitbench/service:VERSION-cpu, vitbench/service:VERSION, vitbench/trainer:VERSION-cpu,
#       vitbench/trainer:VERSION, vitbench/mlflow:MLFLOW_VERSION (VERSION from pyproject.toml, MLflow's
#       from docker/constraints.txt) — the repositories and tags the Helm chart expects under a registry.
#
# Base images. The CPU images start FROM Debian bookworm with Debian's own Python. Where that base
# cannot be pulled (machines that reach only package registries), an equivalent one is built from
# Debian's packages (debootstrap --variant=minbase bookworm, with the slim image's apt sources and
# dpkg excludes) and imported under the exact FROM name. It is cached in .cache/images/ (gitignored).
# VITBENCH_LOCAL_BASE=auto (default: pull, else build it) | always | never.
#
# Host settings the build needs (package-index settings, CA bundle) go in as build-time mounts
# (podman build -v DIR:/run/vitbench-build:ro), never into a layer: PIP_CONF (default /etc/pip.conf when
# present) and CA_BUNDLE (default: the system bundle when PIP_CONF or the environment names one).
# The docker engine has no build-time volumes: there the build uses the daemon's own network settings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
MLFLOW_VERSION=$(sed -n 's/^mlflow==//p' docker/constraints.txt)
ALL_IMAGES=(service-cpu mlflow trainer-cpu service trainer)
CACHE=${VITBENCH_IMAGES_CACHE:-$ROOT/.cache/images}
VENV=${VENV:-.venv}
LOCAL_BASE=${VITBENCH_LOCAL_BASE:-auto}

log() { printf '== images: %s\n' "$*" >&2; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

tag_of() {  # image name -> local tag
    case "$1" in
        service-cpu) echo "vitbench/service:${VERSION}-cpu" ;;
        service) echo "vitbench/service:${VERSION}" ;;
        trainer-cpu) echo "vitbench/trainer:${VERSION}-cpu" ;;
        trainer) echo "vitbench/trainer:${VERSION}" ;;
        mlflow) echo "vitbench/mlflow:${MLFLOW_VERSION}" ;;
        *) die "unknown image '$1': expected one of ${ALL_IMAGES[*]}" ;;
    esac
}

# ------------------------------------------------------------------ engine
ENGINE=
ENGINE_FLAGS=()
pick_engine() {
    [ -n "$ENGINE" ] && return 0
    if [ -z "${VITBENCH_ENGINE:-}" ] || [ "${VITBENCH_ENGINE}" = docker ]; then
        if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
            ENGINE=docker
            return 0
        fi
    fi
    if [ -z "${VITBENCH_ENGINE:-}" ] || [ "${VITBENCH_ENGINE}" = podman ]; then
        if command -v podman >/dev/null 2>&1; then
            ENGINE=podman
            # crun refuses hosts with hybrid cgroups; runc + cgroupfs work there and everywhere else.
            if command -v runc >/dev/null 2>&1; then ENGINE_FLAGS+=(--runtime runc); fi
            [ -d /run/systemd/system ] || ENGINE_FLAGS+=(--cgroup-manager cgroupfs)
            return 0
        fi
    fi
    die "no container engine: start the docker daemon, or install podman (scripts/images.sh install-tools)"
}
engine() { "$ENGINE" "${ENGINE_FLAGS[@]}" "$@"; }

install_tools() {
    [ "$(id -u)" = 0 ] || die "install-tools needs root (apt-get)"
    local need=()
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
    [ ${#need[@]} -eq 0 ] && return 0
    log "apt-get install podman buildah runc fuse-overlayfs debootstrap uidmap slirp4netns"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman buildah runc fuse-overlayfs debootstrap uidmap \
        slirp4netns netavark aardvark-dns containernetworking-plugins iptables ca-certificates >/dev/null
}

# ------------------------------------------------------------------ base images
base_of() {  # Dockerfile -> the default of its *_IMAGE ARG
    sed -n 's/^ARG [A-Z_]*_IMAGE=\(.*\)$/\1/p' "docker/$1.Dockerfile" | head -n1
}

have_image() { engine image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {  # the host's Debian mirror, for debootstrap and the base's apt sources
    local m
    m=$(sed -n 's/^URIs: *\(\S*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}

build_local_debian() {  # $1 = image name to import as (e.g. docker.io/library/debian:12.12-slim)
    local name=$1 tarball=$CACHE/debian-bookworm-minbase.tar
    [ "$ENGINE" = podman ] || die "building a local base needs podman (docker users can pull $name)"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (scripts/images.sh install-tools)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root to build the local base $name"
    if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7 2>/dev/null)" ]; then
        local mirror rootfs t0
        mirror=$(debian_mirror)
        t0=$(now)
        log "debootstrap --variant=minbase bookworm from $mirror (cached in ${tarball#"$ROOT"/})"
        mkdir -p "$CACHE"
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        # What the official slim image has on top of minbase: deb822 sources with updates + security,
        # no docs/man/locales, an empty apt cache.
        rm -f "$rootfs/etc/apt/sources.list"
        cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/*/[!c]* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        log "local Debian base: $(du -h "$tarball" | cut -f1) in $(($(now) - t0)) s"
    fi
    engine import -q --change 'CMD ["bash"]' "$tarball" "$name" >/dev/null
    log "imported the local Debian base as $name"
}

ensure_base() {  # $1 = Dockerfile name
    local base
    base=$(base_of "$1")
    [ -n "$base" ] || die "docker/$1.Dockerfile has no *_IMAGE ARG"
    have_image "$base" && return 0
    case "$base" in
        */debian:*) ;;
        *)  # CUDA bases: pull or fail (they cannot be made from Debian's packages)
            timeout 600 "$ENGINE" "${ENGINE_FLAGS[@]}" pull "$base" >/dev/null \
                || die "cannot pull $base for $1 (GPU images need a registry that serves it)"
            return 0 ;;
    esac
    if [ "$LOCAL_BASE" != always ]; then
        if timeout 60 "$ENGINE" "${ENGINE_FLAGS[@]}" pull "$base" >/dev/null 2>&1; then return 0; fi
        [ "$LOCAL_BASE" = never ] && die "cannot pull $base (and VITBENCH_LOCAL_BASE=never)"
        log "cannot pull $base: building an equivalent base from Debian's packages"
    fi
    build_local_debian "$base"
}

# ------------------------------------------------------------------ build
MOUNT_DIR=
build_mounts() {  # fills BUILD_ARGS with the -v of the host's pip settings (podman only)
    BUILD_ARGS=()
    [ "$ENGINE" = podman ] || return 0
    local pip_conf=${PIP_CONF:-} ca=${CA_BUNDLE:-}
    [ -n "$pip_conf" ] || { [ -f /etc/pip.conf ] && pip_conf=/etc/pip.conf; } || true
    if [ -z "$ca" ]; then
        ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}
        if [ -z "$ca" ] && [ -n "$pip_conf" ]; then
            ca=$(sed -n 's/^ *cert *= *\(.*\)$/\1/p' "$pip_conf" | head -n1)
        fi
    fi
    [ -n "$pip_conf$ca" ] || return 0
    MOUNT_DIR=$(mktemp -d)
    chmod 755 "$MOUNT_DIR"
    # pip reads PIP_CONFIG_FILE=/run/vitbench-build/pip.conf (set in the build stages); a missing file
    # is ignored, so the same Dockerfiles build without any mount.
    { [ -n "$pip_conf" ] && grep -v '^ *cert *=' "$pip_conf" || echo "[global]"; } >"$MOUNT_DIR/pip.conf"
    if [ -n "$ca" ]; then
        [ -f "$ca" ] || die "CA bundle $ca does not exist"
        cp "$ca" "$MOUNT_DIR/ca.crt"
        sed -i '0,/^\[global\]/s//[global]\ncert = \/run\/vitbench-build\/ca.crt/' "$MOUNT_DIR/pip.conf"
        grep -q '^cert = ' "$MOUNT_DIR/pip.conf" || printf '[global]\ncert = /run/vitbench-build/ca.crt\n' >>"$MOUNT_DIR/pip.conf"
    fi
    chmod 644 "$MOUNT_DIR"/*
    BUILD_ARGS=(-v "$MOUNT_DIR:/run/vitbench-build:ro")
}
cleanup() {
    [ -n "$MOUNT_DIR" ] && rm -rf "$MOUNT_DIR"
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
    for c in ${CONTAINERS:-}; do engine rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

build_one() {  # $1 = image name
    local name=$1 tag t0 flags=()
    tag=$(tag_of "$name")
    [ -f "docker/$name.Dockerfile" ] || die "docker/$name.Dockerfile is missing"
    ensure_base "$name"
    [ -n "$MOUNT_DIR" ] || build_mounts
    if [ "$ENGINE" = podman ]; then
        flags=(--isolation chroot --pull=missing --layers)
    fi
    t0=$(now)
    log "build $name -> $tag"
    engine build "${flags[@]}" "${BUILD_ARGS[@]}" -f "docker/$name.Dockerfile" -t "$tag" . >"$CACHE/build-$name.log" 2>&1 \
        || { tail -n 40 "$CACHE/build-$name.log" >&2; die "building $name failed (log: ${CACHE#"$ROOT"/}/build-$name.log)"; }
    BUILT_S[$name]=$(($(now) - t0))
    log "built $tag in ${BUILT_S[$name]} s, $(image_size "$tag")"
}
declare -A BUILT_S=()

image_size() {
    local bytes
    bytes=$(engine image inspect --format '{{.Size}}' "$1")
    awk -v b="$bytes" 'BEGIN { printf "%.0f MB\n", b / 1e6 }'
}

cmd_build() {
    pick_engine
    mkdir -p "$CACHE"
    local images=("$@")
    [ ${#images[@]} -gt 0 ] || images=("${ALL_IMAGES[@]}")
    for name in "${images[@]}"; do build_one "$name"; done
}

cmd_push() {
    local registry=${1:-}
    [ -n "$registry" ] || die "push needs a registry, e.g. scripts/images.sh push registry.example.com/team"
    shift
    pick_engine
    local images=("$@")
    [ ${#images[@]} -gt 0 ] || images=("${ALL_IMAGES[@]}")
    for name in "${images[@]}"; do
        local tag remote
        tag=$(tag_of "$name")
        have_image "$tag" || die "$tag is not built: run make images first"
        remote="${registry%/}/${tag#vitbench/}"
        engine tag "$tag" "$remote"
        log "push $remote"
        engine push "$remote"
    done
}

# ------------------------------------------------------------------ check
CONTAINERS=
run_flags() {  # what every checked container gets
    if [ "$ENGINE" = podman ]; then
        # Hosts without CAP_SYS_RESOURCE refuse podman's default rlimits.
        local n
        n=$(ulimit -Hn)
        { [ "$n" = unlimited ] || [ "$n" -gt 65536 ]; } && n=65536
        echo "--ulimit nofile=$n:$n --ulimit nproc=4096:4096"
    fi
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() {  # url seconds container -> 0 once GET url answers 200
    local url=$1 limit=$2 c=$3 t0
    t0=$(now)
    while [ $(($(now) - t0)) -lt "$limit" ]; do
        if "$PY" - "$url" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        [ "$(engine inspect --format '{{.State.Running}}' "$c")" = true ] || break
        sleep 2
    done
    engine logs "$c" 2>&1 | tail -n 40 >&2
    return 1
}

detect_ok() {  # url image -> prints a summary; fails unless the answer has boxes and masks
    "$PY" - "$1" "$2" <<'EOF'
import json, sys, urllib.request
url, image = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"{url}/detect?score_threshold=0&max_detections=5", data=open(image, "rb").read(),
                             headers={"content-type": "image/jpeg"}, method="POST")
with urllib.request.urlopen(req, timeout=60) as r:
    body = json.load(r)
dets = body["detections"]
assert dets, f"no detections at score_threshold=0: {body}"
for d in dets:
    assert len(d["box"]) == 4 and d["mask"] and d["mask"]["format"] == "rle" and d["mask"]["counts"], d
print(f"POST /detect: {len(dets)} detections with boxes and RLE masks, model {body.get('model')}")
EOF
}

make_model() {  # a tiny exported model + the registry home holding it, from the venv (like the tests)
    local out=$1
    [ -x "$VENV/bin/vitbench" ] || die "$VENV/bin/vitbench is missing: run make venv first"
    log "tiny model: vitbench demo (bench-tiny recipe, 64 px, 3 iterations) + export"
    local sets=()
    for o in input.image_size=64 backbone.pretrain_img_size=64 solver.batch_size=2 solver.max_iters=3 \
        solver.warmup_iters=1 solver.checkpoint_period=3 solver.eval_period=0 \
        heads.rpn_batch_size_per_image=32 heads.roi_batch_size_per_image=16 data.num_workers=0; do
        sets+=(--set "$o")
    done
    "$VENV/bin/vitbench" demo --out "$out/demo" --home "$out/home" --images 10 --pretrain none --inits random "${sets[@]}" \
        >"$out/demo.log" 2>&1 || { tail -n 30 "$out/demo.log" >&2; die "vitbench demo failed"; }
    MODEL_DIR=$(dirname "$(find "$out/home/serving" -name model.onnx | head -n1)")
    IMAGE_FILE=$(find "$out/demo/data/val" -name '*.jpg' | head -n1)
    [ -f "$MODEL_DIR/manifest.json" ] && [ -f "$IMAGE_FILE" ] || die "the demo left no exported model"
    chmod -R a+rX "$out"  # the containers read it as uid 10001
}

check_service() {
    local tag c port uid
    tag=$(tag_of service-cpu)
    # 1. The chart's way: non-root, read-only root filesystem, the exported model mounted read-only.
    port=$(free_port)
    c=vitbench-check-service-$$
    CONTAINERS="$CONTAINERS $c"
    # shellcheck disable=SC2046
    engine run -d --name "$c" $(run_flags) --read-only --tmpfs /tmp --tmpfs /cache:rw,mode=1777 \
        -p "127.0.0.1:$port:8000" -v "$MODEL_DIR:/model:ro" -e VITBENCH_MODEL_DIR=/model "$tag" >/dev/null
    wait_http "http://127.0.0.1:$port/readyz" 120 "$c" || die "service (read-only, model dir) never became ready"
    detect_ok "http://127.0.0.1:$port" "$IMAGE_FILE"
    uid=$(engine exec "$c" python3 -c 'import os; print(os.getuid())')
    [ "$uid" = 10001 ] || die "the service runs as uid $uid, expected 10001"
    if engine exec "$c" sh -c 'touch /opt/venv/x' 2>/dev/null; then die "the root filesystem is writable"; fi
    engine exec "$c" sh -c 'test -z "$(ls -A /run/vitbench-build 2>/dev/null)" && test ! -e /etc/pip.conf' \
        || die "build-time settings (pip.conf, CA bundle) were left in the image"
    log "service-cpu: /readyz 200 and /detect as uid $uid on a read-only root filesystem"
    engine rm -f "$c" >/dev/null

    # 2. A plain `docker run`: the registry home mounted at another path than where it was made,
    #    the model resolved by name@alias and downloaded into the image's own /cache.
    port=$(free_port)
    c=vitbench-check-registry-$$
    CONTAINERS="$CONTAINERS $c"
    chmod a+w "$WORK/home" "$WORK/home/mlflow.db"
    # shellcheck disable=SC2046
    engine run -d --name "$c" $(run_flags) -p "127.0.0.1:$port:8000" -v "$WORK/home:/srv/registry" \
        -e VITBENCH_HOME=/srv/registry -e VITBENCH_MODEL=vitbench-demo@champion "$tag" >/dev/null
    wait_http "http://127.0.0.1:$port/readyz" 120 "$c" || die "service (registry home mounted elsewhere) never became ready"
    detect_ok "http://127.0.0.1:$port" "$IMAGE_FILE"
    engine exec "$c" sh -c 'test -f /cache/models/*/model.onnx' \
        || die "the service did not keep the downloaded model under /cache/models"
    local t0 code
    t0=$(now)
    engine stop -t 10 "$c" >/dev/null
    code=$(engine inspect --format '{{.State.ExitCode}}' "$c")
    log "service-cpu: registry home mounted at /srv/registry served vitbench-demo@champion from /cache;" \
        "stopped in $(($(now) - t0)) s (exit $code)"
    engine rm -f "$c" >/dev/null
}

check_mlflow() {
    local tag c port t0 stop_s code
    tag=$(tag_of mlflow)
    port=$(free_port)
    c=vitbench-check-mlflow-$$
    CONTAINERS="$CONTAINERS $c"
    # shellcheck disable=SC2046
    engine run -d --name "$c" $(run_flags) -p "127.0.0.1:$port:5000" "$tag" >/dev/null
    wait_http "http://127.0.0.1:$port/health" 300 "$c" || die "mlflow never answered /health"
    uid=$(engine exec "$c" python3 -c 'import os; print(os.getuid())')
    t0=$(now)
    engine kill --signal TERM "$c" >/dev/null
    while [ "$(engine inspect --format '{{.State.Running}}' "$c")" = true ]; do
        [ $(($(now) - t0)) -le 10 ] || { engine logs "$c" 2>&1 | tail -n 20 >&2; die "mlflow ignored SIGTERM for 10 s"; }
        sleep 0.5
    done
    stop_s=$(($(now) - t0))
    code=$(engine inspect --format '{{.State.ExitCode}}' "$c")
    [ "$code" != 137 ] || die "mlflow was killed (exit 137), not stopped"
    log "mlflow: /health 200 as uid $uid; SIGTERM stopped it in ${stop_s} s (exit $code)"
    engine rm -f "$c" >/dev/null
}

cmd_check() {
    local t_all
    t_all=$(now)
    install_tools_if_root
    pick_engine
    [ -x "$VENV/bin/python" ] || die "$VENV/bin/python is missing: run make venv first"
    PY=$VENV/bin/python
    mkdir -p "$CACHE"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/vitbench-images.XXXXXX")
    chmod 755 "$WORK"
    cmd_build service-cpu mlflow
    local t0
    t0=$(now)
    make_model "$WORK"
    log "tiny model made in $(($(now) - t0)) s"
    check_service
    check_mlflow
    log "service-cpu $(image_size "$(tag_of service-cpu)") built in ${BUILT_S[service-cpu]} s;" \
        "mlflow $(image_size "$(tag_of mlflow)") built in ${BUILT_S[mlflow]} s"
    log "check passed in $(($(now) - t_all)) s"
}

cmd_check_trainer() {
    local t_all tag c
    t_all=$(now)
    install_tools_if_root
    pick_engine
    PY=${VENV}/bin/python
    mkdir -p "$CACHE"
    cmd_build trainer-cpu
    tag=$(tag_of trainer-cpu)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/vitbench-trainer.XXXXXX")
    chmod 777 "$WORK"
    c=vitbench-check-trainer-$$
    CONTAINERS="$CONTAINERS $c"
    local t0
    t0=$(now)
    # shellcheck disable=SC2046
    engine run --rm --name "$c" $(run_flags) --read-only --tmpfs /tmp -v "$WORK:/outputs" "$tag" sh -ec '
        vitbench model summary --recipe bench-tiny
        vitbench data synth --out /outputs/data --images 8
        vitbench train --recipe bench-tiny --init random --data /outputs/data --out /outputs/run \
            --set input.image_size=64 --set backbone.pretrain_img_size=64 --set solver.batch_size=2 \
            --set solver.max_iters=5 --set solver.warmup_iters=1 --set solver.checkpoint_period=5 \
            --set solver.eval_period=0 --set data.num_workers=0 --set heads.rpn_batch_size_per_image=32 \
            --set heads.roi_batch_size_per_image=16 --no-register --no-progress
        ls -l /outputs/run' || die "vitbench in the trainer image failed"
    log "trainer-cpu: model summary + 5-iteration train in $(($(now) - t0)) s;" \
        "image $(image_size "$tag") built in ${BUILT_S[trainer-cpu]} s; check in $(($(now) - t_all)) s"
}

install_tools_if_root() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then install_tools; fi
}

case "${1:-}" in
    build) shift; cmd_build "$@" ;;
    push) shift; cmd_push "$@" ;;
    check) cmd_check ;;
    check-trainer) cmd_check_trainer ;;
    install-tools) install_tools ;;
    *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
