#!/usr/bin/env bash
# A throwaway MongoDB-wire-compatible server on loopback, for Granary's MongoDB tests.
#
#   eval "$(scripts/mongodb-test-server.sh start)"   # exports MONGODB_URI and MONGODB_TEST_PID
#   cargo test --workspace                           # the MongoDB tests now run
#   scripts/mongodb-test-server.sh stop              # stops the server `start` started
#   scripts/mongodb-test-server.sh status            # says whether it is running
#
# The server is SecantusDB 0.7.0b3 from PyPI (WiredTiger storage, MongoDB wire protocol),
# installed once into a venv. `start` refuses a port that is already taken (a stale server
# there would answer in place of ours), wipes the data directory, runs the server with
# `--sync-on-commit` (so an acknowledged write survives `kill -9`), and returns only once
# the server it started answers a MongoDB `ping`. Only the two `export` lines go to
# stdout; everything else goes to stderr.
#
# Knobs: MONGODB_TEST_PORT (27117), MONGODB_TEST_DIR (pid file, log, data),
# MONGODB_TEST_VENV (where SecantusDB is installed), MONGODB_TEST_START_TIMEOUT (seconds).
set -euo pipefail

port=${MONGODB_TEST_PORT:-27117}
state_dir=${MONGODB_TEST_DIR:-${TMPDIR:-/tmp}/granary-mongodb-test}
venv=${MONGODB_TEST_VENV:-$HOME/.cache/granary/secantusdb-0.7.0b3}
start_timeout=${MONGODB_TEST_START_TIMEOUT:-30}
pid_file=$state_dir/pid
log_file=$state_dir/server.log
uri="mongodb://127.0.0.1:$port/?directConnection=true"

say() { echo "mongodb-test-server: $*" >&2; }

# True when something accepts TCP connections on 127.0.0.1:$port.
port_taken() { (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# True while process $1 exists and is not a zombie (one nobody has reaped yet has exited).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in the pid file, if that process is still alive and is a SecantusDB server
# (so a recycled pid is never taken for ours).
our_pid() {
  local pid cmdline
  [ -f "$pid_file" ] || return 1
  pid=$(cat "$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline"); then
    [[ $cmdline == *secantusd* ]] || return 1
  fi
  echo "$pid"
}

install_once() {
  if [ -x "$venv/bin/secantusd-py" ] && "$venv/bin/python" -c 'import pymongo' 2>/dev/null; then
    return 0
  fi
  say "installing SecantusDB 0.7.0b3 into $venv (first use only)"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "secantusdb==0.7.0b3" >&2
  # The readiness check speaks MongoDB through pymongo (a SecantusDB dependency today).
  "$venv/bin/python" -c 'import pymongo' 2>/dev/null ||
    "$venv/bin/pip" install -q --disable-pip-version-check pymongo >&2
}

# Waits until process $1 answers a MongoDB `ping` on $port and owns the listening socket.
# Exit status: 0 ready, 3 the process died, 4 timed out, 5 timed out while another process
# answered on the port.
wait_ready() {
  "$venv/bin/python" - "$1" "$port" "$start_timeout" <<'EOF'
import os, sys, time
import pymongo

pid, port, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

def owns_listener():
    """Whether `pid` holds the socket listening on `port` (True where /proc is absent)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return not os.path.exists("/proc/net/tcp")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            pass
    return False

deadline = time.monotonic() + timeout
foreign = False
uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
while True:
    if not alive():
        sys.exit(3)
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
        try:
            if client.admin.command("ping").get("ok") == 1:
                if owns_listener():
                    sys.exit(0)
                foreign = True
        finally:
            client.close()
    except pymongo.errors.PyMongoError:
        pass
    if time.monotonic() > deadline:
        sys.exit(5 if foreign else 4)
    time.sleep(0.1)
EOF
}

start() {
  if port_taken; then
    say "port $port is already in use; stop what holds it (\`$0 stop\` if it is ours) or set MONGODB_TEST_PORT to a free port"
    exit 1
  fi
  install_once
  mkdir -p "$state_dir"
  rm -rf "$state_dir/data"
  # An empty config file keeps the server from picking up a secantusd.toml lying around.
  : >"$state_dir/secantusd.toml"
  "$venv/bin/secantusd-py" --config "$state_dir/secantusd.toml" --host 127.0.0.1 \
    --port "$port" --storage-path "$state_dir/data" --sync-on-commit >"$log_file" 2>&1 &
  local pid=$! status=0
  echo "$pid" >"$pid_file"
  wait_ready "$pid" || status=$?
  case $status in
  0)
    echo "export MONGODB_URI='$uri'"
    echo "export MONGODB_TEST_PID=$pid"
    return 0
    ;;
  3) say "the server (pid $pid) exited before it was ready; its log ($log_file):" ;;
  4) say "the server (pid $pid) was not ready within ${start_timeout}s; its log ($log_file):" ;;
  5) say "another process answers on port $port, not the server we started (pid $pid); its log ($log_file):" ;;
  *) say "the readiness check failed (status $status); the server's log ($log_file):" ;;
  esac
  cat "$log_file" >&2 || true
  stop_pid "$pid"
  rm -f "$pid_file"
  exit 1
}

# Stops process $1: SIGTERM, up to 15 s to exit, then SIGKILL.
stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    alive "$pid" || return 0
    sleep 0.1
  done
  say "pid $pid ignored SIGTERM for 15s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive "$pid" || return 0
    sleep 0.1
  done
  say "pid $pid is still there after SIGKILL"
}

stop() {
  local pid
  if pid=$(our_pid); then
    stop_pid "$pid"
  fi
  rm -f "$pid_file"
}

status() {
  local pid
  if pid=$(our_pid); then
    echo "running: pid $pid, MONGODB_URI=$uri"
  else
    echo "not running"
    return 1
  fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
