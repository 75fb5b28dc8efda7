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
     workers, weir and nginx, with what the proxy, the upstreams and wrk
     used: the two-worker figure means something only where the proxy's
     workers, not the load side, are the bottleneck. On 8 or more cores
     each proxy is pinned to cores of its own and the upstreams and wrk to
     the others (bench/proxy/device runs it on the lent 16-core machine).
     On fewer, each worker gets a CPU quota of a share of a core instead
     (`WorkerBudgets`), on a core of its own, and the load side the rest.
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
import statistics
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


def with_children(pid):
    """A process and its children (nginx's workers)."""
    try:
        return [pid] + [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return [pid]


def rss_kib(pid):
    """Resident memory of a process and its children (nginx's worker)."""
    total = 0
    for p in with_children(pid):
        try:
            for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ticks(stat):
    """User + system CPU clock ticks from a /proc `stat` file (a process's or one thread's); 0 once it is gone."""
    try:
        # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        fields = pathlib.Path(stat).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its children (nginx's worker), from /proc."""
    return sum(cpu_ticks(f"/proc/{p}/stat") for p in with_children(pid)) / os.sysconf("SC_CLK_TCK")


def thread_ticks(pid):
    """{thread id: CPU ticks} for every thread of a process and of its children."""
    ticks = {}
    for p in with_children(pid):
        try:
            tasks = list(pathlib.Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            ticks[int(task.name)] = cpu_ticks(task / "stat")
    return ticks


CPU_CGROUP = pathlib.Path("/sys/fs/cgroup/cpu")


class WorkerBudgets:
    """A CPU budget for each proxy worker, where the machine has too few cores
    to give the proxy's workers cores of their own and the load side the
    rest. Each worker thread (or process) goes into a cgroup of its own
    (cgroup v1's cpu controller) with a CFS quota of `share` of a core, and
    is pinned to a core of its own. N workers can then use N shares and no
    more, and one thread never more than one share, so a proxy whose second
    worker does not run in parallel with the first gains nothing from it;
    what the quotas leave (here 2 − 2 × share cores) is the upstreams' and
    wrk's. A stand-in for cores of the proxy's own: contention between
    workers (shared locks, cache lines) weighs less when each runs a share
    of the time, which bench/proxy/device measures on real cores."""

    # Short periods: a throttled worker waits milliseconds, not 100 ms.
    PERIOD_US = 10_000

    def __init__(self, share, n):
        if not 0.05 <= share <= 0.5:
            raise SystemExit(f"--worker-share {share}: give 0.05 to 0.5 of a core (two workers and the load "
                             "side share two cores)")
        if not os.access(CPU_CGROUP / "cpu.cfs_quota_us", os.W_OK):
            raise SystemExit(f"the scaling phase on fewer than 8 cores sets CPU quotas: it needs cgroup v1's cpu "
                             f"controller at {CPU_CGROUP}, writable (run as root); or run it on 8 or more cores")
        self.share = share
        self.groups = []
        for i in range(n):
            group = CPU_CGROUP / f"weir-bench-{os.getpid()}-{i}"
            group.mkdir(exist_ok=True)
            self.groups.append(group)
            (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(round(share * self.PERIOD_US)))
            # A worker with work runs ahead of the upstreams and wrk, up to
            # its quota: the quota, not the scheduler, sets what it gets.
            (group / "cpu.shares").write_text("262144")

    def place(self, i, tid, core):
        """Worker `i` is thread `tid`: into group `i`, on `core`."""
        (self.groups[i] / "tasks").write_text(str(tid))
        os.sched_setaffinity(tid, {core})

    def throttling(self, i):
        """(periods, periods throttled) of group `i` so far."""
        stat = dict(line.split() for line in (self.groups[i] / "cpu.stat").read_text().splitlines())
        return int(stat["nr_periods"]), int(stat["nr_throttled"])

    def close(self):
        """Removes the groups (empty once the proxies they held have exited)."""
        for group in self.groups:
            try:
                group.rmdir()
            except OSError:
                pass


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
        """Saturation with one and two workers, on cores of their own or with a quota each (phase F)."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("the scaling phase needs 2 or more cores")
        budgets = None
        if len(cores) >= 8:
            # Two cores for the proxy, a third of the rest for the upstreams,
            # the others for wrk.
            proxy_cores, rest = cores[:2], cores[2:]
            n_sims = max(2, len(rest) // 3)
            sim_cores, wrk_cores = set(rest[:n_sims]), set(rest[n_sims:])
        else:
            # A quota for each worker instead of cores of its own; the
            # upstreams and wrk run anywhere, on what the quotas leave.
            budgets = WorkerBudgets(self.args.worker_share, 2)
            proxy_cores, sim_cores, wrk_cores = cores[:2], set(cores), set(cores)
        wrk_threads = max(1, len(wrk_cores))
        try:
            self.scaling_runs(results, cores, proxy_cores, sim_cores, wrk_cores, wrk_threads, budgets)
        finally:
            self.procs.stop_all()
            if budgets:
                budgets.close()

    def scaling_runs(self, results, cores, proxy_cores, sim_cores, wrk_cores, wrk_threads, budgets):
        ups = self.sims("--ttft", "0ms", "--itl", "0ms", "--tokens", "1", cpus=None if budgets else sim_cores)
        runs = (("weir", lambda cpus: self.start_weir(ups, threads=1, cpus=cpus)),
                ("weir", lambda cpus: self.start_weir(ups, threads=2, cpus=cpus)),
                ("nginx", lambda cpus: self.start_nginx(ups, workers=1, cpus=cpus)),
                ("nginx", lambda cpus: self.start_nginx(ups, workers=2, cpus=cpus)))
        out = results.setdefault("scaling", {"cores": len(cores), "mode": "quota" if budgets else "cores",
                                             "worker_share": budgets.share if budgets else None,
                                             "proxy_cores": sorted(set(proxy_cores)),
                                             "sim_cores": sorted(sim_cores), "wrk_cores": sorted(wrk_cores),
                                             "wrk_threads": wrk_threads, "runs": []})
        tick = os.sysconf("SC_CLK_TCK")
        # Rounds interleave the four runs, so that a drift of the machine
        # weighs on each alike; the table gives the medians.
        for rnd, (workers, (name, start)) in ((r, w) for r in range(self.args.rounds)
                                              for w in zip((1, 2, 1, 2), runs)):
            p, port = start(None if budgets else set(proxy_cores[:workers]))
            try:
                load = dict(threads=wrk_threads, connections=128 * workers, cpus=wrk_cores)
                # Warm-up: upstream connections, pools, caches; with quotas,
                # it also shows which threads are the workers (the busiest).
                before = thread_ticks(p.pid)
                self.wrk(port, seconds=2, **load)
                after = thread_ticks(p.pid)
                busiest = sorted(after, key=lambda t: after[t] - before.get(t, 0), reverse=True)[:workers]
                if budgets:
                    for i, tid in enumerate(busiest):
                        budgets.place(i, tid, proxy_cores[i])
                    self.wrk(port, seconds=1, **load)
                    throttling_before = [budgets.throttling(i) for i in range(workers)]
                sims_before = sum(cpu_seconds(q.pid) for q in self.sim_procs)
                proxy_before = cpu_seconds(p.pid)
                threads_before = thread_ticks(p.pid)
                wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall = time.monotonic()
                rps, errors = self.wrk(port, **load)
                wall = time.monotonic() - wall
                wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                threads_after = thread_ticks(p.pid)
                used = {
                    "proxy": (cpu_seconds(p.pid) - proxy_before) / wall,
                    "workers": [(threads_after.get(t, 0) - threads_before.get(t, 0)) / tick / wall
                                for t in busiest],
                    "sims": (sum(cpu_seconds(q.pid) for q in self.sim_procs) - sims_before) / wall,
                    "wrk": (wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime
                            - wrk_before.ru_stime) / wall,
                }
                throttled = None
                if budgets:
                    throttled = []
                    for i in range(workers):
                        (periods0, throttled0), (periods1, throttled1) = throttling_before[i], budgets.throttling(i)
                        throttled.append((throttled1 - throttled0) / max(periods1 - periods0, 1))
            finally:
                self.procs.stop(p)
            run = {"proxy": name, "workers": workers, "round": rnd + 1, "rps": rps, "wrk_errors": errors,
                   "cores_used": used}
            line = (f"round {rnd + 1}: {name:6} {workers} worker(s) {rps:10.0f} req/s  cores used: proxy "
                    f"{used['proxy']:.2f} ("
                    + " + ".join(f"{w:.2f}" for w in used["workers"]) + f"), upstreams {used['sims']:.2f}, "
                    f"wrk {used['wrk']:.2f}")
            if budgets:
                # The figure is the workers' only where their quotas bound
                # them: each used about its share and was throttled.
                run["throttled"] = throttled
                run["quota_bound"] = all(w >= 0.9 * budgets.share for w in used["workers"])
                line += ", throttled in " + " / ".join(f"{t:.0%}" for t in throttled) + " of periods"
                if not run["quota_bound"]:
                    line += f"  (a worker used under 90% of its {budgets.share} core: the load side limited it)"
            out["runs"].append(run)
            print(line, file=sys.stderr)

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
    """The scaling runs as a table: per proxy and worker count, the median of the rounds, and each proxy's
    two-worker ratio (the median of the rounds' ratios, with their range)."""
    rounds = max(r.get("round", 1) for r in sc["runs"])
    median = statistics.median
    of = lambda proxy, workers: [r for r in sc["runs"] if r["proxy"] == proxy and r["workers"] == workers]
    head = f"Saturation (wrk -t{sc['wrk_threads']}, GET /v1/models, {rounds} round(s) of 10 s, medians) " \
           f"on {sc['cores']} cores: "
    if sc["mode"] == "quota":
        lines = [head + f"each proxy worker (thread or process) in a cgroup of its own with a CPU quota of "
                 f"{sc['worker_share']} of a core and pinned to a core of its own (core(s) {sc['proxy_cores']}); "
                 "the two upstreams and wrk on any core, with what the quotas leave.", "",
                 "| proxy | workers | req/s | × one worker (rounds) | cores used: proxy (each worker) | throttled "
                 "| upstreams | wrk |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines = [head + f"the proxy pinned to core(s) {sc['proxy_cores']}, the two upstreams to "
                 f"{sc['sim_cores']}, wrk to {sc['wrk_cores']}.", "",
                 "| proxy | workers | req/s | × one worker (rounds) | cores used: proxy (each worker) | upstreams "
                 "| wrk |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
    for proxy in dict.fromkeys(r["proxy"] for r in sc["runs"]):
        ones = {r.get("round", 1): r["rps"] for r in of(proxy, 1)}
        for workers in (1, 2):
            runs = of(proxy, workers)
            ratios = [r["rps"] / ones[r.get("round", 1)] for r in runs]
            ratio = f"{median(ratios):.2f}×" + (f" ({min(ratios):.2f}–{max(ratios):.2f})" if workers > 1 else "")
            used = lambda key: median([r["cores_used"][key] for r in runs])
            each = " + ".join(f"{median([r['cores_used']['workers'][i] for r in runs]):.2f}"
                              for i in range(workers))
            row = f"| {proxy} | {workers} | {median([r['rps'] for r in runs]):.0f} | {ratio} " \
                  f"| {used('proxy'):.2f} ({each}) |"
            if sc["mode"] == "quota":
                row += " " + " / ".join(f"{median([r['throttled'][i] for r in runs]):.0%}"
                                        for i in range(workers)) + " |"
            lines.append(row + f" {used('sims'):.2f} | {used('wrk'):.2f} |")
    if any(not r.get("quota_bound", True) for r in sc["runs"]):
        lines += ["", "**A worker used under 90% of its quota in at least one run: there the load side, not "
                  "the quota, limited the proxy, and the ratio understates the workers' scaling.**"]
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
    ap.add_argument("--worker-share", type=float, default=0.35,
                    help="the scaling phase on fewer than 8 cores: each worker's CPU quota, in cores (default 0.35)")
    ap.add_argument("--rounds", type=int, default=3, help="the scaling phase's rounds (default 3)")
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
