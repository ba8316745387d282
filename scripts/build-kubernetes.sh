#!/usr/bin/env bash
# Builds the upstream Kubernetes control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler) from Debian's source package
# `kubernetes`, with Debian's Go, into a cache outside the checkout:
#
#   $POSTLAUNCH_CACHE/kubernetes/<debian version>/bin/
#
# (POSTLAUNCH_CACHE defaults to /var/cache/postlaunch). Only the first run on a
# machine pays (about 9 minutes on 2 cores); later runs see the binaries and
# return at once. Prints the build time and writes it to bin/BUILD-SECONDS.
#
# No binary and no upstream code is ever written into the checkout. The
# machine's own apt sources are left alone: the deb-src entry lives in a
# sources directory of our own, derived from the machine's `deb` entry.
#
# Why the reflect2 swap: vendored github.com/modern-go/reflect2 v1.0.1 reads
# runtime internals that changed in Go 1.18 and crashes at start; Debian's
# golang-github-modern-go-reflect2-dev 1.0.2 is the fixed release.
set -euo pipefail

log() { printf 'build-kubernetes: %s\n' "$*" >&2; }
die() { printf 'build-kubernetes: error: %s\n' "$*" >&2; exit 1; }

CACHE=${POSTLAUNCH_CACHE:-/var/cache/postlaunch}/kubernetes
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)

# The Debian version of the source package, from our own deb-src list.
APT_DIR=$CACHE/apt
apt_src() {
  local cmd=apt-get; [[ $1 == showsrc ]] && cmd=apt-cache
  "$cmd" -o Dir::Etc::SourceList=/dev/null \
    -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
    -o Dir::State::Lists="$APT_DIR/lists" \
    -o Dir::Cache="$APT_DIR/cache" "$@"
}

setup_deb_src() {
  mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  local machine=/etc/apt/sources.list.d/debian.sources
  [[ -f $machine ]] || die "no $machine to derive a deb-src entry from"
  # The first stanza (the main archive), as deb-src.
  awk 'BEGIN{RS=""; ORS="\n\n"} NR==1 {sub(/Types: deb/, "Types: deb-src"); print}' "$machine" \
    >"$APT_DIR/sources.list.d/postlaunch-src.sources"
  if [[ ! -f $APT_DIR/lists/.updated ]]; then
    log "apt-get update (our own deb-src list)"
    apt_src update -qq >/dev/null || die "apt-get update of the deb-src list failed"
    touch "$APT_DIR/lists/.updated"
  fi
}

have_binaries() {
  local dir=$1 b
  for b in "${BINARIES[@]}"; do [[ -x $dir/$b ]] || return 1; done
}

main() {
  # Fast path: any cached version with all three binaries.
  local cached
  for cached in "$CACHE"/*/bin; do
    if [[ -d $cached ]] && have_binaries "$cached"; then
      echo "$cached"
      return 0
    fi
  done

  command -v apt-get >/dev/null || die "apt-get not found: this script builds on Debian"
  local pkgs=(golang-go etcd-server rsync jq openssl make golang-github-modern-go-reflect2-dev dpkg-dev)
  # Any kubectl will do for the tests (this machine kind ships a current one
  # with its cloud CLI, which owns /usr/bin/kubectl); otherwise Debian's.
  command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    # A policy-rc.d answering 101 keeps maintainer scripts from starting services.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { [[ $created -eq 1 ]] && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
    [[ $created -eq 1 ]] && rm -f "$policy"
    # etcd-server's package starts a system etcd on 2379; our clusters use their own.
    if pgrep -x etcd >/dev/null && [[ -f /etc/default/etcd ]]; then
      service etcd stop >/dev/null 2>&1 || pkill -x etcd || true
    fi
  fi

  setup_deb_src
  local version
  version=$(apt_src showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}')
  [[ -n $version ]] || die "apt-get showsrc kubernetes found no source package"
  local root=$CACHE/$version
  if have_binaries "$root/bin"; then echo "$root/bin"; return 0; fi

  mkdir -p "$root/src"
  local tree
  tree=$(find "$root/src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  if [[ -z $tree ]]; then
    log "apt-get source kubernetes ($version)"
    (cd "$root/src" && apt_src source -qq kubernetes >/dev/null 2>&1) || die "apt-get source kubernetes failed"
    tree=$(find "$root/src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
    [[ -n $tree ]] || die "apt-get source kubernetes unpacked no kubernetes-* directory"
  fi

  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -d $reflect2 ]] || die "$reflect2 missing: install golang-github-modern-go-reflect2-dev"
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r "$reflect2" "$tree/vendor/github.com/modern-go/reflect2"

  local gopath=$root/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"

  log "building ${BINARIES[*]} from $tree with $(go version | awk '{print $3}') (about 9 minutes on 2 cores, once per machine)"
  local start end
  start=$(date +%s)
  (
    cd "$gopath/src/k8s.io/kubernetes"
    export GOPATH=$gopath GO111MODULE=off GOFLAGS=-mod=vendor GOCACHE=$root/gocache
    export KUBE_GIT_VERSION="v${version%%+*}" KUBE_GIT_TREE_STATE=clean
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$root/build.log" 2>&1
  ) || { tail -n 40 "$root/build.log" >&2; die "make failed (log: $root/build.log)"; }
  end=$(date +%s)

  mkdir -p "$root/bin"
  local out b
  out=$(find "$tree/_output" -type d -path '*/bin' | head -n1)
  for b in "${BINARIES[@]}"; do
    [[ -x $out/$b ]] || die "$b not found under $tree/_output after make"
    cp "$out/$b" "$root/bin/$b"
  done
  echo $((end - start)) >"$root/bin/BUILD-SECONDS"
  log "built in $((end - start)) s: $root/bin"
  echo "$root/bin"
}

main "$@"
