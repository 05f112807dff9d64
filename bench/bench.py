#!/usr/bin/env python3
"""The dts benchmark: the same workloads through xargs -P, GNU parallel, dts
embedded (`dts up` over HTTP, and the one-shot `dts run`) and dts distributed
on loopback (Redis, the tansu broker, one `dts server`, two `dts worker`),
in one run on this machine. Prints a table and writes BENCHMARKS.md.

Run it through `bench/run.sh` (it builds dts and installs the tools first):

    ./bench/run.sh                 # the full benchmark (~10-15 minutes on 2 cores)
    ./bench/run.sh --quick         # a smoke check (~2-3 minutes)

Python 3 standard library only. Every process it starts runs in its own
session and is stopped at the end, also on Ctrl-C and on errors; its temp
directories are removed.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTS = os.path.join(ROOT, "target", "release", "dts")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "SUBMISSION_FAILED"}
PARTITIONS = 6  # pubsub.partitions, set explicitly on every distributed node
SHARD_TOPIC = "distributed_task_shard"
POLL = 0.010  # status poll interval while a timed task runs

RUNNERS = ["xargs", "parallel", "dts-up", "dts-run", "dts-dist", "dts-up-warm", "dts-run-warm"]
RUNNER_LABEL = {
    "xargs": "xargs -P",
    "parallel": "GNU parallel",
    "dts-up": "dts up (embedded, HTTP)",
    "dts-run": "dts run (one-shot)",
    "dts-dist": "dts distributed",
    "dts-up-warm": "dts up --warm-shell",
    "dts-run-warm": "dts run --warm-shell",
}
SECTIONS = ["W1", "W2", "W3", "W4", "LAT", "READS"]


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes: every one we start is registered and stopped at the end.

REGISTRY = []
REGISTRY_LOCK = threading.Lock()


class Proc:
    """A child in its own session (so Ctrl-C reaches only the bench, which
    then stops it), registered for clean-up. `tier` 0 is stopped before tier
    1 (dts before the Redis and broker it talks to)."""

    def __init__(self, name, argv, *, tier=0, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 cwd=None, env=None):
        self.name = name
        self.tier = tier
        self.argv = argv
        self.reaped = False
        exe = argv[0]
        if os.sep not in exe and shutil.which(exe) is None:
            raise BenchError(f"{exe} is not installed (needed for {name})")
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                  cwd=cwd, env=env, start_new_session=True)
        with REGISTRY_LOCK:
            REGISTRY.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return not self.reaped and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                os.killpg(self.p.pid, sig)  # the group we created for it
            except ProcessLookupError:
                pass

    def wait_exit_keep_zombie(self, timeout=None):
        """Waits until the child has exited without reaping it, so its
        /proc/PID/stat (own and children's CPU) can still be read."""
        if timeout is None:
            os.waitid(os.P_PID, self.p.pid, os.WEXITED | os.WNOWAIT)
            return True
        deadline = time.monotonic() + timeout
        while True:
            r = os.waitid(os.P_PID, self.p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            if r is not None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def reap(self):
        """Reaps an exited child; returns (exit code, rusage)."""
        _, status, rusage = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.reaped = True
        return self.p.returncode, rusage

    def stop(self, grace=10.0):
        stop_all([self], grace)


def stop_all(procs, grace=10.0):
    procs = [p for p in procs if p.alive()]
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        left = max(0.0, deadline - time.monotonic())
        try:
            p.p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.signal(signal.SIGKILL)
            try:
                p.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"warning: {p.name} (pid {p.pid}) did not stop")
    for p in procs:
        p.reaped = p.reaped or p.p.returncode is not None


def cleanup_all():
    with REGISTRY_LOCK:
        procs = list(REGISTRY)
    for tier in (0, 1):
        stop_all([p for p in procs if p.tier == tier], grace=3.0)


TEMP_DIRS = []


def make_temp(prefix):
    d = tempfile.mkdtemp(prefix=f"dts-bench-{prefix}-")
    TEMP_DIRS.append(d)
    return d


def remove_temps():
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    TEMP_DIRS.clear()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


# --------------------------------------------------------------------------
# /proc

def proc_times(pid):
    """(own CPU, children's CPU) in seconds from /proc/PID/stat: utime+stime,
    cutime+cstime (children that have been waited for)."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def child_pids(pid):
    """The live children of PID (all its threads')."""
    pids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return pids


def is_warm_shell(pid):
    """A dts warm shell: a bash whose script is dts's host loop."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"__dts_op" in f.read()
    except OSError:
        return False


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_idle_fraction(seconds=1.0):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = read()
    time.sleep(seconds)
    i1, t1 = read()
    return (i1 - i0) / max(1, t1 - t0)


# --------------------------------------------------------------------------
# HTTP (keep-alive connection; http.client is what urllib uses underneath)

class Api:
    def __init__(self, url, timeout=120):
        m = re.match(r"http://([^:/]+):(\d+)", url)
        if not m:
            raise BenchError(f"cannot parse the API address {url!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = url
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, timeout=None):
        headers = {}
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=timeout or self.timeout)
            try:
                if timeout is not None:
                    self.conn.timeout = timeout
                    if self.conn.sock is not None:
                        self.conn.sock.settimeout(timeout)
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if timeout is not None and self.conn.sock is not None:
                    self.conn.sock.settimeout(self.timeout)
                    self.conn.timeout = self.timeout
                return r.status, data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt == 2 or method != "GET":
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None, expect=(200,), timeout=None):
        status, data = self.request(method, path, body, timeout)
        if status not in expect:
            raise BenchError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def submit(self, body, timeout=None):
        task = self.json("POST", "/v1/tasks", body, expect=(200, 201, 202), timeout=timeout)
        return task["id"]

    def task(self, tid):
        return self.json("GET", f"/v1/tasks/{tid}?summary=true")

    def wait(self, tid, poll=POLL, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            t = self.task(tid)
            if t["status"] in TERMINAL:
                return t
            if time.monotonic() > deadline:
                raise BenchError(f"task {tid} still {t['status']} after {timeout} s "
                                 f"({t.get('itemsSucceeded')} + {t.get('itemsFailed')} of {t.get('itemsTotal')})")
            time.sleep(poll)

    def results(self, tid, limit=10000):
        items, offset = [], 0
        while True:
            page = self.json("GET", f"/v1/tasks/{tid}/results?offset={offset}&limit={limit}")
            items += page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return items

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def task_body(script, inputs, timeout_secs=600):
    return {"templateFunction": script, "inputList": inputs, "timeoutSecs": timeout_secs}


def check_completed(task, n, what):
    if task["status"] != "COMPLETED" or task.get("itemsSucceeded") != n:
        raise BenchError(f"{what}: task ended {task['status']} with {task.get('itemsSucceeded')} "
                         f"of {n} items succeeded, {task.get('itemsFailed')} failed, error={task.get('error')!r}")


# --------------------------------------------------------------------------
# Redis (RESP over a socket) and the Kafka protocol (just enough to read
# a topic's high watermarks)

class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line:
            raise BenchError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise BenchError(f"redis: unexpected reply {line!r}")

    def commandstats(self):
        """{command: calls}, without INFO (the bench's own)."""
        stats = {}
        for line in self.cmd("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if m and m.group(1) != "info":
                stats[m.group(1)] = int(m.group(2))
        return stats

    def info_field(self, section, field):
        for line in self.cmd("INFO", section).splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stats_delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in set(before) | set(after) if after.get(k, 0) - before.get(k, 0)}


class RedisMonitor:
    """Redis MONITOR in a thread: every command with its time and whether a
    client sent it or a Lua script ran it ("[0 lua]")."""

    LINE = re.compile(r'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"')

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.f = self.sock.makefile("rb")
        if not self.f.readline().startswith(b"+OK"):
            raise BenchError("redis MONITOR refused")
        self.sock.settimeout(None)
        self.events = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for raw in self.f:
                m = self.LINE.match(raw.decode(errors="replace"))
                if m:
                    self.events.append((float(m.group(1)), m.group(2) == "lua", m.group(3).lower()))
        except (OSError, ValueError):
            pass

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)

    def count(self, t0, t1):
        client, lua, by_cmd = 0, 0, {}
        for ts, is_lua, cmd in self.events:
            if t0 <= ts <= t1:
                if is_lua:
                    lua += 1
                else:
                    client += 1
                key = ("lua " if is_lua else "") + cmd
                by_cmd[key] = by_cmd.get(key, 0) + 1
        return client, lua, by_cmd


class KafkaHw:
    """Reads partitions' high watermarks with Fetch v6 (tansu's ListOffsets
    for "latest" is wrong; Fetch's high watermark is right)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.cid = 0

    def _read(self, n):
        buf = bytearray()
        while len(buf) < n:
            c = self.sock.recv(n - len(buf))
            if not c:
                raise BenchError("the broker closed the connection")
            buf += c
        return bytes(buf)

    def _request(self, key, version, body):
        self.cid += 1
        client = b"dts-bench"
        msg = struct.pack(">hhih", key, version, self.cid, len(client)) + client + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        (n,) = struct.unpack(">i", self._read(4))
        data = self._read(n)
        if struct.unpack(">i", data[:4])[0] != self.cid:
            raise BenchError("kafka: response out of order")
        return data[4:]

    def high_watermarks(self, topic, offsets):
        """`offsets`: {partition: fetch offset}; fetching at the last known
        high watermark reads each new batch at most once."""
        t = topic.encode()
        parts = b"".join(struct.pack(">iqqi", p, o, -1, 1) for p, o in sorted(offsets.items()))
        body = (struct.pack(">iiiib", -1, 1, 1, 1, 0) + struct.pack(">i", 1)
                + struct.pack(">h", len(t)) + t + struct.pack(">i", len(offsets)) + parts)
        r = self._request(1, 6, body)
        off = 4  # throttle_time_ms
        (nt,) = struct.unpack(">i", r[off:off + 4])
        off += 4
        out = {}
        for _ in range(nt):
            (ln,) = struct.unpack(">h", r[off:off + 2])
            off += 2 + ln
            (np_,) = struct.unpack(">i", r[off:off + 4])
            off += 4
            for _ in range(np_):
                p, err, hw, _lso, _lstart = struct.unpack(">ihqqq", r[off:off + 30])
                off += 30
                (na,) = struct.unpack(">i", r[off:off + 4])
                off += 4 + max(0, na) * 16
                (rl,) = struct.unpack(">i", r[off:off + 4])
                off += 4 + max(0, rl)
                if err not in (0, 1):  # 1: offset out of range, still has the watermark
                    raise BenchError(f"kafka: fetch error {err} on {topic}/{p}")
                out[p] = hw
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# dts nodes

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

    def __init__(self, name, argv, tmp, ready_re, tier=0, timeout=30):
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.pop("DTS_LOG", None)
        env.pop("RUST_LOG", None)
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
    """(timestamp, elapsed_ms) of the "shards published" log line for `tid`
    (the scheduler logs it once every shard is published; dts commits before
    978088b do not have it)."""
    for ts, _lvl, msg in node.events():
        if msg.startswith("shards published") and f"task={tid}" in msg:
            m = re.search(r"elapsed_ms=(\d+)", msg)
            return ts, int(m.group(1)) if m else None
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
    """A private redis-server and tansu broker, one `dts server`, two
    `dts worker --cores N`."""

    def __init__(self, worker_cores, workers=2):
        self.tmp = make_temp("dist")
        self.redis = self.broker = self.server = self.api = None
        self.workers = []
        try:
            self._start(worker_cores, workers)
        except BaseException:
            self.stop()
            raise

    def _start(self, worker_cores, workers):
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
            # room and halves the broker's polling CPU against 10.
            "pubsub.kafka.fetch.wait.max.ms=25",
            "worker.heartbeat-interval-ms=500",
            "worker.heartbeat-ttl-ms=3000",
        ]
        self.set_flags = [x for s in sets for x in ("--set", s)]
        self.server = Node("dts-server", [DTS, "server", "--port", "0"] + self.set_flags,
                           self.tmp, r"dts listening on (http://\S+)")
        self.api = Api(self.server.match.group(1))
        self.workers = []
        for i in range(workers):
            self.workers.append(Node(f"dts-worker{i + 1}",
                                     [DTS, "worker", "--cores", str(worker_cores), "--id", f"bench-w{i + 1}"]
                                     + self.set_flags,
                                     self.tmp, r"dts worker (\S+) ready"))
        self._wait_settled(workers)

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

    def _wait_settled(self, workers, timeout=60):
        """Until /v1/workers lists every worker, the scheduler consumers have
        joined, and the workers' shard partitions cover the topic; then one
        warm-up task, so no rebalance happens while a timed task runs."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.api.json("GET", "/v1/workers")
            joined = any("scheduler consumers joined" in m for _, _, m in self.server.events())
            owned = [self._owned_partitions(w) for w in self.workers]
            union = set().union(*owned)
            disjoint = sum(len(o) for o in owned) == len(union)
            if (len(listed) >= workers and joined and all(owned)
                    and disjoint and union == set(range(PARTITIONS))):
                break
            for n in [self.server] + self.workers:
                if not n.proc.alive():
                    raise BenchError(f"{n.name} exited:\n{tail(n.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"the distributed stack did not settle in {timeout} s: "
                                 f"{len(listed)} workers listed, scheduler joined={joined}, "
                                 f"worker partitions={owned}")
            time.sleep(0.1)

    @staticmethod
    def _owned_partitions(node):
        owned = set()
        for _, _, msg in node.events():
            if SHARD_TOPIC not in msg:
                continue
            m = re.search(r"(assigned|revoked)=\[([\d, ]*)\]", msg)
            if not m:
                continue
            parts = {int(x) for x in m.group(2).replace(" ", "").split(",") if x}
            if m.group(1) == "assigned":
                owned |= parts
            else:
                owned -= parts
        return owned

    def dts_nodes(self):
        return [n for n in [self.server] + self.workers if n is not None]

    def cpu(self):
        parts = {}
        own = 0.0
        children = 0.0
        for n in self.dts_nodes():
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
        out = {"server": vm_hwm_kb(self.server.pid)}
        for w in self.workers:
            out[w.name.replace("dts-", "")] = vm_hwm_kb(w.pid)
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


# --------------------------------------------------------------------------
# Runners: each returns elapsed, CPU (the runner's own and its children's,
# i.e. the scripts'), peak RSS, and extras.

def run_child_runner(name, argv, stdin_path=None, timeout=900):
    """Times a runner started as our child. Its own CPU and its children's
    (the scripts') are split by reading /proc/PID/stat of the exited child
    before it is reaped (waitid WNOWAIT): utime+stime vs cutime+cstime."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    tmp = make_temp(name)
    err_path = os.path.join(tmp, "stderr")
    err = open(err_path, "wb")
    try:
        t0 = time.perf_counter()
        p = Proc(name, argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
        if not p.wait_exit_keep_zombie(timeout):
            p.stop(grace=2)
            raise BenchError(f"{name} did not finish in {timeout} s")
        elapsed = time.perf_counter() - t0
        own, children = proc_times(p.pid)
        code, rusage = p.reap()
    finally:
        err.close()
        if stdin_path:
            stdin.close()
    if code != 0:
        raise BenchError(f"{name} exited {code}: {tail(err_path, 5)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"elapsed": elapsed, "own": own, "children": children,
            "parts": {name: own}, "rss": {name: rusage.ru_maxrss}}


def run_xargs(wl, conc):
    return run_child_runner("xargs", ["xargs", "-P", str(conc), "-n", "1", "bash", "-c", wl["script"], "_"],
                            stdin_path=wl["file"])


def run_parallel(wl, conc):
    return run_child_runner("parallel", ["parallel", "--will-cite", "-j", str(conc), "-q",
                                         "bash", "-c", wl["script"], "_", "::::", wl["file"]])


def run_dts_run(wl, conc):
    return run_child_runner("dts-run", [DTS, "run", "--cores", str(conc), "--inputs", wl["file"],
                                        "--", wl["script"]])


def run_dts_run_warm(wl, conc):
    # The warm shells exit with dts run and are reaped by it, so their own
    # CPU lands in the scripts' column here (see dts up --warm-shell for the split).
    return run_child_runner("dts-run-warm", [DTS, "run", "--warm-shell", "--cores", str(conc),
                                             "--inputs", wl["file"], "--", wl["script"]])


def timed_task(node, wl, redis=None):
    """Submits the workload as one task and polls it until it ends."""
    body = task_body(wl["script"], wl["inputs"])
    if wl.get("interpreter"):
        body["interpreter"] = wl["interpreter"]
    body = json.dumps(body).encode()
    if redis is not None:
        stats0 = redis.commandstats()
    cpu0 = node.cpu()
    t0 = time.perf_counter()
    tid = node.api.submit(body)
    task = node.api.wait(tid)
    elapsed = time.perf_counter() - t0
    cpu1 = node.cpu()
    extra = {}
    if redis is not None:
        delta = stats_delta(stats0, redis.commandstats())
        extra["redis"] = {"calls": delta, "elapsed": elapsed}
    check_completed(task, wl["n"], f"{wl['name']} task")
    parts = {k: cpu1["parts"][k] - cpu0["parts"].get(k, 0) for k in cpu1["parts"]}
    return {"elapsed": elapsed, "own": cpu1["own"] - cpu0["own"],
            "children": cpu1["children"] - cpu0["children"], "parts": parts,
            "rss": node.rss(), "task_id": tid, **extra}


def run_dts_up(wl, conc, warm_shell=False):
    node = Embedded(conc, warm_shell=warm_shell)
    try:
        warm_up(node.api, wl["script"])
        return timed_task(node, wl)
    finally:
        node.stop()


def run_dts_up_warm(wl, conc):
    return run_dts_up(wl, conc, warm_shell=True)


def run_dts_dist(wl, conc):
    node = Distributed(worker_cores=max(1, conc // 2))
    redis = Redis(node.redis_port)
    try:
        warm_up(node.api, wl["script"])
        r = timed_task(node, wl, redis=redis)
        pl = planned_line(node.server, r["task_id"])
        r["shards"] = pl[1] if pl else None
        per_worker = {}
        for item in node.api.results(r["task_id"]):
            per_worker[item["worker"]] = per_worker.get(item["worker"], 0) + 1
        r["per_worker"] = per_worker
        return r
    finally:
        redis.close()
        node.stop()


def store_ops_run(wl):
    """An extra, untimed W1 run on a fresh distributed stack with Redis
    MONITOR attached: client requests (round trips; each command of a
    pipeline counts) versus commands run inside Lua scripts."""
    node = Distributed(worker_cores=1)
    redis = Redis(node.redis_port)
    mon = None
    try:
        warm_id = node.api.submit(task_body(wl["script"], ["a", "b"]))
        node.api.wait(warm_id, poll=0.05)
        mon = RedisMonitor(node.redis_port)
        time.sleep(2.0)  # the idle rate: heartbeats, leases, sweeps
        # What one status poll costs in Redis requests, to leave the bench's
        # own polls out.
        g0 = time.time()
        for _ in range(50):
            node.api.task(warm_id)
        g1 = time.time()
        stats0 = redis.commandstats()
        t0 = time.time()
        tid = node.api.submit(task_body(wl["script"], wl["inputs"]))
        polls = 0
        while True:
            time.sleep(0.5)
            polls += 1
            task = node.api.task(tid)
            if task["status"] in TERMINAL:
                break
            if time.time() - t0 > 600:
                raise BenchError("store-ops task did not end in 600 s")
        t1 = time.time()
        stats1 = redis.commandstats()
        time.sleep(0.3)
        check_completed(task, wl["n"], "store-ops task")
        client, lua, by_cmd = mon.count(t0, t1)
        idle_client, idle_lua, _ = mon.count(g0 - 2.0, g0 - 0.001)
        idle_client_s, idle_lua_s = idle_client / 2.0, idle_lua / 2.0
        get_client, get_lua, _ = mon.count(g0, g1)
        per_get = max(0.0, get_client - idle_client_s * (g1 - g0)) / 50
        per_get_lua = max(0.0, get_lua - idle_lua_s * (g1 - g0)) / 50
        pl = planned_line(node.server, tid)
        return {"items": wl["n"], "elapsed": t1 - t0, "shards": pl[1] if pl else None,
                "client": client, "lua": lua, "idle_client_per_s": idle_client_s,
                "idle_lua_per_s": idle_lua_s, "by_cmd": by_cmd, "polls": polls,
                "per_get": per_get, "per_get_lua": per_get_lua,
                "commandstats": sum(stats_delta(stats0, stats1).values())}
    finally:
        if mon:
            mon.stop()
        redis.close()
        node.stop()


def perf_lines(perf_data, *args):
    """[(percent, rest of line)] from `perf report --stdio`."""
    out = subprocess.run(["perf", "report", "-i", perf_data, "--stdio", "-g", "none"] + list(args),
                         capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?(.*)$", line)
        if m and not line.lstrip().startswith("#"):
            rows.append((float(m.group(1)), m.group(3).strip()))
    return rows


def call_chains(perf_data, pid):
    """The set of symbol names in each sample's call chain, for the samples of
    process `pid` (`perf script`: a header line, then one frame per line)."""
    out = subprocess.run(["perf", "script", "-i", perf_data, "--pid", str(pid), "-F", "pid,ip,sym"],
                         capture_output=True, text=True, timeout=300).stdout
    chains = []
    for block in out.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines:
            continue
        frames = set()
        for line in lines[1:]:
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.add(parts[1].strip())
        chains.append(frames)
    return chains


def profile_dts_up(wl):
    """perf record (cpu-clock, call graphs) on `dts up` while it runs W1;
    children inherit the counters, so bash's samples are there too and are
    told apart by thread name."""
    node = Embedded(CORES)
    tmp = make_temp("perf")
    data = os.path.join(tmp, "perf.data")
    try:
        warm_up(node.api, wl["script"])
        rec = Proc("perf", ["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(node.node.pid)])
        time.sleep(1.0)
        tid = node.api.submit(task_body(wl["script"], wl["inputs"]))
        check_completed(node.api.wait(tid, poll=0.2), wl["n"], "profiled task")
        tids = {int(t) for t in os.listdir(f"/proc/{node.node.pid}/task")}
        rec.signal(signal.SIGINT)
        rec.p.wait(timeout=60)
        pid = str(node.node.pid)
        threads = perf_lines(data, "--no-children", "--sort", "pid")
        dts_share = sum(p for p, t in threads if int(t.split(":")[0]) in tids)
        if dts_share <= 0:
            raise BenchError("perf saw no samples of dts up's threads")
        rel = ["--pid", pid, "--percentage", "relative"]
        selfs = perf_lines(data, "--no-children", "--sort", "dso,sym", *rel)
        # By binary, summed from the dso,sym rows: `--sort dso` alone gives
        # every sample to the main binary on a `perf record -p` profile.
        by_dso = {}
        for p, rest in selfs:
            dso = rest.split(None, 1)[0] if rest else "?"
            by_dso[dso] = by_dso.get(dso, 0.0) + p
        dsos = sorted(((p, d) for d, p in by_dso.items()), reverse=True)
        chains = call_chains(data, pid)

        def share(sym):
            """The share of dts up's samples with `sym` anywhere in their
            call chain, each sample counted once."""
            return sum(1 for frames in chains if sym in frames) / max(1, len(chains))
        return {
            "dts_share": dts_share / 100,
            "fork": share("kernel_clone"),
            "page_faults": max(share("asm_exc_page_fault"), share("exc_page_fault")),
            "cow": share("do_wp_page"), "tlb": share("flush_tlb_mm_range"),
            "epoll": share("epoll_wait"),
            "spawn": share("<std::process::Command>::spawn"),
            "dsos": [(p / 100, d) for p, d in dsos][:5],
            "top": [(p / 100, re.sub(r"\s+", " ", x)) for p, x in selfs][:10],
        }
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


RUNNER_FN = {"xargs": run_xargs, "parallel": run_parallel, "dts-up": run_dts_up,
             "dts-run": run_dts_run, "dts-dist": run_dts_dist,
             "dts-up-warm": run_dts_up_warm, "dts-run-warm": run_dts_run_warm}


# --------------------------------------------------------------------------
# W2 calibration

def child_cpu(argv):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def loop_script(n):
    return f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"


def calibrate(target_ms=2.0):
    """N such that the loop takes about `target_ms` of CPU in bash."""
    probe = 50000
    base = statistics.median(child_cpu(["bash", "-c", "true"]) for _ in range(15))
    full = statistics.median(child_cpu(["bash", "-c", loop_script(probe)]) for _ in range(7))
    per_iter = max(1e-9, (full - base) / probe)
    n = max(1, int(round(target_ms / 1000 / per_iter / 10.0)) * 10)
    check = statistics.median(child_cpu(["bash", "-c", loop_script(n)]) for _ in range(15))
    return {"n": n, "per_iter_us": per_iter * 1e6, "bash_startup_ms": base * 1000,
            "item_ms": check * 1000, "loop_ms": (check - base) * 1000}


# --------------------------------------------------------------------------
# Latency, status reads, W4

def latency(node, count):
    """Submit-to-first-item: each one-item task prints the time its item
    started (bash's $EPOCHREALTIME); the bench subtracts its send time."""
    first, done = [], []
    tid = None
    for i in range(count):
        body = json.dumps(task_body("echo $EPOCHREALTIME", [str(i)])).encode()
        t_send = time.time()
        tid = node.api.submit(body)
        task = node.api.wait(tid, timeout=60)
        t_done = time.time()
        check_completed(task, 1, "latency task")
        out = node.api.results(tid)[0]["stdout"].strip().replace(",", ".")
        first.append(float(out) - t_send)
        done.append(t_done - t_send)
    return {"first": first, "done": done, "task_id": tid}


def percentile(values, q):
    v = sorted(values)
    if not v:
        return None
    k = max(0, math.ceil(q / 100 * len(v)) - 1)
    return v[k]


def status_reads(node, tid, seconds):
    url = f"{node.api.url}/v1/tasks/{tid}"
    tmp = make_temp("wrk")
    out_path = os.path.join(tmp, "out")
    with open(out_path, "wb") as out:
        p = Proc("wrk", ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url], stdout=out, stderr=out)
        p.p.wait(timeout=seconds + 60)
    text = open(out_path).read()
    shutil.rmtree(tmp, ignore_errors=True)
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if p.p.returncode != 0 or not m:
        raise BenchError(f"wrk failed:\n{text}")
    r = {"rps": float(m.group(1)), "url": url}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    r["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors:(.*)", text)
    r["socket_errors"] = errors.group(1).strip() if errors else ""
    for q in ("50", "99"):
        mm = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if mm:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[mm.group(2)]
            r[f"p{q}_ms"] = float(mm.group(1)) * scale
    return r


def w4(node, n, complete, redis=None, broker_port=None):
    """One task of `n` items of `true`: submit -> planned (the scheduler's
    "task planned" log line) -> INPROGRESS seen by polling -> all shards on
    the shard topic (distributed: the topic's high watermarks); peak RSS;
    then cancel (or, with complete, wait for the end)."""
    inputs = [str(i) for i in range(n)]
    body = json.dumps(task_body("true", inputs, timeout_secs=3600)).encode()
    del inputs
    kafka = KafkaHw(broker_port) if broker_port else None
    base_hw = kafka.high_watermarks(SHARD_TOPIC, {p: 0 for p in range(PARTITIONS)}) if kafka else None
    stats0 = redis.commandstats() if redis else None
    cpu0 = node.cpu()
    log_node = node.server if isinstance(node, Distributed) else node.node
    r = {"items": n, "body_mb": len(body) / 1e6}
    t0 = time.time()
    tid = node.api.submit(body, timeout=900)
    r["t_accepted"] = time.time() - t0
    r["task_id"] = tid
    hw = dict(base_hw) if base_hw else None
    planned = published = None
    deadline = time.monotonic() + 900
    while True:
        now = time.time()
        if "t_inprogress" not in r:
            t = node.api.task(tid)
            if t["status"] not in ("QUEUED", "SUBMITTED", "RETRYING"):
                r["t_inprogress"] = now - t0
                r["status_seen"] = t["status"]
        if planned is None:
            planned = planned_line(log_node, tid)
            if planned:
                r["t_planned"] = planned[0] - t0
                r["shards"] = planned[1]
                planned_at = time.monotonic()
        if planned and published is None:
            published = published_line(log_node, tid)
            if published:
                r["t_published_log"] = published[0] - t0
                r["plan_publish_ms_log"] = published[1]
            elif time.monotonic() - planned_at > 60:
                published = False  # this dts does not log it
        if kafka and planned and "t_published" not in r:
            hw = kafka.high_watermarks(SHARD_TOPIC, hw)
            if sum(hw[p] - base_hw.get(p, 0) for p in hw) >= planned[1]:
                r["t_published"] = time.time() - t0
        if ("t_inprogress" in r and planned and published is not None
                and (not kafka or "t_published" in r)):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"W4: not planned and published after 900 s: {r}")
        time.sleep(0.02)
    if redis:
        delta = stats_delta(stats0, redis.commandstats())
        r["redis_plan"] = {"calls": delta, "total": sum(delta.values())}
        r["redis_used_memory"] = redis.info_field("memory", "used_memory_human")
    if complete:
        t = node.api.wait(tid, poll=1.0, timeout=6 * 3600)
        r["t_completed"] = time.time() - t0
        r["final_status"] = t["status"]
        r["succeeded"] = t.get("itemsSucceeded")
        r["failed"] = t.get("itemsFailed")
        # One result per item: the results' total, and the first and last.
        page = node.api.json("GET", f"/v1/tasks/{tid}/results?limit=1", timeout=120)
        last = node.api.json("GET", f"/v1/tasks/{tid}/results?offset={n - 1}&limit=5", timeout=120)
        r["results_total"] = page.get("total")
        r["last_index"] = [item.get("index") for item in last.get("items", [])]
        if redis:
            r["redis_used_memory_done"] = redis.info_field("memory", "used_memory_human")
    else:
        time.sleep(3.0)  # let the workers take shards: their RSS with shards held
        t = node.api.task(tid)
        r["done_before_cancel"] = (t.get("itemsSucceeded") or 0) + (t.get("itemsFailed") or 0)
        r["t_before_cancel"] = time.time() - t0
        tc = time.time()
        node.api.json("POST", f"/v1/tasks/{tid}/cancel", expect=(200, 202, 409))
        t = node.api.wait(tid, poll=0.1, timeout=300)
        r["t_cancel"] = time.time() - tc
        r["final_status"] = t["status"]
    cpu1 = node.cpu()
    r["cpu_own"] = cpu1["own"] - cpu0["own"]
    r["cpu_parts"] = {k: cpu1["parts"][k] - cpu0["parts"].get(k, 0) for k in cpu1["parts"]}
    r["rss"] = node.rss()
    if kafka:
        kafka.close()
    return r


# --------------------------------------------------------------------------
# The benchmark

def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def cmd(argv):
        try:
            return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    commit = cmd(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = cmd(["git", "status", "--porcelain", "--untracked-files=no"])
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": CORES, "cpu": model, "kernel": platform.release(),
        "os": cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "bash": cmd(["bash", "-c", "echo $BASH_VERSION"]),
        "xargs": cmd(["xargs", "--version"]).splitlines()[0] if shutil.which("xargs") else "missing",
        "parallel": (cmd(["parallel", "--version"]).splitlines() or ["?"])[0] if shutil.which("parallel") else "missing",
        "redis": cmd(["redis-server", "--version"]).split(" sha=")[0] if shutil.which("redis-server") else "missing",
        "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines() or ["?"])[0].split(" [")[0] if shutil.which("wrk") else "missing",
    }


def check_tools():
    missing = [t for t in ("bash", "xargs", "parallel", "wrk", "redis-server", "git") if shutil.which(t) is None]
    if not os.access(DTS, os.X_OK):
        missing.append(f"{DTS} (cargo build --release)")
    try:
        find_tansu()
    except BenchError:
        missing.append("tansu (./scripts/install-test-deps.sh)")
    if missing:
        raise BenchError("missing: " + ", ".join(missing) + " — run ./bench/run.sh, which installs them")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows, wl_order):
    """Per (workload, runner): medians over runs."""
    out = []
    for wname in wl_order:
        for runner in RUNNERS:
            runs = [r for r in rows if r["workload"] == wname and r["runner"] == runner]
            if not runs:
                continue
            ok = [r for r in runs if "error" not in r]
            s = {"workload": wname, "runner": runner, "runs": len(runs), "errors": [r["error"] for r in runs if "error" in r]}
            if ok:
                n = ok[0]["n"]
                s["n"] = n
                s["rates"] = [r["rate"] for r in ok]
                s["rate"] = median(s["rates"])
                s["ratios"] = [r.get("ratio") for r in ok if r.get("ratio") is not None]
                s["ratio"] = median(s["ratios"])
                s["own_ms"] = median([r["own"] / n * 1000 for r in ok])
                s["children_ms"] = median([r["children"] / n * 1000 for r in ok])
                s["parts_ms"] = {k: median([r["parts"].get(k, 0) / n * 1000 for r in ok]) for k in ok[0]["parts"]}
                rss = {}
                for r in ok:
                    for k, v in r["rss"].items():
                        if v is not None:
                            rss[k] = max(rss.get(k, 0), v)
                s["rss_kb"] = rss
                if s["rate"] and len(s["rates"]) > 1:
                    s["spread"] = (max(s["rates"]) - min(s["rates"])) / s["rate"]
                for key in ("shards", "per_worker", "redis"):
                    vals = [r[key] for r in ok if key in r]
                    if vals:
                        s[key] = vals
            out.append(s)
    return out


def fmt(x, spec, none="—"):
    return none if x is None else format(x, spec)


def rss_text(s):
    rss = s.get("rss_kb", {})
    if s["runner"] == "dts-dist":
        w = max([v for k, v in rss.items() if k.startswith("worker")] or [0])
        return f"{rss.get('server', 0) / 1024:.0f} / {w / 1024:.0f}"
    if not rss:
        return "—"
    return f"{max(rss.values()) / 1024:.0f}"


def table_rows(summary):
    head = ["workload", "runner", "items/s", "× xargs", "runner CPU ms/item", "scripts CPU ms/item", "peak RSS MB", "runs (items/s)"]
    lines = []
    for s in summary:
        if not s.get("rates"):
            lines.append([s["workload"], RUNNER_LABEL[s["runner"]], "ERROR", "", "", "", "", "; ".join(s["errors"])[:80]])
            continue
        runs = ", ".join(f"{x:.0f}" for x in s["rates"])
        if s["errors"]:
            runs += f" ({len(s['errors'])} failed)"
        lines.append([s["workload"], RUNNER_LABEL[s["runner"]], f"{s['rate']:.0f}",
                      fmt(s["ratio"], ".2f"), f"{s['own_ms']:.3f}", f"{s['children_ms']:.3f}",
                      rss_text(s), runs])
    return head, lines


def text_table(head, lines):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    for line in lines:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    return "\n".join(out)


def md_table(head, lines):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for line in lines:
        out.append("| " + " | ".join(str(x) for x in line) + " |")
    return "\n".join(out)


def targets(summary, extra, quick):
    """[(target, measured, PASS/MISS/n.a.)]"""
    S = {(s["workload"], s["runner"]): s for s in summary}
    out = []

    def ratio_target(w, runner, floor, label):
        s = S.get((w, runner))
        if not s or s.get("ratio") is None:
            out.append((f"{w} {label} ≥ {floor}× xargs", "not measured", "n/a"))
            return
        out.append((f"{w} {label} ≥ {floor}× xargs", f"{s['ratio']:.2f}×", "PASS" if s["ratio"] >= floor else "MISS"))

    for w in ("W1", "W2"):
        ratio_target(w, "dts-up", 0.9, "embedded (dts up)")
        ratio_target(w, "dts-run", 0.9, "embedded one-shot (dts run)")
        ratio_target(w, "dts-dist", 0.75, "distributed")
    ratio_target("W3", "dts-up", 0.95, "embedded (dts up)")
    ratio_target("W3", "dts-run", 0.95, "embedded one-shot (dts run)")
    ratio_target("W3", "dts-dist", 0.95, "distributed")
    for runner, limit, label in (("dts-up", 0.3, "embedded (dts up)"), ("dts-run", 0.3, "embedded one-shot (dts run)"),
                                 ("dts-dist", 0.6, "distributed (server+workers+redis+broker)")):
        for w in ("W1", "W2"):
            s = S.get((w, runner))
            if not s or s.get("own_ms") is None:
                continue
            out.append((f"dts's own CPU per item, {w}, {label} ≤ {limit} ms", f"{s['own_ms']:.3f} ms",
                        "PASS" if s["own_ms"] <= limit else "MISS"))
    for mode in ("embedded", "distributed"):
        w = extra.get("w4", {}).get(mode)
        if not w:
            continue
        if "error" in w:
            out.append((f"W4 {mode}: plan and publish 1,000,000 items < 5 s", "error: " + w["error"][:60], "MISS"))
            continue
        if "t_published" in w:
            t, what = w["t_published"], "submit → all shards on the shard topic"
        elif "t_published_log" in w:
            t, what = w["t_published_log"], "submit → \"shards published\" logged"
        else:
            t, what = w["t_planned"], "submit → \"task planned\" logged; publishing not observable"
        full = w["items"] >= 1_000_000
        out.append((f"W4 {mode}: plan and publish 1,000,000 items < 5 s",
                    f"{t:.2f} s ({what}; {w['items']:,} items)",
                    ("PASS" if t < 5 else "MISS") if full else "n/a (quick: fewer items)"))
        rss = w["rss"]
        if mode == "embedded":
            v = rss.get("dts up") or 0
            out.append(("W4 embedded: dts up RSS < 400 MB", f"{v / 1024:.0f} MB",
                        ("PASS" if v < 400 * 1024 else "MISS") if full else "n/a (quick)"))
        else:
            sv = rss.get("server") or 0
            wv = max(v or 0 for k, v in rss.items() if k.startswith("worker"))
            out.append(("W4 distributed: server RSS < 400 MB", f"{sv / 1024:.0f} MB",
                        ("PASS" if sv < 400 * 1024 else "MISS") if full else "n/a (quick)"))
            out.append(("W4 distributed: each worker RSS < 400 MB", f"{wv / 1024:.0f} MB",
                        ("PASS" if wv < 400 * 1024 else "MISS") if full else "n/a (quick)"))
    ops = extra.get("store_ops")
    if ops and "error" not in ops:
        out.append(("Store requests (client → Redis) per item O(1/shard), not O(1) (W1 distributed; PASS if ≤ 0.1)",
                    f"{ops['client_per_item']:.3f} per item, {ops['client_per_shard']:.0f} per shard ({ops['shards']} shards)",
                    "PASS" if ops["client_per_item"] <= 0.1 else "MISS"))
        total = ops["client_per_item"] + ops["lua_per_item"]
        # Not a target: each result is written once, so the commands a script
        # runs grow with items by nature; what must not grow per item are
        # the round trips, checked above.
        out.append(("Redis commands executed per item, including inside Lua scripts (information; each result is one hash field and two sorted-set entries)",
                    f"{total:.2f} per item ({ops['lua_per_item']:.2f} inside scripts)",
                    "info"))
    elif ops:
        out.append(("Store operations per item O(1/shard)", "error: " + ops["error"][:60], "MISS"))
    for mode, limit in (("embedded", 20), ("distributed", 100)):
        lat = extra.get("latency", {}).get(mode)
        if lat and "error" not in lat:
            p50 = percentile(lat["first"], 50) * 1000
            out.append((f"Latency p50 submit→first item, {mode} < {limit} ms", f"{p50:.1f} ms",
                        "PASS" if p50 < limit else "MISS"))
    for mode in ("embedded", "distributed"):
        rd = extra.get("reads", {}).get(mode)
        if rd and "error" not in rd:
            out.append((f"Status reads GET /v1/tasks/{{id}}, {mode} ≥ 10,000/s", f"{rd['rps']:,.0f}/s",
                        "PASS" if rd["rps"] >= 10000 and rd["non2xx"] == 0 else "MISS"))
    for runner in ("dts-up-warm", "dts-run-warm"):
        s = S.get(("W1", runner))
        if s and s.get("ratio") is not None:
            out.append((f"Stretch: W1 embedded > 1.3× xargs ({RUNNER_LABEL[runner]}; off by default, docs/warm-shell.md)",
                        f"{s['ratio']:.2f}×", "PASS" if s["ratio"] > 1.3 else "MISS"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer items and one run: a smoke check")
    ap.add_argument("--runs", type=int, default=None, help="runs per (workload, runner); medians are reported (default 3, 1 with --quick)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--skip-w4", action="store_true", help="leave out W4 (1,000,000 items)")
    ap.add_argument("--w4-complete", action="store_true", help="run W4 to completion (many minutes) instead of cancelling it once planned")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                    help="profile dts up with perf during an extra W1 run (default: on for full runs when perf is installed)")
    ap.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated subset of {','.join(RUNNERS)}")
    ap.add_argument("--output", default=None, help="where to write the report (default BENCHMARKS.md for a full run; none for --quick/--only unless given)")
    ap.add_argument("--json", default=None, help="also write every measurement as JSON to this file")
    args = ap.parse_args()

    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        ap.error("--runs must be at least 1")
    sections = SECTIONS if args.only is None else [x.strip().upper() for x in args.only.split(",") if x.strip()]
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown {bad}; choose from {SECTIONS}")
    if args.skip_w4 and "W4" in sections:
        sections.remove("W4")
    runners = [x.strip() for x in args.runners.split(",") if x.strip()]
    bad = [x for x in runners if x not in RUNNERS]
    if bad:
        ap.error(f"--runners: unknown {bad}; choose from {RUNNERS}")
    output = args.output
    if output is None and not args.quick and args.only is None and not args.skip_w4 and args.runners == ",".join(RUNNERS):
        output = os.path.join(ROOT, "BENCHMARKS.md")

    if args.profile is None:
        args.profile = not args.quick and shutil.which("perf") is not None
    check_tools()
    command = os.environ.get("BENCH_COMMAND") or " ".join(shlex.quote(a) for a in ["python3", "bench/bench.py"] + sys.argv[1:])
    info = machine_info()
    started = time.time()
    log(f"dts benchmark: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}, dts {info['commit']}")
    idle = cpu_idle_fraction(1.0)
    load = os.getloadavg()
    log(f"machine idle {idle * 100:.0f}% over 1 s, load average {load[0]:.2f}")
    notes = []
    if idle < 0.9:
        notes.append(f"The machine was only {idle * 100:.0f}% idle when the benchmark started (load average {load[0]:.2f}): something else was running.")

    sizes = {"W1": 500, "W2": 200, "W3": 80} if args.quick else {"W1": 5000, "W2": 2000, "W3": 400}
    w4_items = 100_000 if args.quick else 1_000_000
    lat_count = 20 if args.quick else 200
    wrk_secs = 3 if args.quick else 10

    extra = {"notes": notes}
    rows = []
    work = make_temp("inputs")
    workloads = {}
    cal = None
    if "W2" in sections:
        log("calibrating W2 ...")
        cal = calibrate(2.0)
        extra["calibration"] = cal
        log(f"W2 calibration: N={cal['n']} iterations ({cal['per_iter_us']:.3f} µs each): one item = "
            f"{cal['item_ms']:.2f} ms CPU, of which bash -c startup {cal['bash_startup_ms']:.2f} ms and loop {cal['loop_ms']:.2f} ms")
    for name, script, conc in (("W1", 'echo "$1"', CORES),
                               ("W2", loop_script(cal["n"]) if cal else None, CORES),
                               ("W3", "sleep 0.05", 8)):
        if name not in sections:
            continue
        n = sizes[name]
        inputs = [f"item-{i:05d}" for i in range(n)]
        path = os.path.join(work, f"{name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(inputs) + "\n")
        workloads[name] = {"name": name, "script": script, "n": n, "conc": conc, "inputs": inputs, "file": path}
    extra["workloads"] = {k: {"script": v["script"], "n": v["n"], "conc": v["conc"]} for k, v in workloads.items()}

    # Warm the page cache and bash before anything is timed.
    if workloads:
        for wl in workloads.values():
            subprocess.run(["xargs", "-P", str(CORES), "-n", "1", "bash", "-c", wl["script"], "_"],
                           input="\n".join(wl["inputs"][:20]).encode(), stdout=subprocess.DEVNULL, check=False)

    for run in range(1, runs + 1):
        for wname, wl in workloads.items():
            for runner in runners:
                log(f"run {run}/{runs}  {wname} × {wl['n']}  {RUNNER_LABEL[runner]} ...")
                row = {"workload": wname, "runner": runner, "run": run, "n": wl["n"]}
                try:
                    r = RUNNER_FN[runner](wl, wl["conc"])
                    row.update(r)
                    row["rate"] = wl["n"] / r["elapsed"]
                    log(f"    {row['rate']:8.1f} items/s  ({r['elapsed']:.2f} s; runner CPU {r['own'] / wl['n'] * 1000:.3f} ms/item, "
                        f"scripts {r['children'] / wl['n'] * 1000:.3f} ms/item)")
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # keep going: one broken row must not hide the others
                    row["error"] = f"{type(e).__name__}: {e}"
                    log(f"    ERROR {row['error']}")
                    traceback.print_exc()
                rows.append(row)
            # Ratios to xargs in the same run and workload.
            base = next((r["rate"] for r in rows if r["run"] == run and r["workload"] == wname
                         and r["runner"] == "xargs" and "rate" in r), None)
            for r in rows:
                if base and r["run"] == run and r["workload"] == wname and "rate" in r:
                    r["ratio"] = r["rate"] / base

    summary = summarize(rows, list(workloads))
    w1 = next((s for s in summary if s["workload"] == "W1" and s["runner"] == "dts-dist" and s.get("redis")), None)
    if w1:
        per = [sum(red["calls"].values()) / w1["n"] for red in w1["redis"]]
        extra["commandstats_per_item"] = median(per)
        extra["commandstats_runs"] = per
    if "W1" in workloads and "dts-dist" in runners:
        log(f"store operations: an extra W1 run on a fresh distributed stack with Redis MONITOR ...")
        try:
            ops = store_ops_run(workloads["W1"])
            n = ops["items"]
            ops["client_per_item"] = max(0.0, ops["client"] - ops["idle_client_per_s"] * ops["elapsed"]
                                         - ops["polls"] * ops["per_get"]) / n
            ops["lua_per_item"] = max(0.0, ops["lua"] - ops["idle_lua_per_s"] * ops["elapsed"]
                                      - ops["polls"] * ops["per_get_lua"]) / n
            ops["client_per_shard"] = ops["client_per_item"] * n / (ops["shards"] or 1)
            extra["store_ops"] = ops
            log(f"    {ops['client_per_item']:.3f} client requests and {ops['lua_per_item']:.2f} script commands per item "
                f"({ops['shards']} shards)")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            extra["store_ops"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"    ERROR {e}")
            traceback.print_exc()

    if args.profile and "W1" in workloads and "dts-up" in runners:
        if shutil.which("perf") is None:
            log("profile skipped: perf is not installed (apt-get install linux-perf)")
            extra["profile"] = {"error": "perf is not installed"}
        else:
            log("profile: perf record on dts up during an extra, untimed W1 run ...")
            try:
                extra["profile"] = profile_dts_up(workloads["W1"])
                pr = extra["profile"]
                log(f"    fork {pr['fork'] * 100:.0f}% and page faults {pr['page_faults'] * 100:.0f}% of dts's samples")
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                extra["profile"] = {"error": f"{type(e).__name__}: {e}"}
                log(f"    ERROR {e}")
                traceback.print_exc()

    if args.profile and "W1" in workloads and "dts-up" in runners:
        # A/B for the profile's finding: the same W1 with the interpreter given
        # as an absolute path, which lets Rust's Command use posix_spawn.
        bash = shutil.which("bash")
        log(f"diagnostic: W1 on dts up with \"interpreter\": \"{bash}\" ({runs} runs) ...")
        ab = []
        for _ in range(runs):
            try:
                wl = dict(workloads["W1"], interpreter=bash)
                r = run_dts_up(wl, wl["conc"])
                ab.append({"rate": wl["n"] / r["elapsed"], "own_ms": r["own"] / wl["n"] * 1000,
                           "children_ms": r["children"] / wl["n"] * 1000})
                log(f"    {ab[-1]['rate']:.0f} items/s, dts CPU {ab[-1]['own_ms']:.3f} ms/item, "
                    f"scripts {ab[-1]['children_ms']:.3f} ms/item")
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                log(f"    ERROR {e}")
        if ab:
            xr = [r["rate"] for r in rows if r["workload"] == "W1" and r["runner"] == "xargs" and "rate" in r]
            extra["abs_interpreter"] = {"path": bash, "runs": ab, "rate": median([a["rate"] for a in ab]),
                                        "own_ms": median([a["own_ms"] for a in ab]),
                                        "children_ms": median([a["children_ms"] for a in ab]),
                                        "xargs_rate": median(xr)}

    # Latency and status reads, then W4, each on fresh nodes.
    for mode in ("embedded", "distributed"):
        wanted = ("dts-up" if mode == "embedded" else "dts-dist") in runners
        if not wanted or not ({"LAT", "READS"} & set(sections)):
            continue
        node = None
        try:
            log(f"{mode}: starting for latency / status reads ...")
            node = Embedded(CORES) if mode == "embedded" else Distributed(worker_cores=1)
            warm_up(node.api, "true")
            tid = None
            if "LAT" in sections:
                log(f"{mode}: latency over {lat_count} one-item tasks ...")
                try:
                    lat = latency(node, lat_count)
                    extra.setdefault("latency", {})[mode] = lat
                    tid = lat["task_id"]
                    log(f"    first item p50 {percentile(lat['first'], 50) * 1000:.1f} ms, p99 {percentile(lat['first'], 99) * 1000:.1f} ms")
                except BenchError as e:
                    extra.setdefault("latency", {})[mode] = {"error": str(e)}
                    log(f"    ERROR {e}")
            if "READS" in sections:
                if tid is None:
                    tid = node.api.submit(task_body('echo "$1"', ["x"]))
                    check_completed(node.api.wait(tid), 1, "status-read task")
                log(f"{mode}: wrk -t2 -c32 -d{wrk_secs}s GET /v1/tasks/{{id}} ...")
                try:
                    cpu0 = node.cpu()
                    rd = status_reads(node, tid, wrk_secs)
                    cpu1 = node.cpu()
                    rd["cpu_parts_s"] = {k: cpu1["parts"][k] - cpu0["parts"].get(k, 0) for k in cpu1["parts"]}
                    extra.setdefault("reads", {})[mode] = rd
                    log(f"    {rd['rps']:,.0f} requests/s")
                except BenchError as e:
                    extra.setdefault("reads", {})[mode] = {"error": str(e)}
                    log(f"    ERROR {e}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            extra.setdefault("latency", {})[mode] = {"error": f"{type(e).__name__}: {e}"}
            log(f"    ERROR {e}")
            traceback.print_exc()
        finally:
            if node:
                node.stop()

    if "W4" in sections:
        for mode in ("embedded", "distributed"):
            if ("dts-up" if mode == "embedded" else "dts-dist") not in runners:
                continue
            node = redis = None
            log(f"W4 {mode}: one task of {w4_items:,} items of `true`{' (to completion)' if args.w4_complete else ''} ...")
            try:
                if mode == "embedded":
                    node = Embedded(CORES)
                    warm_up(node.api, "true")
                    r = w4(node, w4_items, args.w4_complete)
                else:
                    node = Distributed(worker_cores=1)
                    warm_up(node.api, "true")
                    redis = Redis(node.redis_port)
                    r = w4(node, w4_items, args.w4_complete, redis=redis, broker_port=node.broker_port)
                extra.setdefault("w4", {})[mode] = r
                log(f"    accepted {r['t_accepted']:.2f} s, planned {r.get('t_planned', float('nan')):.2f} s, "
                    f"INPROGRESS {r.get('t_inprogress', float('nan')):.2f} s"
                    + (f", published (log) {r['t_published_log']:.2f} s" if "t_published_log" in r else "")
                    + (f", on the topic {r['t_published']:.2f} s" if "t_published" in r else "")
                    + f", {r.get('shards')} shards; RSS " + ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in r["rss"].items() if v))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                extra.setdefault("w4", {})[mode] = {"error": f"{type(e).__name__}: {e}"}
                log(f"    ERROR {e}")
                traceback.print_exc()
            finally:
                if redis:
                    redis.close()
                if node:
                    node.stop()

    duration = time.time() - started
    report = render(info, command, args, runs, summary, extra, rows, duration)
    print(report["text"])
    if output:
        with open(output, "w") as f:
            f.write(report["markdown"])
        log(f"wrote {output}")
    else:
        log("report not written (a --quick or partial run; pass --output FILE to write one)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows, "summary": summary, "extra": extra}, f, indent=1, default=str)
    failed = [r for r in rows if "error" in r]
    failed += [1 for sec in ("latency", "reads", "w4") for v in extra.get(sec, {}).values() if "error" in v]
    return 1 if failed else 0


def render(info, command, args, runs, summary, extra, rows, duration):
    head, lines = table_rows(summary)
    tg = targets(summary, extra, args.quick)
    text = ["", text_table(head, lines), ""]
    md = []
    md.append("# Benchmarks\n")
    md.append("dts against `xargs -P` and GNU `parallel` on the same machine, in one run. "
              "Written by `bench/bench.py`; throughput is measured here. Tests check behaviour, "
              "and time only where dts promises a bound (a cancel ends running items within 2 s), "
              "with room for a loaded machine.\n")
    md.append("## Machine and command\n")
    md.append(f"- Machine: {info['nproc']} cores ({info['cpu']}), {info['mem_gb']} GB RAM, kernel {info['kernel']}, {info['os']}")
    md.append(f"- dts commit: `{info['commit']}` (release build)")
    md.append(f"- Date: {info['date']}; the run took {duration / 60:.1f} minutes")
    md.append(f"- Tools: bash {info['bash']}, {info['xargs']}, {info['parallel']}, {info['redis']}, tansu 0.6.0 (memory storage), {info['wrk']}")
    md.append(f"- Command: `{command}`")
    md.append(f"- Runs per row: {runs}{' (QUICK: fewer items, not comparable with the targets)' if args.quick else ''}")
    for n in extra.get("notes", []):
        md.append(f"- Note: {n}")
    md.append("")
    # A partial run (--only W4, say) has no throughput to show.
    if summary:
        md.append("## Workloads\n")
        for k, v in extra.get("workloads", {}).items():
            md.append(f"- {k}: `{v['script']}` × {v['n']:,} items at concurrency {v['conc']}")
        cal = extra.get("calibration")
        if cal:
            md.append(f"- W2 calibration: N = {cal['n']} iterations ({cal['per_iter_us']:.3f} µs each); "
                      f"one item takes {cal['item_ms']:.2f} ms CPU: {cal['bash_startup_ms']:.2f} ms to start `bash -c` "
                      f"and {cal['loop_ms']:.2f} ms of loop (medians of 15 runs)")
        md.append("")
        md.append("## Throughput\n")
        md.append(md_table(head, lines))
        md.append("")
        md.append(HOW_MEASURED)
        # CPU breakdown for dts rows
        brk = []
        for s in summary:
            if s["runner"] in ("dts-up", "dts-dist", "dts-up-warm") and s.get("parts_ms"):
                parts = ", ".join(f"{k} {v:.3f}" for k, v in s["parts_ms"].items())
                extra_txt = ""
                if s.get("shards"):
                    extra_txt += f"; shards: {', '.join(str(x) for x in s['shards'])}"
                if s.get("per_worker"):
                    extra_txt += "; items per worker: " + " | ".join(
                        ", ".join(f"{k}: {v}" for k, v in sorted(pw.items())) for pw in s["per_worker"])
                brk.append(f"- {s['workload']} {RUNNER_LABEL[s['runner']]}: {parts} ms/item{extra_txt}")
        if brk:
            md.append("\nCPU per item by process (medians; ms/item):\n")
            md += brk
        noisy = [s for s in summary if s.get("spread", 0) > 0.10]
        if noisy:
            md.append("\nRows whose runs differ by more than 10% (max−min over median): " +
                      ", ".join(f"{s['workload']} {RUNNER_LABEL[s['runner']]} ({s['spread'] * 100:.0f}%)" for s in noisy) + "."
                      + (" Distributed runs differ mostly by how the shards fell on the two workers' partitions "
                         "(items per worker, above): a worker runs only the shards of the partitions it owns."
                         if any(s["runner"] == "dts-dist" for s in noisy) else ""))
    ops = extra.get("store_ops")
    if ops:
        md.append("\n## Store operations (distributed, W1)\n")
        if "error" in ops:
            md.append(f"ERROR {ops['error']}")
        else:
            n = ops["items"]
            md.append(f"An extra, untimed W1 run ({n:,} items, {ops['shards']} shards, {ops['elapsed']:.1f} s) on a fresh "
                      f"distributed stack with Redis `MONITOR` attached, which shows whether a client sent a command or a "
                      f"Lua script ran it. Subtracted: the idle rates measured for 2 s before the submit (heartbeats, "
                      f"leases, sweeps: {ops['idle_client_per_s']:.1f} client requests/s, {ops['idle_lua_per_s']:.1f} "
                      f"script commands/s), and the bench's own status polls ({ops['polls']} polls, every 0.5 s in this "
                      f"run, at {ops['per_get']:.1f} requests each, measured on 50 polls of an ended task).\n")
            md.append(f"- client requests to Redis: {ops['client']:,} → **{ops['client_per_item']:.3f} per item**, "
                      f"**{ops['client_per_shard']:.0f} per shard** (each command of a pipeline counts; EVALSHA counts once)")
            md.append(f"- commands run inside Lua scripts: {ops['lua']:,} → **{ops['lua_per_item']:.2f} per item**")
            cs = extra.get("commandstats_per_item")
            if cs is not None:
                md.append(f"- `INFO commandstats` (sum of `calls`, which counts commands inside scripts too; the bench's INFO "
                          f"left out; nothing subtracted, so the timed runs' 10 ms status polls are in), before/after the "
                          f"timed W1 runs: {cs:.2f} per item (runs: "
                          + ", ".join(f"{x:.2f}" for x in extra["commandstats_runs"]) + ")")
            top = sorted(ops["by_cmd"].items(), key=lambda kv: -kv[1])[:14]
            md.append("- busiest (\"lua\" = inside a script): " + ", ".join(f"`{k}` {v:,}" for k, v in top))
    pr = extra.get("profile")
    if pr:
        md.append("\n## Where dts up's own CPU goes (perf)\n")
        if "error" in pr:
            md.append(f"Profile not taken: {pr['error']}")
        else:
            md.append(f"`perf record -F 999 -g -p <dts up>` during an extra, untimed W1 run. The items inherit the "
                      f"counters; dts up's own threads (its process, not the forked children) have "
                      f"{pr['dts_share'] * 100:.0f}% of the samples, the items (bash, including the forked children before "
                      f"they exec) the rest. Of dts up's own samples (`perf report --pid <dts up> --percentage relative`; "
                      f"the share of samples with the function anywhere in their call chain, each sample counted once; shares overlap):\n")
            md.append(f"- under `kernel_clone` (starting each item's process): **{pr['fork'] * 100:.0f}%**")
            md.append(f"- page faults: **{pr['page_faults'] * 100:.0f}%**, of which copy-on-write (`do_wp_page`) "
                      f"{pr['cow'] * 100:.0f}% (after a fork, the first write to each page faults); TLB flushes "
                      f"(`flush_tlb_mm_range`, IPIs to the other core) {pr['tlb'] * 100:.0f}%")
            md.append(f"- `std::process::Command::spawn` in total: {pr['spawn'] * 100:.0f}%; `epoll_wait`: {pr['epoll'] * 100:.0f}%")
            md.append("- by binary: " + ", ".join(f"{d} {p * 100:.0f}%" for p, d in pr["dsos"]))
            md.append("- hottest symbols (self): " + ", ".join(f"`{x}` {p * 100:.1f}%" for p, x in pr["top"]))
            md.append("\nRust's `std::process::Command` spawns with `posix_spawn` (vfork-like, no page-table copy) only "
                      "when it can; `env_clear()` plus a `PATH` in the child's environment with a bare program name "
                      "(`bash`) makes it fall back to `fork` + `execvp`, which copies dts's page tables for every item. "
                      "The executor therefore resolves the interpreter to an absolute path once per shard; the A/B "
                      "below checks that the default now costs what an explicit path does. The page-fault share above "
                      "is what is left of the copy-on-write faults the fork fallback used to cause (two thirds of "
                      "dts's CPU before).")
            ab = extra.get("abs_interpreter")
            if ab:
                w1 = next((s for s in summary if s["workload"] == "W1" and s["runner"] == "dts-up" and s.get("rate")), None)
                md.append(f"\nA/B (diagnostic, not a workload of the issue): the same W1 on dts up with the task's "
                          f"`\"interpreter\": \"{ab['path']}\"` (an absolute path, so `posix_spawn` is used) ran at "
                          f"**{ab['rate']:.0f} items/s** ({ab['rate'] / ab['xargs_rate']:.2f}× the median xargs W1 rate), "
                          f"dts CPU **{ab['own_ms']:.3f} ms/item**, scripts {ab['children_ms']:.3f} ms/item (medians of "
                          f"{len(ab['runs'])} runs: " + ", ".join(f"{a['rate']:.0f}" for a in ab["runs"]) + " items/s)"
                          + (f"; with the default `bash`: {w1['rate']:.0f} items/s, {w1['own_ms']:.3f} ms/item, "
                             f"scripts {w1['children_ms']:.3f} ms/item." if w1 else "."))

    if extra.get("latency") or extra.get("reads"):
        md.append("\n## Latency and status reads\n")
    for mode in ("embedded", "distributed"):
        lat = extra.get("latency", {}).get(mode)
        if lat:
            if "error" in lat:
                md.append(f"- {mode}: latency ERROR {lat['error']}")
            else:
                f, d = lat["first"], lat["done"]
                md.append(f"- {mode}: submit → first item started over {len(f)} one-item tasks sent one after another "
                          f"(the item is `echo $EPOCHREALTIME`, bash's clock when it starts, minus the client's clock just "
                          f"before the POST): "
                          f"p50 **{percentile(f, 50) * 1000:.1f} ms**, p99 **{percentile(f, 99) * 1000:.1f} ms**, "
                          f"max {max(f) * 1000:.1f} ms; submit → the client saw COMPLETED (polling every 10 ms): "
                          f"p50 {percentile(d, 50) * 1000:.1f} ms, p99 {percentile(d, 99) * 1000:.1f} ms")
        rd = extra.get("reads", {}).get(mode)
        if rd:
            if "error" in rd:
                md.append(f"- {mode}: status reads ERROR {rd['error']}")
            else:
                md.append(f"- {mode}: `wrk -t2 -c32 -d{3 if args.quick else 10}s` on `GET /v1/tasks/{{id}}` (a completed one-item task, "
                          f"whole task JSON): **{rd['rps']:,.0f} requests/s**, latency p50 {fmt(rd.get('p50_ms'), '.2f')} ms, "
                          f"p99 {fmt(rd.get('p99_ms'), '.2f')} ms, non-2xx {rd['non2xx']}"
                          + (f", socket errors {rd['socket_errors']}" if rd["socket_errors"] else "")
                          + "; wrk shares the 2 cores with dts")
    w4s = extra.get("w4")
    if w4s:
        md.append("\n## W4: one task of many items\n")
        for mode, r in w4s.items():
            if "error" in r:
                md.append(f"- {mode}: ERROR {r['error']}")
                continue
            parts = [f"{r['items']:,} items of `true` ({r['body_mb']:.1f} MB request)",
                     f"POST answered in {r['t_accepted']:.2f} s",
                     f"\"task planned\" logged at {r.get('t_planned', float('nan')):.2f} s ({r.get('shards')} shards)",
                     f"INPROGRESS seen at {r.get('t_inprogress', float('nan')):.2f} s"]
            if "t_published_log" in r:
                parts.append(f"\"shards published\" logged at {r['t_published_log']:.2f} s "
                             f"(the scheduler's own plan+publish time: {r.get('plan_publish_ms_log')} ms)")
            if "t_published" in r:
                parts.append(f"all {r.get('shards')} shards on the shard topic at **{r['t_published']:.2f} s**")
            if "t_completed" in r:
                parts.append(f"**{r['final_status']}** at {r['t_completed']:.1f} s = {r['items'] / r['t_completed']:.0f} items/s, "
                             f"itemsSucceeded {r.get('succeeded'):,}, itemsFailed {r.get('failed')}, "
                             f"results total {r.get('results_total'):,} (last index {r.get('last_index')})"
                             + (f"; Redis memory at the end {r['redis_used_memory_done']}" if r.get("redis_used_memory_done") else ""))
            else:
                parts.append(f"{r.get('done_before_cancel', 0):,} items done {r.get('t_before_cancel', 0):.1f} s after submit; "
                             f"cancelled, {r.get('final_status')} {r.get('t_cancel', 0):.2f} s later")
            parts.append("peak RSS " + ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in r["rss"].items() if v))
            if r.get("redis_plan"):
                rp = r["redis_plan"]
                parts.append(f"Redis calls from submit to published: {rp['total']:,} ({rp['total'] / r['items']:.4f} per item; "
                             f"{rp['total'] / max(1, r.get('shards') or 1):.1f} per shard); Redis memory then {r.get('redis_used_memory')}")
            parts.append("CPU " + ", ".join(f"{k} {v:.2f} s" for k, v in r["cpu_parts"].items()))
            md.append(f"- {mode}: " + "; ".join(parts))
        md.append("\nTimes are from just before the POST (the request body is built beforehand). \"task planned\" and "
                  "\"shards published\" are the scheduler's info log lines (their timestamps): the first is written once "
                  "the plan is saved, the second once every shard is published (acknowledged by the bus). "
                  "In distributed mode the bench reads the shard topic's high watermarks from the broker (Kafka Fetch v6; "
                  "tansu's ListOffsets is wrong) every 20 ms until they have grown by the number of shards. "
                  "A one-word template naming a program on PATH is run directly (the seed's rule), so W4's items run "
                  "`/usr/bin/true` without bash.")
        if not args.w4_complete:
            md.append("\nThe same task run to the end (about 10 minutes per mode here): "
                      "`./bench/run.sh --only W4 --w4-complete --no-profile --output bench/w4-complete.md`; "
                      "the last such run is in [bench/w4-complete.md](bench/w4-complete.md).")
    md.append("\n## Targets\n")
    if summary == [] or args.only:
        tg = [t for t in tg if t[1] != "not measured"]  # a partial run: only what it measured
    md.append(md_table(["target", "measured", "result"], [list(t) for t in tg]))
    md.append("")
    markdown = "\n".join(md) + "\n"
    text.append("Targets:")
    text.append(text_table(["target", "measured", "result"], [list(t) for t in tg]))
    text.append("")
    # The rest of the markdown (latency, W4, store ops) also goes to stdout.
    text.append(markdown.split("## Targets", 1)[0].split(HOW_MEASURED, 1)[-1].split("## Machine and command", 1)[-1])
    return {"text": "\n".join(text), "markdown": markdown}


HOW_MEASURED = """\
How the columns are measured:

- **items/s**: items ÷ wall time, median over the runs; **× xargs**: the row's items/s over `xargs -P`'s in the
  same run and workload, median over the runs. xargs: `xargs -P <cores> -n 1 bash -c '<script>' _ < inputs`;
  parallel: `parallel --will-cite -j <cores> -q bash -c '<script>' _ :::: inputs`; dts run:
  `dts run --cores <cores> --inputs FILE -- '<script>'` (stdout to /dev/null), timed from start to exit,
  so its start-up is included. dts up: `dts up --ephemeral --port 0 --cores <cores>`, one warm-up task,
  then from just before `POST /v1/tasks` until `GET /v1/tasks/{id}?summary=true` (polled every 10 ms on a
  keep-alive connection) shows the task ended (COMPLETED with every item succeeded is checked). Distributed:
  a fresh private redis-server (no persistence) and tansu broker (memory storage), one `dts server`, two
  `dts worker --cores <cores/2>`, started for every run and timed like dts up once `/v1/workers` lists both
  workers, the workers own all shard partitions and a warm-up task has run. W3 runs at concurrency 8
  (`-P 8`, `-j 8`, `--cores 8`, workers `--cores 4`).
- **runner CPU ms/item**: the CPU of the runner's own processes, without the scripts, ÷ items. dts up, server,
  workers: utime+stime deltas of each process from `/proc/PID/stat` (all threads); distributed adds
  redis-server and the broker. xargs, parallel and dts run are children of the bench: when one exits the bench
  waits for it with `waitid(WNOWAIT)`, reads the zombie's `/proc/PID/stat` and splits utime+stime (the runner
  itself: for dts run its start-up, input reading, engine and printing the outputs) from cutime+cstime (its
  reaped children: the scripts, and for parallel the shells it starts), then reaps it.
- **scripts CPU ms/item**: cutime+cstime deltas of the same processes (the item processes they reaped) ÷ items.
- **peak RSS MB**: VmHWM from `/proc/PID/status` (dts up; distributed: server / the larger worker, each a
  fresh process per run); for xargs, parallel and dts run, `ru_maxrss` of the child from `wait4`.
"""


SIGNALLED = []


def _on_signal(signum, _frame):
    SIGNALLED.append(signum)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    code = 1
    try:
        code = main()
    except KeyboardInterrupt:
        log("interrupted: stopping everything the benchmark started")
        code = 130
    except SystemExit as e:
        if SIGNALLED:
            log("stopped by a signal: stopping everything the benchmark started")
        code = e.code if isinstance(e.code, int) else 1
    except BenchError as e:
        log(f"error: {e}")
        code = 1
    finally:
        # Ctrl-C again while cleaning up must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup_all()
        remove_temps()
    sys.exit(code)
