"""Clients of what the benchmark talks to: the dts HTTP API (one keep-alive
connection), Redis (RESP over a socket, and MONITOR), and the Kafka protocol
(just enough to read a topic's high watermarks). Standard library only."""

import http.client
import json
import re
import socket
import struct
import threading
import time

from .common import POLL, TERMINAL, BenchError


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


