"""What every part of the benchmark shares: where dts is, the machine's
cores, the task states, the distributed stack's topic layout, and the one
error type that ends a measurement with a message instead of a traceback."""

import os
import sys
import traceback

# bench/dtsbench/common.py -> the repository's root
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DTS = os.path.join(ROOT, "target", "release", "dts")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "SUBMISSION_FAILED"}
PARTITIONS = 6  # pubsub.partitions, set explicitly on every distributed node
SHARD_TOPIC = "distributed_task_shard"
POLL = 0.010  # status poll interval while a timed task runs


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def failure(e):
    """Logs a measurement that failed with `e` (and its traceback) and
    returns the error entry its report row holds, so one broken measurement
    never hides the others."""
    log(f"    ERROR {e}")
    traceback.print_exc()
    return {"error": f"{type(e).__name__}: {e}"}
