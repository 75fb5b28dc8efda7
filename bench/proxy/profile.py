#!/usr/bin/env python3
"""Where the proxy's work and memory go: the profile behind the proxy
figures in bench/RESULTS.md (bench/proxy/run measures them side by side).

  profile.py --weir BIN instructions
      callgrind: user-space instructions per tiny request (GET /v1/models,
      wrk -c16) and per streamed SSE event, for weir and nginx, and weir's
      functions by inclusive cost. Instruction counts do not depend on what
      else the machine runs, so this may run on a busy machine.
  profile.py --weir BIN heap
      heaptrack (BIN built with `--features system-alloc`, so malloc is
      glibc's and heaptrack sees it): the heap weir holds at the peak with
      N open streams, by allocation site, and per stream.

Needs valgrind, heaptrack, nginx-light and wrk (Debian packages).
"""

import argparse
import importlib.util
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench", HERE / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def callgrind_total(out_file):
    """The instructions a callgrind output file counted (its `totals:` line)."""
    lines = pathlib.Path(out_file).read_text().splitlines()
    for line in lines:
        if line.startswith("totals:"):
            return int(line.split()[1])
    # Files of processes that never counted (nginx's master) may have none.
    return 0


def instrument(port, state):
    """Turns callgrind's counting on or off in every process under it.

    callgrind takes the command only when the process runs: an idle nginx
    sleeps in epoll_wait, so requests are sent until the command is taken
    (a few, against tens of thousands measured)."""
    control = subprocess.Popen(["callgrind_control", f"--instr={state}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while control.poll() is None:
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://127.0.0.1:{port}/v1/models"])
    if control.returncode != 0:
        raise RuntimeError(f"callgrind_control --instr={state} failed")


def wrk_requests(port, seconds):
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/v1/models"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def instructions(b, args):
    tmp = b.tmp
    rows = []
    for target in ("weir", "nginx"):
        for workload in ("tiny", "stream"):
            if workload == "tiny":
                ups = b.sims("--ttft", "0ms", "--itl", "0ms", "--tokens", "1")
            else:
                ups = b.sims("--ttft", "0ms", "--itl", "2ms", "--tokens", "300")
            out = tmp / f"callgrind.{target}.{workload}.%p"
            valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                        "--trace-children=yes"]
            if target == "weir":
                port, admin = bench.free_port(), bench.free_port()
                cfg = tmp / "weir.yaml"
                cfg.write_text(
                    f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\noverrideHeader: false\n"
                    "routes:\n  - name: bench\n    match: {pathPrefix: /}\n    backends:\n"
                    f"      - {{cohort: stable, url: http://127.0.0.1:{ups[0]}, weight: 80}}\n"
                    f"      - {{cohort: canary, url: http://127.0.0.1:{ups[1]}, weight: 20}}\n")
                p = b.procs.start(valgrind + [b.weir, "proxy", "--config", str(cfg), "--threads", "1"])
            else:
                # bench.py's nginx and its config, started under valgrind as
                # one process (no master): its worker would run as nobody,
                # which cannot write callgrind's files here.
                real = b.procs.start

                def start(cmd, **kw):
                    conf = pathlib.Path(cmd[cmd.index("-c") + 1])
                    conf.write_text("master_process off;\n" + conf.read_text())
                    return real(valgrind + cmd, **kw)

                b.procs.start = start
                try:
                    p, port = b.start_nginx(ups)
                finally:
                    b.procs.start = real
            bench.wait_port(port, timeout=120)
            instrument(port, "on")
            if workload == "tiny":
                units = wrk_requests(port, args.seconds)
            else:
                s = b.load(port, args.stream_rate, args.seconds, limit=5000)
                units = s["tokens"] + 2 * s["outcomes"].get("ok", 0)
            instrument(port, "off")
            b.procs.stop_all()
            files = sorted(tmp.glob(f"callgrind.{target}.{workload}.*"))
            total = sum(callgrind_total(f) for f in files)
            what = "request" if workload == "tiny" else "SSE event"
            rows.append((target, what, units, total))
            print(f"{target:6} {units:8} {what}s  {total / max(units, 1):10.0f} instructions per {what}",
                  file=sys.stderr)
            if target == "weir":
                biggest = max(files, key=callgrind_total)
                annotate = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(biggest)],
                                          capture_output=True, text=True).stdout
                report = tmp / f"weir-{workload}.annotate.txt"
                report.write_text(annotate)
                print(f"  weir's inclusive profile: {report}", file=sys.stderr)
    print("\n| target | workload | units | instructions per unit |\n|---|---|---:|---:|")
    for target, what, units, total in rows:
        print(f"| {target} | {what} | {units} | {total / max(units, 1):.0f} |")


def heap(b, args):
    ups = b.sims("--ttft", "100ms", "--itl", "250ms", "--tokens", "80")
    port, admin = bench.free_port(), bench.free_port()
    cfg = b.tmp / "weir.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\noverrideHeader: false\n"
        "routes:\n  - name: bench\n    match: {pathPrefix: /}\n    backends:\n"
        f"      - {{cohort: stable, url: http://127.0.0.1:{ups[0]}, weight: 80}}\n"
        f"      - {{cohort: canary, url: http://127.0.0.1:{ups[1]}, weight: 20}}\n")
    out = b.tmp / "heaptrack.weir"
    p = b.procs.start(["heaptrack", "-o", str(out), b.weir, "proxy", "--config", str(cfg), "--threads", "1",
                       "--grace-period", "1s"])
    bench.wait_port(port, timeout=60)
    n = args.streams
    load = subprocess.Popen([b.weir, "load", "--url", f"http://127.0.0.1:{port}", "--rate", str(n // 4),
                             "--duration", "4s", "--concurrency-limit", str(n + 1000), "--output", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5.0)
    open_streams = bench.established_to(port)
    rss = bench.rss_kib(p.pid)
    load.kill()
    load.wait()
    # Only the proxy gets SIGTERM: heaptrack's own process must live on to
    # write what it recorded (stopping the whole group loses it).
    subprocess.run(["pkill", "-TERM", "-f", f"^{re.escape(b.weir)} proxy --config {re.escape(str(cfg))}"])
    p.wait(timeout=120)
    b.procs.stop_all()
    data = next(b.tmp.glob("heaptrack.weir*"))
    printed = subprocess.run(["heaptrack_print", "-f", str(data), "--print-peaks", "yes", "--print-allocators",
                              "no", "--print-leaks", "no", "--print-temporary", "no", "-n", str(args.sites)],
                             capture_output=True, text=True).stdout
    report = b.tmp / "heap.txt"
    report.write_text(printed)
    peak = re.search(r"peak heap memory consumption: ([\d.]+)([KMG]?)B?", printed)
    scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}
    peak_kib = float(peak.group(1)) * scale[peak.group(2)] if peak else float("nan")
    print(f"{open_streams} open streams; RSS under heaptrack {rss} KiB; peak heap {peak_kib:.0f} KiB "
          f"({peak_kib / max(open_streams, 1):.1f} KiB per stream); sites: {report}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--stream-rate", type=int, default=20)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--sites", type=int, default=25, help="allocation sites to print (heap)")
    ap.add_argument("what", choices=["instructions", "heap"])
    args = ap.parse_args()
    b = bench.Bench(args)
    try:
        (instructions if args.what == "instructions" else heap)(b, args)
    finally:
        b.procs.stop_all()


if __name__ == "__main__":
    main()
