#!/usr/bin/env python3
"""Load-test driver: ringway vs nginx vs HAProxy as reverse proxies, same machine, same origin.

Run it through loadtest/compare.sh (which raises the open-file limit, makes the temp dir and
cleans up after a crash). Python 3 standard library only.

Topology (default; --proxy-cpu / --load-cpu change it):
    CPU 0: origin nginx (1 worker, fixed responses), wrk / autocannon / the idle-connection client
    CPU 1: the proxy under test (ringway, nginx or HAProxy; one worker each, one at a time under load)

For each scenario the origin and all three proxies are started fresh, checked (one request
each through /echo), then driven round by round: one warm-up round, then --rounds measured
rounds in which the proxies take turns (the order rotates each round). The table shows the
median of the measured rounds and the min-max spread.

The failover scenario differs: three origins (ports base, base+4, base+5), one proxy at a
time, one 15 s wrk run per proxy with a Lua per-0.5 s timeline, origin #2 SIGKILLed at 5 s and
restarted at 10 s (see failover_once and loadtest/README.md).

The cache-hit scenario starts the proxies with their caches on for CACHED_PATH and checks, before
the runs and during each, that they answer it from their caches (see cache_check).

The TLS scenarios (tls, tls-handshake, idle-tls) give every proxy a second listener, on its port + 10,
that terminates TLS with the same certificate (ECDSA P-256, made per run with openssl) and the same
protocol, cipher and group lists; the origin stays plain HTTP. wrk runs with an LD_PRELOAD shim
(wrk_tls_shim.c, compiled per run) that stops it resuming sessions and reports what it negotiated.
The websocket scenario adds a node WebSocket echo origin (ws/ws_bench.js, port base + 6) behind
WS_PATH and drives it with the same script's load generator instead of wrk.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
RINGWAY = os.path.join(REPO, "target", "release", "ringway")

PROXIES = ["ringway", "nginx", "haproxy"]
LABEL = {"ringway": "ringway", "nginx": "nginx", "haproxy": "HAProxy"}
ALL_SCENARIOS = ["small", "churn", "large", "post", "cache-hit", "tls", "tls-handshake", "websocket", "idle",
                 "idle-tls", "lowconc", "autocannon", "failover"]
SCENARIO_ALIASES = {"lowconc": ["lowconc-1", "lowconc-8"]}

SMALL_BODY = "hello world\n"  # 12 bytes
LARGE_SIZE = 1024 * 1024
POST_SIZE = 16 * 1024
UPLOAD_SIZE = 1024 * 1024
# The cache-hit scenario's path: the origin answers it with SMALL_BODY and `Cache-Control:
# max-age=3600`, and only in that scenario does each proxy cache it (see the configs below).
CACHED_PATH = "/cached"
# The header each proxy marks a cache hit with (value HIT): ringway's own, an add_header of
# $upstream_cache_status for nginx, a set-header on res.cache_hit for HAProxy.
CACHE_HEADER = {"ringway": "x-cache", "nginx": "x-cache-status", "haproxy": "x-cache-status"}
# cache-hit targets (the cache issue): (metric, other proxy, ringway/other must be, bound).
CACHE_HIT_TARGETS = [("req/s", "nginx", ">=", 1.5), ("req/s", "haproxy", ">=", 1.2),
                     ("CPU µs/req", "nginx", "<=", 0.6)]

# TLS: wrk against each proxy's TLS listener (its port + TLS_PORT_OFFSET), which terminates TLS with
# the same certificate (ECDSA P-256, self-signed, made per run) and the same lists everywhere: what
# ringway's rustls (ring provider) offers, in its order. The client (wrk, OpenSSL 3 defaults) picks:
# rustls and nginx follow the client's order, HAProxy does with `prefer-client-ciphers`.
TLS_SCENARIOS = ("tls", "tls-handshake")
TLS_PORT_OFFSET = 10
TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
TLS12_CIPHERS = ("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                 "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305")
TLS_GROUPS = {"nginx": "X25519:prime256v1:secp384r1", "haproxy": "X25519:P-256:P-384"}
# TLS targets (the TLS issue): (scenario, metric, other proxy, ringway/other must be, bound).
TLS_TARGETS = [("tls", "req/s", "nginx", ">=", 1.2), ("tls", "CPU µs/req", "nginx", "<=", 0.85),
               ("tls-handshake", "req/s", "nginx", ">=", 1.0)]

# WebSocket: the path each proxy tunnels to the node echo origin (ws/ws_bench.js, port base + 6),
# and the text message each connection sends and waits for, over and over.
WS_PATH = "/ws"
WS_MSG_SIZE = 32
WS_DIR = os.path.join(HERE, "ws")
WS_SCRIPT = os.path.join(WS_DIR, "ws_bench.js")

# name -> (path, connections, extra wrk args, headline metric)
WRK_SCENARIOS = {
    "small": ("/", 64, [], "rps"),
    "churn": ("/", 64, ["-H", "Connection: close"], "rps"),
    "large": ("/static/1m.bin", 16, [], "bps"),
    "post": ("/post", 64, ["-s", "{workdir}/post.lua"], "rps"),
    "cache-hit": (CACHED_PATH, 64, [], "rps"),
    # Over TLS (https:// to the proxy's TLS listener; the origin stays plain HTTP).
    "tls": ("/", 64, [], "rps"),
    "tls-handshake": ("/", 64, ["-H", "Connection: close"], "rps"),
    # Not wrk: the node generator (ws/ws_bench.js), 64 WebSocket connections through WS_PATH, each
    # sending a WS_MSG_SIZE-byte message and waiting for its echo; "rps" holds messages/s.
    "websocket": (WS_PATH, 64, [], "rps"),
    "lowconc-1": ("/", 1, [], "rps"),
    "lowconc-8": ("/", 8, [], "rps"),
    # Not in the default set: a body too big to buffer, so every proxy streams it.
    "upload": ("/post", 16, ["-s", "{workdir}/upload.lua"], "rps"),
}
DESCRIPTION = {
    "small": "GET, 12-byte body, 64 keep-alive connections",
    "churn": "GET, 12-byte body, 64 connections, `Connection: close` on every request",
    "large": "GET, 1 MiB body, 16 keep-alive connections (headline metric: bytes/s)",
    "post": "POST, 16 KiB body, 64 keep-alive connections",
    "cache-hit": f"GET {CACHED_PATH}, 12-byte body served from each proxy's own cache, 64 keep-alive connections",
    "tls": "GET over TLS (proxy terminates, origin plain HTTP), 12-byte body, 64 keep-alive connections",
    "tls-handshake": "GET over TLS, 12-byte body, 64 connections, `Connection: close`: a new connection and "
                     "a full TLS handshake per request",
    "websocket": f"WebSocket through each proxy to a node echo origin: 64 connections, each sending a "
                 f"{WS_MSG_SIZE}-byte text message and waiting for its echo (headline: messages/s)",
    "lowconc-1": "GET, 12-byte body, 1 keep-alive connection",
    "lowconc-8": "GET, 12-byte body, 8 keep-alive connections",
    "idle": "idle keep-alive client connections, RSS growth per connection",
    "idle-tls": "idle keep-alive TLS client connections, RSS growth per connection",
    "autocannon": "autocannon -c 64, GET 12-byte body, through ringway only",
    "upload": "POST, 1 MiB body (streamed), 16 keep-alive connections (opt-in scenario)",
    "failover": "three origins, origin #2 SIGKILLed at 1/3 of the run and restarted at 2/3; "
                "GET, 12-byte body, 64 keep-alive connections",
}

# Failover scenario: the timeline's resolution, and what counts as recovered.
FO_SLICE = 0.5
FO_RECOVERED = 0.9  # 1 s (two slices) at >= 90 % of the pre-kill req/s on average counts as back to normal

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Other work above this share of the proxy's CPU during a run marks the run as noisy.
NOISY_PCT = 10.0


class HarnessError(Exception):
    """A failed pre-check or start-up: printed as one clear message, exit code 2."""


def log(msg):
    print(msg, flush=True)


def warn(msg):
    print(f"\n*** WARNING: {msg}\n", flush=True)


# --------------------------------------------------------------------------------------------
# Processes: every child gets its own session (process group), registered so that it is
# stopped on exit, on an exception and on Ctrl-C / SIGTERM. The pgid file lets compare.sh
# finish the job if this interpreter itself is killed hard.


class Procs:
    def __init__(self, workdir):
        self.live = {}  # pgid -> (Popen, name)
        self.pgid_file = os.path.join(workdir, "pgids")

    def _save(self):
        with open(self.pgid_file, "w") as f:
            for pgid, (_, name) in self.live.items():
                f.write(f"{pgid} {name}\n")

    def start(self, name, argv, logpath):
        out = open(logpath, "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        finally:
            out.close()
        self.live[p.pid] = (p, name)
        self._save()
        return p

    def run(self, name, argv, timeout, env=None):
        """Runs a short-lived tool (wrk, autocannon) in its own group; returns (rc, stdout, stderr).
        `env`: variables added to the environment (the TLS shim's LD_PRELOAD)."""
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, env=dict(os.environ, **env) if env else None)
        self.live[p.pid] = (p, name)
        self._save()
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            out, err = p.communicate()
            return None, out.decode(errors="replace"), err.decode(errors="replace") + "\n(timed out)"
        except BaseException:
            self.stop(p)  # Ctrl-C or an error while it runs: it goes too
            raise
        self.live.pop(p.pid, None)
        self._save()
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def spawn(self, name, argv):
        """Starts a load generator in the background (own group, output piped); collect it with
        reap(). For runs during which the driver has other things to do (the failover scenario)."""
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        self.live[p.pid] = (p, name)
        self._save()
        return p

    def reap(self, p, timeout):
        """Waits for a spawn()ed process; returns (rc or None on timeout, stdout, stderr)."""
        try:
            out, err = p.communicate(timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            self.stop(p)
            out, err = p.communicate()
            rc, err = None, err + b"\n(timed out)"
        self.live.pop(p.pid, None)
        self._save()
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self, p):
        """SIGKILL to the whole group at once (nginx master and workers): no graceful anything."""
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.live.pop(p.pid, None)
        self._save()

    def stop(self, p, grace=5.0):
        pgid = p.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left in the group (nginx workers, a stuck leader) is killed outright.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.live.pop(pgid, None)
        self._save()

    def stop_all(self):
        for pgid, (p, _) in list(self.live.items()):
            self.stop(p)


# --------------------------------------------------------------------------------------------
# /proc helpers


def proc_children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(d))
    return sorted(kids)


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total


def cpu_stat(cpu):
    """(ticks not available to idle: user+nice+system+irq+softirq+steal, all ticks) of one CPU
    from /proc/stat. irq/softirq count because a task's stime includes the ticks that land in
    its softirq work; steal because the hypervisor took the CPU away."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:9]]
                user, nice, system, idle, iowait, irq, softirq, steal = v
                return user + nice + system + irq + softirq + steal, sum(v)
    return 0, 0


def foreign_pct(c0, c1, ours):
    """Share of one CPU's time over a run spent on anything but our processes, in %."""
    total = c1[1] - c0[1]
    if total <= 0 or ours is None:
        return None
    return max(0.0, (c1[0] - c0[0]) - ours) * 100.0 / total


def busy_pct(c0, c1):
    """How busy one CPU was between two cpu_stat() samples, in % (steal included)."""
    total = c1[1] - c0[1]
    return (c1[0] - c0[0]) * 100.0 / total if total > 0 else None


def children_ticks():
    """CPU time of reaped children (the load generator once it has exited), in ticks."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * CLK_TCK


def self_ticks():
    t = os.times()
    return (t.user + t.system) * CLK_TCK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_busy(interval=1.0):
    def snap():
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu"):
                    parts = line.split()
                    vals = [int(x) for x in parts[1:9]]
                    idle = vals[3] + vals[4]
                    out[parts[0]] = (sum(vals), idle)
        return out

    a = snap()
    time.sleep(interval)
    b = snap()
    busy = {}
    for k in b:
        tot = b[k][0] - a[k][0]
        idle = b[k][1] - a[k][1]
        busy[k] = 100.0 * (tot - idle) / tot if tot > 0 else 0.0
    return busy


# --------------------------------------------------------------------------------------------
# Small helpers


def which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin")


def port_in_use(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def who_listens(port):
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
        return out.strip() or "(ss shows no listener: the port may be bound but not listening)"
    except (OSError, subprocess.SubprocessError):
        return "(ss not available)"


def wait_listening(port, proc, logpath, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{what} exited with code {proc.returncode} at start-up; log {logpath}:\n"
                               + tail(logpath))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"{what} is not listening on 127.0.0.1:{port} after {timeout:.0f}s; log {logpath}:\n"
                       + tail(logpath))


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def tool_version(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip().splitlines()
        line = text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"
    if pattern:
        m = re.search(pattern, line)
        if m:
            return m.group(1)
    return line


def fmt_num(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def fmt_bytes(b):
    if b is None:
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(b) >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} B"


def fmt_ms(x):
    if x is None:
        return "—"
    if x < 1:
        return f"{x * 1000:.0f} µs"
    return f"{x:.2f} ms"


def fmt_pct(x):
    return "—" if x is None else f"{x:.0f}%"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{fmt(min(xs))} – {fmt(max(xs))}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# --------------------------------------------------------------------------------------------
# wrk output


def parse_duration_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[m.group(2)]


def parse_size(s):
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", s)
    if not m:
        return None
    return float(m.group(1)) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(2)]


def parse_wrk(out):
    r = {"requests": None, "rps": None, "bps": None, "p50": None, "p99": None, "non2xx": 0,
         "sock": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^Transfer/sec:\s+(\S+)", out, re.M)
    if m:
        r["bps"] = parse_size(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    if m:
        r["p50"] = parse_duration_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if m:
        r["p99"] = parse_duration_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sock"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return r


# --------------------------------------------------------------------------------------------
# Configs


def nginx_common(workdir, name, nofile, conns):
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    return d, f"""# generated by loadtest/compare.py
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {conns};
}}
"""


def origin_config(workdir, port, nofile, name="origin"):
    d, head = nginx_common(workdir, name, min(nofile, 8192), 4096)
    www = os.path.join(workdir, "www")
    return d, head + f"""http {{
    access_log off;
    log_format health_ts '$msec';
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_max_body_size 0;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        # The 1 MiB body, from a file.
        location /static/ {{ }}
        # What the proxy forwarded: the sanity check reads it once per proxy.
        location = /echo {{
            return 200 "host=$http_host xff=$http_x_forwarded_for xfp=$http_x_forwarded_proto xfh=$http_x_forwarded_host forwarded=$http_forwarded via=$http_via\\n";
        }}
        # Health checks (failover scenario): 200, each one logged with its time so that the
        # harness can tell the proxies' checks from their traffic.
        location = /health {{
            access_log {d}/health.log health_ts;
            return 200 "ok\\n";
        }}
        # Request counter, polled by the harness every 0.5 s in the failover scenario.
        location = /nginx_status {{
            stub_status;
        }}
        # The cache-hit scenario: the same 12 bytes, cacheable for an hour.
        location = {CACHED_PATH} {{
            add_header Cache-Control "max-age=3600";
            return 200 "{SMALL_BODY.strip()}\\n";
        }}
        # Everything else, GET or POST (a POST body is read and discarded): 12 bytes.
        location / {{
            return 200 "{SMALL_BODY.strip()}\\n";
        }}
    }}
}}
"""


def nginx_proxy_config(workdir, port, up_ports, nofile, failover=False, cache=False, tls=None, ws_port=None):
    d, head = nginx_common(workdir, "nginx", nofile, 20000)
    # nginx open source has no active health checks: in the failover scenario only passive ones
    # (one failure takes a server out for 2 s) and retries on errors and 502s (at most 2 retries).
    mark = " max_fails=1 fail_timeout=2s" if failover else ""
    servers = "\n".join(f"        server 127.0.0.1:{p}{mark};" for p in up_ports)
    retry = ("\n            proxy_next_upstream error timeout http_502;"
             "\n            proxy_next_upstream_tries 3;") if failover else ""
    proxy = f"""proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Forwarded "for=$remote_addr;host=\\"$http_host\\";proto=$scheme";
            proxy_set_header Via "1.1 nginx";
            proxy_connect_timeout 3s;{retry}
            add_header Via "1.1 nginx" always;"""
    # cache-hit only: an on-disk cache (the worker reads hits through the page cache) for the
    # cached path, the rest as above. add_header in a location replaces the server's, hence
    # the repeated Via line in `proxy`.
    cache_path = (f"\n    proxy_cache_path {workdir}/nginx-cache levels=1:2 keys_zone=rwcache:10m max_size=256m "
                  "inactive=60m use_temp_path=off;") if cache else ""
    cache_location = f"""
        location {CACHED_PATH} {{
            {proxy}
            proxy_cache rwcache;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}""" if cache else ""
    # TLS scenarios: a second listener on the same server block terminates TLS ($scheme is then
    # https, so X-Forwarded-Proto and Forwarded say so). Session cache and tickets on, as ringway
    # (rustls: in-memory cache, tickets) and HAProxy (shared cache, tickets) have by default.
    tls_listen = f"""
        listen 127.0.0.1:{tls['port']} ssl backlog=4096;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {TLS12_CIPHERS};
        ssl_conf_command Ciphersuites {TLS13_SUITES};
        ssl_ecdh_curve {TLS_GROUPS['nginx']};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;""" if tls else ""
    # websocket only: WS_PATH goes to the node echo origin with the Upgrade headers passed on.
    ws_upstream = f"""
    upstream wsup {{
        server 127.0.0.1:{ws_port};
    }}""" if ws_port else ""
    ws_proxy = (proxy.replace("proxy_pass http://up;", "proxy_pass http://wsup;")
                .replace('proxy_set_header Connection "";', 'proxy_set_header Upgrade $http_upgrade;\n'
                         '            proxy_set_header Connection "upgrade";'))
    ws_location = f"""
        location {WS_PATH} {{
            {ws_proxy}
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}""" if ws_port else ""
    return d, head + f"""http {{
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    client_header_timeout 10s;
    # Keeps a 16 KiB request body in memory: with the default (8 KiB on x86-64) nginx writes
    # every such body to a temp file first, and the post scenario would measure that.
    client_body_buffer_size 32k;
    client_max_body_size 0;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;{cache_path}
    upstream up {{
{servers}
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }}{ws_upstream}
    server {{
        listen 127.0.0.1:{port} backlog=4096;{tls_listen}
        location / {{
            {proxy}
        }}{cache_location}{ws_location}
    }}
}}
"""


def haproxy_config(workdir, port, up_ports, maxconn, failover=False, cache=False, tls=None, ws_port=None):
    d = os.path.join(workdir, "haproxy")
    os.makedirs(d, exist_ok=True)
    check = " check inter 200ms fall 2 rise 2" if failover else ""
    servers = "\n".join(f"    server s{i + 1} 127.0.0.1:{p} pool-max-conn 64{check}" for i, p in enumerate(up_ports))
    # Failover: active checks, 2 retries, the last one on another server (redispatch), and
    # retries also for requests whose connection died before a response (HAProxy's default
    # is conn-failure only; ringway's default retry_on is connect, timeout, reset).
    backend = ("    balance roundrobin\n    option httpchk GET /health\n    retries 2\n    option redispatch\n"
               "    retry-on conn-failure empty-response response-timeout\n") if failover else ""
    # cache-hit only: the cached path goes to a backend with the same servers and an in-memory
    # cache; HAProxy has no cache status header of its own, so it sets one on hits (res.cache_hit).
    use_cached = f"    use_backend cached if {{ path_beg {CACHED_PATH} }}\n" if cache else ""
    cached = f"""
backend cached
    http-request cache-use rwcache
    http-response cache-store rwcache
    http-response set-header X-Cache-Status HIT if {{ res.cache_hit }}
{servers}

cache rwcache
    total-max-size 256
    max-object-size 1048576
    max-age 3600
""" if cache else ""
    # websocket only: WS_PATH goes to the node echo origin; HAProxy tunnels the upgraded connection
    # itself (http mode), with `timeout tunnel` as long as ringway's and nginx's.
    use_ws = f"    use_backend ws if {{ path_beg {WS_PATH} }}\n" if ws_port else ""
    ws = f"""
backend ws
    timeout tunnel 1h
    server w1 127.0.0.1:{ws_port}
""" if ws_port else ""
    # TLS scenarios: a second frontend terminates TLS (cert and key in one file), with the same
    # headers saying https, the same routing. Session cache (tune.ssl.cachesize, 20000 entries) and
    # tickets stay at HAProxy's defaults (on).
    fe_tls = f"""
frontend fe_tls
    bind 127.0.0.1:{tls['port']} ssl crt {tls['combined']} ssl-min-ver TLSv1.2 ciphers {TLS12_CIPHERS} ciphersuites {TLS13_SUITES} curves {TLS_GROUPS['haproxy']} prefer-client-ciphers alpn http/1.1
    maxconn {maxconn}
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Forwarded "for=%[src];host=\\"%[req.hdr(host)]\\";proto=https"
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"
{use_cached}{use_ws}    default_backend up
""" if tls else ""
    return d, f"""# generated by loadtest/compare.py
global
    nbthread 1
    maxconn {maxconn}
    pidfile {d}/haproxy.pid
    # no log line: logging off

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:{port}
    maxconn {maxconn}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Forwarded "for=%[src];host=\\"%[req.hdr(host)]\\";proto=http"
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"
{use_cached}{use_ws}    default_backend up
{fe_tls}
backend up
{backend}{servers}
{cached}{ws}"""


def ringway_config(workdir, port, up_ports, failover=False, cache=False, tls=None, ws_port=None):
    d = os.path.join(workdir, "ringway")
    os.makedirs(d, exist_ok=True)
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in up_ports)
    # Failover: active checks as fast as HAProxy's; passive checks, retries and back-off
    # stay at their defaults (max_fails 1, retries 2, retry_on connect/timeout/reset).
    health = ("\n[upstreams.up.health]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n"
              "fall = 2\nrise = 2\n") if failover else ""
    # cache-hit only: a route that caches, before the catch-all, and the cache's size.
    cache_route = (f'\n[cache]\nmax_bytes = "256MiB"\n\n[[routes]]\npath_prefix = "{CACHED_PATH}"\n'
                   'upstream = "up"\ncache = true\n') if cache else ""
    # TLS scenarios: a second listen entry that terminates TLS (rustls defaults: in-memory session
    # cache, TLS 1.3 tickets that refer to it).
    listen = (f'["127.0.0.1:{port}", {{ addr = "127.0.0.1:{tls["port"]}", tls = {{ cert = "{tls["cert"]}", '
              f'key = "{tls["key"]}" }} }}]') if tls else f'"127.0.0.1:{port}"'
    # websocket only: WS_PATH goes to the node echo origin (upgrade_protocols defaults to
    # ["websocket"], tunnel_idle_timeout to 1h).
    ws_route = (f'\n[upstreams.ws]\nservers = ["127.0.0.1:{ws_port}"]\nconnect_timeout = "3s"\n\n'
                f'[[routes]]\npath_prefix = "{WS_PATH}"\nupstream = "ws"\n') if ws_port else ""
    return d, f"""# generated by loadtest/compare.py
[server]
listen = {listen}
workers = 1
header_timeout = "10s"
keepalive_timeout = "60s"

[upstreams.up]
servers = [{servers}]
keepalive = 64
keepalive_timeout = "60s"
connect_timeout = "3s"
{health}{cache_route}{ws_route}
[[routes]]
path_prefix = "/"
upstream = "up"
"""


# The failover scenario's wrk script: counts responses per time slice, so that one wrk run
# (keep-alive connections kept across the kill) gives a timeline. Slices are counted from the
# driver's CLOCK_MONOTONIC time t0 (passed as `-- t0 slice`), the same clock the driver kills and
# restarts origin #2 by, so the events fall exactly on slice boundaries. Defining response()
# makes wrk hand each response to Lua; on this 12-byte body it did not measurably slow wrk.
FAILOVER_LUA = """-- generated by loadtest/compare.py (failover timeline)
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } rw_timespec;
int clock_gettime(int clk, rw_timespec *tp);
]]
local ts = ffi.new("rw_timespec")
local C = ffi.C
local floor = math.floor
local t0, slice = 0, 0.5
ok = {}
bad = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  t0 = tonumber(args[1])
  slice = tonumber(args[2])
end

function response(status, headers, body)
  C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  local i = floor((tonumber(ts.tv_sec) - t0 + tonumber(ts.tv_nsec) * 1e-9) / slice)
  if status < 400 then ok[i] = (ok[i] or 0) + 1 else bad[i] = (bad[i] or 0) + 1 end
end

function done(summary, latency, requests)
  local o, b = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("ok")) do o[k] = (o[k] or 0) + v end
    for k, v in pairs(t:get("bad")) do b[k] = (b[k] or 0) + v end
  end
  local n = -1
  for k, _ in pairs(o) do if k > n then n = k end end
  for k, _ in pairs(b) do if k > n then n = k end end
  for k = 0, n do io.write(string.format("SLICE %d %d %d\\n", k, o[k] or 0, b[k] or 0)) end
end
"""


def stub_requests(port):
    """The `requests` counter of an origin's stub_status (this request included), or None if
    the origin does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(b"GET /nginx_status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, body = read_response(s)
    except (OSError, ValueError, IndexError):
        return None
    m = re.search(rb"\n\s*\d+\s+\d+\s+(\d+)\s*\n", body)
    return int(m.group(1)) if status == 200 and m else None


def health_times(path):
    """Wall-clock times of the health-check requests an origin logged."""
    try:
        with open(path) as f:
            return [float(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def read_new_lines(path, state, out, t):
    """Appends (t, line) for every complete line added to `path` since the last call."""
    try:
        with open(path, errors="replace") as f:
            f.seek(state["offset"])
            data = f.read()
            state["offset"] = f.tell()
    except OSError:
        return
    data = state["partial"] + data
    lines = data.split("\n")
    state["partial"] = lines.pop()
    out.extend((t, l.rstrip()) for l in lines if l.strip())


def group_ticks(pids):
    """CPU ticks of those processes that still exist."""
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks([pid])
        except (OSError, ValueError, IndexError):
            pass
    return total


def fo_times(duration):
    """(kill at, restart at) in seconds from the start: a third and two thirds of the run,
    on slice boundaries."""
    k = round(duration / 3 / FO_SLICE) * FO_SLICE
    r = round(2 * duration / 3 / FO_SLICE) * FO_SLICE
    return k, r


def fo_recovery(rps, pre, start, end):
    """Seconds from slice `start` to the first slice from which the mean of two consecutive
    slices (1 s; the last slice of the phase alone) reaches FO_RECOVERED x pre; None if none
    does before slice `end`. Two slices rather than one: with the load CPU saturated, single
    slices jitter by 10-20 % even with all origins up."""
    if not pre:
        return None
    for j in range(start, end):
        if statistics.mean(rps[j:min(j + 2, end)]) >= FO_RECOVERED * pre:
            return (j - start) * FO_SLICE
    return None


def fmt_rec(x, phase):
    if x is None:
        return f"**not within {phase:g} s**"
    return f"< {FO_SLICE:g} s" if x == 0 else f"{x:.1f} s"


SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(rps, pre, marks):
    """One character per slice, its height the slice's req/s relative to the pre-kill level
    (full block = at or above it); `|` before the slices in `marks` (kill, restart)."""
    out = []
    for i, v in enumerate(rps):
        if i in marks:
            out.append("|")
        r = v / pre if pre else 0
        out.append(SPARK[max(0, min(8, round(r * 8)))] if v > 0 else "_")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# The harness


class Harness:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.procs = Procs(workdir)
        self.bin = {}
        self.failures = []  # human-readable lines
        self.notes = []
        self.results = {}  # scenario -> proxy -> [run dict]
        self.idle = {}  # proxy -> [idle dict]
        self.echo = {}  # proxy -> echo body seen by the origin
        self.cache_seen = {}  # proxy -> what the cache-hit check saw
        self.idle_tls = {}  # proxy -> [idle dict], idle-tls scenario
        self.echo_tls = {}  # proxy -> echo body seen by the origin, through the TLS listener
        self.tls_seen = {}  # proxy -> what openssl s_client negotiated with its TLS listener
        self.skipped = {}  # scenario -> why it did not run
        self.tls_files = None  # {"cert", "key", "combined"} once made (write_static)
        self.shim = None  # the compiled wrk TLS shim (.so), if a C compiler was found
        self.shim_error = None
        self.ws_origin = None  # the websocket scenario's node echo origin
        base = args.base_port
        self.port = {"origin": base, "ringway": base + 1, "nginx": base + 2, "haproxy": base + 3,
                     "origin2": base + 4, "origin3": base + 5, "ws_origin": base + 6, "dead": base + 9}
        for name in PROXIES:  # the TLS listeners: the proxy's port + 10
            self.port[name + "_tls"] = self.port[name] + TLS_PORT_OFFSET
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.origin = None
        self.running = {}  # proxy -> Popen
        self.busy_samples = []  # % busy in the pause before each measured run
        self.fo_origins = []  # failover: the three origin Popens ([1] is replaced on restart)
        self.failover = {}  # proxy -> failover run dict

    # ---- pre-checks

    def precheck(self, scenarios):
        missing = []
        for name in ("nginx", "haproxy", "wrk", "taskset", "ss"):
            path = which(name)
            if not path:
                missing.append(name)
            self.bin[name] = path
        if "autocannon" in scenarios:
            self.bin["autocannon"] = which("autocannon")
            if not self.bin["autocannon"]:
                missing.append("autocannon")
        if self.wants_tls(scenarios):
            self.bin["openssl"] = which("openssl")
            if not self.bin["openssl"]:
                missing.append("openssl")
            self.bin["cc"] = which("cc") or which("gcc")
        if missing:
            raise HarnessError(f"not found: {', '.join(missing)}. Run loadtest/setup.sh first "
                               "(it installs nginx, haproxy, wrk, openssl, autocannon, node and the "
                               "websocket scenario's npm package, and builds ringway).")
        if "websocket" in scenarios:
            # Skipped (with a clear message), not an error: node and the ws package are only for it.
            self.bin["node"] = which("node")
            if not self.bin["node"]:
                self.skip("websocket", "node not found (loadtest/setup.sh installs nodejs and npm)")
            elif not os.path.isdir(os.path.join(WS_DIR, "node_modules", "ws")):
                self.skip("websocket", f"{os.path.relpath(WS_DIR, REPO)}/node_modules is missing: run "
                          f"`npm ci --prefix {os.path.relpath(WS_DIR, REPO)}` (loadtest/setup.sh does)")

        ncpu = os.cpu_count() or 1
        for what, cpu in (("--proxy-cpu", self.args.proxy_cpu), ("--load-cpu", self.args.load_cpu)):
            if cpu >= ncpu:
                raise HarnessError(f"{what} {cpu}: this machine has CPUs 0-{ncpu - 1}")
        if self.args.proxy_cpu == self.args.load_cpu:
            warn("proxy and load generator share a CPU: numbers measure contention, not the proxy")

        if self.args.ringway_bin:
            rb = os.path.abspath(self.args.ringway_bin)
            if not os.access(rb, os.X_OK):
                raise HarnessError(f"--ringway-bin {rb}: not an executable file")
            self.binary_state = f"{os.path.relpath(rb, REPO)}, not checked against the sources"
            self.bin["ringway"] = rb
        else:
            self.check_release_binary()
            self.bin["ringway"] = RINGWAY

        # The failover scenario's origins #2 and #3, the websocket origin and the TLS listeners are
        # checked only when a scenario that uses them runs.
        def needs(k):
            if k in ("origin2", "origin3"):
                return "failover" in scenarios
            if k == "ws_origin":
                return "websocket" in scenarios and "websocket" not in self.skipped
            if k.endswith("_tls"):
                return self.wants_tls(scenarios)
            return True
        needed = {k: v for k, v in self.port.items() if needs(k)}
        busy_ports = [p for p in sorted(set(needed.values())) if port_in_use(p)]
        if busy_ports:
            p = busy_ports[0]
            raise HarnessError(f"port 127.0.0.1:{p} is already in use, the harness needs it free "
                               f"(ports {', '.join(str(x) for x in sorted(set(needed.values())))}).\n"
                               f"  listener: {who_listens(p)}\n"
                               f"  stop it, or pick other ports with --base-port N")

        busy = cpu_busy(1.0)
        self.busy = busy
        total = busy.get("cpu", 0.0)
        per = ", ".join(f"{k[3:]}: {v:.0f}%" for k, v in sorted(busy.items()) if k != "cpu")
        self.quiet_line = f"{total:.1f}% busy over 1 s before the run (per CPU {per})"
        if total > 20.0:
            warn(f"the machine is not quiet: {self.quiet_line}. Results will be noisy; continuing.")
            self.notes.append(f"**NOT QUIET**: {self.quiet_line}; absolute numbers are noisy.")

        # HAProxy refuses to start unless its open-file limit covers 2 x maxconn (+ a few);
        # where the limit cannot be raised to 65536 (no CAP_SYS_RESOURCE), maxconn is capped and
        # the idle scenario shrinks to what all three proxies can hold.
        fit = (self.nofile - 100) // 2
        if self.args.haproxy_maxconn > fit:
            warn(f"open-file limit is {self.nofile} (`ulimit -n 65536` was not allowed): HAProxy maxconn "
                 f"capped at {fit} instead of {self.args.haproxy_maxconn}")
            self.notes.append(f"open-file limit {self.nofile} (could not raise it to 65536): HAProxy "
                              f"`maxconn {fit}` instead of {self.args.haproxy_maxconn}")
            self.args.haproxy_maxconn = fit
        n = min(self.args.idle_tls_conns, self.args.haproxy_maxconn - 50, self.nofile - 200)
        if "idle-tls" in scenarios and n < self.args.idle_tls_conns:
            warn(f"idle-tls scenario uses {n} connections instead of {self.args.idle_tls_conns}")
            self.notes.append(f"idle-tls: {n:,} connections per proxy instead of {self.args.idle_tls_conns:,}")
            self.args.idle_tls_conns = n
        n = min(self.args.idle_conns, self.args.haproxy_maxconn - 50, self.nofile - 200)
        if "idle" in scenarios and n < self.args.idle_conns:
            warn(f"idle scenario uses {n} connections instead of {self.args.idle_conns} (open-file limit "
                 f"{self.nofile}, HAProxy maxconn {self.args.haproxy_maxconn})")
            self.notes.append(f"idle: {n:,} connections per proxy instead of {self.args.idle_conns:,}, to fit "
                              f"the open-file limit {self.nofile} and HAProxy maxconn {self.args.haproxy_maxconn}")
            self.args.idle_conns = n

    @staticmethod
    def wants_tls(scenarios):
        return any(s in TLS_SCENARIOS or s == "idle-tls" for s in scenarios)

    def skip(self, scenario, why):
        """A scenario that cannot run here: said loudly, listed in the report, not a failure."""
        if scenario not in self.skipped:
            self.skipped[scenario] = why
            warn(f"scenario {scenario} is SKIPPED: {why}")

    def check_release_binary(self):
        newest, newest_path = 0.0, None
        for root, _, files in os.walk(os.path.join(REPO, "src")):
            for f in files:
                p = os.path.join(root, f)
                m = os.path.getmtime(p)
                if m > newest:
                    newest, newest_path = m, p
        for f in ("Cargo.toml", "Cargo.lock", "build.rs"):
            p = os.path.join(REPO, f)
            if os.path.exists(p) and os.path.getmtime(p) > newest:
                newest, newest_path = os.path.getmtime(p), p
        exists = os.path.exists(RINGWAY)
        stale = not exists or os.path.getmtime(RINGWAY) < newest
        self.binary_state = "up to date"
        if not stale:
            return
        why = "missing" if not exists else f"older than {os.path.relpath(newest_path, REPO)}"
        if self.args.no_build:
            if not exists:
                raise HarnessError(f"{RINGWAY} is missing: run `cargo build --release` or loadtest/setup.sh")
            warn(f"release binary is {why}; --no-build given, measuring the stale binary")
            self.binary_state = f"STALE ({why})"
            self.notes.append(f"**ringway binary was stale** ({why}); it does not match the source tree")
            return
        log(f"release binary is {why}: running cargo build --release")
        cargo = which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
        r = subprocess.run([cargo, "build", "--release"], cwd=REPO)
        if r.returncode != 0 or not os.path.exists(RINGWAY):
            raise HarnessError("cargo build --release failed: fix the build (or pass --no-build to measure "
                               "the existing binary)")
        self.binary_state = "rebuilt before the run"

    # ---- machine line

    def machine(self):
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock"], capture_output=True, text=True).stdout.strip()
        v = {
            "cpu": f"{cpu} ({os.cpu_count()} CPUs)",
            "kernel": platform.release(),
            "nginx": tool_version([self.bin["nginx"], "-v"], r"nginx/(\S+)"),
            "haproxy": tool_version([self.bin["haproxy"], "-v"], r"version (\S+)"),
            "wrk": tool_version([self.bin["wrk"], "-v"], r"wrk (\S+)"),
            "ringway": tool_version([self.bin["ringway"], "--version"], r"ringway (\S+)")
            + (f" ({self.bin['ringway']}: --ringway-bin, not checked against the sources)" if self.args.ringway_bin
               else f" (git {git}{', uncommitted changes in src' if dirty else ''}; binary {self.binary_state})"),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        if self.bin.get("autocannon"):
            v["autocannon"] = tool_version([self.bin["autocannon"], "--version"], r"autocannon v?(\S+)")
        if self.bin.get("openssl"):
            v["openssl"] = tool_version([self.bin["openssl"], "version"], r"OpenSSL (\S+)")
        if self.bin.get("node") and "websocket" not in self.skipped:
            try:
                with open(os.path.join(WS_DIR, "node_modules", "ws", "package.json")) as f:
                    wsv = json.load(f).get("version", "?")
            except (OSError, ValueError):
                wsv = "?"
            v["node"] = tool_version([self.bin["node"], "--version"], r"v?(\S+)") + f" (ws {wsv})"
        return v

    # ---- files

    def write_static(self):
        www = os.path.join(self.workdir, "www", "static")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "1m.bin"), "wb") as f:
            f.write(b"x" * LARGE_SIZE)
        for name, size in (("post.lua", POST_SIZE), ("upload.lua", UPLOAD_SIZE)):
            with open(os.path.join(self.workdir, name), "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                        'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        with open(os.path.join(self.workdir, "failover.lua"), "w") as f:
            f.write(FAILOVER_LUA)
        # nginx workers may run as nobody: let them read the static file.
        for p in (self.workdir, os.path.join(self.workdir, "www"), www):
            os.chmod(p, 0o755)
        os.chmod(os.path.join(www, "1m.bin"), 0o644)

    def write_tls(self, scenarios):
        """Once per run, for the TLS scenarios: the certificate all three proxies serve (ECDSA
        P-256, self-signed, CN 127.0.0.1, SAN IP:127.0.0.1 and DNS:localhost; nobody verifies it),
        and the wrk shim (wrk_tls_shim.c) compiled into the workdir."""
        if not self.wants_tls(scenarios):
            return
        d = os.path.join(self.workdir, "tls")
        os.makedirs(d, exist_ok=True)
        cert, key, combined = (os.path.join(d, f) for f in ("cert.pem", "key.pem", "combined.pem"))
        r = subprocess.run([self.bin["openssl"], "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise HarnessError(f"openssl could not make the test certificate:\n{r.stdout}{r.stderr}")
        with open(combined, "w") as out:  # HAProxy: certificate and key in one file
            for f in (cert, key):
                with open(f) as src:
                    out.write(src.read())
        for f in (cert, key, combined):
            os.chmod(f, 0o644)  # a throwaway key, readable by nginx workers whoever they run as
        os.chmod(d, 0o755)
        self.tls_files = {"cert": cert, "key": key, "combined": combined}
        src = os.path.join(HERE, "wrk_tls_shim.c")
        so = os.path.join(self.workdir, "wrk_tls_shim.so")
        if not self.bin.get("cc"):
            self.shim_error = "no C compiler (cc) to build loadtest/wrk_tls_shim.c (loadtest/setup.sh installs gcc)"
        else:
            r = subprocess.run([self.bin["cc"], "-O2", "-shared", "-fPIC", "-o", so, src, "-ldl"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode == 0:
                self.shim = so
            else:
                self.shim_error = f"cc {os.path.relpath(src, REPO)} failed: {(r.stdout + r.stderr).strip()[-300:]}"
        if self.shim is None:
            # Without it wrk resumes TLS sessions on every reconnect: tls-handshake would not measure
            # full handshakes. tls (keep-alive) runs anyway, without wrk's own account of the handshakes.
            if "tls-handshake" in scenarios:
                self.skip("tls-handshake", f"{self.shim_error}; without the shim wrk resumes TLS sessions, "
                                           "so the scenario would not measure full handshakes")
            elif "tls" in scenarios:
                warn(f"{self.shim_error}: tls runs without wrk's count of its handshakes")

    # ---- start/stop

    def start_origin(self, port=None, name="origin"):
        """Starts an origin nginx (1 worker, on the load CPU). Without arguments: the origin of
        the other scenarios, kept in self.origin. With a port and a name (its directory in the
        workdir): one of the failover scenario's origins, returned."""
        d, conf = origin_config(self.workdir, port or self.port["origin"], self.nofile, name)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        logpath = os.path.join(d, "stdout.log")
        argv = [self.bin["taskset"], "-c", str(self.args.load_cpu), self.bin["nginx"], "-p", d, "-c", path,
                "-e", os.path.join(d, "error.log")]
        self.nginx_test(argv, path, logpath, f"{name} nginx")
        p = self.procs.start(f"{name}-nginx", argv, logpath)
        if port is None:
            self.origin = p
        wait_listening(port or self.port["origin"], p, logpath, f"{name} nginx")
        return p

    def nginx_test(self, argv, path, logpath, what):
        r = subprocess.run(argv + ["-t", "-q"], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"{what} config {path} is invalid:\n{r.stdout}{r.stderr}")

    def start_proxy(self, name, up_ports=None, failover=False, cache=False, tls=False, ws=False):
        """tls: also a TLS listener on the proxy's port + TLS_PORT_OFFSET; ws: WS_PATH to the
        websocket echo origin."""
        if up_ports is None:
            up_ports = [self.port["dead"] if self.args.dead_upstream == name else self.port["origin"]]
        up = up_ports
        port = self.port[name]
        tls = dict(self.tls_files, port=self.port[name + "_tls"]) if tls else None
        ws_port = self.port["ws_origin"] if ws else None
        taskset = [self.bin["taskset"], "-c", str(self.args.proxy_cpu)]
        if name == "ringway":
            d, conf = ringway_config(self.workdir, port, up, failover, cache, tls, ws_port)
            path = os.path.join(d, "ringway.toml")
            with open(path, "w") as f:
                f.write(conf)
            r = subprocess.run([self.bin["ringway"], "check", "-c", path], capture_output=True, text=True)
            if r.returncode != 0:
                raise HarnessError(f"ringway check -c {path} failed:\n{r.stdout}{r.stderr}")
            argv = taskset + [self.bin["ringway"], "run", "-c", path, "--workers", "1"]
        elif name == "nginx":
            d, conf = nginx_proxy_config(self.workdir, port, up, self.nofile, failover, cache, tls, ws_port)
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            argv = taskset + [self.bin["nginx"], "-p", d, "-c", path, "-e", os.path.join(d, "error.log")]
            self.nginx_test(argv, path, os.path.join(d, "stdout.log"), "proxy nginx")
        else:
            d, conf = haproxy_config(self.workdir, port, up, self.args.haproxy_maxconn, failover, cache, tls,
                                     ws_port)
            path = os.path.join(d, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(conf)
            r = subprocess.run([self.bin["haproxy"], "-c", "-f", path], capture_output=True, text=True)
            if r.returncode != 0:
                raise HarnessError(f"haproxy -c -f {path} failed:\n{r.stdout}{r.stderr}")
            argv = taskset + [self.bin["haproxy"], "-db", "-f", path]
        logpath = os.path.join(d, "stdout.log")
        with open(logpath, "a") as f:
            f.write(f"=== start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n")
        p = self.procs.start(name, argv, logpath)
        wait_listening(port, p, logpath, name)
        if tls:
            wait_listening(tls["port"], p, logpath, f"{name} (TLS listener)")
        log(f"   started {LABEL[name]} on 127.0.0.1:{port}" + (f" and TLS on {tls['port']}" if tls else "")
            + f", pid {p.pid}")
        self.running[name] = p
        self.logpath = getattr(self, "logpath", {})
        self.logpath[name] = logpath
        return p

    def start_ws_origin(self):
        """The websocket scenario's echo origin: node ws_bench.js origin, on the load CPU."""
        d = os.path.join(self.workdir, "ws-origin")
        os.makedirs(d, exist_ok=True)
        logpath = os.path.join(d, "stdout.log")
        port = self.port["ws_origin"]
        # --workdir (ignored by the script) puts the temp dir in the command line, by which compare.sh
        # recognises leftovers if this driver is killed hard.
        argv = [self.bin["taskset"], "-c", str(self.args.load_cpu), self.bin["node"], WS_SCRIPT, "origin",
                "--port", str(port), "--workdir", self.workdir]
        self.ws_origin = self.procs.start("ws-origin", argv, logpath)
        wait_listening(port, self.ws_origin, logpath, "websocket echo origin (node)")
        log(f"   started the websocket echo origin (node) on 127.0.0.1:{port}, pid {self.ws_origin.pid}")

    def stop_proxy(self, name):
        p = self.running.pop(name, None)
        if p is not None:
            self.procs.stop(p)

    def stop_scenario(self):
        for name in list(self.running):
            self.stop_proxy(name)
        if self.origin is not None:
            self.procs.stop(self.origin)
            self.origin = None
        if self.ws_origin is not None:
            self.procs.stop(self.ws_origin)
            self.ws_origin = None
        for p in self.fo_origins:
            if p is not None:
                self.procs.stop(p)
        self.fo_origins = []

    def measured_pids(self, name):
        """(pids whose CPU is counted, pid whose RSS is read) for a running proxy."""
        p = self.running[name]
        if name == "nginx":
            # Workers only: with a cache, the master also runs a cache manager and a cache
            # loader (which exits a minute after start-up).
            workers = [c for c in proc_children(p.pid) if "worker process" in cmdline(c)]
            if not workers:
                raise HarnessError("nginx proxy has no worker process")
            return workers, workers[0]
        return [p.pid], p.pid

    def alive(self, name):
        p = self.running.get(name)
        return p is not None and p.poll() is None

    # ---- sanity check: one request through each proxy, to the origin's /echo

    def sanity(self, name, tls=False):
        """tls: through the proxy's TLS listener, and the origin must have been told https."""
        port = self.port[name + "_tls" if tls else name]
        try:
            with connect(port, 5, tls) as s:
                s.sendall(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                status, headers, body = read_response(s)
        except OSError as e:
            return f"request failed: {e}"
        via = headers.get("via", "")
        echo = self.echo_tls if tls else self.echo
        echo[name] = body.decode(errors="replace").strip()
        problems = []
        if status != 200:
            problems.append(f"status {status}")
        if not via:
            problems.append("no Via header in the response")
        if status == 200 and "xff=127.0.0.1" not in echo[name]:
            problems.append("origin saw no X-Forwarded-For: 127.0.0.1")
        if tls and status == 200 and "xfp=https" not in echo[name]:
            problems.append("origin saw no X-Forwarded-Proto: https")
        return "; ".join(problems) or None

    # ---- TLS: what each proxy's TLS listener negotiates with an OpenSSL 3 client (wrk's library,
    # with its defaults), once per proxy and run

    def tls_check(self, name):
        """Three `openssl s_client` handshakes with the TLS listener, each sending GET / and reading
        the answer (so that session tickets arrive): the default (TLS 1.3), a resumption of the
        session it got, and TLS 1.2 forced. Sets self.tls_seen[name]; returns what went wrong."""
        port = self.port[name + "_tls"]
        sess = os.path.join(self.workdir, "tls", f"{name}.session")
        req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

        def s_client(extra):
            argv = [self.bin["openssl"], "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                    "-msg", "-ign_eof"] + extra
            try:
                r = subprocess.run(argv, input=req, capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                return ""
            return (r.stdout + r.stderr).decode(errors="replace")

        def hs(out):
            m = re.search(r"^(New|Reused), (TLSv[\d.]+), Cipher is (\S+)", out, re.M)
            return (m.group(1), m.group(2), m.group(3)) if m else None

        full, again, v12 = s_client(["-sess_out", sess]), s_client(["-sess_in", sess]), s_client(["-tls1_2"])
        def status(out):
            m = re.search(r"^HTTP/1\.1 (\d+)", out, re.M)
            return m.group(1) if m else "no response"

        problems = []
        h = hs(full)
        if h is None:
            problems.append("no TLS handshake: " + " ".join(full.strip().splitlines()[-3:])[-300:])
        elif status(full) != "200":
            problems.append(f"GET / over TLS: {status(full)}")
        group = re.search(r"^(?:Server Temp Key|Negotiated TLS1.3 group): ([^,\n]+)", full, re.M)
        sig = re.search(r"^Peer signature type: (\S+)", full, re.M)
        dig = re.search(r"^Peer signing digest: (\S+)", full, re.M)
        tickets = len(re.findall(r"^<<< .*NewSessionTicket", full, re.M))
        r = hs(again)
        h12 = hs(v12)
        if h12 is None:
            problems.append("no TLS 1.2 handshake: " + " ".join(v12.strip().splitlines()[-3:])[-300:])
        elif status(v12) != "200":
            problems.append(f"GET / over TLS 1.2: {status(v12)}")
        t12 = []
        if re.search(r"^<<< .*NewSessionTicket", v12, re.M):
            t12.append("a session ticket")
        if re.search(r"^\s*Session-ID: [0-9A-F]+\s*$", v12, re.M):
            t12.append("a session ID")
        self.tls_seen[name] = (
            (f"{h[1]} {h[2]}" if h else "no handshake") + f", {group.group(1) if group else '?'}, "
            f"{sig.group(1) if sig else '?'}/{dig.group(1) if dig else '?'} signature, "
            f"{tickets} session ticket(s) per handshake, a resumption offering one is "
            + ("accepted" if r and r[0] == "Reused" else "**refused**")
            + f"; TLS 1.2 forced: {h12[2] if h12 else '**failed**'}"
            + (f" (gives {' and '.join(t12)})" if t12 else ""))
        return "; ".join(problems) or None

    # ---- cache-hit: two GETs through each proxy, the second must come from its cache

    def cache_check(self, name):
        """None if two GETs of CACHED_PATH through the proxy made the origin serve it once and
        the second response carries the proxy's hit mark; else what went wrong."""
        port, origin = self.port[name], self.port["origin"]
        # The Host wrk sends, so that the entry is the one the measured requests hit.
        req = f"GET {CACHED_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        before = stub_requests(origin)
        seen = []
        for _ in range(2):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(5)
                    s.sendall(req)
                    status, headers, body = read_response(s)
            except (OSError, ValueError, IndexError) as e:
                return f"GET {CACHED_PATH} failed: {e or type(e).__name__}"
            if status != 200 or body != SMALL_BODY.encode():
                return f"GET {CACHED_PATH}: status {status}, body {body[:40]!r}"
            seen.append(headers.get(CACHE_HEADER[name], "(none)"))
        after = stub_requests(origin)
        fetched = after - before - 1 if before is not None and after is not None else None
        self.cache_seen[name] = (f"{CACHE_HEADER[name]}: {seen[0]}, then {seen[1]}; "
                                 f"origin fetches: {'?' if fetched is None else fetched}")
        problems = []
        if seen[1] != "HIT":
            problems.append(f"second response has {CACHE_HEADER[name]}: {seen[1]} (first: {seen[0]}), not HIT")
        if fetched is None:
            problems.append("could not read the origin's request counter")
        elif fetched != 1:
            problems.append(f"the origin served {fetched} of the 2 requests, not 1")
        return "; ".join(problems) or None

    # ---- wrk

    def load(self, scenario, name, seconds, record=True):
        """One run of the scenario's load generator against one proxy: wrk, or for websocket the
        node generator. Both return the same run dict."""
        if scenario == "websocket":
            return self.ws_load(scenario, name, seconds, record)
        return self.wrk(scenario, name, seconds, record)

    def wrk(self, scenario, name, seconds, record=True):
        path, conns, extra, _ = WRK_SCENARIOS[scenario]
        extra = [a.replace("{workdir}", self.workdir) for a in extra]
        tls = scenario in TLS_SCENARIOS
        url = (f"https://127.0.0.1:{self.port[name + '_tls']}{path}" if tls
               else f"http://127.0.0.1:{self.port[name]}{path}")
        # TLS: the shim makes every connection a full handshake and counts what wrk negotiated.
        env = {"LD_PRELOAD": self.shim, "RW_TLS_NORESUME": "1"} if tls and self.shim else None
        argv = [self.bin["taskset"], "-c", str(self.args.load_cpu), self.bin["wrk"], "-t1", f"-c{conns}",
                f"-d{seconds}s", "--latency", "--timeout", "5s"] + extra + [url]
        cpu_pids, rss_pid = self.measured_pids(name)
        cached = scenario == "cache-hit"
        origin0 = stub_requests(self.port["origin"]) if cached else None
        snap = self.snapshot(cpu_pids)
        t0 = snap["proxy"]
        rc, out, err = self.procs.run("wrk", argv, timeout=seconds + 60, env=env)
        t1 = cpu_ticks(cpu_pids) if self.alive(name) else None
        noise = self.noise(snap, cpu_pids, t1 is not None)
        origin1 = stub_requests(self.port["origin"]) if cached else None
        r = parse_wrk(out)
        r["raw"] = out + err
        r["rc"] = rc
        r["hwm"] = status_kb(rss_pid, "VmHWM") * 1024 if self.alive(name) else None
        r["cpu_us"] = None
        r["foreign"], r["foreign_load"], r["busy"], r["busy_load"] = noise
        if t1 is not None and r["requests"]:
            r["cpu_us"] = (t1 - t0) * 1e6 / CLK_TCK / r["requests"]
        if not r["requests"]:
            r["p50"] = r["p99"] = r["bps"] = None
        r["problems"] = self.problems(r, name, tls)
        r["tls"] = parse_shim(err) if tls else None
        if tls and env:
            t = r["tls"]
            if t is None:
                r["problems"].append("no handshake count from the TLS shim (was wrk_tls_shim.so loaded?)")
            elif t["resumed"]:
                r["problems"].append(f"wrk resumed {t['resumed']:,} of {t['handshakes']:,} TLS sessions: not "
                                     "full handshakes")
        if cached:
            # What the origin served during the run (its stub_status counter counts the second
            # read itself): a proxy answering from its cache sends it nothing.
            r["origin_reqs"] = origin1 - origin0 - 1 if origin0 is not None and origin1 is not None else None
            if r["origin_reqs"] is None:
                r["problems"].append("could not read the origin's request counter")
            elif r["requests"] and r["origin_reqs"] > r["requests"] // 100:
                r["problems"].append(f"NOT SERVED FROM CACHE: the origin served {r['origin_reqs']:,} of "
                                     f"{r['requests']:,} requests during the run")
        if record:
            with open(os.path.join(self.workdir, "wrk.log"), "a") as f:
                f.write(f"==== {scenario} {name}: {' '.join(argv)}\n{out}{err}\n")
        return r

    def ws_load(self, scenario, name, seconds, record=True):
        """The websocket scenario's run: node ws_bench.js load through the proxy for `seconds`.
        requests = round trips (every echo that came back), rps = round trips/s in the window,
        non2xx = upgrades not answered 101, sock = the generator's other errors."""
        path, conns, _, _ = WRK_SCENARIOS[scenario]
        url = f"ws://127.0.0.1:{self.port[name]}{path}"
        argv = [self.bin["taskset"], "-c", str(self.args.load_cpu), self.bin["node"], WS_SCRIPT, "load",
                "--url", url, "--conns", str(conns), "--duration", str(seconds), "--size", str(WS_MSG_SIZE),
                "--workdir", self.workdir]
        cpu_pids, rss_pid = self.measured_pids(name)
        snap = self.snapshot(cpu_pids)
        t0 = snap["proxy"]
        rc, out, err = self.procs.run("ws-load", argv, timeout=seconds + 60)
        t1 = cpu_ticks(cpu_pids) if self.alive(name) else None
        noise = self.noise(snap, cpu_pids, t1 is not None)
        r = {"requests": None, "rps": None, "bps": None, "p50": None, "p99": None, "non2xx": 0, "sock": {},
             "raw": out + err, "rc": rc, "ws": None}
        bad_json = None
        try:
            j = json.loads(out.strip().splitlines()[-1])
            r.update(requests=j["total"], rps=j["mps"], p50=j["p50_ms"], p99=j["p99_ms"],
                     non2xx=j["errors"]["unexpected_response"], ws=j)
            r["sock"] = {k: v for k, v in j["errors"].items() if k != "unexpected_response"}
            if rc == 1:
                r["rc"] = 0  # it exits 1 on errors, which are counted above
        except (ValueError, KeyError, IndexError, TypeError) as e:
            bad_json = f"could not read the generator's JSON ({e or type(e).__name__}); stderr: {err.strip()[-300:]}"
        r["hwm"] = status_kb(rss_pid, "VmHWM") * 1024 if self.alive(name) else None
        r["cpu_us"] = (t1 - t0) * 1e6 / CLK_TCK / r["requests"] if (t1 is not None and r["requests"]) else None
        r["foreign"], r["foreign_load"], r["busy"], r["busy_load"] = noise
        r["problems"] = self.problems(r, name)
        if bad_json:
            r["problems"].insert(0, bad_json)
        elif r["ws"]["opened"] < conns:
            r["problems"].append(f"only {r['ws']['opened']} of {conns} WebSocket connections opened")
        if r["ws"] and r["ws"]["samples"] and (r["non2xx"] or any(r["sock"].values())):
            r["problems"].append("first errors: " + " | ".join(r["ws"]["samples"][:3]))
        if record:
            with open(os.path.join(self.workdir, "wrk.log"), "a") as f:
                f.write(f"==== {scenario} {name}: {' '.join(argv)}\n{out}{err}\n")
        return r

    def snapshot(self, proxy_pids):
        """Everything needed to tell, after a run, how much of each CPU went to other work."""
        origin = [self.origin.pid] + proc_children(self.origin.pid) if self.origin else []
        if self.ws_origin is not None:  # the websocket echo origin (node) shares the load CPU
            origin.append(self.ws_origin.pid)
        return {"proxy_cpu": cpu_stat(self.args.proxy_cpu), "load_cpu": cpu_stat(self.args.load_cpu),
                "proxy": cpu_ticks(proxy_pids), "origin": cpu_ticks(origin) if origin else 0,
                "origin_pids": origin, "children": children_ticks(), "self": self_ticks()}

    def noise(self, s0, proxy_pids, proxy_alive):
        """(% of the proxy CPU, % of the load CPU) that ran other people's work during a run,
        then how busy each of the two CPUs was in all (%)."""
        s1 = {"proxy_cpu": cpu_stat(self.args.proxy_cpu), "load_cpu": cpu_stat(self.args.load_cpu)}
        proxy = cpu_ticks(proxy_pids) - s0["proxy"] if proxy_alive else None
        try:
            origin = cpu_ticks(s0["origin_pids"]) - s0["origin"] if s0["origin_pids"] else 0
        except OSError:
            origin = None
        load = None if origin is None else (origin + children_ticks() - s0["children"]
                                            + self_ticks() - s0["self"])
        return (foreign_pct(s0["proxy_cpu"], s1["proxy_cpu"], proxy),
                foreign_pct(s0["load_cpu"], s1["load_cpu"], load),
                busy_pct(s0["proxy_cpu"], s1["proxy_cpu"]),
                busy_pct(s0["load_cpu"], s1["load_cpu"]))

    def between_rounds(self):
        """A 0.3 s pause before each measured run, used to sample how busy the machine is
        while none of our load runs: other people's work shows up here."""
        b = cpu_busy(0.3).get("cpu", 0.0)
        self.busy_samples.append(b)
        if b > 20.0:
            log(f"   (machine {b:.0f}% busy before this run: other work is running)")
        return b

    def problems(self, r, name, tls=False):
        p = []
        if r["rc"] is None:
            p.append("load generator timed out")
        elif r["rc"] != 0:
            p.append(f"load generator exit code {r['rc']}")
        if r["requests"] is None:
            p.append("no request count in the output")
        elif r["requests"] == 0:
            p.append("0 requests")
        if r["non2xx"]:
            p.append(f"{r['non2xx']} non-2xx/3xx responses")
        se = sum(r["sock"].values())
        if se:
            p.append("socket errors " + ", ".join(f"{k} {v}" for k, v in r["sock"].items() if v))
        if not self.alive(name):
            p.append(f"{name} DIED (exit code {self.running[name].returncode}); log tail:\n"
                     + tail(self.logpath[name], 8))
        else:
            bad = self.probe(name, tls)
            if bad:
                p.append(f"afterwards a plain GET through {name}{' over TLS' if tls else ''}: {bad}")
        return p

    def probe(self, name, tls=False):
        """None if the proxy answers GET / with 200 within 3 s (tls: on its TLS listener), else what
        went wrong."""
        try:
            with connect(self.port[name + "_tls" if tls else name], 3, tls) as s:
                s.settimeout(3)
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                status = read_response(s)[0]
                return None if status == 200 else f"status {status}"
        except socket.timeout:
            return "no answer within 3 s (hung or stalled?)"
        except (OSError, ValueError, IndexError) as e:
            return str(e) or type(e).__name__

    # ---- scenarios

    def run_wrk_scenario(self, scenario):
        a = self.args
        log(f"\n== {scenario}: {DESCRIPTION[scenario]}")
        self.start_origin()
        cache = scenario == "cache-hit"
        tls = scenario in TLS_SCENARIOS
        ws = scenario == "websocket"
        if ws:
            self.start_ws_origin()
        not_cached = {}  # proxy -> why its cache-hit numbers do not count
        for name in PROXIES:
            self.start_proxy(name, cache=cache, tls=tls, ws=ws)
            bad = self.sanity(name)
            if bad:
                self.fail(scenario, name, f"sanity check through /echo: {bad}")
            if tls:
                bad = self.sanity(name, tls=True)
                if bad:
                    self.fail(scenario, name, f"sanity check through /echo over TLS: {bad}")
                if name not in self.tls_seen:  # once per proxy and run
                    bad = self.tls_check(name)
                    if bad:
                        self.fail(scenario, name, f"openssl s_client: {bad}")
                    log(f"   {LABEL[name]} TLS (openssl s_client): {self.tls_seen[name]}")
            if cache:
                bad = self.cache_check(name)
                if bad:
                    not_cached[name] = f"NOT SERVING FROM ITS CACHE ({bad}): its numbers measure something else"
                    warn(f"cache-hit: {LABEL[name]} is {not_cached[name]}")
                else:
                    log(f"   {LABEL[name]} serves {CACHED_PATH} from its cache ({self.cache_seen[name]})")
        runs = {name: [] for name in PROXIES}
        order = list(PROXIES)
        log(f"   warm-up round ({a.warmup}s each)")
        for name in order:
            if self.alive(name):
                r = self.load(scenario, name, a.warmup, record=True)
                if r["problems"]:
                    self.fail(scenario, name, "warm-up: " + "; ".join(r["problems"]))
        for rnd in range(a.rounds):
            order = PROXIES[rnd % 3:] + PROXIES[:rnd % 3]
            for name in order:
                if not self.alive(name):
                    continue
                busy = self.between_rounds()
                r = self.load(scenario, name, a.duration)
                r["busy_before"] = busy
                if name in not_cached:
                    r["problems"].insert(0, not_cached[name])
                runs[name].append(r)
                status = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
                noise = ""
                for key, cpu in (("foreign", a.proxy_cpu), ("foreign_load", a.load_cpu)):
                    if r[key] is not None and r[key] > NOISY_PCT:
                        noise += f"  [other work took {r[key]:.0f}% of CPU {cpu}]"
                origin = f"  origin {fmt_num(r['origin_reqs'])} req" if cache else ""
                if tls and r["tls"]:
                    origin += f"  {r['tls']['handshakes']:,} TLS handshakes, {r['tls']['resumed']:,} resumed"
                unit = "msg" if ws else "req"
                log(f"   round {rnd + 1}/{a.rounds} {LABEL[name]:8} {fmt_num(r['rps']):>10} {unit}/s  "
                    f"{fmt_bytes(r['bps'])}/s  p99 {fmt_ms(r['p99'])}  "
                    f"cpu {fmt_num(r['cpu_us'], 1)} µs/{unit}  busy CPU {a.proxy_cpu}/{a.load_cpu} "
                    f"{fmt_pct(r.get('busy'))}/{fmt_pct(r.get('busy_load'))}{origin}  {status}{noise}")
                if r["problems"]:
                    self.fail(scenario, name, f"round {rnd + 1}: " + "; ".join(r["problems"]))
        self.stop_scenario()
        self.results[scenario] = runs

    def run_idle(self, tls=False):
        """idle, or with tls idle-tls: the connections go to the proxies' TLS listeners (a full
        handshake each, then one GET)."""
        a = self.args
        n = a.idle_tls_conns if tls else a.idle_conns
        scen = "idle-tls" if tls else "idle"
        log(f"\n== {scen}: {n} idle keep-alive {'TLS ' if tls else ''}connections per proxy, one GET on each first "
            f"({a.rounds} round(s), fresh proxy each time)")
        self.start_origin()
        runs = {name: [] for name in PROXIES}
        for rnd in range(a.rounds):
            order = PROXIES[rnd % 3:] + PROXIES[:rnd % 3]
            for name in order:
                self.start_proxy(name, tls=tls)
                bad = self.sanity(name, tls=tls)
                if bad:
                    self.fail(scen, name, f"sanity check through /echo{' over TLS' if tls else ''}: {bad}")
                if tls and name not in self.tls_seen:
                    bad = self.tls_check(name)
                    if bad:
                        self.fail(scen, name, f"openssl s_client: {bad}")
                    log(f"   {LABEL[name]} TLS (openssl s_client): {self.tls_seen[name]}")
                r = self.idle_once(name, n, tls)
                runs[name].append(r)
                self.stop_proxy(name)
                status = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
                log(f"   round {rnd + 1}/{a.rounds} {LABEL[name]:8} RSS {fmt_bytes(r['before'])} -> "
                    f"{fmt_bytes(r['after'])}: {fmt_num(r['per_conn'])} B/conn  {status}")
                if r["problems"]:
                    self.fail(scen, name, f"round {rnd + 1}: " + "; ".join(r["problems"]))
        self.stop_scenario()
        if tls:
            self.idle_tls = runs
        else:
            self.idle = runs

    def idle_once(self, name, n, tls=False):
        port = self.port[name + "_tls" if tls else name]
        _, rss_pid = self.measured_pids(name)
        # Warm the worker (first requests, upstream pool; with TLS also the first handshakes) so
        # start-up allocations are not counted: 50 requests, over 1 connection (TLS: 10).
        warm_fail = 0
        for _ in range(10 if tls else 1):
            try:
                with connect(port, 5, tls) as s:
                    for _ in range(5 if tls else 50):
                        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        if read_response(s)[0] != 200:
                            warm_fail += 1
            except OSError:
                warm_fail += 1
        time.sleep(0.3)
        before = status_kb(rss_pid, "VmRSS") * 1024
        socks, failures, errors = open_idle(port, n, tls=tls)
        time.sleep(1.0)
        alive = self.alive(name)
        after = status_kb(rss_pid, "VmRSS") * 1024 if alive else None
        hwm = status_kb(rss_pid, "VmHWM") * 1024 if alive else None
        # Still open? A second request on a sample of them must be answered.
        sample = socks[:: max(1, len(socks) // 100)]
        dropped = 0
        for s in sample:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if read_response(s)[0] != 200:
                    dropped += 1
            except OSError:
                dropped += 1
        for s in socks:
            s.close()
        problems = []
        if warm_fail:
            problems.append(f"{warm_fail} warm-up request(s) failed")
        if failures:
            problems.append(f"{failures} of {n} connections failed ({'; '.join(errors[:3])})")
        if dropped:
            problems.append(f"{dropped} of {len(sample)} sampled connections no longer answered after the "
                            "idle period")
        if not alive:
            problems.append(f"{name} DIED; log tail:\n" + tail(self.logpath[name], 8))
        opened = len(socks)
        per = (after - before) / opened if (alive and opened) else None
        return {"before": before, "after": after, "hwm": hwm, "opened": opened, "per_conn": per,
                "problems": problems}

    def run_autocannon(self):
        a = self.args
        secs = a.autocannon_duration or 2 * a.duration
        log(f"\n== autocannon: autocannon -c 64 -d {secs} through ringway only (on CPU {a.load_cpu})")
        self.start_origin()
        self.start_proxy("ringway")
        bad = self.sanity("ringway")
        if bad:
            self.fail("autocannon", "ringway", f"sanity check through /echo: {bad}")
        url = f"http://127.0.0.1:{self.port['ringway']}/"
        base = [self.bin["taskset"], "-c", str(a.load_cpu), self.bin["autocannon"], "-c", "64"]
        # Warm-up with wrk (autocannon's own start-up is slow): same length as the other warm-ups.
        self.procs.run("wrk", [self.bin["taskset"], "-c", str(a.load_cpu), self.bin["wrk"], "-t1", "-c64",
                               f"-d{a.warmup}s", url], timeout=a.warmup + 60)
        cpu_pids, rss_pid = self.measured_pids("ringway")
        snap = self.snapshot(cpu_pids)
        t0 = snap["proxy"]
        rc, out, err = self.procs.run("autocannon", base + ["-d", str(secs), "--json", url], timeout=secs + 60)
        alive = self.alive("ringway")
        t1 = cpu_ticks(cpu_pids) if alive else None
        noise = self.noise(snap, cpu_pids, t1 is not None)
        with open(os.path.join(self.workdir, "wrk.log"), "a") as f:
            f.write(f"==== autocannon ringway\n{out}\n{err}\n")
        r = {"requests": None, "rps": None, "bps": None, "p50": None, "p99": None, "non2xx": 0,
             "sock": {}, "cpu_us": None, "hwm": None, "rc": rc,
             "foreign": noise[0], "foreign_load": noise[1], "busy": noise[2], "busy_load": noise[3]}
        problems = []
        try:
            j = json.loads(out.strip().splitlines()[-1])
            total = j["requests"]["total"]
            dur = j.get("duration") or secs
            r.update(requests=total, rps=total / dur, bps=j["throughput"]["total"] / dur,
                     p50=float(j["latency"]["p50"]), p99=float(j["latency"]["p99"]), non2xx=j["non2xx"])
            r["sock"] = {"errors": j.get("errors", 0), "timeouts": j.get("timeouts", 0),
                         "resets": j.get("resets", 0), "mismatches": j.get("mismatches", 0)}
            if j["non2xx"]:
                problems.append(f"{j['non2xx']} non-2xx responses")
            errs = {k: v for k, v in r["sock"].items() if v}
            if errs:
                problems.append("errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
            if total == 0:
                problems.append("0 requests")
        except (ValueError, KeyError, IndexError) as e:
            problems.append(f"could not read autocannon's JSON ({e}); rc {rc}; stderr: {err.strip()[-300:]}")
        if rc not in (0, None):
            problems.append(f"autocannon exit code {rc}")
        if alive:
            r["hwm"] = status_kb(rss_pid, "VmHWM") * 1024
            if r["requests"]:
                r["cpu_us"] = (t1 - t0) * 1e6 / CLK_TCK / r["requests"]
        else:
            problems.append("ringway DIED; log tail:\n" + tail(self.logpath["ringway"], 8))
        r["problems"] = problems
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        log(f"   ringway  {fmt_num(r['rps']):>10} req/s  p99 {fmt_ms(r['p99'])}  {status}")
        if problems:
            self.fail("autocannon", "ringway", "; ".join(problems))
        self.stop_scenario()
        self.results["autocannon"] = {"ringway": [r]}

    # ---- failover: origin #2 killed and restarted while the proxy is under load

    def run_failover(self):
        a = self.args
        dur = a.failover_duration
        kill_at, restart_at = fo_times(dur)
        ports = [self.port["origin"], self.port["origin2"], self.port["origin3"]]
        log(f"\n== failover: {DESCRIPTION['failover']}\n   origins on {', '.join(map(str, ports))}; "
            f"{dur}s per proxy, kill origin #2 at {kill_at:g}s, restart at {restart_at:g}s; "
            "fresh origins and proxy per run")
        for name in PROXIES:
            r = self.failover_once(name, ports, dur, kill_at, restart_at)
            self.failover[name] = r
            self.results.setdefault("failover", {})[name] = [r]
            status = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
            errs = r["non2xx"] + sum(r["sock"].values())
            if errs and not r["problems"]:
                status = f"{errs:,} errors (not counted as a failure for {LABEL[name]}, see the report)"
            log(f"   {LABEL[name]:8} before {fmt_num(r['pre'])} req/s, min {fmt_num(r['min_down'])} at "
                f"{fmt_num(r['min_down_at'], 1)}s, down {fmt_num(r['down'])}, back after kill "
                f"{fmt_rec(r['rec_kill'], restart_at - kill_at)}, after restart "
                f"{fmt_rec(r['rec_restart'], dur - restart_at)}; origin #2 after restart "
                f"{fmt_num(r['o2_after'])} req  {status}")
            log(f"            {sparkline(r['rps_slices'], r['pre'], {r['kill_k'], r['restart_k']})}")
            if r["problems"]:
                self.fail("failover", name, "; ".join(r["problems"]))

    def failover_once(self, name, ports, dur, kill_at, restart_at):
        a = self.args
        n = int(round(dur / FO_SLICE))
        kill_k, restart_k = int(round(kill_at / FO_SLICE)), int(round(restart_at / FO_SLICE))
        dirs = [os.path.join(self.workdir, f"origin{i + 1}") for i in range(3)]
        restarted_dir = os.path.join(self.workdir, "origin2-restarted")
        for d in dirs + [restarted_dir]:  # a fresh count of health checks per run (before nginx opens it)
            try:
                os.remove(os.path.join(d, "health.log"))
            except OSError:
                pass
        self.fo_origins = [self.start_origin(p, f"origin{i + 1}") for i, p in enumerate(ports)]
        self.start_proxy(name, ports, failover=True)
        problems = []
        bad = self.sanity(name)
        if bad:
            problems.append(f"sanity check through /echo: {bad}")
        url = f"http://127.0.0.1:{self.port[name]}/"
        load = [self.bin["taskset"], "-c", str(a.load_cpu), self.bin["wrk"], "-t1", "-c64"]
        rc, out, err = self.procs.run("wrk", load + [f"-d{a.warmup}s", url], timeout=a.warmup + 60)
        if rc != 0 or "Non-2xx" in out or "Socket errors" in out:
            problems.append("warm-up (all origins up) was not clean: " + " ".join(
                l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l or "requests in" in l))
        # The proxy's log, read at every slice boundary: its lines get the time they appeared by
        # (ringway's and nginx's own timestamps have whole seconds; HAProxy's stderr has none).
        logfile = os.path.join(os.path.dirname(self.logpath[name]), "error.log" if name == "nginx" else "stdout.log")
        log_state = {"offset": os.path.getsize(logfile) if os.path.exists(logfile) else 0, "partial": ""}
        run_log = []
        self.between_rounds()

        cpu_pids, rss_pid = self.measured_pids(name)
        origin_pids = [[o.pid] + proc_children(o.pid) for o in self.fo_origins]
        s0 = {"proxy_cpu": cpu_stat(a.proxy_cpu), "load_cpu": cpu_stat(a.load_cpu),
              "proxy": cpu_ticks(cpu_pids), "origins": [group_ticks(p) for p in origin_pids],
              "children": children_ticks(), "self": self_ticks()}
        o2_ticks_at_kill = 0
        wall_minus_mono = time.time() - time.monotonic()
        t0 = time.monotonic()
        argv = load + [f"-d{dur}s", "--latency", "--timeout", "5s", "-s",
                       os.path.join(self.workdir, "failover.lua"), url, "--", f"{t0:.6f}", f"{FO_SLICE}"]
        wrk = self.procs.spawn("wrk", argv)
        # polls[i][k] = (wall time, stub_status requests or None, instance) at slice boundary k
        polls = [[], [], []]
        npolls = {}  # (origin, instance) -> answered polls so far
        instance = [0, 0, 0]
        events = {}
        for k in range(n + 1):
            delay = t0 + k * FO_SLICE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if k == restart_k:
                events["restart"] = time.monotonic() - t0
                self.fo_origins[1] = self.start_origin(ports[1], "origin2-restarted")
                events["listening"] = time.monotonic() - t0
                instance[1] = 1
            for i in range(3):
                if k > kill_k and k < restart_k and i == 1:
                    v = None  # known down: do not poll (a refused connect costs nothing, but why)
                else:
                    v = stub_requests(ports[i])
                if v is not None:
                    npolls[(i, instance[i])] = npolls.get((i, instance[i]), 0) + 1
                polls[i].append((time.time(), v, instance[i]))
            read_new_lines(logfile, log_state, run_log, k * FO_SLICE)
            if k == kill_k:
                o2_ticks_at_kill = group_ticks(origin_pids[1])
                events["kill"] = time.monotonic() - t0
                self.procs.kill(self.fo_origins[1])
                self.fo_origins[1] = None
                if port_in_use(ports[1]) and stub_requests(ports[1]) is not None:
                    problems.append("origin #2 still answered after SIGKILL")
        rc, out, err = self.procs.reap(wrk, timeout=60)
        read_new_lines(logfile, log_state, run_log, dur)
        alive = self.alive(name)
        t1 = cpu_ticks(cpu_pids) if alive else None
        # Load CPU: wrk (reaped) + the origins (origin #2: up to its kill, then the new one) + this driver.
        restarted_pids = ([self.fo_origins[1].pid] + proc_children(self.fo_origins[1].pid)
                          if self.fo_origins[1] else [])
        origins_cpu = (group_ticks(origin_pids[0]) - s0["origins"][0] + group_ticks(origin_pids[2])
                       - s0["origins"][2] + o2_ticks_at_kill - s0["origins"][1] + group_ticks(restarted_pids))
        load_ticks = origins_cpu + children_ticks() - s0["children"] + self_ticks() - s0["self"]
        s1 = {"proxy_cpu": cpu_stat(a.proxy_cpu), "load_cpu": cpu_stat(a.load_cpu)}
        foreign = foreign_pct(s0["proxy_cpu"], s1["proxy_cpu"], None if t1 is None else t1 - s0["proxy"])
        foreign_load = foreign_pct(s0["load_cpu"], s1["load_cpu"], load_ticks)
        with open(os.path.join(self.workdir, "wrk.log"), "a") as f:
            f.write(f"==== failover {name}: {' '.join(argv)}\n{out}{err}\n")

        w = parse_wrk(out)
        m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
        max_lat = parse_duration_ms(m.group(1)) if m else None
        ok = [0] * n
        badn = [0] * n
        for m in re.finditer(r"^SLICE (\d+) (\d+) (\d+)$", out, re.M):
            k = int(m.group(1))
            if k < n:  # responses after the last full slice (wrk stops a moment after t0 + dur) are dropped
                ok[k], badn[k] = int(m.group(2)), int(m.group(3))
        rps = [v / FO_SLICE for v in ok]

        # Per origin and slice: requests it served for the proxy (stub_status difference, minus
        # the polls and the health checks it logged in that interval).
        health = {(0, 0): health_times(os.path.join(dirs[0], "health.log")),
                  (1, 0): health_times(os.path.join(dirs[1], "health.log")),
                  (1, 1): health_times(os.path.join(restarted_dir, "health.log")),
                  (2, 0): health_times(os.path.join(dirs[2], "health.log"))}
        served = [[0] * n for _ in range(3)]
        for i in range(3):
            last = {}  # instance -> (wall time, requests) of its last answered poll
            for k in range(n + 1):
                wk, v, inst = polls[i][k]
                if v is None:
                    continue
                if inst == 0 and inst not in last:  # the baseline (warm-up and sanity requests)
                    last[inst] = (wk, v)
                    continue
                if inst in last:
                    # Slice k-1 ends at this poll (after a failed poll, the gap lands in one slice).
                    bw, bv = last[inst]
                    slot = k - 1
                else:
                    # An instance's first poll: at k = 0 the counter is the baseline; for the
                    # restarted origin, what it served before its first poll belongs to slice k,
                    # which starts at the restart.
                    bw, bv, slot = 0.0, 0, k
                checks = sum(1 for t in health.get((i, inst), []) if bw < t <= wk)
                if 0 <= slot < n:
                    served[i][slot] += max(0, v - bv - 1 - checks)
                last[inst] = (wk, v)
        o2 = [v / FO_SLICE for v in served[1]]
        o2_after = sum(served[1][restart_k:])
        first = next((k for k in range(restart_k, n) if served[1][k] > 0), None)
        checks_per_s = {}
        run_from, run_to = t0 + wall_minus_mono, t0 + dur + wall_minus_mono
        for (i, inst), ts in health.items():
            checks_per_s[i] = checks_per_s.get(i, 0) + sum(1 for t in ts if run_from <= t <= run_to)

        pre_from = 1 if kill_k > 1 else 0
        pre = statistics.mean(rps[pre_from:kill_k]) if kill_k > pre_from else None
        pre_cv = (statistics.pstdev(rps[pre_from:kill_k]) / pre) if pre else None
        down = rps[kill_k:restart_k]
        min_down = min(down) if down else None
        min_down_at = (kill_k + down.index(min_down)) * FO_SLICE if down else None
        after = rps[restart_k:]

        r = {"requests": w["requests"], "non2xx": w["non2xx"], "sock": w["sock"], "p50": w["p50"],
             "p99": w["p99"], "bps": w["bps"], "max_lat": max_lat, "rc": rc, "raw": out + err,
             "rps": (w["requests"] - w["non2xx"]) / dur if w["requests"] else None,
             "hwm": status_kb(rss_pid, "VmHWM") * 1024 if alive else None,
             "cpu_us": (t1 - s0["proxy"]) * 1e6 / CLK_TCK / w["requests"] if (t1 is not None and w["requests"])
             else None,
             "foreign": foreign, "foreign_load": foreign_load,
             "ok_slices": ok, "bad_slices": badn, "rps_slices": rps, "o2_slices": o2,
             "served": served, "kill_k": kill_k, "restart_k": restart_k,
             "kill_at": kill_at, "restart_at": restart_at, "duration": dur, "events": events,
             "pre": pre, "pre_cv": pre_cv, "down": statistics.mean(down) if down else None, "min_down": min_down,
             "min_down_at": min_down_at, "after": statistics.mean(after) if after else None,
             "rec_kill": fo_recovery(rps, pre, kill_k, restart_k),
             "rec_restart": fo_recovery(rps, pre, restart_k, n),
             "o2_after": o2_after, "o2_first": None if first is None else (first - restart_k) * FO_SLICE,
             "o2_before": sum(served[1][:kill_k]), "shares_after": [sum(x[restart_k:]) for x in served],
             "checks_per_s": {i: c / dur for i, c in checks_per_s.items()}, "log": run_log,
             "lua_bad": sum(badn)}
        # What counts as a failure: for every proxy, a broken run (died, hung, no timeline,
        # origin #2 never used again); for ringway also any error at all: it has active checks
        # and retries on reset, so failover must be invisible to the client.
        if rc != 0:
            problems.append(f"wrk exit code {rc}: {err.strip()[-300:]}")
        if not w["requests"]:
            problems.append("0 requests")
        if not any(ok):
            problems.append("no per-slice counts from the Lua script (wrk without LuaJIT ffi?)")
        if not alive:
            problems.append(f"{name} DIED (exit code {self.running[name].returncode}); log tail:\n"
                            + tail(self.logpath[name], 8))
        else:
            bad = self.probe(name)
            if bad:
                problems.append(f"afterwards a plain GET through {name}: {bad}")
        if o2_after == 0:
            problems.append(f"origin #2 got no requests in the {dur - restart_at:g} s after its restart")
        if name == "ringway":
            se = sum(w["sock"].values())
            if w["non2xx"]:
                problems.append(f"**{w['non2xx']} non-2xx/3xx responses** during failover (must be 0)")
            if se:
                problems.append("**socket errors during failover** (must be 0): "
                                + ", ".join(f"{k} {v}" for k, v in w["sock"].items() if v))
        r["problems"] = problems
        self.stop_scenario()
        return r

    def log_digest(self):
        """proxy -> [(count, message)]: warnings and errors the proxies logged during the run
        (start-up chatter left out), numbers folded so that repeats collapse."""
        files = {"ringway": ["ringway/stdout.log"], "nginx": ["nginx/error.log", "nginx/stdout.log"],
                 "haproxy": ["haproxy/stdout.log"]}
        skip = re.compile(r"^=== start|\binfo: |\[NOTICE\]|using the \"epoll\" event method|"
                          r"nginx/[\d.]+$|built by|OS: |getrlimit|start worker process|signal process"
                          r"|exiting|exit$|gracefully shutting down|signal \d+ \(SIG|worker process \d+ exited"
                          r"|Proxy \S+ started|Stopping|Proxy \S+ stopped|\d+ active connections")
        out = {}
        for name, rels in files.items():
            counts = {}
            for rel in rels:
                try:
                    with open(os.path.join(self.workdir, rel), errors="replace") as f:
                        lines = f.read().splitlines()
                except OSError:
                    continue
                for line in lines:
                    if not line.strip() or skip.search(line):
                        continue
                    key = re.sub(r"^\S+ \S+ \[(\w+)\] \d+#\d+: \*?\d* ?", r"[\1] ", line)  # nginx prefix
                    key = re.sub(r"^\d{4}-\d\d-\d\dT\S+ ", "", key)  # ringway timestamp
                    key = re.sub(r"\d+", "N", key)
                    key = re.sub(r"/tmp/\S+", "TMP", key)
                    counts[key] = counts.get(key, 0) + 1
            if counts:
                out[name] = sorted(((c, k) for k, c in counts.items()), reverse=True)
        return out

    def fail(self, scenario, name, text):
        self.failures.append(f"{scenario} / {LABEL[name]}: {text}")


# --------------------------------------------------------------------------------------------
# Raw HTTP for the idle client and the sanity check


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length body (all the origin sends) from a
    blocking socket; returns (status, headers dict lowercased, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a full response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            body += chunk
    return status, headers, body


_TLS_CLIENT = None


def tls_client():
    """The TLS client context of the sanity checks and the idle-tls client: Python's defaults
    (TLS 1.2 and 1.3, OpenSSL's cipher order), no certificate check, no session resumption."""
    global _TLS_CLIENT
    if _TLS_CLIENT is None:
        _TLS_CLIENT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _TLS_CLIENT.check_hostname = False
        _TLS_CLIENT.verify_mode = ssl.CERT_NONE
    return _TLS_CLIENT


def connect(port, timeout, tls=False):
    """A connected blocking socket to 127.0.0.1:port; with tls, after a TLS handshake (SNI localhost)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if not tls:
        return s
    try:
        return tls_client().wrap_socket(s, server_hostname="localhost")
    except BaseException:
        s.close()
        raise


def parse_shim(err):
    """What the wrk TLS shim printed when wrk exited: {"handshakes", "resumed", "kinds": {"TLSv1.3
    TLS_AES_256_GCM_SHA384 x25519": count}}, or None when there is no such line."""
    m = re.search(r"^rw-tls-shim: handshakes (\d+) resumed (\d+) noresume (\d) \|(.*)$", err, re.M)
    if not m:
        return None
    kinds = {}
    for part in m.group(4).split(";"):
        what, _, count = part.strip().rpartition(" = ")
        if what:
            kinds[what] = int(count)
    return {"handshakes": int(m.group(1)), "resumed": int(m.group(2)), "noresume": m.group(3) == "1",
            "kinds": kinds}


def open_idle(port, n, batch=64, tls=False):
    """Opens n connections, one GET on each (at most `batch` in flight, so the proxy's upstream
    pool stays small), and returns the still-open sockets. tls: each after a full TLS handshake
    (one at a time, blocking)."""
    socks, failures, errors = [], 0, []
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for start in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", port))
                if tls:
                    s = tls_client().wrap_socket(s, server_hostname="localhost")
                s.sendall(req)
                group.append(s)
            except OSError as e:
                failures += 1
                errors.append(str(e))
                s.close()
        for s in group:
            try:
                status = read_response(s)[0]
                if status != 200:
                    raise ConnectionError(f"status {status}")
                socks.append(s)
            except (OSError, ValueError, IndexError) as e:
                failures += 1
                errors.append(str(e))
                s.close()
    return socks, failures, errors


# --------------------------------------------------------------------------------------------
# Report


def build_report(h, machine, args, scenarios, elapsed):
    L = []
    L.append("# ringway vs nginx vs HAProxy (loadtest/compare.sh)")
    L.append("")
    L.append("**Machine:** " + "; ".join(f"{k} {v}" for k, v in machine.items()))
    L.append("")
    L.append(f"**Run:** `{' '.join(['loadtest/compare.sh'] + sys.argv[1:]).replace(' --workdir ' + h.workdir, '')}` "
             f"— {args.rounds} measured round(s) of {args.duration} s per proxy after a {args.warmup} s warm-up "
             f"round, proxies taking turns (order rotates per round); proxy alone on CPU {args.proxy_cpu}, "
             f"origin nginx and load generator on CPU {args.load_cpu}; whole run {elapsed / 60:.1f} min. "
             f"Quiet check: {h.quiet_line}. Open-file limit {h.nofile}.")
    if h.busy_samples:
        noisy = [b for b in h.busy_samples if b > 20.0]
        L.append("")
        L.append(f"**Background load:** in the 0.3 s pause before each measured run the machine was "
                 f"{statistics.median(h.busy_samples):.0f}% busy (median), {max(h.busy_samples):.0f}% at most"
                 + (f"; **{len(noisy)} of {len(h.busy_samples)} runs started with the machine over 20% busy"
                    " (other work): treat the spread with care**." if noisy else "."))
    if args.dead_upstream:
        L.append("")
        L.append(f"**Self-test:** `--dead-upstream {args.dead_upstream}`: that proxy was pointed at a port "
                 "where nothing listens, so it must show failures.")
    if h.notes or h.skipped:
        L.append("")
        for n in h.notes:
            L.append("- " + n)
        for s, why in h.skipped.items():
            L.append(f"- **{s}: SKIPPED**, {why}")
    L.append("")

    wrk_rows = [s for s in scenarios if (s in WRK_SCENARIOS or s in ("autocannon", "failover")) and s not in h.skipped]
    if wrk_rows:
        L.append("## Throughput, latency, cost")
        L.append("")
        L.append("Median of the measured rounds (min – max in the next column). CPU = the proxy's user+system "
                 "time over the run ÷ requests (nginx: its worker). Peak RSS = VmHWM (nginx: its worker). "
                 "Failures = non-2xx/3xx responses + socket errors, summed over all rounds. "
                 f"Other work = the worst round's share of the proxy's CPU ({args.proxy_cpu}) and of the load "
                 f"CPU ({args.load_cpu}) that went to anything but the proxy, resp. wrk + origin + this driver "
                 f"(busy and steal time from /proc/stat minus their own CPU time); over {NOISY_PCT:.0f}% "
                 "(bold) that round was disturbed by other work on the machine. "
                 f"Busy = how busy the proxy's CPU ({args.proxy_cpu}) and the load CPU ({args.load_cpu}) were "
                 "over the run (median): the one near 100% is the bottleneck. When the load CPU is the one "
                 "(wrk and the origin cannot go faster) and the proxy's is not, req/s measures the load "
                 "side more than the proxy, and compare CPU µs/req instead."
                 + (" `failover`: one run per proxy with origin #2 killed and restarted, req/s counts 2xx/3xx "
                    "responses only; see the Failover section." if "failover" in wrk_rows else "")
                 + (" `tls`, `tls-handshake`: wrk over TLS to each proxy's TLS listener (same certificate, "
                    "protocols and ciphers; see TLS below); in `tls-handshake` every request is a new "
                    "connection with a full handshake." if any(x in TLS_SCENARIOS for x in wrk_rows) else "")
                 + (" `websocket`: req/s = WebSocket messages/s (each a round trip: client → proxy → "
                    f"echo origin → proxy → client, {WS_MSG_SIZE} bytes each way), CPU µs per message, "
                    "p50/p99 = round trip, non-2xx = upgrades not answered 101, socket errors = the "
                    "generator's connect, early close, mismatched echo and lost echo counts; transfer/s —."
                    if "websocket" in wrk_rows else ""))
        L.append("")
        L.append("| scenario | proxy | req/s | req/s min – max | transfer/s | p50 | p99 | CPU µs/req | "
                 f"busy CPU {args.proxy_cpu} / CPU {args.load_cpu} | "
                 f"peak RSS | non-2xx | socket errors | other work CPU {args.proxy_cpu} / CPU {args.load_cpu} | status |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in wrk_rows:
            res = h.results.get(s, {})
            for name in PROXIES:
                runs = res.get(name)
                if runs is None:
                    continue
                label = LABEL[name] + (" (autocannon)" if s == "autocannon" else "")
                if not runs:
                    L.append(f"| {s} | {label} | — | — | — | — | — | — | — | — | — | — | — | FAIL: no run |")
                    continue
                rps = [r["rps"] for r in runs]
                nonok = sum(r["non2xx"] or 0 for r in runs)
                sock = sum(sum(r["sock"].values()) for r in runs)
                hwm = max((r["hwm"] for r in runs if r["hwm"] is not None), default=None)
                bad = any(r["problems"] for r in runs)
                L.append(f"| {s} | {label} | {fmt_num(median(rps))} | {spread(rps, fmt_num)} | "
                         f"{fmt_bytes(median([r['bps'] for r in runs]))}/s | "
                         f"{fmt_ms(median([r['p50'] for r in runs]))} | {fmt_ms(median([r['p99'] for r in runs]))} | "
                         f"{fmt_num(median([r['cpu_us'] for r in runs]), 1)} | "
                         f"{fmt_pct(median([r.get('busy') for r in runs]))} / "
                         f"{fmt_pct(median([r.get('busy_load') for r in runs]))} | {fmt_bytes(hwm)} | {nonok:,} | "
                         f"{sock:,} | {fmt_noise([r.get('foreign') for r in runs])} / "
                         f"{fmt_noise([r.get('foreign_load') for r in runs])} | "
                         f"{'**FAIL**' if bad else ('errors: see Failover' if nonok + sock else 'ok')} |")
        L.append("")

    if "idle" in scenarios and h.idle:
        L.append("## Idle connections")
        L.append("")
        L.append(f"{args.idle_conns:,} client connections per proxy, each sent one `GET /` (answered 200) and "
                 "then left open and idle (a fresh proxy per round); RSS (VmRSS; nginx: its worker) read "
                 "before and 1 s after. bytes/conn = (after − before) ÷ connections still open. "
                 "Afterwards a sample of 1 % must still answer a second request.")
        L.append("")
        L.extend(idle_table(h.idle))

    if "idle-tls" in scenarios and h.idle_tls:
        L.append("## Idle TLS connections")
        L.append("")
        L.append(f"As above, to each proxy's TLS listener: {args.idle_tls_conns:,} client connections per proxy, "
                 "each a full TLS handshake (Python's `ssl`, no resumption, no certificate check), one "
                 "`GET /` (answered 200), then left open and idle; RSS read before and 1 s after. The warm-up "
                 "is 50 requests over 10 TLS connections. What each proxy keeps per TLS session (buffers, "
                 "keys) is in the figure; session caches are bounded (ringway: 256 sessions; nginx: a 10 MiB "
                 "shared zone, in RSS as far as it is touched; HAProxy: 20,000 entries in a block allocated "
                 "at start), so they weigh little per connection here.")
        L.append("")
        L.extend(idle_table(h.idle_tls))

    if "failover" in scenarios and h.failover:
        L.extend(failover_section(h, args))

    rows = ratio_rows(h, scenarios)
    if rows:
        L.append("## Ratios: ringway ÷ nginx, ringway ÷ HAProxy")
        L.append("")
        L.append("Throughput (req/s, or bytes/s for `large`, messages/s for `websocket`): above 1.0 = ringway faster. "
                 "CPU µs/request (per message for `websocket`) and idle bytes/connection: below 1.0 = ringway cheaper. "
                 "failover: 2xx/3xx responses per second over the whole run (`req/s (2xx)`) and while origin #2 was down "
                 "(given even when a side had errors, which the Failover section lists). "
                 "— = no valid ratio (a side had failures in that scenario). Disturbed runs = measured runs "
                 f"of that scenario in which other work took over {NOISY_PCT:.0f}% of either CPU.")
        L.append("")
        L.append("| scenario | metric | ringway/nginx | ringway/HAProxy | disturbed runs |")
        L.append("|---|---|---:|---:|---:|")
        for s, metric, rn, rh, _ in rows:
            runs = [r for n in PROXIES for r in h.results.get(s, {}).get(n, [])]
            dist = sum(1 for r in runs if max(r.get("foreign") or 0, r.get("foreign_load") or 0) > NOISY_PCT)
            d = f"**{dist} of {len(runs)}**" if dist else (f"0 of {len(runs)}" if runs else "—")
            L.append(f"| {s} | {metric} | {fmt_ratio(rn)} | {fmt_ratio(rh)} | {d} |")
        L.append("")
        L.extend(cache_hit_targets(h, rows))
        L.extend(tls_section(h, rows, scenarios))

    if h.echo or h.echo_tls:
        L.append("## What the origin saw (one request to /echo through each proxy)")
        L.append("")
        for name in PROXIES:
            if name in h.echo:
                L.append(f"- {LABEL[name]}: `{h.echo[name]}`")
        for name in PROXIES:
            if name in h.echo_tls:
                L.append(f"- {LABEL[name]} (TLS listener): `{h.echo_tls[name]}`")
        L.append("")

    digest = h.log_digest()
    L.append("## What the proxies logged")
    L.append("")
    if digest:
        L.append("Warnings and errors from the proxies' own logs over the whole run (numbers folded to N).")
        L.append("")
        for name in PROXIES:
            for c, msg in digest.get(name, [])[:6]:
                L.append(f"- {LABEL[name]}: {c:,} × `{msg[:220]}`")
    else:
        L.append("Nothing beyond start-up lines.")
    L.append("")

    L.append("## Failures")
    L.append("")
    if h.failures:
        for f in h.failures:
            L.append("- " + f.replace("\n", "\n  "))
    else:
        L.append("None: every response was 2xx/3xx, no socket errors, no proxy died.")
    L.append("")
    return "\n".join(L)


def idle_table(idle):
    """The idle and idle-tls tables: one row per proxy, medians of the rounds."""
    L = ["| proxy | connections | RSS before | RSS after | bytes/conn | bytes/conn min – max | peak RSS | status |",
         "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in PROXIES:
        runs = idle.get(name, [])
        if not runs:
            continue
        per = [r["per_conn"] for r in runs]
        bad = any(r["problems"] for r in runs)
        L.append(f"| {LABEL[name]} | {fmt_num(median([r['opened'] for r in runs]))} | "
                 f"{fmt_bytes(median([r['before'] for r in runs]))} | {fmt_bytes(median([r['after'] for r in runs]))} | "
                 f"{fmt_num(median(per))} | {spread(per, fmt_num)} | "
                 f"{fmt_bytes(max((r['hwm'] for r in runs if r['hwm']), default=None))} | "
                 f"{'**FAIL**' if bad else 'ok'} |")
    L.append("")
    return L


def target_rows(got, targets):
    """Target table rows: got[(scenario, metric, other)] = ratio; targets as TLS_TARGETS."""
    L = []
    for scen, metric, other, op, bound in targets:
        v = got.get((scen, metric, other))
        met = "— (no valid ratio)" if v is None else (
            "yes" if (v >= bound if op == ">=" else v <= bound) else "**no**")
        L.append(f"| {scen}: {metric} ringway ÷ {LABEL[other]} {op} {bound} | {fmt_ratio(v)} | {met} |")
    return L


def tls_section(h, rows, scenarios):
    """TLS: what every proxy and wrk negotiated (equal footing), and the TLS issue's targets."""
    tls_scen = [s for s in scenarios if s in TLS_SCENARIOS or s == "idle-tls"]
    if not tls_scen or not (h.tls_seen or any(s in h.results for s in TLS_SCENARIOS)):
        return []
    L = ["### TLS: what was negotiated, targets", "",
         "Every proxy serves the same certificate (ECDSA P-256, self-signed, made for this run) on a listener of "
         "its own (its port + 10) with the same lists: TLS 1.2 and 1.3; TLS 1.3 suites "
         f"`{TLS13_SUITES}`; TLS 1.2 ciphers `{TLS12_CIPHERS}`; groups X25519, P-256, P-384 (ringway: rustls' "
         "defaults with the ring provider, which these lists copy; nginx `ssl_protocols TLSv1.2 TLSv1.3`, "
         "`ssl_ciphers`, `ssl_conf_command Ciphersuites`, `ssl_ecdh_curve`; HAProxy `ssl-min-ver TLSv1.2`, "
         "`ciphers`, `ciphersuites`, `curves` on the `bind`). The client's order decides (rustls' default, "
         "nginx `ssl_prefer_server_ciphers off`, HAProxy `prefer-client-ciphers`). Session resumption is on "
         "everywhere, as each proxy has it by default (ringway: rustls' in-memory cache of 256 sessions, "
         "TLS 1.3 tickets that refer to it; nginx `ssl_session_cache shared:SSL:10m`, `ssl_session_tickets "
         "on`; HAProxy: its default 20,000-entry cache and tickets), but no client here resumes: wrk runs "
         "with `wrk_tls_shim.so` (LD_PRELOAD), which drops the session wrk would otherwise reuse on every "
         "reconnect, so every handshake is a full one, and counts what wrk negotiated. The origin stays "
         "plain HTTP.", ""]
    if h.tls_seen:
        L.append("What an OpenSSL 3 client with its defaults (`openssl s_client`, the library and defaults "
                 "wrk uses) negotiated with each TLS listener, once per proxy:")
        L.append("")
        for name in PROXIES:
            if name in h.tls_seen:
                L.append(f"- {LABEL[name]}: {h.tls_seen[name]}")
        L.append("")
    seen = []
    for s in TLS_SCENARIOS:
        for name in PROXIES:
            runs = [r for r in h.results.get(s, {}).get(name, []) if r.get("tls")]
            if not runs:
                continue
            kinds = {}
            for r in runs:
                for k, c in r["tls"]["kinds"].items():
                    kinds[k] = kinds.get(k, 0) + c
            hs = sum(r["tls"]["handshakes"] for r in runs)
            res = sum(r["tls"]["resumed"] for r in runs)
            seen.append(f"| {s} | {LABEL[name]} | {hs:,} | {'**' + format(res, ',') + '**' if res else 0} | "
                        + "; ".join(f"{k} ({c:,})" for k, c in kinds.items()) + " |")
    if seen:
        L.append("What wrk negotiated in the measured rounds (counted by the shim: successful `SSL_connect` "
                 "calls, and how many of them resumed a session; must be 0 in `tls-handshake`):")
        L.append("")
        L.append("| scenario | proxy | handshakes | resumed | protocol, cipher, group (handshakes) |")
        L.append("|---|---|---:|---:|---|")
        L.extend(seen)
        L.append("")
    elif any(s in h.results for s in TLS_SCENARIOS):
        L.append(f"wrk ran without the shim ({h.shim_error}): no count of its handshakes.")
        L.append("")
    got = {(s, metric, "nginx"): rn for s, metric, rn, _, _ in rows if s in TLS_SCENARIOS}
    got.update({(s, metric, "haproxy"): rh for s, metric, _, rh, _ in rows if s in TLS_SCENARIOS})
    targets = [t for t in TLS_TARGETS if t[0] in h.results]
    if targets:
        L.append("Targets of the TLS issue:")
        L.append("")
        L.append("| target | ringway ÷ other | met |")
        L.append("|---|---:|---|")
        L.extend(target_rows(got, targets))
        L.append("")
    return L


def cache_hit_targets(h, rows):
    """The cache-hit scenario's ratios against the targets the cache issue set."""
    got = {(metric, "nginx"): rn for s, metric, rn, _, _ in rows if s == "cache-hit"}
    got.update({(metric, "haproxy"): rh for s, metric, _, rh, _ in rows if s == "cache-hit"})
    if not got:
        return []
    L = ["### cache-hit targets", "",
         "The check before the runs (two GETs through each proxy, the second must be a hit): "
         + "; ".join(f"{LABEL[n]} {h.cache_seen[n]}" for n in PROXIES if n in h.cache_seen) + ".", "",
         "| target | ringway ÷ other | met |", "|---|---:|---|"]
    for metric, other, op, bound in CACHE_HIT_TARGETS:
        v = got.get((metric, other))
        met = "— (no valid ratio)" if v is None else (
            "yes" if (v >= bound if op == ">=" else v <= bound) else "**no**")
        L.append(f"| {metric} ringway ÷ {LABEL[other]} {op} {bound} | {fmt_ratio(v)} | {met} |")
    L.append("")
    return L


def self_ok(r):
    """A failover run whose numbers stand: the proxy lived and the timeline is there."""
    return not any("DIED" in p or "no per-slice" in p or "0 requests" in p or "wrk exit" in p
                   for p in r["problems"])


def failover_section(h, args):
    fo = h.failover
    any_r = next(iter(fo.values()))
    dur, kill_at, restart_at = any_r["duration"], any_r["kill_at"], any_r["restart_at"]
    n = len(any_r["rps_slices"])
    p = h.port
    L = ["## Failover: origin #2 killed and restarted under load", ""]
    rw = fo.get("ringway")
    if rw:
        errs = rw["non2xx"] + sum(rw["sock"].values())
        if errs:
            L.append(f"**ringway returned {errs:,} errors to the client during failover ({rw['non2xx']:,} non-2xx/3xx, "
                     "socket errors " + ", ".join(f"{k} {v}" for k, v in rw["sock"].items()) +
                     "). It must be 0: a bug for the core team, see the per-slice table and the logged state "
                     "changes below.**")
        else:
            L.append("**ringway: 0 errors** (no non-2xx/3xx response, no socket error) over the whole run.")
        L.append("")
    L.append(f"Three origin nginx (1 worker each, CPU {args.load_cpu}) on ports {p['origin']}, {p['origin2']}, "
             f"{p['origin3']}; per proxy, with fresh origins and a fresh proxy, a {args.warmup} s warm-up and then "
             f"`wrk -t1 -c64 -d{dur}s` `GET /` (12-byte body, keep-alive). At {kill_at:g} s the harness SIGKILLs "
             f"origin #2's nginx master and worker together (in-flight requests are reset, its port refuses), at "
             f"{restart_at:g} s it starts it again on the same port. req/s counts 2xx/3xx responses per "
             f"{FO_SLICE:g} s slice (a Lua `response()` hook in wrk, on the same monotonic clock as the kill); "
             "errors are wrk's non-2xx/3xx responses and socket errors over the whole run. Requests origin #2 "
             "served come from its `stub_status` counter, read at every slice boundary, minus the health checks "
             "it logged and the harness's own reads.")
    L.append("")
    L.append("Configs: **ringway** `[upstreams.up.health] path = \"/health\" interval = \"200ms\" timeout = \"200ms\" "
             "fall = 2 rise = 2`, passive checks, retries and back-off at their defaults (`max_fails = 1`, `retries = 2`, "
             "`retry_on = [\"connect\", \"timeout\", \"reset\"]`, `backoff = [\"1s\", \"5s\", \"30s\"]`). "
             "**HAProxy** `option httpchk GET /health`, `check inter 200ms fall 2 rise 2`, `retries 2`, "
             "`option redispatch` (the last retry goes to another server), `retry-on conn-failure empty-response "
             "response-timeout` (added so that, as in ringway, a request whose connection died before the response "
             "is retried; HAProxy's default retries connection failures only). **nginx: no active health checks "
             "(nginx open source has none)**, only passive ones: `max_fails=1 fail_timeout=2s` per server and "
             "`proxy_next_upstream error timeout http_502`, `proxy_next_upstream_tries 3`; it finds out that a "
             "server is down from failed requests (which it retries) and tries it again every 2 s.")
    L.append("")
    L.append(f"Req/s before the kill = mean of the slices {FO_SLICE:g}–{kill_at:g} s ± their standard deviation "
             "(how much single slices jitter with nothing happening: a dip within that is noise). "
             f"Back within 10 % = time from the event to the first slice from which the mean of two slices (1 s) "
             f"reaches {FO_RECOVERED:.0%} of that level; "
             f"`< {FO_SLICE:g} s` = already the first slice after the event (no dip visible at this resolution). "
             f"With origins and wrk sharing CPU {args.load_cpu}, the two surviving origins can absorb the load, "
             "so a healthy failover shows little or no dip: what to look for is errors, a slice that drops, "
             "and whether origin #2 gets its share back after the restart. Share = origin #2's part of what the "
             "three origins served for the proxy after the restart (a third = fully back in the rotation); "
             f"first within = the end of the first {FO_SLICE:g} s slice after the restart in which it served any. "
             "Health checks/s = the checks each origin answered (#1 / #2 / #3; origin #2 none while down). "
             "Latency = wrk's p99 and maximum over the whole run.")
    L.append("")
    L.append("| proxy | req/s before kill | min slice while #2 down | req/s while down | back within 10 % after kill "
             "| back after restart | req/s after restart | non-2xx | socket errors | p99 / max latency "
             "| origin #2 after restart: requests (share, first within) | health checks/s per origin | status |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in PROXIES:
        r = fo.get(name)
        if not r:
            continue
        se = sum(r["sock"].values())
        sock = ", ".join(f"{k} {v}" for k, v in r["sock"].items() if v) or "0"
        if se:
            sock = f"**{sock}**"
        non = f"**{r['non2xx']:,}**" if r["non2xx"] else "0"
        first = "—" if r["o2_first"] is None else f"≤ {r['o2_first'] + FO_SLICE:g} s"
        share = r["o2_after"] / sum(r["shares_after"]) if sum(r["shares_after"]) else 0
        checks = " / ".join(f"{r['checks_per_s'].get(i, 0):.1f}" for i in range(3))
        status = "**FAIL**" if r["problems"] else ("errors" if r["non2xx"] + se else "ok")
        cv = f" ± {r['pre_cv']:.0%}" if r.get("pre_cv") is not None else ""
        L.append(f"| {LABEL[name]} | {fmt_num(r['pre'])}{cv} | {fmt_num(r['min_down'])} at {fmt_num(r['min_down_at'], 1)} s "
                 f"| {fmt_num(r['down'])} | {fmt_rec(r['rec_kill'], restart_at - kill_at)} "
                 f"| {fmt_rec(r['rec_restart'], dur - restart_at)} | {fmt_num(r['after'])} | {non} | {sock} "
                 f"| {fmt_ms(r['p99'])} / {fmt_ms(r['max_lat'])} | {fmt_num(r['o2_after'])} ({share:.0%}, {first}) | {checks} "
                 f"| {status} |")
    L.append("")
    L.append(f"Timeline, one character per {FO_SLICE:g} s slice, height = req/s relative to that proxy's level "
             f"before the kill (█ = at or above it, ▄ = half, `_` = nothing), `!` = a slice with non-2xx responses, "
             f"`┃` = kill at {kill_at:g} s and restart at {restart_at:g} s:")
    L.append("")
    L.append("```text")
    for name in PROXIES:
        r = fo.get(name)
        if not r:
            continue
        line = []
        for i, v in enumerate(r["rps_slices"]):
            if i in (r["kill_k"], r["restart_k"]):
                line.append("┃")
            if r["bad_slices"][i]:
                line.append("!")
            else:
                line.append(sparkline([v], r["pre"], set()))
        L.append(f"{LABEL[name]:8} {''.join(line)}")
    L.append("```")
    L.append("")
    L.append("Per slice: responses/s (2xx/3xx) through each proxy and, after →, the requests/s origin #2 served; "
             "non-2xx responses in that slice in brackets.")
    L.append("")
    names = [x for x in PROXIES if x in fo]
    L.append("| t (s) | origin #2 | " + " | ".join(f"{LABEL[x]} req/s | → #2" for x in names) + " |")
    L.append("|---:|---|" + "---:|---:|" * len(names))
    for i in range(n):
        t = i * FO_SLICE
        phase = "up" if t < kill_at else ("**down**" if t < restart_at else "restarted")
        cells = []
        for x in names:
            r = fo[x]
            bad = r["bad_slices"][i]
            cells.append(f"{fmt_num(r['rps_slices'][i])}" + (f" (**{bad / FO_SLICE:,.0f} err/s**)" if bad else ""))
            cells.append(fmt_num(r["o2_slices"][i]))
        L.append(f"| {t:.1f} | {phase} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("What the proxies logged during the run, in order of first appearance (time = the slice boundary "
             "by which the line had appeared; timestamps, pids and connection numbers stripped, repeats folded "
             "with their count and the time of the last one):")
    L.append("")
    for name in PROXIES:
        r = fo.get(name)
        if not r:
            continue
        folded = {}  # text -> [first t, last t, count], in order of first appearance
        for t, line in r["log"]:
            line = re.sub(r"^\d{4}-\d\d-\d\dT\S+ ", "", line)  # ringway
            line = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: (\*\d+ )?", r"\1 ", line)  # nginx
            line = re.sub(r"^\[(\w+)\]\s+\(\d+\) : ", r"[\1] ", line)  # HAProxy
            f = folded.setdefault(line, [t, t, 0])
            f[1], f[2] = t, f[2] + 1
        if not folded:
            L.append(f"- {LABEL[name]}: nothing")
            continue
        for line, (t1, t2, c) in list(folded.items())[:10]:
            when = f"by {t1:.1f} s" if c == 1 else (f"{c} ×, by {t1:.1f} s" if t1 == t2 else
                                                     f"{c} ×, by {t1:.1f} s … {t2:.1f} s")
            L.append(f"- {LABEL[name]}, {when}: `{line[:260]}`")
        if len(folded) > 10:
            L.append(f"- {LABEL[name]}: … {len(folded) - 10} more distinct lines")
    L.append("")
    return L


def fmt_noise(xs):
    """The worst run's share of the proxy CPU taken by other work, bold when it is noisy."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    worst = max(xs)
    return f"**{worst:.0f}%**" if worst > NOISY_PCT else f"{worst:.0f}%"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}"


def ratio_rows(h, scenarios):
    """(scenario, metric, ringway/nginx, ringway/HAProxy, kind) where kind is 'thr' or 'cost'."""
    rows = []
    for s in scenarios:
        if s in WRK_SCENARIOS and s in h.results:
            res = h.results[s]
            key = WRK_SCENARIOS[s][3]
            # A proxy with failures in this scenario gets no ratio: its numbers are not comparable.
            ok = {n: bool(res.get(n)) and not any(r["problems"] for r in res[n]) for n in PROXIES}
            med = {n: median([r[key] for r in res.get(n, [])]) if ok[n] else None for n in PROXIES}
            cpu = {n: median([r["cpu_us"] for r in res.get(n, [])]) if ok[n] else None for n in PROXIES}
            metric = "bytes/s" if key == "bps" else ("msg/s" if s == "websocket" else "req/s")
            rows.append((s, metric, ratio(med["ringway"], med["nginx"]), ratio(med["ringway"], med["haproxy"]),
                         "thr"))
            rows.append((s, "CPU µs/msg" if s == "websocket" else "CPU µs/req", ratio(cpu["ringway"], cpu["nginx"]),
                         ratio(cpu["ringway"], cpu["haproxy"]), "cost"))
        elif s == "failover" and h.failover:
            # 2xx/3xx responses only, so errors do not inflate a side; a broken run (died, no
            # timeline) gives no ratio.
            ok = {n: n in h.failover and h.failover[n]["requests"] and self_ok(h.failover[n]) for n in PROXIES}
            for key, metric in (("rps", "req/s (2xx)"), ("down", "req/s, #2 down")):
                v = {n: h.failover[n][key] if ok[n] else None for n in PROXIES}
                rows.append(("failover", metric, ratio(v["ringway"], v["nginx"]), ratio(v["ringway"], v["haproxy"]),
                             "thr"))
        elif (s == "idle" and h.idle) or (s == "idle-tls" and h.idle_tls):
            idle = h.idle if s == "idle" else h.idle_tls
            per = {n: median([r["per_conn"] for r in idle.get(n, [])])
                   if idle.get(n) and not any(r["problems"] for r in idle[n]) else None for n in PROXIES}
            rows.append((s, "bytes/idle conn" if s == "idle" else "bytes/idle TLS conn", ratio(per["ringway"], per["nginx"]),
                         ratio(per["ringway"], per["haproxy"]), "cost"))
    return rows


def disturbed_scenarios(h):
    """Scenarios with at least one measured run in which other work took over NOISY_PCT of a CPU."""
    return {s for s, res in h.results.items() for runs in res.values() for r in runs
            if max(r.get("foreign") or 0, r.get("foreign_load") or 0) > NOISY_PCT}


def svg_chart(rows, title_note, disturbed=frozenset()):
    """Two panels of grouped bars, hand-written SVG: throughput ratios (higher = ringway better)
    and cost ratios (lower = ringway better). The axis is logarithmic (base 2), so 2x and 0.5x
    are the same distance from the 1.0 line the bars start from."""
    import math
    panels = [("Throughput: ringway ÷ other (above 1.0 = ringway faster)", [r for r in rows if r[4] == "thr"]),
              ("Cost: ringway ÷ other (below 1.0 = ringway cheaper)", [r for r in rows if r[4] == "cost"])]
    panels = [p for p in panels if p[1]]
    colors = {"nginx": "#2a7ab9", "haproxy": "#e08a1e"}
    width = 940
    ph = 300  # panel height
    top = 70
    left, right = 60, 90
    height = top + len(panels) * (ph + 70) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">'
           f'ringway relative to nginx and HAProxy</text>',
           f'<text x="{width / 2}" y="44" text-anchor="middle" fill="#555">{esc(title_note)}</text>',
           f'<rect x="{width - 300}" y="52" width="12" height="12" fill="{colors["nginx"]}"/>'
           f'<text x="{width - 283}" y="62">ringway ÷ nginx</text>',
           f'<rect x="{width - 170}" y="52" width="12" height="12" fill="{colors["haproxy"]}"/>'
           f'<text x="{width - 153}" y="62">ringway ÷ HAProxy</text>']
    y0 = top
    for title, prow in panels:
        vals = [v for r in prow for v in (r[2], r[3]) if v is not None and v > 0]
        lo = min([-1.0] + [math.floor(math.log2(v) * 2) / 2 for v in vals])
        hi = max([1.0] + [math.ceil(math.log2(v) * 2) / 2 for v in vals])
        lo, hi = lo - 0.25, hi + 0.25  # room for the value labels
        plot_top, plot_bottom = y0 + 30, y0 + ph
        scale = (plot_bottom - plot_top) / (hi - lo)

        def y(v):
            return plot_bottom - (math.log2(v) - lo) * scale

        out.append(f'<text x="{left}" y="{y0 + 16}" font-size="14" font-weight="bold">{esc(title)}</text>')
        ticks = [2.0 ** e for e in range(-8, 9)]
        if hi - lo <= 3:
            ticks += [0.75, 1.25, 1.5, 3.0]
        for t in sorted(ticks):
            if not lo <= math.log2(t) <= hi:
                continue
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="#555">{t:g}</text>')
        out.append(f'<line x1="{left}" x2="{left}" y1="{plot_top}" y2="{plot_bottom}" stroke="#333"/>')
        out.append(f'<text x="16" y="{(plot_top + plot_bottom) / 2:.0f}" text-anchor="middle" fill="#555" '
                   f'transform="rotate(-90 16 {(plot_top + plot_bottom) / 2:.0f})">ratio (log scale)</text>')
        n = len(prow)
        slot = (width - left - right) / max(n, 1)
        bw = min(40, slot * 0.35)
        one = y(1.0)
        for i, (s, metric, rn, rh, _) in enumerate(prow):
            cx = left + slot * (i + 0.5)
            for j, (v, key) in enumerate(((rn, "nginx"), (rh, "haproxy"))):
                x = cx - bw + j * bw
                if v is None or v <= 0:
                    out.append(f'<text x="{x + bw / 2:.1f}" y="{one - 4:.1f}" text-anchor="middle" '
                               f'fill="#999">n/a</text>')
                    continue
                yv = y(v)
                y_top, h = min(yv, one), max(abs(one - yv), 1.0)
                out.append(f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                           f'fill="{colors[key]}"><title>{esc(s)} {esc(metric)} ringway/{key}: {v:.3f}'
                           f'</title></rect>')
                ty = yv - 4 if v >= 1 else yv + 13
                out.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{ty:.1f}" text-anchor="middle" '
                           f'font-size="11">{v:.2f}</text>')
            mark = " *" if s in disturbed else ""
            out.append(f'<text x="{cx:.1f}" y="{plot_bottom + 16}" text-anchor="middle">{esc(s)}{mark}</text>')
            out.append(f'<text x="{cx:.1f}" y="{plot_bottom + 30}" text-anchor="middle" fill="#666" '
                       f'font-size="10">{esc(metric)}</text>')
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{plot_bottom}" y2="{plot_bottom}" stroke="#333"/>')
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{one:.1f}" y2="{one:.1f}" '
                   f'stroke="#c00" stroke-width="1.5" stroke-dasharray="6,4"/>')
        out.append(f'<text x="{width - right + 6}" y="{one + 4:.1f}" fill="#c00">1.0 = parity</text>')
        y0 += ph + 70
    if disturbed:
        out.append(f'<text x="{left}" y="{height - 8}" fill="#555">* other work on the machine disturbed some '
                   f'runs of this scenario (see the table): read with care</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------
# Main


def expand(names):
    out = []
    for n in names or ALL_SCENARIOS:
        for m in SCENARIO_ALIASES.get(n, [n]):
            if m not in out:
                out.append(m)
    return out


def main():
    ap = argparse.ArgumentParser(
        prog="compare.sh",
        description="Compare ringway, nginx and HAProxy as reverse proxies on this machine.",
        epilog="Scenarios: " + ", ".join(ALL_SCENARIOS) + " (lowconc = lowconc-1 + lowconc-8). Default: all "
               "of these. Opt-in: upload (POST of a 1 MiB body, streamed). failover: origin #2 of three killed "
               "and restarted under load, per-0.5 s timeline. tls, tls-handshake, idle-tls: over TLS to a second "
               "listener on each proxy (port + 10). websocket: node echo origin on base port + 6 (skipped if "
               "loadtest/ws/node_modules is missing).")
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured round (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per proxy (default 3)")
    ap.add_argument("--warmup", type=int, default=None, help="seconds of the warm-up round (default 2, "
                                                              "or --duration if shorter)")
    ap.add_argument("--autocannon-duration", type=int, default=None,
                    help="seconds of the autocannon run (default 2 x --duration = 10)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="connections in the idle scenario")
    ap.add_argument("--idle-tls-conns", type=int, default=5000,
                    help="connections in the idle-tls scenario (default 5000: each is a full handshake by a "
                         "Python client, about 1.5 ms)")
    ap.add_argument("--failover-duration", type=int, default=None,
                    help="seconds of load per proxy in the failover scenario (default 3 x --duration = 15, "
                         "at least 6); origin #2 is killed at 1/3 and restarted at 2/3 of it")
    ap.add_argument("--base-port", type=int, default=18080,
                    help="origin port; proxies use +1 (ringway), +2 (nginx), +3 (HAProxy), their TLS listeners "
                         "+11, +12, +13; the failover scenario's origins #2 and #3 +4 and +5; the websocket "
                         "echo origin +6; +9 stays closed")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--haproxy-maxconn", type=int, default=20000)
    ap.add_argument("--ringway-bin", default=None,
                    help="measure this ringway binary instead of target/release/ringway (e.g. "
                         "target/profiling/ringway for perf); no staleness check")
    ap.add_argument("--no-build", action="store_true",
                    help="do not rebuild a stale target/release/ringway (the table then says STALE)")
    ap.add_argument("--dead-upstream", choices=PROXIES, default=None,
                    help="self-test: point this proxy at a closed port, to see failures reported")
    ap.add_argument("--out", default=os.path.join(RESULTS, "latest"),
                    help="results path without extension (default loadtest/results/latest)")
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    scenarios = expand(args.scenarios)
    known = list(WRK_SCENARIOS) + ["idle", "idle-tls", "autocannon", "failover"]
    bad = [s for s in scenarios if s not in known]
    if bad:
        ap.error(f"unknown scenario(s): {', '.join(bad)}; known: {', '.join(ALL_SCENARIOS)}, lowconc-1, "
                 "lowconc-8, upload")
    if args.duration < 1 or args.rounds < 1:
        ap.error("--duration and --rounds must be at least 1")
    if args.warmup is None:
        args.warmup = min(2, args.duration)
    if args.failover_duration is None:
        args.failover_duration = max(6, 3 * args.duration)
    if args.failover_duration < 6:
        ap.error("--failover-duration must be at least 6 (seconds)")

    # Open-file limit: as high as allowed (compare.sh already tried `ulimit -n 65536`).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass

    own_workdir = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="ringway-loadtest.")
    h = Harness(args, workdir)

    stopping = {"n": 0}

    def on_signal(signum, _frame):
        stopping["n"] += 1
        if stopping["n"] == 1:
            raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.time()
    rc = 0
    try:
        h.precheck(scenarios)
        # The driver itself (and the idle client) stays off the proxy's CPU.
        try:
            os.sched_setaffinity(0, {args.load_cpu})
        except OSError:
            pass
        machine = h.machine()
        h.write_static()
        h.write_tls(scenarios)
        log(f"ringway load test: {', '.join(scenarios)}; {args.rounds} x {args.duration}s rounds "
            f"(+{args.warmup}s warm-up); temp dir {workdir}")
        log(f"quiet check: {h.quiet_line}")
        for s in scenarios:
            if s in h.skipped:
                log(f"\n== {s}: SKIPPED: {h.skipped[s]}")
            elif s in WRK_SCENARIOS:
                h.run_wrk_scenario(s)
            elif s == "idle":
                h.run_idle()
            elif s == "idle-tls":
                h.run_idle(tls=True)
            elif s == "autocannon":
                h.run_autocannon()
            elif s == "failover":
                h.run_failover()
        elapsed = time.time() - started
        report = build_report(h, machine, args, scenarios, elapsed)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(report)
        rows = ratio_rows(h, scenarios)
        note = f"{machine['date']}, {args.rounds} x {args.duration} s rounds, medians; " \
               f"ringway {machine['ringway'].split(' ')[0]}, nginx {machine['nginx']}, HAProxy {machine['haproxy']}"
        with open(args.out + ".svg", "w") as f:
            f.write(svg_chart(rows, note, disturbed_scenarios(h)))
        print("\n" + report)
        log(f"written: {os.path.relpath(args.out, os.getcwd())}.md and .svg ({elapsed / 60:.1f} min)")
        if h.failures:
            log(f"{len(h.failures)} failure(s) detected: see the Failures section (exit code 1)")
            rc = 1
    except HarnessError as e:
        print(f"\ncompare: {e}", file=sys.stderr, flush=True)
        rc = 2
    except KeyboardInterrupt:
        print("\ncompare: interrupted, stopping everything it started", file=sys.stderr, flush=True)
        rc = 130
    finally:
        # Further signals must not interrupt the clean-up.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        h.procs.stop_all()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
