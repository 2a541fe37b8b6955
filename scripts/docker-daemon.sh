#!/usr/bin/env bash
# A private dockerd for the tests and the Docker builder: its own socket,
# data root, exec root and pid file, so it never touches a system Docker
# (and its own containerd namespaces, should it share a system containerd).
# No bridge and no iptables rules: builds run with --network none, and the
# image build uses host networking to reach the apt archive.
#
#   start   start it (idempotent) and wait until it answers; root only
#   stop    stop it and wait until it is gone (idempotent)
#   socket  print the socket path (DOCKER_HOST=unix://<it>)
#   status  exit 0 and print the pid when it answers, exit 1 otherwise
#   acquire PID   count process PID as a user, and start the daemon unless it answers
#   release PID   stop counting PID; when no live user is left and an acquire
#                 started the daemon, stop it
#
# acquire/release are for callers that share the daemon (scripts/test.sh, test
# files run concurrently): the last one out stops it, never one that another
# still uses, and a daemon someone started with `start` is left running.
# Users are pid files under $RUN_DIR/users (a dead pid no longer counts), all
# changed under one flock.
# The data root persists across runs (images built once are reused); set
# FALCO_PROBES_DOCKER_DATA to move it.
set -euo pipefail

RUN_DIR=/run/falco-probes-docker
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
EXEC_ROOT="$RUN_DIR/exec"
LOG="$RUN_DIR/dockerd.log"
USERS_DIR="$RUN_DIR/users"
USERS_LOCK="$RUN_DIR/users.lock"
# Present while the daemon runs because an acquire started it.
STARTED_BY_ACQUIRE="$RUN_DIR/started-by-acquire"
DATA_ROOT="${FALCO_PROBES_DOCKER_DATA:-/var/lib/falco-probes-docker}"
READY_SECONDS="${FALCO_PROBES_DOCKER_READY_SECONDS:-60}"
STOP_SECONDS=30

log() { echo "docker-daemon: $*" >&2; }

daemon_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # The pid file may outlive the daemon (a reboot, a kill -9): check the process is dockerd.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = dockerd ] || return 1
  echo "$pid"
}

answers() {
  [ -S "$SOCK" ] || return 1
  [ "$(curl -s --max-time 3 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null || true)" = OK ]
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + READY_SECONDS))
  while [ "$SECONDS" -lt "$deadline" ]; do
    answers && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.3
  done
  return 1
}

launch() {
  local driver="$1"
  mkdir -p "$RUN_DIR" "$EXEC_ROOT" "$DATA_ROOT"
  rm -f "$SOCK"
  # setsid: the daemon must not die with the shell that started it; 9>&-: nor hold acquire's lock.
  setsid dockerd \
    --host="unix://$SOCK" \
    --data-root="$DATA_ROOT" \
    --exec-root="$EXEC_ROOT" \
    --pidfile="$PIDFILE" \
    --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
    --containerd-namespace=falco-probes --containerd-plugins-namespace=falco-probes-plugins \
    --storage-driver="$driver" \
    </dev/null >>"$LOG" 2>&1 9>&- &
  local pid=$!
  if wait_ready "$pid"; then
    log "dockerd (pid $pid, storage $driver) answers on $SOCK"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  return 1
}

wait_gone() {
  local pid="$1" deadline=$((SECONDS + STOP_SECONDS))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
  return 0
}

start() {
  if answers; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    log "starting dockerd needs root; run as root or set DOCKER_HOST to a running daemon"
    exit 1
  fi
  if ! command -v dockerd >/dev/null; then
    log "installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  command -v curl >/dev/null || { log "curl is needed to check the daemon; apt-get install -y curl"; exit 1; }
  local pid
  if pid="$(daemon_pid)"; then
    # Started by a concurrent call and not ready yet.
    wait_ready "$pid" && return 0
    log "dockerd pid $pid does not answer on $SOCK; see $LOG"
    exit 1
  fi
  launch overlay2 && return 0
  log "dockerd did not start with overlay2; trying vfs (slower). Log: $LOG"
  launch vfs && return 0
  log "dockerd did not start; last lines of $LOG:"
  tail -n 20 "$LOG" >&2 || true
  exit 1
}

stop() {
  local pid
  pid="$(daemon_pid)" || { rm -f "$SOCK"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid"; then
    log "dockerd pid $pid did not stop in ${STOP_SECONDS}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" || true
  fi
  rm -f "$SOCK" "$PIDFILE"
}

check_pid() {
  [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 acquire|release PID" >&2; exit 2; }
}

# Run the rest of the caller under the users lock (released when the script exits).
lock_users() {
  mkdir -p "$USERS_DIR"
  exec 9>>"$USERS_LOCK"
  flock 9
}

# Forget users whose process is gone (killed before its release).
sweep_users() {
  local f
  for f in "$USERS_DIR"/*; do
    [ -e "$f" ] || continue
    kill -0 "$(basename "$f")" 2>/dev/null || rm -f "$f"
  done
}

acquire() {
  check_pid "$1"
  lock_users
  sweep_users
  if ! answers; then
    start
    : >"$STARTED_BY_ACQUIRE"
  fi
  : >"$USERS_DIR/$1"
}

release() {
  check_pid "$1"
  lock_users
  rm -f "$USERS_DIR/$1"
  sweep_users
  if [ -z "$(ls -A "$USERS_DIR")" ] && [ -e "$STARTED_BY_ACQUIRE" ]; then
    stop
    rm -f "$STARTED_BY_ACQUIRE"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop; rm -f "$STARTED_BY_ACQUIRE" ;;
  acquire) acquire "${2:-}" ;;
  release) release "${2:-}" ;;
  socket) echo "$SOCK" ;;
  status)
    if answers; then echo "running pid $(daemon_pid || echo '?') socket $SOCK"; else echo "not running" >&2; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|socket|status|acquire PID|release PID" >&2; exit 2 ;;
esac
