"""The runners compared on the throughput workloads (W1-W3): each runs one
workload once and returns elapsed, CPU (the runner's own and its
children's, i.e. the scripts'), peak RSS, and extras."""

import json
import os
import shutil
import subprocess
import time

from .clients import Redis, check_completed, stats_delta, task_body
from .common import DTS, BenchError
from .nodes import Distributed, Embedded, planned_line, tail, warm_up
from .processes import Proc, make_temp, proc_times

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


RUNNER_FN = {"xargs": run_xargs, "parallel": run_parallel, "dts-up": run_dts_up,
             "dts-run": run_dts_run, "dts-dist": run_dts_dist,
             "dts-up-warm": run_dts_up_warm, "dts-run-warm": run_dts_run_warm}
