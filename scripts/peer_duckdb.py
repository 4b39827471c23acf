#!/usr/bin/env python3
"""Runs DuckDB's ASOF JOIN on the data set `flowmap bench --export DIR` wrote.

Loads `ranges.csv` and `flows.csv` into in-memory tables (not timed), then times the lookup
itself: for each flow, the latest range of its IP starting at or before the flow's start, kept
only if the flow starts before the range ends. Three ways to finish the query, because they
cost very differently:

  count        count the attributed flows inside DuckDB (no per-flow result leaves the engine)
  materialize  write (ip, start, workload) for every flow to a DuckDB table
  fetch        hand (ip, start, workload) for every flow to Python (fetchall)

flowmap hands every attributed flow record to its consumer, so `fetch` is the closest to what
it does; `count` is DuckDB's best case. Prints one JSON object per mode. DuckDB runs on
`--threads` threads (1 by default, as one timely worker).
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
    ap.add_argument("--modes", default="count,materialize,fetch")
    args = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads TO {args.threads}")
    con.execute(f"CREATE TABLE ranges AS SELECT * FROM read_csv('{args.dir}/ranges.csv', header=true, "
                "columns={'ip': 'UINTEGER', 'from_ns': 'UBIGINT', 'to_ns': 'UBIGINT', 'workload': 'UINTEGER'})")
    con.execute(f"CREATE TABLE flows AS SELECT * FROM read_csv('{args.dir}/flows.csv', header=true, "
                "columns={'ip': 'UINTEGER', 'start_ns': 'UBIGINT'})")
    flows = con.execute("SELECT count(*) FROM flows").fetchone()[0]
    join = """
        FROM flows f ASOF LEFT JOIN ranges r
          ON f.ip = r.ip AND f.start_ns >= r.from_ns
    """
    queries = {
        "count": "SELECT count(*) FILTER (WHERE f.start_ns < r.to_ns) " + join,
        "materialize": "CREATE OR REPLACE TABLE attributed AS SELECT f.ip, f.start_ns, "
                       "CASE WHEN f.start_ns < r.to_ns THEN r.workload END AS workload " + join,
        "fetch": "SELECT f.ip, f.start_ns, CASE WHEN f.start_ns < r.to_ns THEN r.workload END " + join,
    }
    for mode in args.modes.split(","):
        if mode not in queries:
            sys.exit(f"peer_duckdb.py: unknown mode {mode!r} (count, materialize, fetch)")
        best = None
        attributed = None
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            if mode == "count":
                attributed = con.execute(queries[mode]).fetchone()[0]
            elif mode == "materialize":
                con.execute(queries[mode])
            else:
                rows = con.execute(queries[mode]).fetchall()
            elapsed = time.perf_counter() - started
            if mode == "materialize":
                attributed = con.execute("SELECT count(workload) FROM attributed").fetchone()[0]
            elif mode == "fetch":
                attributed = sum(1 for row in rows if row[2] is not None)
                del rows
            best = elapsed if best is None else min(best, elapsed)
        print(json.dumps({"peer": "duckdb", "mode": mode, "threads": args.threads, "flows": flows,
                          "attributed": attributed, "seconds": best, "flows_per_sec": flows / best}),
              flush=True)


if __name__ == "__main__":
    main()
