#!/usr/bin/env bash
# Interleaved A/B of two ringway binaries (see loadtest/ab.py and loadtest/README.md):
#
#   loadtest/ab.sh --a /tmp/rw-old/ringway --b target/release/ringway
#
# Makes the temp dir, runs ab.py, and removes it whatever happens; ab.py stops what it
# started (process groups, SIGTERM then SIGKILL) on exit.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work="$(mktemp -d "${TMPDIR:-/tmp}/ringway-ab.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 "$here/ab.py" --workdir "$work" "$@"
