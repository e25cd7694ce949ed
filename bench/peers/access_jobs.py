#!/usr/bin/env python3
"""The access-log jobs, done by a peer engine: what `functions/access-convert` and
`functions/access-errors` do in sluice.

- convert: every field of the JSON lines (nested `user` flattened to `user.id`, `user.country`)
  to one zstd Parquet file;
- errors: rows with status >= 500, latency_s = latency_ms / 1000, grouped by service and host:
  count, mean and max latency_s, sum of bytes, to zstd Parquet.

Prints one JSON object (engine, job, rows written) on stdout. Each engine is used as its
documentation recommends (lazy/streaming where it has it); nothing is tuned per machine.
"""

import argparse
import json
import os
import sys
import time

ERRORS_SQL = """
SELECT service, host, count(*) AS errors, avg(latency_ms / 1000.0) AS latency_s_mean,
       max(latency_ms / 1000.0) AS latency_s_max, sum(bytes) AS bytes_sum
FROM read_ndjson_auto(?) WHERE status >= 500 GROUP BY service, host
"""


def polars_convert(input_path, out_path):
    import polars as pl

    frame = pl.scan_ndjson(input_path).with_columns(
        pl.col("user").struct.field("id").alias("user.id"),
        pl.col("user").struct.field("country").alias("user.country"),
    ).drop("user")
    frame.sink_parquet(out_path, compression="zstd")
    return pl.scan_parquet(out_path).select(pl.len()).collect().item()


def polars_errors(input_path, out_path):
    import polars as pl

    table = (
        pl.scan_ndjson(input_path)
        .filter(pl.col("status") >= 500)
        .with_columns((pl.col("latency_ms") / 1000).alias("latency_s"))
        .group_by("service", "host")
        .agg(
            pl.len().cast(pl.Int64).alias("errors"),
            pl.col("latency_s").mean().alias("latency_s_mean"),
            pl.col("latency_s").max().alias("latency_s_max"),
            pl.col("bytes").sum().alias("bytes_sum"),
        )
        .collect(engine="streaming")
    )
    table.write_parquet(out_path, compression="zstd")
    return table.height


def duckdb_convert(input_path, out_path):
    import duckdb

    connection = duckdb.connect()
    quoted_in = input_path.replace("'", "''")
    quoted_out = out_path.replace("'", "''")
    connection.execute(
        f"COPY (SELECT * EXCLUDE (\"user\"), \"user\".id AS \"user.id\", \"user\".country AS \"user.country\" "
        f"FROM read_ndjson_auto('{quoted_in}')) TO '{quoted_out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    return connection.execute(f"SELECT count(*) FROM '{quoted_out}'").fetchone()[0]


def duckdb_errors(input_path, out_path):
    import duckdb

    connection = duckdb.connect()
    connection.execute(f"CREATE TEMP TABLE errors AS {ERRORS_SQL}", [input_path])
    quoted_out = out_path.replace("'", "''")
    connection.execute(f"COPY errors TO '{quoted_out}' (FORMAT parquet, COMPRESSION zstd)")
    return connection.execute("SELECT count(*) FROM errors").fetchone()[0]


JOBS = {
    ("polars", "convert"): polars_convert,
    ("polars", "errors"): polars_errors,
    ("duckdb", "convert"): duckdb_convert,
    ("duckdb", "errors"): duckdb_errors,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["polars", "duckdb"], required=True)
    parser.add_argument("--job", choices=["convert", "errors"], required=True)
    parser.add_argument("--input", required=True, help="JSON lines file")
    parser.add_argument("--out", required=True, help="directory for the Parquet output")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, f"{args.job}.parquet")
    started = time.perf_counter()
    rows = JOBS[(args.engine, args.job)](args.input, out_path)
    json.dump(
        {"engine": args.engine, "job": args.job, "rows": int(rows), "seconds_in_process": time.perf_counter() - started},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
