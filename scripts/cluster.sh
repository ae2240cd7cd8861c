#!/usr/bin/env bash
# scripts/cluster.sh: a local N-member nacos-raft cluster on loopback, for trying nacos-raft
# out and rehearsing the runbook (docs/operations.md). Not a production launcher.
#
#   scripts/cluster.sh up [N] [--tls]
#                                start N members (default 3) and wait until one leads;
#                                with --tls, over HTTPS with mutual TLS between members,
#                                using a throwaway CA made in CLUSTER_DIR/tls (nacosctl certs)
#   scripts/cluster.sh status    nacosctl status of those members (extra args passed on)
#   scripts/cluster.sh down      stop the members this script started: SIGTERM, then SIGKILL
#                                after DOWN_TIMEOUT; data is kept (rm -rf the dir to wipe)
#
# Environment:
#   CLUSTER_DIR   where member data, logs and pid files go (default ./local-cluster)
#   BASE_PORT     member i listens on 127.0.0.1:BASE_PORT+i (default 8848)
#   NACOS_BIN_DIR directory holding nacos-node and nacosctl (default: cargo build --release)
#   NODE_ARGS     extra nacos-node flags, e.g. "--election-timeout-ms 300"
#   UP_TIMEOUT    seconds `up` waits for a leader (default 30)
#   DOWN_TIMEOUT  seconds `down` waits after SIGTERM before SIGKILL (default 10)
#
# It only ever signals the pids in its own pid files, and only while such a pid is still a
# nacos-node with this cluster's data dir (a pid can be reused after a reboot or crash).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-./local-cluster}
BASE_PORT=${BASE_PORT:-8848}
UP_TIMEOUT=${UP_TIMEOUT:-30}
DOWN_TIMEOUT=${DOWN_TIMEOUT:-10}

die() { echo "cluster.sh: $*" >&2; exit 1; }

bin_dir() {
  if [ -n "${NACOS_BIN_DIR:-}" ]; then
    echo "$NACOS_BIN_DIR"
    return
  fi
  # cargo only rebuilds what changed; its progress goes to stderr.
  (cd "$repo" && cargo build --release --quiet --bin nacos-node --bin nacosctl) >&2
  echo "${CARGO_TARGET_DIR:-$repo/target}/release"
}

# Live and not a zombie (a zombie still answers kill -0).
alive() {
  local pid=$1
  if [ -r "/proc/$pid/stat" ]; then
    local state
    state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
  else
    kill -0 "$pid" 2>/dev/null
  fi
}

# The pid is a nacos-node whose command line names this member's data dir.
ours() {
  local pid=$1 data=$2
  [ -r "/proc/$pid/cmdline" ] || { kill -0 "$pid" 2>/dev/null; return; }
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  case "$cmd" in *nacos-node*"--data-dir $data "*) return 0 ;; esac
  return 1
}

# The absolute cluster dir; only `up` creates it.
cluster_dir() {
  if [ "${1:-}" = create ]; then mkdir -p "$CLUSTER_DIR"; fi
  [ -d "$CLUSTER_DIR" ] || die "no cluster in $CLUSTER_DIR (run: scripts/cluster.sh up)"
  dir=$(cd "$CLUSTER_DIR" && pwd)
}

endpoints() {
  [ -f "$dir/endpoints" ] || die "no cluster in $dir (run: scripts/cluster.sh up)"
  cat "$dir/endpoints"
}

# nacosctl's TLS flag for this cluster, if it runs TLS.
ctl_tls() {
  if [ -f "$dir/tls/ca.pem" ] && grep -q '^https://' "$dir/endpoints" 2>/dev/null; then
    echo "--cacert=$dir/tls/ca.pem"
  fi
}

cmd_up() {
  local tls=""
  local args=()
  for a in "$@"; do
    case "$a" in
      --tls) tls=1 ;;
      *) args+=("$a") ;;
    esac
  done
  set -- "${args[@]+"${args[@]}"}"
  local n=${1:-3}
  case "$n" in '' | *[!0-9]*) die "N must be a number of members, got '$n'" ;; esac
  [ "$n" -ge 1 ] || die "N must be at least 1"
  for f in "$dir"/node-*.pid; do
    [ -e "$f" ] || continue
    local pid
    pid=$(cat "$f")
    if alive "$pid" && ours "$pid" "$dir/$(basename "$f" .pid)"; then
      die "a cluster is already running in $dir (pid $pid); run: scripts/cluster.sh down"
    fi
    rm -f "$f"
  done
  local bin
  bin=$(bin_dir)
  [ -x "$bin/nacos-node" ] || die "no nacos-node in $bin"
  local addrs=() i port
  for ((i = 0; i < n; i++)); do
    port=$((BASE_PORT + i))
    # Something answering there would make this member fail to start.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "127.0.0.1:$port is in use; pick another BASE_PORT"
    fi
    addrs+=("127.0.0.1:$port")
  done
  local peers
  peers=$(IFS=,; echo "${addrs[*]}")
  local tls_args=() scheme=""
  if [ -n "$tls" ]; then
    # One certificate for every member of this local cluster, valid for 127.0.0.1.
    if [ ! -f "$dir/tls/node.pem" ]; then
      "$bin/nacosctl" certs --dir "$dir/tls" --hosts 127.0.0.1,localhost >/dev/null
      chmod 600 "$dir/tls/"*-key.pem
    fi
    tls_args=(--tls-cert "$dir/tls/node.pem" --tls-key "$dir/tls/node-key.pem"
      --tls-client-ca "$dir/tls/ca.pem")
    scheme="https://"
  fi
  local client_endpoints
  client_endpoints=$(printf "$scheme%s," "${addrs[@]}")
  client_endpoints=${client_endpoints%,}
  # A Nacos-style member list, so the cluster is started the way a real one is.
  printf '%s\n' "# members of the local cluster, one ip:port per line" "${addrs[@]}" >"$dir/cluster.conf"
  echo "$client_endpoints" >"$dir/endpoints"
  # The cluster secret every member needs (a cluster of more than one refuses to start
  # without it), made once per cluster dir, readable only by its owner.
  if [ ! -s "$dir/cluster.token" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$dir/cluster.token")
  fi
  for ((i = 0; i < n; i++)); do
    # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
    "$bin/nacos-node" --listen "${addrs[$i]}" --data-dir "$dir/node-$i" \
      --cluster-conf "$dir/cluster.conf" --cluster-token-file "$dir/cluster.token" \
      ${tls_args[@]+"${tls_args[@]}"} ${NODE_ARGS:-} \
      </dev/null >>"$dir/node-$i.log" 2>&1 &
    echo $! >"$dir/node-$i.pid"
  done
  local deadline=$((SECONDS + UP_TIMEOUT)) leader=""
  while [ -z "$leader" ]; do
    for ((i = 0; i < n; i++)); do
      if ! alive "$(cat "$dir/node-$i.pid")"; then
        echo "cluster.sh: member ${addrs[$i]} exited; the end of $dir/node-$i.log:" >&2
        tail -n 20 "$dir/node-$i.log" >&2
        cmd_down >&2
        exit 1
      fi
    done
    leader=$("$bin/nacosctl" --endpoints "$client_endpoints" $(ctl_tls) --timeout 1s leader 2>/dev/null) || leader=""
    if [ -z "$leader" ]; then
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "cluster.sh: no leader within ${UP_TIMEOUT}s; the members are left running:" >&2
        "$bin/nacosctl" --endpoints "$client_endpoints" $(ctl_tls) --timeout 1s status >&2 || true
        exit 1
      fi
      sleep 0.1
    fi
  done
  echo "cluster up: $n members in $dir, leader $leader"
  for ((i = 0; i < n; i++)); do
    echo "  ${addrs[$i]}  pid $(cat "$dir/node-$i.pid")  data $dir/node-$i  log $dir/node-$i.log"
  done
  echo "export NACOSCTL_ENDPOINTS=$client_endpoints"
  if [ -n "$tls" ]; then echo "export NACOSCTL_CACERT=$dir/tls/ca.pem"; fi
}

cmd_status() {
  local peers
  peers=$(endpoints)
  local ctl
  if [ -n "${NACOS_BIN_DIR:-}" ]; then ctl=$NACOS_BIN_DIR/nacosctl; else ctl=$(bin_dir)/nacosctl; fi
  # The exit code is nacosctl's: 0 healthy, 4 unavailable, 5 degraded.
  # shellcheck disable=SC2046 # ctl_tls is one flag or none
  exec "$ctl" --endpoints "$peers" $(ctl_tls) status "$@"
}

cmd_down() {
  local f pid member pids=() files=()
  for f in "$dir"/node-*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    member=$(basename "$f" .pid)
    if ! alive "$pid"; then
      rm -f "$f"
    elif ! ours "$pid" "$dir/$member"; then
      echo "cluster.sh: pid $pid in $f is not the $member this script started (reused pid?); leaving it alone" >&2
      rm -f "$f"
    else
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      files+=("$f")
    fi
  done
  # SIGTERM lets each member stop cleanly (a leader hands over first); wait for that.
  local deadline=$((SECONDS + DOWN_TIMEOUT)) left
  while :; do
    left=()
    for pid in "${pids[@]}"; do
      if alive "$pid"; then left+=("$pid"); fi
    done
    [ "${#left[@]}" -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster.sh: still running after ${DOWN_TIMEOUT}s, sending SIGKILL: ${left[*]}" >&2
      kill -KILL "${left[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  for f in "${files[@]}"; do rm -f "$f"; done
  echo "cluster down: ${#pids[@]} members stopped; data kept in $dir"
}

case "${1:-}" in
  up) shift; cluster_dir create; cmd_up "$@" ;;
  status) shift; cluster_dir; cmd_status "$@" ;;
  down)
    # Idempotent: nothing started means nothing to stop.
    if [ ! -d "$CLUSTER_DIR" ]; then echo "cluster down: nothing in $CLUSTER_DIR"; exit 0; fi
    cluster_dir
    cmd_down
    ;;
  *)
    echo "usage: scripts/cluster.sh up [N] [--tls] | status [nacosctl flags] | down" >&2
    exit 2
    ;;
esac
