#!/usr/bin/env bash
# Installs what the load-test harness needs, then builds ringway in release mode.
# Idempotent: anything already present is skipped. Run as root or with sudo:
#   sudo loadtest/setup.sh        (or as root: loadtest/setup.sh)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

log() { printf 'setup: %s\n' "$*"; }

# Root for apt/npm -g; sudo when we are someone else.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup: not root and no sudo: run this as root" >&2
    exit 1
fi

# --- Debian packages: nginx, haproxy, wrk (plus taskset/python3 which the driver uses).
missing=()
command -v nginx   >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]   || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk     >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v ss      >/dev/null 2>&1 || missing+=(iproute2)
# TLS scenarios: openssl makes the test certificate (and s_client shows what is negotiated);
# a C compiler builds loadtest/wrk_tls_shim.c, which keeps wrk from resuming TLS sessions.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v cc      >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    log "nginx, haproxy, wrk, taskset, python3, ss, openssl, cc: already installed"
fi

# The Debian nginx package starts a system nginx on port 80 when installed; the harness
# does not need it (it runs its own instances on 127.0.0.1:18080-18090) and leaves it alone.

# --- autocannon (npm). Needs node + npm.
if command -v autocannon >/dev/null 2>&1; then
    log "autocannon: already installed ($(command -v autocannon))"
else
    if ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm with apt-get"
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    fi
    log "installing autocannon with npm install -g"
    "${SUDO[@]}" npm install -g autocannon
fi

# --- the websocket scenario's npm package (ws), from loadtest/ws/package-lock.json. Without it
# compare.sh skips that scenario (and says so).
if [ -d "$here/ws/node_modules/ws" ]; then
    log "loadtest/ws: ws already installed"
else
    if ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm with apt-get"
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    fi
    log "npm ci in loadtest/ws (the websocket scenario's ws package)"
    # Under sudo, as the invoking user, so that node_modules is theirs.
    if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        sudo -u "$SUDO_USER" -H npm ci --no-audit --no-fund --prefix "$here/ws"
    else
        npm ci --no-audit --no-fund --prefix "$here/ws"
    fi
fi

# --- ringway release build. Under sudo, build as the invoking user (their rustup, and
# target/ not owned by root).
if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    log "cargo build --release in $repo (as $SUDO_USER)"
    if ! sudo -u "$SUDO_USER" -H bash -lc 'export PATH="$HOME/.cargo/bin:$PATH"; command -v cargo >/dev/null'; then
        echo "setup: cargo not found for $SUDO_USER: install Rust (https://rustup.rs), then rerun" >&2
        exit 1
    fi
    sudo -u "$SUDO_USER" -H bash -lc "export PATH=\"\$HOME/.cargo/bin:\$PATH\"; cd '$repo' && cargo build --release"
else
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "setup: cargo not found: install Rust (https://rustup.rs), then rerun this script" >&2
        exit 1
    fi
    log "cargo build --release in $repo"
    (cd "$repo" && cargo build --release)
fi

log "done. Next: loadtest/compare.sh --duration 1 --rounds 1   (smoke run, about a minute)"
