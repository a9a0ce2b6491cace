#!/usr/bin/env bash
# Profiles ringway under one loadtest scenario (see loadtest/profile.py):
#
#   loadtest/profile.sh                 # small, 10 s
#   loadtest/profile.sh post --seconds 20
#
# Builds ringway with symbols and frame pointers (the `profiling` profile, in its own
# target dir so the release build is untouched), makes a temp dir, runs profile.py, and
# removes the temp dir whatever happens.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "profile: building ringway with frame pointers (target/frame-pointers)" >&2
if ! (cd "$repo" && RUSTFLAGS="-C force-frame-pointers=yes" \
        cargo build --quiet --profile profiling --target-dir target/frame-pointers); then
    echo "profile: the build failed" >&2
    exit 2
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/ringway-profile.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 "$here/profile.py" --workdir "$work" \
    --binary "$repo/target/frame-pointers/profiling/ringway" "$@"
