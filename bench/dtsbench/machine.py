"""The machine and tools the benchmark ran with, for the report's header,
and the check that every tool it needs is installed."""

import datetime
import os
import platform
import shutil
import subprocess

from .common import CORES, DTS, ROOT, BenchError
from .nodes import find_tansu

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
        "tansu": tansu_version(cmd),
        "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines() or ["?"])[0].split(" [")[0] if shutil.which("wrk") else "missing",
    }


def tansu_version(cmd):
    """`tansu --version` of the broker the distributed runs use (the one
    scripts/install-test-deps.sh pins), e.g. "tansu X.Y.Z"."""
    try:
        tansu = find_tansu()
    except BenchError:
        return "tansu missing"
    return (cmd([tansu, "--version"]).splitlines() or ["tansu ?"])[0]


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
