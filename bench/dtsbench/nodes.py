"""The dts processes under test: `dts up` (embedded) and a distributed stack
(a private redis-server and tansu broker, `dts server`s and `dts worker`s,
two of each cores by default), each started on free loopback ports, waited
for until ready and stopped with everything it started; and what their logs
say."""

import datetime
import os
import re
import shutil
import subprocess
import threading
import time

from .clients import Api, Redis, check_completed, task_body
from .common import DTS, PARTITIONS, ROOT, BenchError
from .processes import (Proc, child_pids, free_port, is_warm_shell, make_temp, proc_times,
                        stop_all, vm_hwm_kb, wait_port)

LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(\w+)\s+(\S+):\s(.*)$")


def log_events(path):
    """[(epoch seconds, level, message)] from a dts log (tracing's format)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = LOG_TS.match(line.rstrip("\n"))
                if m:
                    ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
                    out.append((ts, m.group(2), m.group(4)))
    except OSError:
        pass
    return out


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


class Node:
    """A dts process that prints a line on stdout when it is ready."""

    def __init__(self, name, argv, tmp, ready_re, tier=0, timeout=30, env_extra=None):
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.pop("DTS_LOG", None)
        env.pop("RUST_LOG", None)
        env.update(env_extra or {})
        self.proc = Proc(name, argv, tier=tier, stdout=subprocess.PIPE,
                         stderr=self.log_file, env=env)
        self.name = name
        self.lines = []
        self.ready = threading.Event()
        self.match = None
        self.ready_re = re.compile(ready_re)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            if not self.ready.wait(timeout) or self.match is None:
                raise BenchError(f"{name} did not start:\n{tail(self.log_path)}")
        except BaseException:
            self.proc.stop(grace=2)
            raise

    def _read(self):
        for raw in self.proc.p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            m = self.ready_re.search(line)
            if m and self.match is None:
                self.match = m
                self.ready.set()
        self.ready.set()  # exited

    @property
    def pid(self):
        return self.proc.pid

    def events(self):
        return log_events(self.log_path)


def published_line(node, tid):
    """(timestamp, elapsed_ms, late_binding) of the line the scheduler logs for `tid` once
    its shards can run: "task ready" (late binding: the plan is stored and
    the workers woken), or "shards published" (dts commits from 978088b until
    late binding, when shards travelled on the bus)."""
    for ts, _lvl, msg in node.events():
        if msg.startswith(("task ready", "shards published")) and f"task={tid}" in msg:
            m = re.search(r"elapsed_ms=(\d+)", msg)
            return ts, int(m.group(1)) if m else None, msg.startswith("task ready")
    return None


def planned_line(node, tid):
    """(timestamp, shards) of the "task planned" log line for `tid`."""
    for ts, _lvl, msg in node.events():
        if msg.startswith("task planned") and f"task={tid}" in msg:
            m = re.search(r"shards=(\d+)", msg)
            return ts, int(m.group(1)) if m else None
    return None


class Embedded:
    """`dts up --ephemeral --port 0`."""

    def __init__(self, cores, warm_shell=False):
        self.tmp = make_temp("up")
        self.node = None
        self.api = None
        argv = [DTS, "up", "--ephemeral", "--port", "0", "--cores", str(cores)]
        if warm_shell:
            argv.append("--warm-shell")
        try:
            self.node = Node("dts-up", argv, self.tmp, r"dts listening on (http://\S+)")
            self.api = Api(self.node.match.group(1))
        except BaseException:
            self.stop()
            raise

    def cpu(self):
        """dts up's CPU and its items'. With warm shells the items are the
        shells' children: a shell's own CPU (its loop and forks) counts as
        dts's, the items it reaped as the scripts'."""
        own, children = proc_times(self.node.pid)
        parts = {"dts up": own}
        for child in child_pids(self.node.pid):
            try:
                shell_own, shell_children = proc_times(child)
            except OSError:
                continue  # an item that just ended
            if not is_warm_shell(child):
                continue
            parts["warm shells"] = parts.get("warm shells", 0) + shell_own
            own += shell_own
            children += shell_children
        return {"own": own, "children": children, "parts": parts}

    def rss(self):
        return {"dts up": vm_hwm_kb(self.node.pid)}

    def stop(self):
        if self.api:
            self.api.close()
        if self.node:
            self.node.proc.stop(grace=15)
            self.node.log_file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Distributed:
    """A private redis-server and tansu broker, `servers` × `dts server` (the
    API is the first's) and `dts worker`s: `workers` × `--cores
    worker_cores`, or one per entry when `worker_cores` is a list."""

    def __init__(self, worker_cores, workers=2, servers=1, settle_timeout=60):
        self.tmp = make_temp("dist")
        self.redis = self.broker = self.server = self.api = None
        self.servers = []
        self.workers = []
        cores = worker_cores if isinstance(worker_cores, list) else [worker_cores] * workers
        try:
            self._start(cores, servers, settle_timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, cores, servers, settle_timeout):
        self.redis_port = self._start_redis()
        self.broker_port = self._start_broker()
        sets = [
            f"pubsub.namespace=127.0.0.1:{self.broker_port}",
            "spring.redis.host=127.0.0.1",
            f"spring.redis.port={self.redis_port}",
            f"pubsub.partitions={PARTITIONS}",
            "pubsub.kafka.session.timeout.ms=3000",
            "pubsub.kafka.heartbeat.interval.ms=500",
            # The notes' range is 10-50 ms: 25 keeps the latency target with
            # room and costs the broker less polling CPU than 10.
            "pubsub.kafka.fetch.wait.max.ms=25",
            "worker.heartbeat-interval-ms=500",
            "worker.heartbeat-ttl-ms=3000",
        ]
        self.set_flags = [x for s in sets for x in ("--set", s)]
        for i in range(servers):
            self.servers.append(Node("dts-server" + (f"{i + 1}" if i else ""),
                                     [DTS, "server", "--port", "0"] + self.set_flags,
                                     self.tmp, r"dts listening on (http://\S+)"))
        self.server = self.servers[0]
        self.api = Api(self.server.match.group(1))
        for c in cores:
            self.add_worker(c)
        self.wait_settled(len(cores), settle_timeout)

    def add_worker(self, cores, flags=(), env_extra=None):
        """Starts one more `dts worker --cores N` (id bench-wN, N its
        number) and returns it once it says it is ready."""
        n = len(self.workers) + 1
        node = Node(f"dts-worker{n}", [DTS, "worker", "--cores", str(cores), "--id", f"bench-w{n}"]
                    + self.set_flags + list(flags), self.tmp, r"dts worker (\S+) ready", env_extra=env_extra)
        self.workers.append(node)
        return node

    def _start_redis(self):
        for _ in range(5):
            port = free_port()
            p = Proc("redis-server", [
                "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                "--dir", self.tmp, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", os.path.join(self.tmp, "redis.log")], tier=1)
            if wait_port(port, 10, p):
                try:
                    r = Redis(port)
                    ok = r.cmd("PING") == "PONG"
                    r.close()
                except (OSError, BenchError):
                    ok = False
                if ok and p.alive():
                    self.redis = p
                    return port
            p.stop(grace=2)
        raise BenchError(f"redis-server did not start:\n{tail(os.path.join(self.tmp, 'redis.log'))}")

    def _start_broker(self):
        tansu = find_tansu()
        log_path = os.path.join(self.tmp, "broker.log")
        env = dict(os.environ)
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        for _ in range(5):
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            lf = open(log_path, "ab")
            p = Proc("tansu", [tansu, "broker", "--listener-url", url,
                               "--advertised-listener-url", url,
                               "--storage-engine", "memory://tansu/"],
                     tier=1, stdout=lf, stderr=lf, cwd=self.tmp, env=env)
            lf.close()
            if wait_port(port, 10, p):
                time.sleep(0.05)
                if p.alive():
                    self.broker = p
                    return port
            p.stop(grace=2)
        raise BenchError(f"the broker did not start:\n{tail(log_path)}")

    def wait_settled(self, workers, timeout=60):
        """Until /v1/workers lists every worker and the scheduler consumers
        have joined. Workers claim shards from the store (late binding), so
        there is no shard partition to wait for."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.api.json("GET", "/v1/workers")
            joined = any("scheduler consumers joined" in m for _, _, m in self.server.events())
            if len(listed) >= workers and joined:
                break
            for n in self.dts_nodes():
                if not n.proc.alive():
                    raise BenchError(f"{n.name} exited:\n{tail(n.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"the distributed stack did not settle in {timeout} s: "
                                 f"{len(listed)} of {workers} workers listed, scheduler joined={joined}")
            time.sleep(0.1)

    def dts_nodes(self):
        return self.servers + self.workers

    def cpu(self):
        """CPU of the running processes (a worker stopped mid-run is left
        out: its /proc entry is gone)."""
        parts = {}
        own = 0.0
        children = 0.0
        for n in self.dts_nodes():
            if not n.proc.alive():
                continue
            o, c = proc_times(n.pid)
            parts[n.name] = o
            own += o
            children += c
        for name, p in (("redis", self.redis), ("broker", self.broker)):
            o, _ = proc_times(p.pid)
            parts[name] = o
            own += o
        return {"own": own, "children": children, "parts": parts}

    def rss(self):
        out = {}
        for n in self.servers + self.workers:
            out[n.name.replace("dts-", "")] = vm_hwm_kb(n.pid)
        out["redis"] = vm_hwm_kb(self.redis.pid)
        out["broker"] = vm_hwm_kb(self.broker.pid)
        return out

    def stop(self):
        if self.api:
            self.api.close()
        t = time.monotonic()
        stop_all([n.proc for n in self.dts_nodes()], grace=15)
        self.stop_secs = time.monotonic() - t
        for n in self.dts_nodes():
            n.log_file.close()
        stop_all([p for p in (self.redis, self.broker) if p is not None], grace=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


def find_tansu():
    for c in (os.environ.get("DTS_TANSU"), os.path.join(ROOT, ".tools", "bin", "tansu"), shutil.which("tansu")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise BenchError("the tansu broker is not installed: run ./scripts/install-test-deps.sh")


def warm_up(api, script, n=20):
    tid = api.submit(task_body(script, [f"warm-{i}" for i in range(n)]))
    check_completed(api.wait(tid, poll=0.02, timeout=120), n, "warm-up task")

