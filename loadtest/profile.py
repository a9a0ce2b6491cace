#!/usr/bin/env python3
"""Profiles ringway under one loadtest scenario: a flame graph, and syscalls and io_uring
enters per request.

    loadtest/profile.sh                  # small, 10 s, the frame-pointer build
    loadtest/profile.sh post --seconds 20

Same topology and origin as compare.py (it reuses its harness): the origin nginx and wrk on
the load CPU, ringway (1 worker) alone on the proxy CPU. After a warm-up, wrk runs for
--seconds while `perf record -g` samples ringway's threads and `perf stat` counts their
syscalls (raw_syscalls:sys_enter) and io_uring_enter calls; both are divided by the
requests wrk completed in the same window. The flame graph is drawn with inferno
(`cargo install inferno`) or, where they are installed, the FlameGraph scripts.

Writes loadtest/results/profile-SCENARIO/: perf.data, flame.svg, stat.txt, summary.md.
Python 3 standard library only; needs perf (Debian's linux-perf) and root or a
kernel.perf_event_paranoid that lets you trace. Run it through loadtest/profile.sh.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab  # noqa: E402
import compare  # noqa: E402


def flame(perf_data, out_svg):
    """Draws the flame graph; returns the tool used, or None (and why) if none is installed."""
    script = subprocess.run(["perf", "script", "-i", perf_data], capture_output=True)
    if script.returncode != 0:
        return None, "perf script failed: " + script.stderr.decode(errors="replace")[-400:]
    tools = [
        ("inferno", ["inferno-collapse-perf"], ["inferno-flamegraph"]),
        ("FlameGraph", ["stackcollapse-perf.pl"], ["flamegraph.pl"]),
    ]
    for name, collapse, draw in tools:
        if shutil.which(collapse[0]) and shutil.which(draw[0]):
            folded = subprocess.run(collapse, input=script.stdout, capture_output=True)
            svg = subprocess.run(draw + ["--title", "ringway"], input=folded.stdout, capture_output=True)
            if svg.returncode == 0:
                with open(out_svg, "wb") as f:
                    f.write(svg.stdout)
                return name, None
    return None, "no flame graph tool: `cargo install inferno` (or install the FlameGraph scripts)"


def stat_counts(text):
    """Event name -> count from `perf stat` output."""
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(\S+)", line)
        if m:
            counts[m.group(2)] = int(m.group(1).replace(",", ""))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="small", choices=sorted(compare.WRK_SCENARIOS))
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds (default 10)")
    ap.add_argument("--binary", required=True, help=argparse.SUPPRESS)
    ap.add_argument("--base-port", type=int, default=18080)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--workdir", required=True, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for tool in ("perf", "nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"profile: {tool} not found (perf: apt install linux-perf; the rest: loadtest/setup.sh)")
    out_dir = os.path.join(compare.RESULTS, f"profile-{args.scenario}")
    os.makedirs(out_dir, exist_ok=True)
    args.ringway_bin, args.no_build, args.dead_upstream, args.haproxy_maxconn = None, True, None, 20000
    args.rounds, args.duration, args.warmup = 1, args.seconds, 2
    h = ab.AB(args, args.workdir, {"a": os.path.abspath(args.binary)}, {"a": ""})
    for tool in ("nginx", "wrk", "taskset"):
        h.bin[tool] = compare.which(tool)
    h.write_static()
    perf_data = os.path.join(out_dir, "perf.data")
    try:
        h.start_origin()
        h.start_ringway("a")
        bad = h.sanity("a")
        if bad:
            sys.exit(f"profile: sanity check through ringway: {bad}")
        h.wrk(args.scenario, "a", 2)
        pid = str(h.running["a"].pid)
        events = "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter"
        window = str(args.seconds)
        record = subprocess.Popen(["perf", "record", "-F", "997", "-g", "-o", perf_data, "-p", pid, "--",
                                   "sleep", window], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stat = subprocess.Popen(["perf", "stat", "-e", events, "-p", pid, "--", "sleep", window],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = h.wrk(args.scenario, "a", args.seconds)
        _, rec_err = record.communicate(timeout=args.seconds + 60)
        _, stat_err = stat.communicate(timeout=args.seconds + 60)
    finally:
        h.stop_scenario()
        h.procs.stop_all()
    stat_text = stat_err.decode(errors="replace")
    with open(os.path.join(out_dir, "stat.txt"), "w") as f:
        f.write(stat_text)
    counts = stat_counts(stat_text)
    requests = r["requests"] or 0
    per = {k: (v / requests if requests else None) for k, v in counts.items()}
    tool, why = flame(perf_data, os.path.join(out_dir, "flame.svg"))
    lines = [
        f"# ringway profile: {args.scenario}, {args.seconds} s",
        "",
        f"- binary: `{args.binary}`",
        f"- requests in the window: {requests:,} ({compare.fmt_num(r['rps'])} req/s), "
        f"CPU {compare.fmt_num(r['cpu_us'], 1)} µs/request",
        f"- syscalls per request: {per.get('raw_syscalls:sys_enter', 0) or 0:.2f}",
        f"- io_uring_enter per request: {per.get('syscalls:sys_enter_io_uring_enter', 0) or 0:.2f}",
        f"- flame graph: {'flame.svg (' + tool + ')' if tool else 'none: ' + why}",
        "- `perf report -i perf.data --no-children --sort sym` for the hottest functions",
    ]
    if rec_err and b"error" in rec_err.lower():
        lines.append(f"- perf record said: {rec_err.decode(errors='replace')[-300:]}")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {os.path.relpath(out_dir, compare.REPO)}/")


if __name__ == "__main__":
    main()
