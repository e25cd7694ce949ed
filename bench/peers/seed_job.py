#!/usr/bin/env python3
"""The seed job, done by a peer engine: the same work `functions/log-aggregator` does in sluice.

Read JSON lines, group by company, min/max/mean of the four metrics plus a row count, write the
aggregate as zstd Parquet into --out, and print the top 10 companies by mean CPU as one JSON object
on stdout, so the harness can check that every engine got the same answer.

Each engine is used the way its documentation recommends for this job; nothing is tuned per
machine. Imports happen after argument parsing so only the chosen engine's import is paid for.
"""

import argparse
import json
import os
import sys
import time

METRICS = ["cpu_utilization", "latency", "packet_loss", "throughput"]
STATS = ["min", "max", "mean"]
TOP_BY = "cpu_utilization_mean"
TOP_K = 10
PARQUET_NAME = "company_metrics.parquet"


def run_polars(input_path, out_path):
    import polars as pl

    aggregates = [
        getattr(pl.col(metric), stat)().alias(f"{metric}_{stat}")
        for metric in METRICS
        for stat in STATS
    ]
    # Lazy scan + streaming engine: projection pushdown reads only the needed fields.
    table = (
        pl.scan_ndjson(input_path)
        .group_by("company")
        .agg(*aggregates, pl.len().cast(pl.Int64).alias("count"))
        .collect(engine="streaming")
    )
    table.write_parquet(out_path, compression="zstd")
    top = table.top_k(TOP_K, by=TOP_BY).sort(TOP_BY, descending=True)
    return top.select("company", TOP_BY).to_dicts(), table.height


def run_duckdb(input_path, out_path):
    import duckdb

    connection = duckdb.connect()  # in-memory database, default threads (all cores)
    selects = ", ".join(
        f"{stat if stat != 'mean' else 'avg'}({metric}) AS {metric}_{stat}"
        for metric in METRICS
        for stat in STATS
    )
    connection.execute(
        f"CREATE TEMP TABLE company_metrics AS "
        f"SELECT company, {selects}, count(*) AS count "
        f"FROM read_ndjson_auto(?) GROUP BY company",
        [input_path],
    )
    # COPY takes no parameters; the path comes from our own temp dir, quoted defensively.
    quoted_out = out_path.replace("'", "''")
    connection.execute(
        f"COPY company_metrics TO '{quoted_out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    rows = connection.execute(
        f"SELECT company, {TOP_BY} FROM company_metrics ORDER BY {TOP_BY} DESC LIMIT {TOP_K}"
    ).fetchall()
    groups = connection.execute("SELECT count(*) FROM company_metrics").fetchone()[0]
    return [{"company": c, TOP_BY: m} for c, m in rows], groups


def run_pandas(input_path, out_path):
    import pandas as pd

    frame = pd.read_json(input_path, lines=True)
    named = {
        f"{metric}_{stat}": pd.NamedAgg(column=metric, aggfunc=stat)
        for metric in METRICS
        for stat in STATS
    }
    named["count"] = pd.NamedAgg(column="cpu_utilization", aggfunc="size")
    table = frame.groupby("company", sort=False).agg(**named).reset_index()
    table.to_parquet(out_path, compression="zstd", index=False)
    top = table.nlargest(TOP_K, TOP_BY)[["company", TOP_BY]]
    return top.to_dict(orient="records"), len(table)


ENGINES = {"polars": run_polars, "duckdb": run_duckdb, "pandas": run_pandas}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), required=True)
    parser.add_argument("--input", required=True, help="JSON lines file")
    parser.add_argument("--out", required=True, help="directory for the Parquet output")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, PARQUET_NAME)
    started = time.perf_counter()
    top, groups = ENGINES[args.engine](args.input, out_path)
    seconds = time.perf_counter() - started

    top = [{"company": row["company"], TOP_BY: float(row[TOP_BY])} for row in top]
    json.dump(
        {"engine": args.engine, "groups": int(groups), "seconds_in_process": seconds, "top10": top},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
