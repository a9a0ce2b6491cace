#!/usr/bin/env bash
# ringway vs nginx vs HAProxy, as reverse proxies on this machine. See loadtest/README.md.
#
#   loadtest/compare.sh                          # all scenarios, 3 x 5 s rounds (12-13 minutes)
#   loadtest/compare.sh small post               # some scenarios
#   loadtest/compare.sh tls tls-handshake        # TLS termination (idle-tls: idle TLS connections)
#   loadtest/compare.sh websocket                # needs loadtest/ws/node_modules (setup.sh), else skipped
#   loadtest/compare.sh --duration 1 --rounds 1  # smoke run (about 2.5 minutes)
#   loadtest/compare.sh --help
#
# A thin wrapper: raises the open-file limit, makes the temp dir, runs compare.py, and on
# exit (normal, error, Ctrl-C, SIGTERM) makes sure nothing it started is left running and
# the temp dir is gone.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v python3 >/dev/null 2>&1; then
    echo "compare: python3 not found: run loadtest/setup.sh" >&2
    exit 2
fi

# 10,000 idle connections need more than the usual 1024 descriptors, for the client and the
# proxies (which inherit this limit). Take 65536 if allowed, else the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work="$(mktemp -d "${TMPDIR:-/tmp}/ringway-loadtest.XXXXXX")"
pid=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # compare.py stops its children itself on SIGTERM; give it time to do so.
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    # Last resort: process groups compare.py started and did not stop (it was killed hard).
    # Each line is "PGID NAME"; only groups whose leader is still one of ours are killed (the
    # websocket scenario's node processes carry "--workdir $work" in their command line for this).
    if [ -s "$work/pgids" ]; then
        while read -r pgid name; do
            [ -n "$pgid" ] || continue
            if [ -r "/proc/$pgid/cmdline" ] && tr '\0' ' ' < "/proc/$pgid/cmdline" | grep -q -- "$work\|wrk\|autocannon"; then
                echo "compare: killing leftover process group $pgid ($name)" >&2
                kill -TERM -- "-$pgid" 2>/dev/null
                sleep 0.5
                kill -KILL -- "-$pgid" 2>/dev/null
            fi
        done < "$work/pgids"
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

python3 "$here/compare.py" --workdir "$work" "$@" &
pid=$!
wait "$pid"
rc=$?
pid=""
exit "$rc"
