"""Latency (submit to first item) and status reads (wrk on GET
/v1/tasks/{id}) against a running dts."""

import json
import os
import re
import shutil
import time

from .clients import check_completed, task_body
from .common import BenchError
from .processes import Proc, make_temp

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
    r = {"rps": float(m.group(1)), "url": url, "seconds": seconds}
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
