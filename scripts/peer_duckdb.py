#!/usr/bin/env python3
"""Runs DuckDB's ASOF JOIN on the data set `flowmap bench --export DIR` wrote.

Loads `ranges.csv` and `flows.csv` into in-memory tables (not timed), then times the lookup
itself: for each flow, the latest range of its IP starting at or before the flow's start, kept
only if the flow starts before the range ends. Prints one JSON object: flows, attributed,
seconds, flows_per_sec. DuckDB runs on `--threads` threads (1 by default, as one timely worker).
"""
import argparse
import json
import sys
import time

try:
    import duckdb
except ImportError:
    sys.exit("peer_duckdb.py: the `duckdb` Python package is missing (scripts/setup installs it)")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir", help="directory written by `flowmap bench --export`")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads TO {args.threads}")
    con.execute(f"CREATE TABLE ranges AS SELECT * FROM read_csv('{args.dir}/ranges.csv', header=true, "
                "columns={'ip': 'UINTEGER', 'from_ns': 'UBIGINT', 'to_ns': 'UBIGINT', 'workload': 'UINTEGER'})")
    con.execute(f"CREATE TABLE flows AS SELECT * FROM read_csv('{args.dir}/flows.csv', header=true, "
                "columns={'ip': 'UINTEGER', 'start_ns': 'UBIGINT'})")
    flows = con.execute("SELECT count(*) FROM flows").fetchone()[0]
    query = """
        SELECT count(r.workload)
        FROM flows f ASOF LEFT JOIN ranges r
          ON f.ip = r.ip AND f.start_ns >= r.from_ns
        WHERE r.workload IS NULL OR f.start_ns < r.to_ns
    """
    best = None
    attributed = None
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        attributed = con.execute(query).fetchone()[0]
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    print(json.dumps({"flows": flows, "attributed": attributed, "seconds": best,
                      "flows_per_sec": flows / best, "threads": args.threads}))


if __name__ == "__main__":
    main()
