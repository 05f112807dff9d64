"""Store operations: how many requests a distributed W1 run sends to Redis,
per item and per shard, told apart from the commands its Lua scripts run."""

import time

from .clients import Redis, RedisMonitor, check_completed, stats_delta, task_body
from .common import TERMINAL, BenchError
from .nodes import Distributed, planned_line

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
