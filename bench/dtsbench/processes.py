"""Processes and temp directories: every process the benchmark starts is
registered and stopped at the end (also on Ctrl-C and on errors), every temp
directory removed; and what /proc tells about a process's CPU and memory."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from .common import CLK_TCK, BenchError, log

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


