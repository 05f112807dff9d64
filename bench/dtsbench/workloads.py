"""The throughput workloads W1-W3: their scripts, sizes and input files, and
W2's calibration (a bash loop of about 2 ms of CPU on this machine)."""

import os
import statistics
import subprocess

from .common import CORES, log
from .processes import make_temp

# Items per workload: a quick run is a smoke check, not comparable.
SIZES = {"W1": 5000, "W2": 2000, "W3": 400}
QUICK_SIZES = {"W1": 500, "W2": 200, "W3": 80}


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


def make_workloads(sections, quick, extra):
    """{name: workload} for the sections asked for, each with its inputs
    written to a file (what xargs, parallel and dts run read). Calibrates W2
    first when it is asked for; records the calibration and the workloads
    in `extra` for the report."""
    sizes = QUICK_SIZES if quick else SIZES
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
    return workloads


def warm_caches(workloads):
    """Warms the page cache and bash before anything is timed."""
    for wl in workloads.values():
        subprocess.run(["xargs", "-P", str(CORES), "-n", "1", "bash", "-c", wl["script"], "_"],
                       input="\n".join(wl["inputs"][:20]).encode(), stdout=subprocess.DEVNULL, check=False)
