"""W4: one task of many items, timed from submit to planned and published
(and optionally to its end), with the nodes' peak RSS."""

import json
import time

from .clients import KafkaHw, stats_delta, task_body
from .common import PARTITIONS, SHARD_TOPIC, BenchError
from .nodes import Distributed, planned_line, published_line

def w4(node, n, complete, redis=None, broker_port=None):
    """One task of `n` items of `true`: submit -> planned (the scheduler's
    "task planned" log line) -> INPROGRESS seen by polling -> all shards on
    the shard topic (distributed: the topic's high watermarks); peak RSS;
    then cancel (or, with complete, wait for the end)."""
    inputs = [str(i) for i in range(n)]
    body = json.dumps(task_body("true", inputs, timeout_secs=3600)).encode()
    del inputs
    kafka = KafkaHw(broker_port) if broker_port else None
    try:
        base_hw = kafka.high_watermarks(SHARD_TOPIC, {p: 0 for p in range(PARTITIONS)}) if kafka else None
        stats0 = redis.commandstats() if redis else None
        cpu0 = node.cpu()
        r = {"items": n, "body_mb": len(body) / 1e6}
        t0 = time.time()
        tid = node.api.submit(body, timeout=900)
        r["t_accepted"] = time.time() - t0
        r["task_id"] = tid
        wait_planned_and_published(node, tid, t0, r, kafka, base_hw)
        if redis:
            delta = stats_delta(stats0, redis.commandstats())
            r["redis_plan"] = {"calls": delta, "total": sum(delta.values())}
            r["redis_used_memory"] = redis.info_field("memory", "used_memory_human")
        if complete:
            wait_completed(node, tid, n, t0, r, redis)
        else:
            cancel_running(node, tid, t0, r)
        cpu1 = node.cpu()
        r["cpu_own"] = cpu1["own"] - cpu0["own"]
        r["cpu_parts"] = {k: cpu1["parts"][k] - cpu0["parts"].get(k, 0) for k in cpu1["parts"]}
        r["rss"] = node.rss()
        return r
    finally:
        if kafka:
            kafka.close()


def wait_planned_and_published(node, tid, t0, r, kafka, base_hw):
    """Polls every 20 ms until the task is INPROGRESS, planned and published
    (by its log line, or not logged for a minute after planning: older dts;
    distributed: also by the shard topic's high watermarks), recording when
    each was first seen in `r`."""
    log_node = node.server if isinstance(node, Distributed) else node.node
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
                if published[2]:
                    # Late binding: the shards are ready in the store once
                    # planned; only a wake goes on the shard topic.
                    kafka = None
            elif time.monotonic() - planned_at > 60:
                published = False  # this dts does not log it
        if kafka and planned and "t_published" not in r:
            hw = kafka.high_watermarks(SHARD_TOPIC, hw)
            if sum(hw[p] - base_hw.get(p, 0) for p in hw) >= planned[1]:
                r["t_published"] = time.time() - t0
        if ("t_inprogress" in r and planned and published is not None
                and (not kafka or "t_published" in r)):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"W4: not planned and published after 900 s: {r}")
        time.sleep(0.02)


def wait_completed(node, tid, n, t0, r, redis):
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


def cancel_running(node, tid, t0, r):
    time.sleep(3.0)  # let the workers take shards: their RSS with shards held
    t = node.api.task(tid)
    r["done_before_cancel"] = (t.get("itemsSucceeded") or 0) + (t.get("itemsFailed") or 0)
    r["t_before_cancel"] = time.time() - t0
    tc = time.time()
    node.api.json("POST", f"/v1/tasks/{tid}/cancel", expect=(200, 202, 409))
    t = node.api.wait(tid, poll=0.1, timeout=300)
    r["t_cancel"] = time.time() - tc
    r["final_status"] = t["status"]
