"""The issue's targets, each checked against what this run measured:
[(target, measured, PASS/MISS/n/a/info)]. A target whose rows were not
run says "not measured" (a partial run's report leaves those out)."""

from .runners import RUNNER_LABEL
from .summary import percentile


def targets(summary, extra):
    """Every target this run can say something about, in the report's order."""
    rows = {(s["workload"], s["runner"]): s for s in summary}
    return (throughput_targets(rows) + own_cpu_targets(rows) + w4_targets(extra.get("w4", {}))
            + store_ops_targets(extra.get("store_ops")) + latency_targets(extra.get("latency", {}))
            + reads_targets(extra.get("reads", {})) + warm_shell_targets(rows))


def ratio_target(rows, w, runner, floor, label):
    s = rows.get((w, runner))
    if not s or s.get("ratio") is None:
        return (f"{w} {label} ≥ {floor}× xargs", "not measured", "n/a")
    return (f"{w} {label} ≥ {floor}× xargs", f"{s['ratio']:.2f}×", "PASS" if s["ratio"] >= floor else "MISS")


def throughput_targets(rows):
    out = []
    for w in ("W1", "W2"):
        out.append(ratio_target(rows, w, "dts-up", 0.9, "embedded (dts up)"))
        out.append(ratio_target(rows, w, "dts-run", 0.9, "embedded one-shot (dts run)"))
        out.append(ratio_target(rows, w, "dts-dist", 0.75, "distributed"))
    out.append(ratio_target(rows, "W3", "dts-up", 0.95, "embedded (dts up)"))
    out.append(ratio_target(rows, "W3", "dts-run", 0.95, "embedded one-shot (dts run)"))
    out.append(ratio_target(rows, "W3", "dts-dist", 0.95, "distributed"))
    return out


def own_cpu_targets(rows):
    out = []
    for runner, limit, label in (("dts-up", 0.3, "embedded (dts up)"), ("dts-run", 0.3, "embedded one-shot (dts run)"),
                                 ("dts-dist", 0.6, "distributed (server+workers+redis+broker)")):
        for w in ("W1", "W2"):
            s = rows.get((w, runner))
            if not s or s.get("own_ms") is None:
                continue
            out.append((f"dts's own CPU per item, {w}, {label} ≤ {limit} ms", f"{s['own_ms']:.3f} ms",
                        "PASS" if s["own_ms"] <= limit else "MISS"))
    return out


def w4_targets(w4s):
    out = []
    for mode in ("embedded", "distributed"):
        w = w4s.get(mode)
        if not w:
            continue
        if "error" in w:
            out.append((f"W4 {mode}: plan and publish 1,000,000 items < 5 s", "error: " + w["error"][:60], "MISS"))
            continue
        if "t_published" in w:
            t, what = w["t_published"], "submit → all shards on the shard topic"
        elif "t_published_log" in w:
            t, what = w["t_published_log"], "submit → \"shards published\" logged"
        else:
            t, what = w["t_planned"], "submit → \"task planned\" logged; publishing not observable"
        # A quick run's W4 has fewer items: its times and sizes are shown, not judged.
        full = w["items"] >= 1_000_000
        out.append((f"W4 {mode}: plan and publish 1,000,000 items < 5 s",
                    f"{t:.2f} s ({what}; {w['items']:,} items)",
                    ("PASS" if t < 5 else "MISS") if full else "n/a (quick: fewer items)"))
        out += w4_rss_targets(mode, w["rss"], full)
    return out


def w4_rss_targets(mode, rss, full):
    def judged(kb):
        return ("PASS" if kb < 400 * 1024 else "MISS") if full else "n/a (quick)"
    if mode == "embedded":
        v = rss.get("dts up") or 0
        return [("W4 embedded: dts up RSS < 400 MB", f"{v / 1024:.0f} MB", judged(v))]
    sv = rss.get("server") or 0
    wv = max(v or 0 for k, v in rss.items() if k.startswith("worker"))
    return [("W4 distributed: server RSS < 400 MB", f"{sv / 1024:.0f} MB", judged(sv)),
            ("W4 distributed: each worker RSS < 400 MB", f"{wv / 1024:.0f} MB", judged(wv))]


def store_ops_targets(ops):
    if not ops:
        return []
    if "error" in ops:
        return [("Store operations per item O(1/shard)", "error: " + ops["error"][:60], "MISS")]
    total = ops["client_per_item"] + ops["lua_per_item"]
    return [
        ("Store requests (client → Redis) per item O(1/shard), not O(1) (W1 distributed; PASS if ≤ 0.1)",
         f"{ops['client_per_item']:.3f} per item, {ops['client_per_shard']:.0f} per shard ({ops['shards']} shards)",
         "PASS" if ops["client_per_item"] <= 0.1 else "MISS"),
        # Not a target: each result is written once, so the commands a script
        # runs grow with items by nature; what must not grow per item are
        # the round trips, checked above.
        ("Redis commands executed per item, including inside Lua scripts (information; each result is one hash field and two sorted-set entries)",
         f"{total:.2f} per item ({ops['lua_per_item']:.2f} inside scripts)",
         "info"),
    ]


def latency_targets(latencies):
    out = []
    for mode, limit in (("embedded", 20), ("distributed", 100)):
        lat = latencies.get(mode)
        if lat and "error" not in lat:
            p50 = percentile(lat["first"], 50) * 1000
            out.append((f"Latency p50 submit→first item, {mode} < {limit} ms", f"{p50:.1f} ms",
                        "PASS" if p50 < limit else "MISS"))
    return out


def reads_targets(reads):
    out = []
    for mode in ("embedded", "distributed"):
        rd = reads.get(mode)
        if rd and "error" not in rd:
            out.append((f"Status reads GET /v1/tasks/{{id}}, {mode} ≥ 10,000/s", f"{rd['rps']:,.0f}/s",
                        "PASS" if rd["rps"] >= 10000 and rd["non2xx"] == 0 else "MISS"))
    return out


def warm_shell_targets(rows):
    out = []
    for runner in ("dts-up-warm", "dts-run-warm"):
        s = rows.get(("W1", runner))
        if s and s.get("ratio") is not None:
            out.append((f"Stretch: W1 embedded > 1.3× xargs ({RUNNER_LABEL[runner]}; off by default, docs/warm-shell.md)",
                        f"{s['ratio']:.2f}×", "PASS" if s["ratio"] > 1.3 else "MISS"))
    return out
