#!/usr/bin/env python3
"""Access-log benchmark jobs: convert (every field to zstd Parquet) and errors (filter + derive +
group by), on sluice and on Polars and DuckDB, one process per run, same file, one table.

Every Parquet file written is read back by pandas, Polars and DuckDB (a file only one of them can
read is a failure), and sluice's errors aggregate must equal DuckDB's. Called by `bench/run`;
see bench/README.md.
"""

import argparse
import math
import os
import sys
from pathlib import Path

from harness import REPO, SLUICE_ONE_THREAD, run_measured, scaling_line

PEER_SCRIPT = REPO / "bench" / "peers" / "access_jobs.py"
FUNCTIONS = {"convert": "functions/access-convert", "errors": "functions/access-errors"}
PEERS = ["polars", "duckdb"]


def command(engine, job, args, out_dir):
    if engine in ("sluice", SLUICE_ONE_THREAD):
        extra = ["--threads", "1"] if engine == SLUICE_ONE_THREAD else []
        return [str(args.sluice), "run", FUNCTIONS[job], "--input", str(args.input), "--data-dir", str(out_dir), *extra]
    return [sys.executable, str(PEER_SCRIPT), "--engine", engine, "--job", job, "--input", str(args.input), "--out", str(out_dir)]


def read_back(out_dir: Path):
    """Rows of the Parquet written under out_dir, as read by pandas, Polars and DuckDB (must agree).

    Called only after every measured run: a child's peak RSS starts from this process's size at
    fork, so the readers must not be loaded (nor the files read) while engines are measured."""
    import duckdb
    import pandas
    import polars

    files = sorted(str(p) for p in out_dir.rglob("*.parquet"))
    if not files:
        raise ValueError(f"no Parquet under {out_dir}")
    by_pandas = sum(len(pandas.read_parquet(f)) for f in files)
    by_polars = polars.read_parquet(files).height
    by_duckdb = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0]
    if not by_pandas == by_polars == by_duckdb:
        raise ValueError(f"readers disagree on {out_dir}: pandas {by_pandas}, polars {by_polars}, duckdb {by_duckdb}")
    return by_pandas, files


def errors_table(files):
    import duckdb

    rows = duckdb.sql(
        f"SELECT service, host, errors, latency_s_mean, latency_s_max, bytes_sum FROM read_parquet({files!r}) ORDER BY service, host"
    ).fetchall()
    return rows


def same_rows(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-9):
                    return False
            elif u != v:
                return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--sluice", type=Path, default=REPO / "target" / "release" / "sluice")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--jobs", default=",".join(FUNCTIONS), help=f"comma-separated, from {','.join(FUNCTIONS)}")
    parser.add_argument("--engines", default="sluice,polars,duckdb", help="comma-separated, from sluice,polars,duckdb")
    parser.add_argument("--no-threads-row", action="store_true", help="leave out the sluice --threads 1 runs")
    args = parser.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    engines = [e for e in args.engines.split(",") if e]
    if unknown := [j for j in jobs if j not in FUNCTIONS] + [e for e in engines if e not in ["sluice", *PEERS]]:
        parser.error(f"unknown job(s) or engine(s) {unknown}")
    if "sluice" in engines and not args.no_threads_row:
        engines.insert(engines.index("sluice") + 1, SLUICE_ONE_THREAD)
    # Engines run with the repository as working directory.
    args.input, args.sluice, args.work = args.input.resolve(), args.sluice.resolve(), args.work.resolve()
    megabytes = args.input.stat().st_size / 1e6
    failed = False
    lines = ["| job | engine | best s | MB/s | vs fastest peer | peak RSS MiB | rows out |", "|---|---|---|---|---|---|---|"]
    scaling = []
    measured = {}
    load_before = os.getloadavg()[0]
    for job in jobs:
        # Round-robin, so drifting load (other work on a shared machine) spreads over every engine.
        broken = set()
        for attempt in range(args.repeat):
            for engine in engines:
                if engine in broken:
                    continue
                out_dir = args.work / f"{job}-{engine.replace(' ', '')}-{attempt}"
                if out_dir.exists():
                    for p in sorted(out_dir.rglob("*"), reverse=True):
                        p.unlink() if p.is_file() else p.rmdir()
                out_dir.mkdir(parents=True, exist_ok=True)
                run = run_measured(command(engine, job, args, out_dir), out_dir)
                if run.exit_code != 0:
                    print(f"{engine} {job} failed ({run.exit_code}): {run.stderr[-2000:]}", file=sys.stderr)
                    failed = True
                    broken.add(engine)
                    continue
                best = measured.get((job, engine))
                if best is None or run.seconds < best[0].seconds:
                    measured[(job, engine)] = (run, out_dir)
    for job in jobs:
        tables = {}
        results = {}
        for engine in engines:
            if (job, engine) not in measured:
                results[engine] = None
                continue
            run, out_dir = measured[(job, engine)]
            rows, files = read_back(out_dir)
            if job == "errors":
                tables[engine] = errors_table(files)
            results[engine] = (run, rows)
        if job == "errors" and "sluice" in tables and "duckdb" in tables and not same_rows(tables["sluice"], tables["duckdb"]):
            print("MISMATCH: sluice's errors aggregate differs from DuckDB's", file=sys.stderr)
            failed = True
        peer_best = min((r[0].seconds for e, r in results.items() if e in PEERS and r), default=None)
        if results.get("sluice") and results.get(SLUICE_ONE_THREAD):
            scaling.append(f"{job}: " + scaling_line(results["sluice"][0].seconds, results[SLUICE_ONE_THREAD][0].seconds, megabytes))
        for engine, result in results.items():
            if not result:
                lines.append(f"| {job} | {engine} | failed | | | | |")
                continue
            run, rows = result
            ratio = f"{peer_best / run.seconds:.2f}×" if peer_best else ""
            lines.append(f"| {job} | {engine} | {run.seconds:.2f} | {megabytes / run.seconds:.0f} | {ratio} | {run.peak_rss_mib:.0f} | {rows} |")
    print(f"input {args.input} ({megabytes:.0f} MB); 1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("\n".join(lines))
    if scaling:
        print()
        print("\n".join(scaling))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
