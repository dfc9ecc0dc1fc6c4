#!/usr/bin/env bash
# Builds the CPU container image (docker/Dockerfile) with podman and checks it, on a machine
# that reaches no public container registry (only Debian's archive and PyPI):
#   1. base   a Debian 12 root filesystem standing in for debian:bookworm-slim, made by
#             mmdebstrap from Debian's archive and imported as
#             localhost/harness-base:bookworm-slim-<hash of its recipe>; made once, reused
#             while the recipe (BASE_* below) is unchanged (about a minute the first time)
#   2. build  podman build --isolation chroot (RUN steps run in a chroot: podman cannot start
#             OCI containers here) of the `runtime` target, BASE_IMAGE set to that base; the
#             host's CA bundle is mounted for pip (TLS interception) as BUILD_CA_BUNDLE
#   3. check  a container's filesystem (podman create + mount) run with chroot in private mount
#             and pid namespaces, as the image's user (uid 1000) with the image's Env,
#             WorkingDir and Entrypoint, a fresh host folder mounted on /results and the
#             committed fixtures read-only on /models: `harness --version`, `harness list`
#             (ONNX Runtime must be ready), and `harness compare` on tiny-bert with no --out:
#             its results.json must appear in the mounted folder, written by that uid
# and prints the image size, the build time and the time to the first result.
#
# Usage: scripts/container.sh [--exporter]
#   --exporter     also build and check the `exporter` target (PyTorch from PyPI: about 5 GB
#                  and several minutes): harness-export makes the tiny BERT fixture into
#                  /results, which the harness then compares
#   HARNESS=path   the binary to put in (default target/release/harness, built when missing)
#   IMAGE=name     the runtime image (default localhost/harness:cpu; the exporter's gets
#                  the suffix -exporter)
#   REBUILD_BASE=1 make the base again (e.g. for Debian's newest security updates)
# Needs root (or passwordless sudo): podman and mmdebstrap (installed from Debian's archive
# when missing), unshare and chroot (util-linux, coreutils). Leaves the images (and podman's
# layer cache) behind, nothing else.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'container: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

EXPORTER=0
for arg in "$@"; do
  case "$arg" in
    --exporter) EXPORTER=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then
    exec sudo -n env HARNESS="${HARNESS:-}" IMAGE="${IMAGE:-}" REBUILD_BASE="${REBUILD_BASE:-}" \
      "${BASH_SOURCE[0]}" "$@"
  fi
  die "needs root for podman build --isolation chroot and the chroot check: run it as root or give this user passwordless sudo"
fi

apt_install() {
  say "installing $* from Debian's archive"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    die "apt-get install $* failed: install it by hand (Debian: apt-get install $*)"
}
command -v podman >/dev/null 2>&1 || apt_install podman
command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
command -v unshare >/dev/null 2>&1 || die "unshare is missing: apt-get install util-linux"
command -v chroot >/dev/null 2>&1 || die "chroot is missing: apt-get install coreutils"
podman info >/dev/null 2>"/tmp/container-podman-info.$$" || {
  cat "/tmp/container-podman-info.$$" >&2; rm -f "/tmp/container-podman-info.$$"
  die "podman does not work here (above): check /etc/containers/storage.conf and that /var/lib/containers is writable"
}
rm -f "/tmp/container-podman-info.$$"
unshare --mount --pid --fork true 2>/dev/null ||
  die "unshare --mount --pid is not permitted: in a container, run it with --privileged (or CAP_SYS_ADMIN and no seccomp filter)"

HARNESS=${HARNESS:-}
if [ -z "$HARNESS" ]; then
  HARNESS=target/release/harness
  if [ ! -x "$HARNESS" ]; then
    say "building $HARNESS (cargo build --release)"
    cargo build --release --quiet
  fi
fi
[ -x "$HARNESS" ] || die "no harness binary at $HARNESS (cargo build --release, or HARNESS=path)"
IMAGE=${IMAGE:-localhost/harness:cpu}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

TMP=$(mktemp -d "${TMPDIR:-/tmp}/harness-container.XXXXXX")
CIDS=()
cleanup() {
  local cid
  for cid in "${CIDS[@]}"; do podman rm -f -v "$cid" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# 1. The base: what debian:bookworm-slim is (minbase, merged /usr, no manuals, docs or
# translations), from Debian's archive with its updates and security updates.
BASE_SUITE=bookworm
BASE_OPTS=(--variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  "--dpkgopt=path-exclude=/usr/share/man/*" "--dpkgopt=path-exclude=/usr/share/info/*"
  "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-include=/usr/share/doc/*/copyright"
  "--dpkgopt=path-exclude=/usr/share/locale/*"
  "--dpkgopt=path-include=/usr/share/locale/locale.alias"
  "--dpkgopt=path-exclude=/usr/share/lintian/*" "--dpkgopt=path-exclude=/usr/share/linda/*")
BASE_MIRRORS=("deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main")
base_hash=$(printf '%s\n' "$BASE_SUITE" "${BASE_OPTS[@]}" "${BASE_MIRRORS[@]}" | sha256sum | cut -c1-12)
BASE=localhost/harness-base:bookworm-slim-$base_hash
T_BASE=0
if [ -n "${REBUILD_BASE:-}" ] || ! podman image exists "$BASE"; then
  say "making the Debian base $BASE with mmdebstrap (about a minute)"
  t0=$(now)
  mmdebstrap --quiet --format=tar "${BASE_OPTS[@]}" "$BASE_SUITE" "$TMP/base.tar" \
    "${BASE_MIRRORS[@]}" >"$TMP/mmdebstrap.log" 2>&1 || {
    tail -20 "$TMP/mmdebstrap.log" >&2
    die "mmdebstrap failed (above): it needs root and deb.debian.org"
  }
  podman import --quiet --change 'CMD ["bash"]' --message "mmdebstrap $BASE_SUITE minbase (scripts/container.sh)" \
    "$TMP/base.tar" "$BASE" >/dev/null
  rm -f "$TMP/base.tar"
  T_BASE=$(secs "$t0" "$(now)")
  say "base made in ${T_BASE} s"
else
  say "reusing the Debian base $BASE"
fi

# 2. The build, from a context holding only what the Dockerfile copies (the binary may be
# rebuilt meanwhile; the repository's target/ is large).
CTX=$TMP/context
mkdir -p "$CTX/docker" "$CTX/models" "$CTX/target/release"
cp docker/Dockerfile "$CTX/docker/"
cp models/export.py models/requirements.txt "$CTX/models/"
cp "$HARNESS" "$CTX/target/release/harness"
BUILD=(podman build --isolation chroot --build-arg "BASE_IMAGE=$BASE" -f "$CTX/docker/Dockerfile")
if [ -f "$CA_BUNDLE" ]; then
  BUILD+=(--volume "$CA_BUNDLE:/run/build-ca.crt:ro" --build-arg BUILD_CA_BUNDLE=/run/build-ca.crt)
fi

# build TARGET IMAGE: builds, removes the image the tag pointed to before, sets T_BUILD.
build() {
  local target=$1 image=$2 old new t0
  old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  say "podman build --target $target -t $image"
  t0=$(now)
  "${BUILD[@]}" --target "$target" -t "$image" "$CTX" >"$TMP/build-$target.log" 2>&1 || {
    tail -40 "$TMP/build-$target.log" >&2
    die "podman build of $target failed (above)"
  }
  T_BUILD=$(secs "$t0" "$(now)")
  new=$(podman image inspect --format '{{.Id}}' "$image")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
}

# 3. The check. cfg IMAGE FIELD: a field of the image's config, one value a line.
cfg() { podman image inspect --format "$2" "$1"; }

# in_image ROOTFS RESULTS -- ARGS...: runs ARGS as `docker run -v RESULTS:/results
# -v models/fixtures:/models:ro IMAGE ARGS...` would, in ROOTFS, a container's mounted root (with
# ENTRYPOINT_OVERRIDE set: as docker run --entrypoint ENTRYPOINT_OVERRIDE).
in_image() {
  local rootfs=$1 results=$2 entry; shift 3
  if [ -n "${ENTRYPOINT_OVERRIDE:-}" ]; then entry=("$ENTRYPOINT_OVERRIDE"); else entry=("${ENTRY[@]}"); fi
  unshare --mount --pid --fork --propagation private bash -c '
    set -euo pipefail
    R=$1 RES=$2 MOD=$3 USPEC=$4 WD=$5; shift 5
    ENVS=(); while [ "$1" != -- ]; do ENVS+=("$1"); shift; done; shift
    ENTRY=(); while [ "$1" != -- ]; do ENTRY+=("$1"); shift; done; shift
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount --bind /sys "$R/sys"; mount -o remount,bind,ro "$R/sys"
    mount --bind "$RES" "$R/results"
    mount --bind "$MOD" "$R/models"; mount -o remount,bind,ro "$R/models"
    exec chroot --userspec="$USPEC" "$R" /usr/bin/env -i -C "$WD" "${ENVS[@]}" "${ENTRY[@]}" "$@"
  ' in-image "$rootfs" "$results" "$ROOT/models/fixtures" "$USPEC" "$WD" "${ENVS[@]}" -- \
    "${entry[@]}" -- "$@"
}

# check IMAGE LABEL [exporter]: checks IMAGE's config, then runs the harness in a container of it.
check() {
  local image=$1 label=$2 kind=${3:-runtime} rootfs results cid t0 uid gid json owner
  T_EXPORT=0
  results=$TMP/results-$label
  USPEC=$(cfg "$image" '{{.Config.User}}')
  WD=$(cfg "$image" '{{.Config.WorkingDir}}'); WD=${WD:-/}
  mapfile -t ENVS < <(cfg "$image" '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
  mapfile -t ENTRY < <(cfg "$image" '{{range .Config.Entrypoint}}{{println .}}{{end}}' | sed '/^$/d')
  uid=${USPEC%%:*} gid=${USPEC#*:}
  [ -n "$USPEC" ] && [ "$uid" != 0 ] && [ "$uid" != root ] || die "$image runs as root (USER '$USPEC')"
  case "$uid$gid" in *[!0-9]*) die "$image: USER '$USPEC' is not numeric uid:gid" ;; esac
  # (Captured first: grep -q ends early, and pipefail would count the writer's SIGPIPE.)
  local volumes; volumes=$(cfg "$image" '{{range $k, $v := .Config.Volumes}}{{println $k}}{{end}}')
  grep -qx /results <<<"$volumes" || die "$image declares no VOLUME /results"
  grep -q '^ORT_DYLIB_PATH=' < <(printf '%s\n' "${ENVS[@]}") || die "$image sets no ORT_DYLIB_PATH"
  [ "${#ENTRY[@]}" -gt 0 ] || die "$image has no ENTRYPOINT"
  # The container's own root filesystem (the image's layers under a writable one, as
  # `podman run` would start it), mounted on the host.
  t0=$(now)
  cid=$(podman create "$image")
  CIDS+=("$cid")
  rootfs=$(podman mount "$cid")
  mkdir -p "$results"
  # HOME as docker sets it: the user's home in the image's /etc/passwd.
  local home; home=$(awk -F: -v u="$uid" '$3 == u { print $6 }' "$rootfs/etc/passwd")
  ENVS+=("HOME=${home:-/}")
  # A fresh volume as docker makes it: owned like the image's /results.
  chown "$(stat -c %u:%g "$rootfs/results")" "$results"
  T_START=$(secs "$t0" "$(now)")
  say "$label: podman create + mount of the container's filesystem: $T_START s; running as uid $uid"

  in_image "$rootfs" "$results" -- --version >"$TMP/version.txt" || die "$label: harness --version failed"
  say "$label: $(cat "$TMP/version.txt")"
  in_image "$rootfs" "$results" -- list --device cpu >"$TMP/list.txt" 2>&1 || {
    cat "$TMP/list.txt" >&2; die "$label: harness list failed"; }
  grep -Eq '^ort +cpu +ready' "$TMP/list.txt" || {
    cat "$TMP/list.txt" >&2; die "$label: harness list: ONNX Runtime is not ready (above)"; }
  say "$label: $(grep -E '^ort +cpu' "$TMP/list.txt" | tr -s ' ')"

  local model=/models/tiny-bert
  if [ "$kind" = exporter ]; then
    say "$label: harness-export --tiny-fixture /results/tiny-bert (PyTorch in the image)"
    t0=$(now)
    ENTRYPOINT_OVERRIDE=harness-export in_image "$rootfs" "$results" -- \
      --tiny-fixture /results/tiny-bert --kind bert >"$TMP/export.txt" 2>&1 ||
      { tail -30 "$TMP/export.txt" >&2; die "$label: the exporter failed"; }
    [ -f "$results/tiny-bert/model.onnx" ] && [ -f "$results/tiny-bert/manifest.json" ] ||
      die "$label: the exporter wrote no model.onnx/manifest.json"
    model=/results/tiny-bert
    T_EXPORT=$(secs "$t0" "$(now)")
    say "$label: exported tiny-bert in $T_EXPORT s"
  fi
  # The first result: a short comparison, results to the default folder (results/<UTC time>
  # relative to the image's WorkingDir, which is the volume).
  t0=$(now)
  in_image "$rootfs" "$results" -- compare --model "$model" --runtimes ort,tract \
    --min-time 0.2s --warmup-time 0.1s --warmup-max 0.1s --target-ci off --no-overhead \
    >"$TMP/compare.txt" 2>&1 || { tail -30 "$TMP/compare.txt" >&2; die "$label: harness compare failed"; }
  T_FIRST=$(secs "$t0" "$(now)")
  json=$(find "$results" -name results.json -newer "$TMP/list.txt" | head -1)
  [ -n "$json" ] || { tail -30 "$TMP/compare.txt" >&2; die "$label: no results.json in the mounted /results"; }
  owner=$(stat -c %u "$json")
  [ "$owner" = "$uid" ] || die "$label: ${json#"$results"/} is owned by uid $owner, not the image's user $uid"
  grep -Eq '^tract .* PASS$' "$TMP/compare.txt" || {
    tail -30 "$TMP/compare.txt" >&2; die "$label: tract does not pass parity against ort (above)"; }
  say "$label: /results/${json#"$results"/} written by uid $owner in $T_FIRST s (harness compare, ort and tract on ${model#/})"
  grep -E '^(ort|tract) ' "$TMP/compare.txt" | sed 's/^/    /' >&2
  podman rm -f -v "$cid" >/dev/null
  rm -rf "$results"
}

SUMMARY=()
build runtime "$IMAGE"
size=$(cfg "$IMAGE" '{{.Size}}')
check "$IMAGE" runtime
SUMMARY+=("$IMAGE: $(mb "$size"), built in $T_BUILD s; first result (harness compare, in the image) in $T_FIRST s, after $T_START s of podman create + mount")
if [ "$EXPORTER" = 1 ]; then
  build exporter "$IMAGE-exporter"
  size=$(cfg "$IMAGE-exporter" '{{.Size}}')
  check "$IMAGE-exporter" exporter exporter
  SUMMARY+=("$IMAGE-exporter: $(mb "$size"), built in $T_BUILD s; tiny-bert exported in $T_EXPORT s, then compared in $T_FIRST s, after $T_START s of podman create + mount")
fi
[ "$T_BASE" = 0 ] || SUMMARY+=("base $BASE made in $T_BASE s")
say "passed"
printf '  %s\n' "${SUMMARY[@]}" >&2
