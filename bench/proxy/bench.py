#!/usr/bin/env python3
"""Proxy benchmark driver (see bench/proxy/run).

Everything runs on loopback on this machine, one target at a time, in one
run, so the numbers are comparable with each other and with nothing else.
Targets: `direct` (the client talks to a sim), `weir` (weir proxy, one worker
thread), `nginx` (one worker process) and `haproxy` (one thread), the last
three splitting 80/20 over two `weir sim` upstreams; optionally `weir2` (weir
with two worker threads) and `before` (another weir binary, `--before`, with
one thread: the data plane before a change, measured in the same run).

Measures:
  A. saturation throughput (wrk, closed loop, GET /v1/models);
  B. added latency at a fixed rate below saturation (oha, p50 and p99);
  C. TTFT and inter-token overhead on streamed chat completions (weir load,
     open loop, against sims with a 200 ms TTFT);
  D. proxy memory per open stream with N concurrent streams;
  E. proxy CPU per streamed SSE event: user + system CPU seconds of the
     proxy's processes (from /proc) while many streams of many events run,
     divided by the events delivered.
  F. (phase `scaling`, not in the default set) saturation with one and two
     workers, weir and nginx, each proxy pinned to cores of its own and the
     upstreams and wrk to the others, with what the upstreams and wrk used
     of their cores: the two-worker figure means something only where
     neither is the bottleneck, so it needs a machine of 8 or more cores
     (bench/proxy/device runs it on the lent 16-core machine).
"""

import argparse
import json
import os
import pathlib
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def pinned(cpus):
    """A preexec_fn that pins the child (and its children) to the cores `cpus`; None for no pinning."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


class Procs:
    """Background processes, always stopped (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, cpus=None, **kw):
        """Starts `cmd`, pinned to the cores `cpus` when given."""
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr", subprocess.DEVNULL),
                             start_new_session=True, preexec_fn=pinned(cpus), **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except ProcessLookupError:
                pass
        self.procs.clear()


def rss_kib(pid):
    """Resident memory of a process and its children (nginx's worker)."""
    total = 0
    pids = [pid]
    try:
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its children (nginx's worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
            fields = pathlib.Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def established_to(port):
    """Established TCP connections whose local port is `port` (open client streams)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


class Bench:
    def __init__(self, args):
        self.args = args
        self.weir = str(pathlib.Path(args.weir).resolve())
        self.procs = Procs()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="weir-bench-proxy-"))

    # -- upstreams -------------------------------------------------------
    def sims(self, *flags, cpus=None):
        ports = [free_port(), free_port()]
        self.sim_procs = []
        for name, port in zip(("stable", "canary"), ports):
            self.sim_procs.append(self.procs.start([self.weir, "sim", "--listen", f"127.0.0.1:{port}", "--name",
                                                    name, "--seed", str(port), *flags], cpus=cpus))
        for port in ports:
            wait_port(port)
        return ports

    # -- proxies ---------------------------------------------------------
    def start_weir(self, ups, threads=1, binary=None, cpus=None):
        port, admin = free_port(), free_port()
        cfg = self.tmp / "weir.yaml"
        cfg.write_text(
            f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\noverrideHeader: false\n"
            "routes:\n  - name: bench\n    match: {pathPrefix: /}\n    backends:\n"
            f"      - {{cohort: stable, url: http://127.0.0.1:{ups[0]}, weight: 80}}\n"
            f"      - {{cohort: canary, url: http://127.0.0.1:{ups[1]}, weight: 20}}\n")
        p = self.procs.start([binary or self.weir, "proxy", "--config", str(cfg), "--threads", str(threads)],
                             cpus=cpus)
        wait_port(port)
        return p, port

    def start_nginx(self, ups, workers=1, cpus=None):
        port = free_port()
        prefix = self.tmp / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        # As root, nginx's workers take the user compiled in (www-data),
        # which a bare machine may not have: keep the caller's.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
        conf.write_text(f"""
{user}
worker_processes {workers};
worker_rlimit_nofile 65536;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log error;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  upstream sims {{ server 127.0.0.1:{ups[0]} weight=80; server 127.0.0.1:{ups[1]} weight=20; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 100000;
    location / {{
      proxy_pass http://sims;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
        p = self.procs.start(["nginx", "-p", str(prefix), "-c", str(conf)], cpus=cpus)
        wait_port(port)
        return p, port

    def start_haproxy(self, ups):
        port = free_port()
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(f"""
global
  nbthread 1
  maxconn 6000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
  # Streamed tokens must not wait to fill a buffer (as nginx's
  # proxy_buffering off, and weir by design).
  option http-no-delay
frontend fe
  bind 127.0.0.1:{port}
  default_backend sims
backend sims
  balance roundrobin
  server stable 127.0.0.1:{ups[0]} weight 80 maxconn 6000
  server canary 127.0.0.1:{ups[1]} weight 20 maxconn 6000
""")
        p = self.procs.start(["haproxy", "-db", "-f", str(cfg)])
        wait_port(port)
        return p, port

    def targets(self, ups):
        """Yields (name, process or None, port) for each target in turn."""
        if "direct" in self.args.targets:
            yield "direct", None, ups[0]
        starts = (("weir", self.start_weir),
                  ("weir2", lambda ups: self.start_weir(ups, threads=2)),
                  ("before", lambda ups: self.start_weir(ups, binary=self.args.before)),
                  ("nginx", self.start_nginx), ("haproxy", self.start_haproxy))
        for name, start in starts:
            if name not in self.args.targets:
                continue
            p, port = start(ups)
            try:
                yield name, p, port
            finally:
                self.procs.stop(p)

    # -- measurements ----------------------------------------------------
    def wrk(self, port, threads=1, connections=64, cpus=None, seconds=None):
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds or self.args.seconds}s",
                              f"http://127.0.0.1:{port}/v1/models"],
                             capture_output=True, text=True, check=True, preexec_fn=pinned(cpus)).stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return float(m.group(1)), int(errors.group(1)) if errors else 0

    def oha(self, port):
        out = subprocess.run([self.args.oha, "-z", f"{self.args.seconds}s", "-q", str(self.args.rate), "-c", "16",
                              "--no-tui", "--output-format", "json", f"http://127.0.0.1:{port}/v1/models"],
                             capture_output=True, text=True, check=True).stdout
        data = json.loads(out)
        pct = data["latencyPercentiles"]
        return pct["p50"] * 1e3, pct["p99"] * 1e3

    def load(self, port, rate, seconds, limit=1000):
        out = subprocess.run([self.weir, "load", "--url", f"http://127.0.0.1:{port}", "--rate", str(rate),
                              "--duration", f"{seconds}s", "--concurrency-limit", str(limit), "--output", "json"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def scaling(self, results):
        """Saturation with one and two workers on cores of their own (phase F)."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 8 and not self.args.force_scaling:
            raise SystemExit(f"the scaling phase needs 8 or more cores (here {len(cores)}): with fewer, wrk "
                             "and the upstreams share the proxy's cores and two workers say nothing about "
                             "scaling (--force-scaling runs it anyway, to check the script)")
        if len(cores) >= 8:
            # Two cores for the proxy, a third of the rest for the upstreams,
            # the others for wrk.
            proxy_cores, rest = cores[:2], cores[2:]
            n_sims = max(2, len(rest) // 3)
            sim_cores, wrk_cores = set(rest[:n_sims]), set(rest[n_sims:])
        else:
            # Forced: everything but the proxy shares the other core(s).
            proxy_cores, sim_cores, wrk_cores = cores[:1] * 2, set(cores[1:]), set(cores[1:])
        wrk_threads = max(1, len(wrk_cores))
        ups = self.sims("--ttft", "0ms", "--itl", "0ms", "--tokens", "1", cpus=sim_cores)
        runs = (("weir", lambda cpus: self.start_weir(ups, threads=1, cpus=cpus)),
                ("weir", lambda cpus: self.start_weir(ups, threads=2, cpus=cpus)),
                ("nginx", lambda cpus: self.start_nginx(ups, workers=1, cpus=cpus)),
                ("nginx", lambda cpus: self.start_nginx(ups, workers=2, cpus=cpus)))
        out = results.setdefault("scaling", {"cores": len(cores), "forced": len(cores) < 8,
                                             "proxy_cores": sorted(set(proxy_cores)),
                                             "sim_cores": sorted(sim_cores), "wrk_cores": sorted(wrk_cores),
                                             "wrk_threads": wrk_threads, "runs": []})
        for workers, (name, start) in zip((1, 2, 1, 2), runs):
            p, port = start(set(proxy_cores[:workers]))
            try:
                # Warm-up: upstream connections, pools, caches.
                self.wrk(port, threads=wrk_threads, connections=128 * workers, cpus=wrk_cores, seconds=2)
                sims_before = sum(cpu_seconds(q.pid) for q in self.sim_procs)
                proxy_before = cpu_seconds(p.pid)
                wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall = time.monotonic()
                rps, errors = self.wrk(port, threads=wrk_threads, connections=128 * workers, cpus=wrk_cores)
                wall = time.monotonic() - wall
                wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = {
                    "proxy": (cpu_seconds(p.pid) - proxy_before) / wall,
                    "sims": (sum(cpu_seconds(q.pid) for q in self.sim_procs) - sims_before) / wall,
                    "wrk": (wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime
                            - wrk_before.ru_stime) / wall,
                }
            finally:
                self.procs.stop(p)
            out["runs"].append({"proxy": name, "workers": workers, "rps": rps, "wrk_errors": errors,
                                "cores_used": used})
            print(f"{name:6} {workers} worker(s) {rps:10.0f} req/s  cores used: proxy {used['proxy']:.2f} of "
                  f"{workers}, upstreams {used['sims']:.2f} of {len(sim_cores)}, wrk {used['wrk']:.2f} of "
                  f"{len(wrk_cores)}", file=sys.stderr)
        self.procs.stop_all()

    # -- phases ------------------------------------------------------------
    def run(self):
        results = {}
        try:
            phases = self.args.phases
            if "scaling" in phases:
                self.scaling(results)
            ups = self.sims("--ttft", "0ms", "--itl", "0ms", "--tokens", "1")
            for name, _, port in (self.targets(ups) if "throughput" in phases else ()):
                rps, errors = self.wrk(port)
                p50, p99 = self.oha(port)
                results.setdefault(name, {}).update({"rps": rps, "wrk_errors": errors, "p50_ms": p50,
                                                     "p99_ms": p99})
                print(f"{name:8} {rps:10.0f} req/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms", file=sys.stderr)
            self.procs.stop_all()

            ups = self.sims("--ttft", "200ms", "--ttft-sigma", "0.1", "--itl", "15ms", "--tokens", "32")
            for name, _, port in (self.targets(ups) if "streams" in phases else ()):
                s = self.load(port, self.args.stream_rate, self.args.seconds)
                results.setdefault(name, {})["stream"] = s
                print(f"{name:8} stream ttft p50 {s['ttft_seconds']['p50'] * 1e3:.2f} ms "
                      f"p99 {s['ttft_seconds']['p99'] * 1e3:.2f} ms, ok {s['outcomes']['ok']}/{s['sent']}",
                      file=sys.stderr)
            self.procs.stop_all()

            tokens = 300
            ups = self.sims("--ttft", "0ms", "--itl", "2ms", "--tokens", str(tokens))
            for name, p, port in (self.targets(ups) if "cpu" in phases else ()):
                if p is None:
                    continue
                before = cpu_seconds(p.pid)
                s = self.load(port, self.args.cpu_rate, self.args.seconds, limit=5000)
                used = cpu_seconds(p.pid) - before
                events = s["tokens"] + 2 * s["outcomes"].get("ok", 0)
                results.setdefault(name, {})["cpu"] = {"seconds": used, "events": events,
                                                       "us_per_event": used / max(events, 1) * 1e6}
                print(f"{name:8} {events} SSE events, {used:.2f} CPU s: "
                      f"{used / max(events, 1) * 1e6:.2f} µs/event", file=sys.stderr)
            self.procs.stop_all()

            ups = self.sims("--ttft", "100ms", "--itl", "250ms", "--tokens", "80")
            for name, p, port in (self.targets(ups) if "memory" in phases else ()):
                if p is None:
                    continue
                time.sleep(0.5)
                base = rss_kib(p.pid)
                n = self.args.streams
                load = subprocess.Popen([self.weir, "load", "--url", f"http://127.0.0.1:{port}",
                                         "--rate", str(n // 4), "--duration", "4s",
                                         "--concurrency-limit", str(n + 1000), "--output", "json"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(5.0)
                open_streams = established_to(port)
                peak = rss_kib(p.pid)
                load.kill()
                load.wait()
                per = (peak - base) / max(open_streams, 1)
                results.setdefault(name, {})["memory"] = {"base_kib": base, "peak_kib": peak, "open": open_streams,
                                           "per_stream_kib": per}
                print(f"{name:8} {open_streams} open streams: {base} → {peak} KiB ({per:.1f} KiB/stream)",
                      file=sys.stderr)
        finally:
            self.procs.stop_all()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return results


def markdown(r, args):
    d = r["direct"]
    lines = ["## Proxy (`bench/proxy/run`)", "",
             f"<!-- generated by bench/proxy/run on {os.cpu_count()} cores -->", "",
             "Loopback, one target at a time in one run; two `weir sim` upstreams split 80/20; one worker "
             "(thread or process) per proxy. Overheads are the target minus `direct` in the same run.", "",
             f"| | saturation (req/s, wrk -c64) | vs nginx | vs HAProxy | added p50 at {args.rate}/s | "
             "added p99 | stream TTFT p50 / p99 overhead | ITL p50 overhead | proxy CPU µs per SSE event "
             "| KiB per open stream |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def stream_overhead(x, key, pct):
        try:
            return (x["stream"][key][pct] - d["stream"][key][pct]) * 1e3
        except (KeyError, TypeError):
            return float("nan")

    for name in ("direct", "weir", "weir2", "before", "nginx", "haproxy"):
        x = r.get(name)
        if x is None:
            continue
        if name == "direct":
            lines.append(f"| direct | {x['rps']:.0f} | | | | | | | | |")
            continue
        mem = x.get("memory", {})
        cpu = x.get("cpu", {}).get("us_per_event", float("nan"))
        label = {"weir2": "weir, 2 workers", "before": "weir before"}.get(name, name)
        lines.append(
            f"| {label} | {x['rps']:.0f} | {x['rps'] / r['nginx']['rps']:.2f}× | {x['rps'] / r['haproxy']['rps']:.2f}× "
            f"| {x['p50_ms'] - d['p50_ms']:+.3f} ms | {x['p99_ms'] - d['p99_ms']:+.3f} ms "
            f"| {stream_overhead(x, 'ttft_seconds', 'p50'):+.2f} / {stream_overhead(x, 'ttft_seconds', 'p99'):+.2f} ms "
            f"| {stream_overhead(x, 'itl_seconds', 'p50'):+.2f} ms "
            f"| {cpu:.2f} ({cpu / r['nginx'].get('cpu', {}).get('us_per_event', float('nan')):.2f}× nginx, "
            f"{cpu / r['haproxy'].get('cpu', {}).get('us_per_event', float('nan')):.2f}× HAProxy) "
            f"| {mem.get('per_stream_kib', float('nan')):.1f} ({mem.get('open', 0)} open) |")
    return "\n".join(lines) + "\n"


def scaling_markdown(sc):
    """The scaling runs as a table, with each proxy's two-worker ratio."""
    lines = [f"Saturation (wrk -t{sc['wrk_threads']}, GET /v1/models) on {sc['cores']} cores: the proxy pinned to "
             f"core(s) {sc['proxy_cores']}, the two upstreams to {sc['sim_cores']}, wrk to {sc['wrk_cores']}.", "",
             "| proxy | workers | req/s | × one worker | cores used: proxy | upstreams | wrk |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    if sc["forced"]:
        lines[:0] = [f"**Forced on {sc['cores']} cores: the proxy's workers share a core and the rest share "
                     "the others, so these figures say nothing about scaling.**", ""]
    one = {r["proxy"]: r["rps"] for r in sc["runs"] if r["workers"] == 1}
    for r in sc["runs"]:
        u = r["cores_used"]
        lines.append(f"| {r['proxy']} | {r['workers']} | {r['rps']:.0f} | {r['rps'] / one[r['proxy']]:.2f}× "
                     f"| {u['proxy']:.2f} | {u['sims']:.2f} of {len(sc['sim_cores'])} "
                     f"| {u['wrk']:.2f} of {len(sc['wrk_cores'])} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", required=True)
    ap.add_argument("--oha", help="oha binary (the throughput phase's latency at a fixed rate)")
    ap.add_argument("--quick", action="store_true", help="short runs, 1,000 streams")
    ap.add_argument("--targets", default="direct,weir,nginx,haproxy",
                    help="comma-separated; the RESULTS.md table needs these four, weir2 and before are optional")
    ap.add_argument("--phases", default="throughput,streams,cpu,memory", help="comma-separated subset")
    ap.add_argument("--before", help="another weir binary, measured as target `before`")
    ap.add_argument("--out", help="a partial run also writes its results here: results.json (and scaling.md)")
    ap.add_argument("--force-scaling", action="store_true",
                    help="run the scaling phase on fewer than 8 cores (checks the script; the figures mean nothing)")
    args = ap.parse_args()
    args.targets = args.targets.split(",")
    args.phases = args.phases.split(",")
    if "throughput" in args.phases and not args.oha:
        ap.error("the throughput phase needs --oha")
    partial = not {"direct", "weir", "nginx", "haproxy"} <= set(args.targets) or \
        set(args.phases) != {"throughput", "streams", "cpu", "memory"}
    args.seconds = 3 if args.quick else 10
    args.rate = 1000
    args.stream_rate = 20 if args.quick else 50
    args.streams = 1000 if args.quick else 5000
    # New streams a second in the CPU phase: each lasts ~0.6 s (300 events
    # 2 ms apart), so about 0.6 × this many are open at once.
    args.cpu_rate = 500 if args.quick else 2000
    results = bench = Bench(args).run()
    if partial:
        print(json.dumps(results, indent=2))
        out = pathlib.Path(args.out) if args.out else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if "scaling" in results:
            table = scaling_markdown(results["scaling"])
            print(table)
            if out:
                (out / "scaling.md").write_text(table)
        return
    section = markdown(results, args)
    print(section)
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/proxy.json").write_text(json.dumps(bench, indent=2))
    path = ROOT / "bench/RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"## Proxy \(.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip() + "\n", text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
