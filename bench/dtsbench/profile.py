"""Where dts up's own CPU goes: perf record on `dts up` during a W1 run,
read back with perf report and perf script."""

import os
import re
import shutil
import signal
import subprocess
import time

from .clients import check_completed, task_body
from .common import CORES, BenchError
from .nodes import Embedded, warm_up
from .processes import Proc, make_temp

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
