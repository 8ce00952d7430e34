#!/usr/bin/env bash
# Opt-in smoke test of the Docker deployment, for machines that have a Docker engine with
# the compose plugin. Not run by CI (.ci/run has no engine to run it on).
#
#   docker/smoke.sh            # from anywhere; builds the image, exit 0 on success
#
# It builds the image, starts MongoDB + 3 master candidates + 3 slaves under a separate compose project
# ("granary-smoke", so a running dev cluster and its data are untouched), waits for the
# one-shot demo-client to finish, and returns demo-client's exit code. The project, its
# containers and its volumes are removed on exit, pass or fail.
#
# Environment:
#   SMOKE_TIMEOUT          seconds before giving up (default 1200; the first build is slow)
#   GRANARY_GATEWAY_PORT   host port for the master's gateway (default 17100 here, so it
#                          does not clash with a dev cluster on 7100)
#   SMOKE_KEEP=1           leave the project running afterwards, for debugging
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="granary-smoke"
timeout_s="${SMOKE_TIMEOUT:-1200}"
export GRANARY_GATEWAY_PORT="${GRANARY_GATEWAY_PORT:-17100}"

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "smoke: needs 'docker compose' (or docker-compose v2)" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    echo "smoke: no Docker engine reachable (docker info failed)" >&2
    exit 2
fi
compose+=(-p "$project" -f "$here/compose.yaml")

cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "smoke: FAILED (exit $rc); container states and recent logs:" >&2
        "${compose[@]}" ps -a >&2 || true
        "${compose[@]}" logs --no-color --tail=50 >&2 || true
    fi
    if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
        echo "smoke: SMOKE_KEEP=1, leaving project '$project' up; remove it with:" >&2
        echo "  ${compose[*]} down -v" >&2
    else
        "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT

"${compose[@]}" config --quiet
"${compose[@]}" build

run_up=("${compose[@]}" up --no-build --exit-code-from demo-client)
if command -v timeout >/dev/null 2>&1; then
    run_up=(timeout --foreground "$timeout_s" "${run_up[@]}")
fi
# --exit-code-from implies --abort-on-container-exit: everything stops when demo-client
# exits, and up returns its exit code.
"${run_up[@]}"
echo "smoke: OK (demo-client exited 0)"
