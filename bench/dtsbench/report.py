"""The report: the throughput table and the other measurements as Markdown
(BENCHMARKS.md) and as text for the terminal, each section its own
function."""

from .common import CORES, POLL
from .runners import RUNNER_LABEL
from .scheduling import BIG_ITEMS, BIG_SLEEP, GAP_WINDOW, SMALL_DELAY, cores_text
from .summary import median, percentile
from .targets import targets

def fmt(x, spec, none="—"):
    return none if x is None else format(x, spec)


def rss_text(s):
    rss = s.get("rss_kb", {})
    if s["runner"] == "dts-dist":
        w = max([v for k, v in rss.items() if k.startswith("worker")] or [0])
        return f"{rss.get('server', 0) / 1024:.0f} / {w / 1024:.0f}"
    if not rss:
        return "—"
    return f"{max(rss.values()) / 1024:.0f}"


def table_rows(summary):
    head = ["workload", "runner", "items/s", "× xargs", "runner CPU ms/item", "scripts CPU ms/item", "peak RSS MB", "runs (items/s)"]
    lines = []
    for s in summary:
        if not s.get("rates"):
            lines.append([s["workload"], RUNNER_LABEL[s["runner"]], "ERROR", "", "", "", "", "; ".join(s["errors"])[:80]])
            continue
        runs = ", ".join(f"{x:.0f}" for x in s["rates"])
        if s["errors"]:
            runs += f" ({len(s['errors'])} failed)"
        lines.append([s["workload"], RUNNER_LABEL[s["runner"]], f"{s['rate']:.0f}",
                      fmt(s["ratio"], ".2f"), f"{s['own_ms']:.3f}", f"{s['children_ms']:.3f}",
                      rss_text(s), runs])
    return head, lines


def text_table(head, lines):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    for line in lines:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    return "\n".join(out)


def md_table(head, lines):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for line in lines:
        out.append("| " + " | ".join(str(x) for x in line) + " |")
    return "\n".join(out)


def render(info, command, args, runs, summary, extra, duration):
    """{"text": for the terminal, "markdown": the report file}."""
    head, lines = table_rows(summary)
    tg = targets(summary, extra)
    md = header_section(info, command, args, runs, extra, duration)
    # A partial run (--only W4, say) has no throughput to show.
    if summary:
        md += workloads_section(extra)
        md += throughput_section(summary, head, lines)
    md += store_ops_section(extra)
    md += profile_section(summary, extra)
    md += latency_section(extra)
    md += w4_section(args, extra)
    md += scheduling_section(extra.get("scheduling"))
    if summary == [] or args.only:
        tg = [t for t in tg if t[1] != "not measured"]  # a partial run: only what it measured
    md += targets_section(tg)
    markdown = "\n".join(md) + "\n"
    # A partial run prints only the tables it has rows for.
    text = ["", text_table(head, lines), ""] if lines else [""]
    if tg:
        text.append("Targets:")
        text.append(text_table(["target", "measured", "result"], [list(t) for t in tg]))
        text.append("")
    # The rest of the markdown (latency, W4, scheduling, store ops) also goes to stdout.
    text.append(markdown.split("## Targets", 1)[0].split(HOW_MEASURED, 1)[-1].split("## Machine and command", 1)[-1])
    return {"text": "\n".join(text), "markdown": markdown}


def header_section(info, command, args, runs, extra, duration):
    md = []
    md.append("# Benchmarks\n")
    md.append("dts against `xargs -P` and GNU `parallel` on the same machine, in one run. "
              "Written by `bench/bench.py`; throughput is measured here. Tests check behaviour, "
              "and time only where dts promises a bound (a cancel ends running items within 2 s), "
              "with room for a loaded machine.\n")
    md.append("## Machine and command\n")
    md.append(f"- Machine: {info['nproc']} cores ({info['cpu']}), {info['mem_gb']} GB RAM, kernel {info['kernel']}, {info['os']}")
    md.append(f"- dts commit: `{info['commit']}` (release build)")
    md.append(f"- Date: {info['date']}; the run took {duration / 60:.1f} minutes")
    md.append(f"- Tools: bash {info['bash']}, {info['xargs']}, {info['parallel']}, {info['redis']}, {info['tansu']} (memory storage), {info['wrk']}")
    md.append(f"- Command: `{command}`")
    md.append(f"- Runs per row: {runs}{' (QUICK: fewer items, not comparable with the targets)' if args.quick else ''}")
    for n in extra.get("notes", []):
        md.append(f"- Note: {n}")
    md.append("")
    return md


def workloads_section(extra):
    md = ["## Workloads\n"]
    for k, v in extra.get("workloads", {}).items():
        md.append(f"- {k}: `{v['script']}` × {v['n']:,} items at concurrency {v['conc']}")
    cal = extra.get("calibration")
    if cal:
        md.append(f"- W2 calibration: N = {cal['n']} iterations ({cal['per_iter_us']:.3f} µs each); "
                  f"one item takes {cal['item_ms']:.2f} ms CPU: {cal['bash_startup_ms']:.2f} ms to start `bash -c` "
                  f"and {cal['loop_ms']:.2f} ms of loop (medians of 15 runs)")
    md.append("")
    return md


def throughput_section(summary, head, lines):
    md = ["## Throughput\n", md_table(head, lines), "", HOW_MEASURED]
    brk = cpu_breakdown(summary)
    if brk:
        md.append("\nCPU per item by process (medians; ms/item):\n")
        md += brk
    noisy = [s for s in summary if s.get("spread", 0) > 0.10]
    if noisy:
        md.append("\nRows whose runs differ by more than 10% (max−min over median): " +
                  ", ".join(f"{s['workload']} {RUNNER_LABEL[s['runner']]} ({s['spread'] * 100:.0f}%)" for s in noisy) + "."
                  + (" Distributed runs differ mostly by how the shards fell on the two workers' partitions "
                     "(items per worker, above): a worker runs only the shards of the partitions it owns."
                     if any(s["runner"] == "dts-dist" for s in noisy) else ""))
    return md


def cpu_breakdown(summary):
    """One line per dts row: the CPU of each of its processes, and for
    distributed rows the shards and how the items fell on the workers."""
    brk = []
    for s in summary:
        if s["runner"] in ("dts-up", "dts-dist", "dts-up-warm") and s.get("parts_ms"):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in s["parts_ms"].items())
            extra_txt = ""
            if s.get("shards"):
                extra_txt += f"; shards: {', '.join(str(x) for x in s['shards'])}"
            if s.get("per_worker"):
                extra_txt += "; items per worker: " + " | ".join(
                    ", ".join(f"{k}: {v}" for k, v in sorted(pw.items())) for pw in s["per_worker"])
            brk.append(f"- {s['workload']} {RUNNER_LABEL[s['runner']]}: {parts} ms/item{extra_txt}")
    return brk


def store_ops_section(extra):
    ops = extra.get("store_ops")
    if not ops:
        return []
    md = ["\n## Store operations (distributed, W1)\n"]
    if "error" in ops:
        md.append(f"ERROR {ops['error']}")
        return md
    n = ops["items"]
    md.append(f"An extra, untimed W1 run ({n:,} items, {ops['shards']} shards, {ops['elapsed']:.1f} s) on a fresh "
              f"distributed stack with Redis `MONITOR` attached, which shows whether a client sent a command or a "
              f"Lua script ran it. Subtracted: the idle rates measured for 2 s before the submit (heartbeats, "
              f"leases, sweeps: {ops['idle_client_per_s']:.1f} client requests/s, {ops['idle_lua_per_s']:.1f} "
              f"script commands/s), and the bench's own status polls ({ops['polls']} polls, every 0.5 s in this "
              f"run, at {ops['per_get']:.1f} requests each, measured on 50 polls of an ended task).\n")
    md.append(f"- client requests to Redis: {ops['client']:,} → **{ops['client_per_item']:.3f} per item**, "
              f"**{ops['client_per_shard']:.0f} per shard** (each command of a pipeline counts; EVALSHA counts once)")
    md.append(f"- commands run inside Lua scripts: {ops['lua']:,} → **{ops['lua_per_item']:.2f} per item**")
    cs = extra.get("commandstats_per_item")
    if cs is not None:
        md.append(f"- `INFO commandstats` (sum of `calls`, which counts commands inside scripts too; the bench's INFO "
                  f"left out; nothing subtracted, so the timed runs' {POLL * 1000:.0f} ms status polls are in), before/after the "
                  f"timed W1 runs: {cs:.2f} per item (runs: "
                  + ", ".join(f"{x:.2f}" for x in extra["commandstats_runs"]) + ")")
    top = sorted(ops["by_cmd"].items(), key=lambda kv: -kv[1])[:14]
    md.append("- busiest (\"lua\" = inside a script): " + ", ".join(f"`{k}` {v:,}" for k, v in top))
    return md


def profile_section(summary, extra):
    pr = extra.get("profile")
    if not pr:
        return []
    md = ["\n## Where dts up's own CPU goes (perf)\n"]
    if "error" in pr:
        md.append(f"Profile not taken: {pr['error']}")
        return md
    md.append(f"`perf record -F 999 -g -p <dts up>` during an extra, untimed W1 run. The items inherit the "
              f"counters; dts up's own threads (its process, not the forked children) have "
              f"{pr['dts_share'] * 100:.0f}% of the samples, the items (bash, including the forked children before "
              f"they exec) the rest. Of dts up's own samples (`perf report --pid <dts up> --percentage relative`; "
              f"the share of samples with the function anywhere in their call chain, each sample counted once; shares overlap):\n")
    md.append(f"- under `kernel_clone` (starting each item's process): **{pr['fork'] * 100:.0f}%**")
    md.append(f"- page faults: **{pr['page_faults'] * 100:.0f}%**, of which copy-on-write (`do_wp_page`) "
              f"{pr['cow'] * 100:.0f}% (after a fork, the first write to each page faults); TLB flushes "
              f"(`flush_tlb_mm_range`, IPIs to the other core) {pr['tlb'] * 100:.0f}%")
    md.append(f"- `std::process::Command::spawn` in total: {pr['spawn'] * 100:.0f}%; `epoll_wait`: {pr['epoll'] * 100:.0f}%")
    md.append("- by binary: " + ", ".join(f"{d} {p * 100:.0f}%" for p, d in pr["dsos"]))
    md.append("- hottest symbols (self): " + ", ".join(f"`{x}` {p * 100:.1f}%" for p, x in pr["top"]))
    md.append("\nRust's `std::process::Command` spawns with `posix_spawn` (vfork-like, no page-table copy) only "
              "when it can; `env_clear()` plus a `PATH` in the child's environment with a bare program name "
              "(`bash`) makes it fall back to `fork` + `execvp`, which copies dts's page tables for every item. "
              "The executor therefore resolves the interpreter to an absolute path once per shard; the A/B "
              "below checks that the default now costs what an explicit path does. The page-fault share above "
              "is what is left of the copy-on-write faults the fork fallback used to cause.")
    md += abs_interpreter_lines(summary, extra.get("abs_interpreter"))
    return md


def abs_interpreter_lines(summary, ab):
    """The A/B of the profile's finding: W1 with the interpreter given as an
    absolute path, against the default `bash`."""
    if not ab:
        return []
    w1 = next((s for s in summary if s["workload"] == "W1" and s["runner"] == "dts-up" and s.get("rate")), None)
    return [f"\nA/B (diagnostic, not a workload of the issue): the same W1 on dts up with the task's "
            f"`\"interpreter\": \"{ab['path']}\"` (an absolute path, so `posix_spawn` is used) ran at "
            f"**{ab['rate']:.0f} items/s** ({ab['rate'] / ab['xargs_rate']:.2f}× the median xargs W1 rate), "
            f"dts CPU **{ab['own_ms']:.3f} ms/item**, scripts {ab['children_ms']:.3f} ms/item (medians of "
            f"{len(ab['runs'])} runs: " + ", ".join(f"{a['rate']:.0f}" for a in ab["runs"]) + " items/s)"
            + (f"; with the default `bash`: {w1['rate']:.0f} items/s, {w1['own_ms']:.3f} ms/item, "
               f"scripts {w1['children_ms']:.3f} ms/item." if w1 else ".")]


def latency_section(extra):
    md = []
    if extra.get("latency") or extra.get("reads"):
        md.append("\n## Latency and status reads\n")
    for mode in ("embedded", "distributed"):
        lat = extra.get("latency", {}).get(mode)
        if lat:
            md.append(latency_line(mode, lat))
        rd = extra.get("reads", {}).get(mode)
        if rd:
            md.append(reads_line(mode, rd))
    return md


def latency_line(mode, lat):
    if "error" in lat:
        return f"- {mode}: latency ERROR {lat['error']}"
    f, d = lat["first"], lat["done"]
    return (f"- {mode}: submit → first item started over {len(f)} one-item tasks sent one after another "
            f"(the item is `echo $EPOCHREALTIME`, bash's clock when it starts, minus the client's clock just "
            f"before the POST): "
            f"p50 **{percentile(f, 50) * 1000:.1f} ms**, p99 **{percentile(f, 99) * 1000:.1f} ms**, "
            f"max {max(f) * 1000:.1f} ms; submit → the client saw COMPLETED (polling every {POLL * 1000:.0f} ms): "
            f"p50 {percentile(d, 50) * 1000:.1f} ms, p99 {percentile(d, 99) * 1000:.1f} ms")


def reads_line(mode, rd):
    if "error" in rd:
        return f"- {mode}: status reads ERROR {rd['error']}"
    return (f"- {mode}: `wrk -t2 -c32 -d{rd['seconds']}s` on `GET /v1/tasks/{{id}}` (a completed one-item task, "
            f"whole task JSON): **{rd['rps']:,.0f} requests/s**, latency p50 {fmt(rd.get('p50_ms'), '.2f')} ms, "
            f"p99 {fmt(rd.get('p99_ms'), '.2f')} ms, non-2xx {rd['non2xx']}"
            + (f", socket errors {rd['socket_errors']}" if rd["socket_errors"] else "")
            + f"; wrk shares the {CORES} cores with dts")


def w4_section(args, extra):
    w4s = extra.get("w4")
    if not w4s:
        return []
    md = ["\n## W4: one task of many items\n"]
    for mode, r in w4s.items():
        md.append(w4_line(mode, r))
    md.append("\nTimes are from just before the POST (the request body is built beforehand). \"task planned\" and "
              "\"shards published\" are the scheduler's info log lines (their timestamps): the first is written once "
              "the plan is saved, the second once every shard is published (acknowledged by the bus). "
              "In distributed mode the bench reads the shard topic's high watermarks from the broker (Kafka Fetch v6; "
              "tansu's ListOffsets is wrong) every 20 ms until they have grown by the number of shards. "
              "A one-word template naming a program on PATH is run directly (the seed's rule), so W4's items run "
              "`/usr/bin/true` without bash.")
    if not args.w4_complete:
        md.append("\nThe same task run to the end (many minutes per mode): "
                  "`./bench/run.sh --only W4 --w4-complete --no-profile --output bench/w4-complete.md`; "
                  "the last such run is in [bench/w4-complete.md](bench/w4-complete.md).")
    return md


def w4_line(mode, r):
    if "error" in r:
        return f"- {mode}: ERROR {r['error']}"
    parts = [f"{r['items']:,} items of `true` ({r['body_mb']:.1f} MB request)",
             f"POST answered in {r['t_accepted']:.2f} s",
             f"\"task planned\" logged at {r.get('t_planned', float('nan')):.2f} s ({r.get('shards')} shards)",
             f"INPROGRESS seen at {r.get('t_inprogress', float('nan')):.2f} s"]
    if "t_published_log" in r:
        parts.append(f"\"shards published\" logged at {r['t_published_log']:.2f} s "
                     f"(the scheduler's own plan+publish time: {r.get('plan_publish_ms_log')} ms)")
    if "t_published" in r:
        parts.append(f"all {r.get('shards')} shards on the shard topic at **{r['t_published']:.2f} s**")
    if "t_completed" in r:
        parts.append(f"**{r['final_status']}** at {r['t_completed']:.1f} s = {r['items'] / r['t_completed']:.0f} items/s, "
                     f"itemsSucceeded {r.get('succeeded'):,}, itemsFailed {r.get('failed')}, "
                     f"results total {r.get('results_total'):,} (last index {r.get('last_index')})"
                     + (f"; Redis memory at the end {r['redis_used_memory_done']}" if r.get("redis_used_memory_done") else ""))
    else:
        parts.append(f"{r.get('done_before_cancel', 0):,} items done {r.get('t_before_cancel', 0):.1f} s after submit; "
                     f"cancelled, {r.get('final_status')} {r.get('t_cancel', 0):.2f} s later")
    parts.append("peak RSS " + ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in r["rss"].items() if v))
    if r.get("redis_plan"):
        rp = r["redis_plan"]
        parts.append(f"Redis calls from submit to published: {rp['total']:,} ({rp['total'] / r['items']:.4f} per item; "
                     f"{rp['total'] / max(1, r.get('shards') or 1):.1f} per shard); Redis memory then {r.get('redis_used_memory')}")
    parts.append("CPU " + ", ".join(f"{k} {v:.2f} s" for k, v in r["cpu_parts"].items()))
    return f"- {mode}: " + "; ".join(parts)


def scheduling_section(sched):
    """Makespan ÷ ideal, the small task behind a big one, the scale run and
    speculation: each figure next to its ideal or baseline."""
    if not sched:
        return []
    md = ["\n## Scheduling\n",
          "Makespan is the task's `createdAt` → `finishedAt` from `GET /v1/tasks/{id}` (the server's clock); "
          "\"client\" is submit → COMPLETED seen by the bench (polling every 50 ms). Ideal = item-seconds ÷ slots "
          "+ the longest item. Medians over the runs; each case runs on one fresh stack (one server, Redis, "
          "the broker) with a warm-up task first.\n"]
    if sched.get("makespan"):
        md.append(md_table(["case", "workers (cores)", "items", "ideal", "makespan", "÷ ideal", "client", "workers that ran items", "runs (s)"],
                           [makespan_row(r) for r in sched["makespan"]]))
        md.append("\nItems per worker in each case's first run (workers bench-w1, w2, … in the order of their cores above; "
                  "those that ran none left out): "
                  + "; ".join(f"{r['case']}: {per_worker_text(r['runs'][0]['per_worker'])}"
                              for r in sched["makespan"] if r["runs"]) + "\n")
    if sched.get("latency"):
        md.append(f"Small task behind a big one: a task of {BIG_ITEMS} × `sleep {BIG_SLEEP}` (embedded: `dts up --cores 2`; "
                  f"distributed: one server, 2 workers × `--cores 2`), then {SMALL_DELAY} s later a task of two `echo` items; its "
                  "submit → COMPLETED on the bench's clock (polling every 20 ms). Baseline: the same small task "
                  "on the idle node. \"Big task left\": the big task's `finishedAt` − the small task's `createdAt` "
                  "(what the small task waits if it waits for all of it).\n")
        md.append(md_table(["mode", "small task latency", "idle baseline", "÷ baseline", "big task left", "runs (ms)"],
                           [latency_behind_row(r) for r in sched["latency"].values()]))
        md.append("")
    if sched.get("scale"):
        md += scale_lines(sched["scale"])
    if sched.get("speculation"):
        md += speculation_lines(sched["speculation"])
    return md


def per_worker_text(per_worker):
    """"w1 41, w2 39": items per worker, by the bench's worker number."""
    def number(wid):
        tail = wid.rsplit("w", 1)[-1]
        return int(tail) if tail.isdigit() else 0
    return ", ".join(f"{w.removeprefix('bench-')} {per_worker[w]}" for w in sorted(per_worker, key=number))


def makespan_row(r):
    head = [r["case"], f"{cores_text(r['cores'])} ({r['slots']} slots)", f"{r['items']:,} × sleep {r['secs']}", f"{r['ideal']:.2f} s"]
    if "makespan" not in r:
        return head + ["ERROR", "", "", "", r.get("error", "")[:80]]
    used = ", ".join(f"{len(x['per_worker'])}/{len(r['cores'])}" for x in r["runs"])
    runs = ", ".join(f"{x['server']:.2f}" for x in r["runs"]) + (" (then ERROR)" if "error" in r else "")
    return head + [f"{r['makespan']:.2f} s", f"**{r['ratio']:.2f}**", f"{r['client']:.2f} s", used, runs]


def latency_behind_row(r):
    if not r["behind"]:
        return [r["mode"], "ERROR", "", "", "", r.get("error", "")[:80]]
    lat, idle = median(r["behind"]), median(r["idle"])
    return [r["mode"], f"{lat * 1000:.0f} ms", f"{idle * 1000:.0f} ms", f"**{lat / idle:.1f}**",
            f"{median(r['big_left']):.2f} s", ", ".join(f"{x * 1000:.0f}" for x in r["behind"])
            + (" (then ERROR)" if "error" in r else "")]


def scale_lines(s):
    md = [f"Scale: {s['servers']} `dts server` (tasks submitted to the first), {s['workers']} `dts worker --cores "
          f"{s['cores']}` ({s['slots']} slots), one task of {s['items']:,} × `echo \"$EPOCHREALTIME\"; sleep {s['secs']}` "
          f"(the echo gives each item's start time); one run per fresh stack.\n"]
    if not s["runs"]:
        return md + [f"ERROR {s.get('error')}", ""]
    md.append(f"- makespan **{s['makespan']:.2f} s**, ideal {s['ideal']:.2f} s: **{s['ratio']:.2f}× ideal** "
              f"(client {s['client']:.2f} s); workers that ran items: "
              + ", ".join(f"{x['workers_used']} of {s['workers'] + 1}" for x in s["runs"])
              + (f"; ERROR in a later run: {s['error']}" if "error" in s else ""))
    md.append(f"- control-plane CPU (servers' and workers' own utime+stime, not the items'): **{s['cpu_ms']:.3f} ms "
              f"per item**, against the items' own {s['items_cpu_ms']:.3f} ms (ratio {s['cpu_ms'] / s['items_cpu_ms']:.2f}); "
              f"redis-server {s['redis_ms']:.3f} ms, the broker {s['broker_ms']:.3f} ms per item")
    md.append(f"- Redis per item: **{s['calls']:.2f} commands** (`INFO commandstats` calls, commands inside scripts "
              f"included, the bench's INFO left out, its 100 ms progress polls in), **{s['bytes']:.0f} bytes** "
              f"(`total_net_input_bytes` + `total_net_output_bytes`), **{s['memory']:.0f} bytes of memory per "
              f"stored result** (`used_memory` after the end − before the submit; the task's inputs and results, "
              f"each result's stdout about 18 bytes)")
    for i, x in enumerate(s["runs"]):
        j, lv, g = x["join"], x["leave"], x["gaps"]
        md.append(f"- join/leave{f' (run {i + 1})' if len(s['runs']) > 1 else ''}: a worker started at "
                  f"{fmt(j['at'], '.1f')} s ({fmt(j['done'], ',')} items done), ready {fmt(j.get('ready_s'), '.2f')} s "
                  f"later, ran {j['items']:,} items{'; ERROR ' + j['error'] if j.get('error') else ''}; "
                  f"{lv['id']} ({'running items' if lv['busy'] else 'idle'} then) got SIGTERM at "
                  f"{fmt(lv['at'], '.1f')} s ({fmt(lv['done'], ',')} items done), exited "
                  f"{fmt(lv['exit_s'], '.2f')} s later with code {lv['exit_code']}, ran {lv['items']:,} items in all"
                  f"{'; ERROR ' + lv['error'] if lv.get('error') else ''}; items run more than once: {x['reruns']}")
        md.append(f"- longest gap in item starts and ends across the other workers in the {GAP_WINDOW:g} s after the join: "
                  f"**{fmt(g.get('join'), '.3f')} s**, after the leave: **{fmt(g.get('leave'), '.3f')} s**; "
                  f"baseline, the {GAP_WINDOW:g} s before the join: {fmt(g.get('baseline'), '.3f')} s"
                  + (f" (ratios {g['join'] / g['baseline']:.1f} and {g['leave'] / g['baseline']:.1f})"
                     if g.get("baseline") and g.get("join") is not None and g.get("leave") is not None else ""))
    md.append("")
    return md


def speculation_lines(sp):
    md = [f"Speculation: {sp['items']} × `sleep {sp['secs']}` on 2 workers × `--cores 2`, the second "
          f"(`--label slow=yes`) {sp['slowdown']}× slower (its items see `BENCH_SLOW`, let through "
          f"`executor.env-allow`, and sleep {sp['secs'] * sp['slowdown']:g} s); ideal at full speed {sp['ideal']:.2f} s.\n"]
    if "error" in sp and "off" not in sp:
        return md + [f"ERROR {sp['error']}", ""]
    rows = []
    for key, field in (("off", "false"), ("on", "true")):
        r = sp.get(key)
        if r and r.get("runs"):
            rows.append([f"`\"speculation\": {field}`", f"{r['makespan']:.2f} s", f"{sp['ideal']:.2f} s",
                         f"**{r['ratio']:.2f}**", ", ".join(f"{x['server']:.2f}" for x in r["runs"])])
        elif key == "on" and not sp.get("supported"):
            rows.append([f"`\"speculation\": {field}`", "not implemented yet", f"{sp['ideal']:.2f} s", "—",
                         "this dts has no `scheduler.speculation-factor`"])
    md.append(md_table(["task", "makespan", "ideal", "÷ ideal", "runs (s)"], rows))
    if "error" in sp:
        md.append(f"\nERROR {sp['error']}")
    md.append("")
    return md


def targets_section(tg):
    return ["\n## Targets\n", md_table(["target", "measured", "result"], [list(t) for t in tg]), ""]


HOW_MEASURED = f"""\
How the columns are measured:

- **items/s**: items ÷ wall time, median over the runs; **× xargs**: the row's items/s over `xargs -P`'s in the
  same run and workload, median over the runs. xargs: `xargs -P <cores> -n 1 bash -c '<script>' _ < inputs`;
  parallel: `parallel --will-cite -j <cores> -q bash -c '<script>' _ :::: inputs`; dts run:
  `dts run --cores <cores> --inputs FILE -- '<script>'` (stdout to /dev/null), timed from start to exit,
  so its start-up is included. dts up: `dts up --ephemeral --port 0 --cores <cores>`, one warm-up task,
  then from just before `POST /v1/tasks` until `GET /v1/tasks/{{id}}?summary=true` (polled every {POLL * 1000:.0f} ms on a
  keep-alive connection) shows the task ended (COMPLETED with every item succeeded is checked). Distributed:
  a fresh private redis-server (no persistence) and tansu broker (memory storage), one `dts server`, two
  `dts worker --cores <cores/2>`, started for every run and timed like dts up once `/v1/workers` lists both
  workers, the workers own all shard partitions and a warm-up task has run. W3 runs at concurrency 8
  (`-P 8`, `-j 8`, `--cores 8`, workers `--cores 4`).
- **runner CPU ms/item**: the CPU of the runner's own processes, without the scripts, ÷ items. dts up, server,
  workers: utime+stime deltas of each process from `/proc/PID/stat` (all threads); distributed adds
  redis-server and the broker. xargs, parallel and dts run are children of the bench: when one exits the bench
  waits for it with `waitid(WNOWAIT)`, reads the zombie's `/proc/PID/stat` and splits utime+stime (the runner
  itself: for dts run its start-up, input reading, engine and printing the outputs) from cutime+cstime (its
  reaped children: the scripts, and for parallel the shells it starts), then reaps it.
- **scripts CPU ms/item**: cutime+cstime deltas of the same processes (the item processes they reaped) ÷ items.
- **peak RSS MB**: VmHWM from `/proc/PID/status` (dts up; distributed: server / the larger worker, each a
  fresh process per run); for xargs, parallel and dts run, `ru_maxrss` of the child from `wait4`.
"""
