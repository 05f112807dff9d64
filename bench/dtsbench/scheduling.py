"""The scheduling scenario (`--only scheduling`): makespan against the ideal
on workers of different sizes, a small task's latency behind a big one in
both modes, a 32-worker run with a worker joining and one leaving, and
speculation off against on. Each figure is reported with its ideal or
baseline, so a reader sees how far placement is from perfect."""

import datetime
import json
import signal
import subprocess
import threading
import time

from .clients import Redis, check_completed, task_body
from .common import DTS, TERMINAL, BenchError, failure, log
from .nodes import Distributed, Embedded, warm_up
from .processes import proc_times
from .summary import median

# (case, each worker's cores, items, seconds an item sleeps). The last case
# is long: --quick runs it with QUICK_C_ITEMS.
MAKESPAN_CASES = [
    ("a", [1, 4], 80, 0.5),
    ("b", [1, 2, 8], 110, 0.5),
    ("c", [4] * 16, 10_000, 0.2),
]
QUICK_C_ITEMS = 2_000

# A big task, then SMALL_DELAY later a small one of two `echo` items.
BIG_ITEMS, BIG_SLEEP, SMALL_DELAY = 100, 0.2, 0.5
SMALL_INPUTS = ["small-1", "small-2"]

SCALE_WORKERS, SCALE_CORES, SCALE_SERVERS, SCALE_SLEEP = 32, 2, 2, 0.05
SCALE_ITEMS, QUICK_SCALE_ITEMS = 20_000, 4_000
# A worker joins once this share of the items is done, another leaves at
# the second; gaps are looked for in the GAP_WINDOW seconds after each.
JOIN_AT, LEAVE_AT, GAP_WINDOW = 0.25, 0.5, 5.0

# Two workers of two cores, the second SPEC_SLOWDOWN times slower: its
# items see BENCH_SLOW (allowed through executor.env-allow, since items
# start from an empty environment and no DTS_* variable names the worker).
SPEC_ITEMS, SPEC_SLEEP, SPEC_SLOWDOWN = 40, 0.2, 10
ENV_ALLOW = "PATH,HOME,LANG,LC_ALL,LC_CTYPE,TZ,TMPDIR,USER,LOGNAME,BENCH_SLOW"
SPEC_SCRIPT = f's={SPEC_SLEEP}; [ -n "$BENCH_SLOW" ] && s={SPEC_SLEEP * SPEC_SLOWDOWN:g}; sleep $s'


def ideal(items, secs, slots):
    """Perfect packing: the item-seconds spread over every slot, plus one
    item for the tail."""
    return items * secs / slots + secs


def cores_text(cores):
    """Workers' cores as "1 + 4" or "16 × 4": runs of one size counted."""
    runs = []
    for c in cores:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    return " + ".join(f"{n} × {c}" if n > 1 else str(c) for c, n in runs)


def epoch(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def server_makespan(task):
    """createdAt → finishedAt: the server's clock, no polling in it."""
    return epoch(task["finishedAt"]) - epoch(task["createdAt"])


def scheduling(modes, runs, long_runs, quick):
    """Every part of the scenario whose mode is in `modes` ("embedded",
    "distributed"); a part that fails keeps its error and the others go on."""
    out = {}
    if "distributed" in modes:
        out["makespan"] = []
        for case, cores, items, secs in MAKESPAN_CASES:
            long_case = case == "c"
            items = QUICK_C_ITEMS if quick and long_case else items
            out["makespan"].append(makespan_case(case, cores, items, secs, long_runs if long_case else runs))
    out["latency"] = {mode: latency_behind(mode, runs) for mode in ("embedded", "distributed") if mode in modes}
    if "distributed" in modes:
        out["scale"] = scale(QUICK_SCALE_ITEMS if quick else SCALE_ITEMS, long_runs)
        out["speculation"] = speculation(runs)
    return out


def sched_errors(sched):
    """The parts of `scheduling()`'s answer that failed."""
    parts = list(sched.get("makespan", [])) + list(sched.get("latency", {}).values())
    parts += [sched[k] for k in ("scale", "speculation") if k in sched]
    return [p for p in parts if "error" in p]


def timed_task(api, body, items, what, poll=0.05):
    """Submits `body`, waits for the end, checks every item succeeded:
    (task, client-side submit → ended seconds, task id)."""
    timeout = items * 2.0 + 300  # far beyond any sane makespan; only a hang ends here
    t0 = time.perf_counter()
    tid = api.submit(json.dumps(body).encode())
    task = api.wait(tid, poll=poll, timeout=timeout)
    client = time.perf_counter() - t0
    check_completed(task, items, what)
    return task, client, tid


def makespan_run(api, script, items, what, extra_fields=None):
    """One task of `items` × `script`: its makespan both ways and how many
    items each worker ran."""
    body = task_body(script, [f"item-{i}" for i in range(items)], timeout_secs=3600)
    body.update(extra_fields or {})
    task, client, tid = timed_task(api, body, items, what)
    per_worker = {}
    for r in api.results(tid):
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + 1
    return {"server": server_makespan(task), "client": client, "per_worker": per_worker}


def summarize_makespans(r):
    """Medians over `r["runs"]`, and the ratio to `r["ideal"]`."""
    if r["runs"]:
        r["makespan"] = median([x["server"] for x in r["runs"]])
        r["client"] = median([x["client"] for x in r["runs"]])
        r["ratio"] = r["makespan"] / r["ideal"]
    return r


def on_node(r, start, measure):
    """`measure(node)` on the node `start()` gives, after a warm-up task;
    stops the node after. A failure is kept in `r`, next to what was
    measured before it."""
    node = None
    try:
        node = start()
        warm_up(node.api, "true")
        measure(node)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        r.update(failure(e))
    finally:
        if node:
            node.stop()
    return r


def makespan_case(case, cores, items, secs, runs):
    """`runs` tasks of `items` × `sleep secs` on one server and a worker of
    each of `cores`, one stack for all the runs."""
    slots = sum(cores)
    r = {"case": case, "cores": cores, "items": items, "secs": secs, "slots": slots,
         "ideal": ideal(items, secs, slots), "runs": []}
    log(f"scheduling ({case}): {items:,} × sleep {secs} on workers of {cores_text(cores)} cores "
        f"(ideal {r['ideal']:.2f} s), {runs} run(s) ...")

    def measure(node):
        for _ in range(runs):
            run = makespan_run(node.api, f"sleep {secs}", items, f"makespan ({case})")
            r["runs"].append(run)
            log(f"    makespan {run['server']:.2f} s (÷ ideal {run['server'] / r['ideal']:.2f}), "
                f"{len(run['per_worker'])} of {len(cores)} workers ran items")
    on_node(r, lambda: Distributed(cores, settle_timeout=180), measure)
    return summarize_makespans(r)


def small_task_latency(api):
    """Submit → COMPLETED of the two-item `echo` task, on the client's clock
    (polling every 20 ms): (seconds, task)."""
    task, client, _ = timed_task(api, task_body('echo "$1"', SMALL_INPUTS), len(SMALL_INPUTS),
                                 "small task", poll=0.02)
    return client, task


def latency_behind(mode, runs):
    """The small task alone on an idle node (the baseline), then `runs`
    times behind a big task submitted SMALL_DELAY before it."""
    r = {"mode": mode, "idle": [], "behind": [], "big_left": []}
    log(f"scheduling: small-task latency behind {BIG_ITEMS} × sleep {BIG_SLEEP}, {mode}, {runs} run(s) ...")

    def measure(node):
        for _ in range(runs):
            r["idle"].append(small_task_latency(node.api)[0])
        big_body = json.dumps(task_body(f"sleep {BIG_SLEEP}", [str(i) for i in range(BIG_ITEMS)])).encode()
        for _ in range(runs):
            big = node.api.submit(big_body)
            time.sleep(SMALL_DELAY)
            lat, small = small_task_latency(node.api)
            big_task = node.api.wait(big, poll=0.05, timeout=BIG_ITEMS * BIG_SLEEP + 300)
            check_completed(big_task, BIG_ITEMS, "big task")
            r["behind"].append(lat)
            # How long the big task still ran after the small one arrived:
            # what the small one waits for if it waits for all of it.
            r["big_left"].append(epoch(big_task["finishedAt"]) - epoch(small["createdAt"]))
            log(f"    {lat * 1000:.0f} ms (idle {median(r['idle']) * 1000:.0f} ms); the big task ended "
                f"{r['big_left'][-1]:.2f} s after the small one was submitted")
    return on_node(r, lambda: Embedded(2) if mode == "embedded" else Distributed(2), measure)


# --------------------------------------------------------------------------
# Scale: 32 workers, a join and a leave

def dts_cpu(node):
    """{name: (own, children) CPU seconds} of the running dts processes."""
    return {n.name: proc_times(n.pid) for n in node.dts_nodes() if n.proc.alive()}


def redis_counters(redis):
    net = sum(int(redis.info_field("stats", f) or 0) for f in ("total_net_input_bytes", "total_net_output_bytes"))
    return {"calls": sum(redis.commandstats().values()), "net": net,
            "memory": int(redis.info_field("memory", "used_memory") or 0)}


def stop_keeping_cpu(worker, rec):
    """SIGTERM, then the exited worker's CPU read from its zombie before it
    is reaped, so the leaver's CPU counts too."""
    try:
        worker.proc.signal(signal.SIGTERM)
        if not worker.proc.wait_exit_keep_zombie(timeout=60):
            raise BenchError(f"{worker.name} did not exit within 60 s of SIGTERM")
        rec["exited"] = time.time()
        rec["cpu"] = proc_times(worker.pid)
        rec["exit_code"], _ = worker.proc.reap()
    except Exception as e:  # the run goes on; the report says what failed
        rec["error"] = f"{type(e).__name__}: {e}"


def join_worker(node, rec):
    try:
        rec["node"] = node.add_worker(SCALE_CORES)
        rec["ready"] = time.time()
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"


def pick_leaver(node, exclude):
    """A worker that is running items now (by its last heartbeat), else the
    first: the one to stop."""
    ids = {f"bench-w{i + 1}": w for i, w in enumerate(node.workers)}
    for w in node.api.json("GET", "/v1/workers"):
        if w.get("runningItems", 0) > 0 and w["id"] in ids and w["id"] not in exclude:
            return w["id"], ids[w["id"]], True
    return "bench-w1", node.workers[0], False


def drive_scale(node, tid, items, timeout):
    """Polls progress every 100 ms until the task ends; starts a worker at
    JOIN_AT of the items done and stops one at LEAVE_AT. Returns (task,
    join record, leave record)."""
    join, leave, threads = {}, {}, []
    deadline = time.monotonic() + timeout
    while True:
        t = node.api.task(tid)
        now = time.time()
        done = t["itemsSucceeded"] + t["itemsFailed"]
        if t["status"] in TERMINAL:
            break
        if not join and done >= items * JOIN_AT:
            join.update(t=now, id=f"bench-w{len(node.workers) + 1}", done=done)
            threads.append(threading.Thread(target=join_worker, args=(node, join), daemon=True))
            threads[-1].start()
        if join and not leave and done >= items * LEAVE_AT:
            wid, worker, busy = pick_leaver(node, {join["id"]})
            leave.update(t=now, id=wid, busy=busy, done=done)
            threads.append(threading.Thread(target=stop_keeping_cpu, args=(worker, leave), daemon=True))
            threads[-1].start()
        if time.monotonic() > deadline:
            raise BenchError(f"scale task still {t['status']} after {timeout} s ({done} of {items} done)")
        time.sleep(0.1)
    for th in threads:
        th.join(timeout=90)
    return t, join, leave


def longest_gap(events, lo, hi):
    """The longest stretch of [lo, hi] without an event."""
    points = [lo] + [e for e in events if lo < e < hi] + [hi]
    return max(b - a for a, b in zip(points, points[1:]))


def gaps(results, join, leave):
    """The longest gap in item starts and ends of the workers that neither
    joined nor left, in the GAP_WINDOW after each moment, and in the
    GAP_WINDOW before the join (the steady state: the baseline)."""
    events = []
    for r in results:
        if r["worker"] in (join.get("id"), leave.get("id")):
            continue
        try:
            start = float(r["stdout"].split()[0].replace(",", "."))
        except (IndexError, ValueError):
            continue  # an item whose output is not its start time (none expected)
        events += [start, start + r["durationMs"] / 1000]
    if not events:
        return {}
    events.sort()
    first, last = events[0], events[-1]

    def window(lo, hi):
        lo, hi = max(lo, first), min(hi, last)
        return longest_gap(events, lo, hi) if hi > lo else None
    out = {"baseline": window(join["t"] - GAP_WINDOW, join["t"]) if join else None}
    if join:
        out["join"] = window(join["t"], join["t"] + GAP_WINDOW)
    if leave:
        out["leave"] = window(leave["t"], leave["t"] + GAP_WINDOW)
    return out


def scale(items, runs):
    """`runs` × scale_run, each on a fresh stack; the medians are in each
    run's figures (runs is 1 by default: one run takes minutes)."""
    r = {"items": items, "workers": SCALE_WORKERS, "cores": SCALE_CORES, "servers": SCALE_SERVERS,
         "secs": SCALE_SLEEP, "slots": SCALE_WORKERS * SCALE_CORES,
         "ideal": ideal(items, SCALE_SLEEP, SCALE_WORKERS * SCALE_CORES), "runs": []}
    for i in range(runs):
        log(f"scheduling: scale run {i + 1}/{runs}: {SCALE_SERVERS} servers, {SCALE_WORKERS} workers × "
            f"--cores {SCALE_CORES}, {items:,} × sleep {SCALE_SLEEP} (ideal {r['ideal']:.2f} s) ...")
        try:
            r["runs"].append(scale_run(items, r["ideal"]))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            r.update(failure(e))
            break
    if r["runs"]:
        for k in ("makespan", "client", "cpu_ms", "items_cpu_ms", "redis_ms", "broker_ms", "calls", "bytes", "memory"):
            r[k] = median([x[k] for x in r["runs"]])
        r["ratio"] = r["makespan"] / r["ideal"]
    return r


def scale_run(items, ideal_s):
    node = redis = None
    try:
        node = Distributed(SCALE_CORES, workers=SCALE_WORKERS, servers=SCALE_SERVERS, settle_timeout=300)
        redis = Redis(node.redis_port)
        warm_up(node.api, "true")
        # Each item prints when it started (bash's clock), for the gaps.
        body = json.dumps(task_body(f'echo "$EPOCHREALTIME"; sleep {SCALE_SLEEP}',
                                    [str(i) for i in range(items)], timeout_secs=3600)).encode()
        cpu0, red0 = dts_cpu(node), redis_counters(redis)
        side0 = {k: proc_times(p.pid)[0] for k, p in (("redis", node.redis), ("broker", node.broker))}
        t0, t0_wall = time.perf_counter(), time.time()
        tid = node.api.submit(body)
        task, join, leave = drive_scale(node, tid, items, timeout=items * SCALE_SLEEP + 900)
        client = time.perf_counter() - t0
        cpu1, red1 = dts_cpu(node), redis_counters(redis)
        side1 = {k: proc_times(p.pid)[0] for k, p in (("redis", node.redis), ("broker", node.broker))}
        check_completed(task, items, "scale task")
        if "cpu" in leave:
            cpu1[f"dts-worker{leave['id'].removeprefix('bench-w')}"] = leave["cpu"]
        own = sum(v[0] - cpu0.get(k, (0, 0))[0] for k, v in cpu1.items())
        children = sum(v[1] - cpu0.get(k, (0, 0))[1] for k, v in cpu1.items())
        results = node.api.results(tid)
        per_worker = {}
        for x in results:
            per_worker[x["worker"]] = per_worker.get(x["worker"], 0) + 1
        run = {"makespan": server_makespan(task), "client": client,
               "cpu_ms": own / items * 1000, "items_cpu_ms": children / items * 1000,
               "redis_ms": (side1["redis"] - side0["redis"]) / items * 1000,
               "broker_ms": (side1["broker"] - side0["broker"]) / items * 1000,
               "calls": (red1["calls"] - red0["calls"]) / items,
               "bytes": (red1["net"] - red0["net"]) / items,
               "memory": (red1["memory"] - red0["memory"]) / items,
               "workers_used": len(per_worker), "reruns": sum(1 for x in results if x["attempt"] > 1),
               "gaps": gaps(results, join, leave)}
        run["join"] = {"at": join["t"] - t0_wall if join else None, "done": join.get("done"),
                       "items": per_worker.get(join.get("id"), 0), "error": join.get("error")}
        run["leave"] = {"at": leave["t"] - t0_wall if leave else None, "done": leave.get("done"), "busy": leave.get("busy"), "id": leave.get("id"),
                        "items": per_worker.get(leave.get("id"), 0), "error": leave.get("error"),
                        "exit_code": leave.get("exit_code"),
                        "exit_s": leave["exited"] - leave["t"] if "exited" in leave else None}
        if "ready" in join:
            run["join"]["ready_s"] = join["ready"] - join["t"]
        g = run["gaps"]
        log(f"    makespan {run['makespan']:.2f} s (÷ ideal {run['makespan'] / ideal_s:.2f}); {run['workers_used']} "
            f"workers ran items; dts CPU {run['cpu_ms']:.3f} ms/item; Redis {run['calls']:.2f} commands, "
            f"{run['bytes']:.0f} bytes, {run['memory']:.0f} bytes of memory per item; longest gap after join "
            f"{fmt_s(g.get('join'))}, after leave {fmt_s(g.get('leave'))} (steady {fmt_s(g.get('baseline'))})")
        return run
    finally:
        if redis:
            redis.close()
        if node:
            node.stop()


def fmt_s(x):
    return "—" if x is None else f"{x:.3f} s"


# --------------------------------------------------------------------------
# Speculation

def speculation_supported():
    """Whether this dts has the straggler setting. dts refuses an unknown
    configuration key and accepts no setting before the engine honours it,
    so the key's presence is the feature's."""
    p = subprocess.run([DTS, "run", "--cores", "1", "--inputs", "/dev/null",
                        "--set", "scheduler.speculation-factor=2", "--", "true"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if p.returncode == 0:
        return True
    if b"unknown configuration key" in p.stderr:
        return False
    raise BenchError(f"dts run exited {p.returncode}: {p.stderr.decode(errors='replace')[-300:]}")


def speculation(runs):
    """Makespan with `"speculation": false` and, where dts does it, true, on
    two workers of two cores, the second slowed SPEC_SLOWDOWN times."""
    r = {"items": SPEC_ITEMS, "secs": SPEC_SLEEP, "slowdown": SPEC_SLOWDOWN, "slots": 4,
         "ideal": ideal(SPEC_ITEMS, SPEC_SLEEP, 4)}

    def start():
        r["supported"] = speculation_supported()
        log(f"scheduling: speculation off{' and on' if r['supported'] else ' (on: not implemented yet)'}: "
            f"{SPEC_ITEMS} × sleep {SPEC_SLEEP} on 2 workers × 2 cores, one {SPEC_SLOWDOWN}× slower, {runs} run(s) ...")
        node = Distributed(2, workers=1)
        try:
            node.add_worker(2, flags=["--label", "slow=yes", "--set", f"executor.env-allow={ENV_ALLOW}"],
                            env_extra={"BENCH_SLOW": "1"})
            node.wait_settled(2)
        except BaseException:
            node.stop()
            raise
        return node

    def measure(node):
        for on in (False, True) if r["supported"] else (False,):
            key = "on" if on else "off"
            r[key] = {"ideal": r["ideal"], "runs": []}
            for _ in range(runs):
                run = makespan_run(node.api, SPEC_SCRIPT, SPEC_ITEMS, f"speculation {key}", {"speculation": on})
                r[key]["runs"].append(run)
                log(f"    speculation {key}: makespan {run['server']:.2f} s")
            summarize_makespans(r[key])
    return on_node(r, start, measure)
