#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into a cache outside the work tree.
#
# Versions are read from ccm/testing/versions.env (the one place they are defined).
# Output: $CCM_ASSETS_DIR (default ~/.cache/ccm/assets/<k8s version>) holding `kube-apiserver` and `etcd`.
# A binary already present with the right version is reused. Prints the assets directory on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
source "$here/ccm/testing/versions.env"

cache_root=${CCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccm}
assets=${CCM_ASSETS_DIR:-$cache_root/assets/$KUBERNETES_VERSION}
work=$cache_root/build
mkdir -p "$assets" "$work"

export CGO_ENABLED=0 GOFLAGS=-trimpath GOTOOLCHAIN=local
log() { echo "build-controlplane: $*" >&2; }

minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
patch=$(cut -d. -f3 <<<"$KUBERNETES_VERSION")
staging="v0.$minor.$patch"

build_apiserver() {
  if [ -x "$assets/kube-apiserver" ] &&
     "$assets/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBERNETES_VERSION"; then
    log "kube-apiserver $KUBERNETES_VERSION cached in $assets"
    return
  fi
  local dir=$work/kube-apiserver-$KUBERNETES_VERSION
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  log "building kube-apiserver $KUBERNETES_VERSION in $dir"
  go mod init ccm.invalid/kubebuild >/dev/null 2>&1
  local modfile
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Each staging module is required at v0.0.0 and replaced by a local path upstream; point it at its
  # published v0.<minor>.<patch> instead. The list is read from the exact version's go.mod.
  local go_line
  go_line=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile" | head -1)
  go mod edit "-go=$go_line"
  for m in $(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\2#p' "$modfile"); do
    go mod edit "-replace=$m=$m@$staging"
  done
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION"
  local ldf="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ldf+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
  go build -ldflags "$ldf" -o "$assets/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$assets/kube-apiserver.tmp" "$assets/kube-apiserver"
}

build_etcd() {
  if [ -x "$assets/etcd" ] && "$assets/etcd" --version 2>/dev/null | grep -q "etcd Version: ${ETCD_VERSION#v}"; then
    log "etcd $ETCD_VERSION cached in $assets"
    return
  fi
  local dir=$work/etcd-$ETCD_VERSION
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  log "building etcd $ETCD_VERSION in $dir"
  go mod init ccm.invalid/etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -ldflags "-s -w" -o "$assets/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$assets/etcd.tmp" "$assets/etcd"
}

start=$(date +%s)
build_etcd
build_apiserver
log "assets ready in $assets ($(( $(date +%s) - start )) s)"
echo "$assets"
