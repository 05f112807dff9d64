#!/usr/bin/env python3
"""The dts benchmark: the same workloads through xargs -P, GNU parallel, dts
embedded (`dts up` over HTTP, and the one-shot `dts run`) and dts distributed
on loopback (Redis, the tansu broker, one `dts server`, two `dts worker`),
in one run on this machine. Prints a table and writes BENCHMARKS.md.

Run it through `bench/run.sh` (it builds dts and installs the tools first):

    ./bench/run.sh                 # the full benchmark (BENCHMARKS.md says how long it took)
    ./bench/run.sh --quick         # a smoke check (a few minutes)
    ./bench/run.sh --only scheduling   # how well shards are placed (docs/scheduling.md)

Python 3 standard library only. Every process it starts runs in its own
session and is stopped at the end, also on Ctrl-C and on errors; its temp
directories are removed.
"""

import sys

from dtsbench import cli

if __name__ == "__main__":
    sys.exit(cli.run(__doc__))
