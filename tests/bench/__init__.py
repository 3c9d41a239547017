"""Benchmarks: `just bench` runs every bench_* module here; each states its workload and prints
a table of rates and latency percentiles. Not collected by pytest."""
