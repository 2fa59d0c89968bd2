"""Times analytic queries in DuckDB over spanlake's Parquet blocks, in process, for the
comparison in benches/flight_sql.rs. Reads the queries as JSON on stdin
([{"name": ..., "sql": ...}], over a view `spans`), prints {name: [seconds, rows]} as JSON.

Usage: duckdb_queries.py 'BLOCKS_GLOB' REPEATS
"""

import json
import sys
import time

import duckdb


def main():
    blocks, repeats = sys.argv[1], int(sys.argv[2])
    queries = json.load(sys.stdin)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{blocks}')")
    out = {}
    for query in queries:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            rows = len(con.execute(query["sql"]).fetchall())
            times.append(time.perf_counter() - started)
        times.sort()
        out[query["name"]] = [times[len(times) // 2], rows]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
