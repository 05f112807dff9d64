"""Statistics over the runs: medians per (workload, runner) and percentiles."""

import math
import statistics

from .runners import RUNNERS

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows, wl_order):
    """Per (workload, runner): medians over runs."""
    out = []
    for wname in wl_order:
        for runner in RUNNERS:
            runs = [r for r in rows if r["workload"] == wname and r["runner"] == runner]
            if not runs:
                continue
            ok = [r for r in runs if "error" not in r]
            s = {"workload": wname, "runner": runner, "runs": len(runs), "errors": [r["error"] for r in runs if "error" in r]}
            if ok:
                n = ok[0]["n"]
                s["n"] = n
                s["rates"] = [r["rate"] for r in ok]
                s["rate"] = median(s["rates"])
                s["ratios"] = [r.get("ratio") for r in ok if r.get("ratio") is not None]
                s["ratio"] = median(s["ratios"])
                s["own_ms"] = median([r["own"] / n * 1000 for r in ok])
                s["children_ms"] = median([r["children"] / n * 1000 for r in ok])
                s["parts_ms"] = {k: median([r["parts"].get(k, 0) / n * 1000 for r in ok]) for k in ok[0]["parts"]}
                rss = {}
                for r in ok:
                    for k, v in r["rss"].items():
                        if v is not None:
                            rss[k] = max(rss.get(k, 0), v)
                s["rss_kb"] = rss
                if s["rate"] and len(s["rates"]) > 1:
                    s["spread"] = (max(s["rates"]) - min(s["rates"])) / s["rate"]
                for key in ("shards", "per_worker", "redis"):
                    vals = [r[key] for r in ok if key in r]
                    if vals:
                        s[key] = vals
            out.append(s)
    return out


def percentile(values, q):
    v = sorted(values)
    if not v:
        return None
    k = max(0, math.ceil(q / 100 * len(v)) - 1)
    return v[k]
