#!/usr/bin/env python3
"""Interleaved A/B of two ringway binaries: does a change on the request path cost anything?

    loadtest/ab.sh --a /tmp/rw-old/ringway --b target/release/ringway            # small, 10 pairs
    loadtest/ab.sh --a OLD --b NEW --scenario post --rounds 10 --duration 3
    loadtest/ab.sh --a BIN --b BIN --b-extra '[admin]
    listen = "127.0.0.1:0"'                 # one binary, a config feature off (A) and on (B)

Same topology and origin as compare.py (it reuses compare.py's harness): the origin nginx and
wrk on the load CPU, each ringway (1 worker) on the proxy CPU, both running side by side, only
one under load at a time. After a warm-up of each, the rounds alternate A, B, B, A, A, B, ...
so drift on this shared machine hits both equally; each round is a pair. The verdict is the
median of the paired ratios B/A for CPU µs per request (the number the load generator cannot
bound) and for requests/s, with the min-max of the ratios as the noise band.

Python 3 standard library only. Run it through loadtest/ab.sh, which cleans up after a crash.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the harness this reuses)


class AB(compare.Harness):
    """The compare.py harness with two ringway instances, `a` and `b`, as its proxies."""

    def __init__(self, args, workdir, binaries, extra):
        super().__init__(args, workdir)
        base = args.base_port
        self.port.update({"a": base + 6, "b": base + 7})
        self.binaries = binaries
        self.extra = extra

    def start_ringway(self, name):
        d = os.path.join(self.workdir, f"ringway-{name}")
        os.makedirs(d, exist_ok=True)
        _, conf = compare.ringway_config(self.workdir, self.port[name], [self.port["origin"]])
        conf += self.extra[name] + "\n"
        path = os.path.join(d, "ringway.toml")
        with open(path, "w") as f:
            f.write(conf)
        argv = [self.bin["taskset"], "-c", str(self.args.proxy_cpu), self.binaries[name], "run", "-c", path,
                "--workers", "1"]
        logpath = os.path.join(d, "stdout.log")
        p = self.procs.start(f"ringway-{name}", argv, logpath)
        compare.wait_listening(self.port[name], p, logpath, f"ringway {name}")
        compare.log(f"   started ringway {name.upper()} ({self.binaries[name]}) on 127.0.0.1:{self.port[name]}, "
                    f"pid {p.pid}")
        self.running[name] = p
        self.logpath = getattr(self, "logpath", {})
        self.logpath[name] = logpath


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="the baseline binary (A)")
    ap.add_argument("--b", required=True, help="the changed binary (B)")
    ap.add_argument("--scenario", default="small", choices=sorted(compare.WRK_SCENARIOS))
    ap.add_argument("--rounds", type=int, default=10, help="measured pairs (default 10)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per measured run (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of each warm-up run (default 2)")
    ap.add_argument("--a-extra", default="", help="TOML appended to A's config (e.g. an [admin] table)")
    ap.add_argument("--b-extra", default="", help="TOML appended to B's config")
    ap.add_argument("--base-port", type=int, default=18080)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--workdir", required=True, help=argparse.SUPPRESS)
    args = ap.parse_args()
    binaries = {}
    for name in ("a", "b"):
        path = os.path.abspath(getattr(args, name))
        if not os.access(path, os.X_OK):
            sys.exit(f"ab: --{name} {path}: not an executable file")
        binaries[name] = path
    # compare.Harness reads these; they do not matter here.
    args.ringway_bin, args.no_build, args.dead_upstream, args.haproxy_maxconn = None, True, None, 20000
    h = AB(args, args.workdir, binaries, {"a": args.a_extra, "b": args.b_extra})
    for tool in ("nginx", "wrk", "taskset"):
        h.bin[tool] = compare.which(tool)
        if not h.bin[tool]:
            sys.exit(f"ab: {tool} not found: run loadtest/setup.sh")
    h.write_static()
    pairs = []
    try:
        h.start_origin()
        for name in ("a", "b"):
            h.start_ringway(name)
            bad = h.sanity(name)
            if bad:
                sys.exit(f"ab: sanity check through ringway {name.upper()}: {bad}")
        for name in ("a", "b"):
            h.wrk(args.scenario, name, args.warmup)
        for rnd in range(args.rounds):
            order = ("a", "b") if rnd % 2 == 0 else ("b", "a")
            got = {}
            for name in order:
                h.between_rounds()
                r = h.wrk(args.scenario, name, args.duration)
                if r["problems"]:
                    sys.exit(f"ab: round {rnd + 1} ringway {name.upper()}: " + "; ".join(r["problems"]))
                got[name] = r
            pairs.append(got)
            ra, rb = got["a"], got["b"]
            compare.log(f"   pair {rnd + 1:2}/{args.rounds}  A {compare.fmt_num(ra['rps']):>8} req/s "
                        f"{compare.fmt_num(ra['cpu_us'], 1):>6} µs/req   B {compare.fmt_num(rb['rps']):>8} req/s "
                        f"{compare.fmt_num(rb['cpu_us'], 1):>6} µs/req   B/A cpu {rb['cpu_us'] / ra['cpu_us']:.3f} "
                        f"busy {compare.fmt_pct(ra.get('busy'))}/{compare.fmt_pct(rb.get('busy'))}")
    finally:
        h.stop_scenario()
        h.procs.stop_all()
    cpu = [p["b"]["cpu_us"] / p["a"]["cpu_us"] for p in pairs]
    rps = [p["b"]["rps"] / p["a"]["rps"] for p in pairs]
    med = statistics.median
    print(f"\n{args.scenario}, {len(pairs)} interleaved pairs of {args.duration}s, B = {binaries['b']}, "
          f"A = {binaries['a']}")
    for name in ("a", "b"):
        if h.extra[name]:
            print(f"{name.upper()}'s config adds: {' '.join(h.extra[name].split())}")
    print(f"CPU µs/req: A median {med([p['a']['cpu_us'] for p in pairs]):.1f}, "
          f"B median {med([p['b']['cpu_us'] for p in pairs]):.1f}; paired B/A median {med(cpu):.3f} "
          f"(min {min(cpu):.3f}, max {max(cpu):.3f})")
    print(f"req/s:      A median {med([p['a']['rps'] for p in pairs]):,.0f}, "
          f"B median {med([p['b']['rps'] for p in pairs]):,.0f}; paired B/A median {med(rps):.3f} "
          f"(min {min(rps):.3f}, max {max(rps):.3f})")


if __name__ == "__main__":
    main()
