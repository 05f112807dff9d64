"""The dts benchmark's code; `bench/bench.py` is its command line.

common: paths and constants; processes: child processes, temp dirs, /proc;
clients: HTTP API, Redis, Kafka; nodes: dts up and the distributed stack;
workloads: W1-W3 and W2's calibration; runners: xargs, parallel and the dts
modes on one workload; store_ops, profile, latency, w4, scheduling: the
other measurements; summary: medians; targets: the issue's targets; report:
the Markdown and text; machine: the header's facts; cli: flags and order.
"""
