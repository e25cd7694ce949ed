#!/usr/bin/env python3
"""Seed-job benchmark harness: runs sluice and its peers on the same file, one engine at a time,
each as its own process, and reports wall time, throughput and peak RSS as a markdown table.

Called by `bench/run`, which prepares the venv, the build and the data; run it directly only to
re-measure with those already in place (see bench/README.md).

Every engine's answer is checked against the others: the Parquet aggregate it wrote (all
companies, all statistics) and the top 10 it printed. Disagreement is reported loudly and makes
the exit status non-zero, because a fast wrong answer is not a result.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
PEER_SCRIPT = REPO / "bench" / "peers" / "seed_job.py"
METRICS = ["cpu_utilization", "latency", "packet_loss", "throughput"]
STATS = ["min", "max", "mean"]
TOP_BY = "cpu_utilization_mean"
REL_TOLERANCE = 1e-6
WARMUP_LINES = 20_000
PEERS = ["polars", "duckdb", "pandas"]
# sluice with its engine pool held to one thread: the scaling row (issue 3 asks for >= 1.8x from
# 1 to 2 threads). Runs whenever sluice does.
SLUICE_ONE_THREAD = "sluice --threads 1"


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class EngineResult:
    name: str
    runs: list = field(default_factory=list)
    error: str = ""
    table: dict | None = None  # company -> {canonical column -> value}, from its Parquet
    top10: list | None = None  # [(company, cpu mean)], from its stdout
    codecs: set = field(default_factory=set)
    mismatch: list = field(default_factory=list)

    @property
    def best(self):
        ok = [run for run in self.runs if run.exit_code == 0]
        return min(ok, key=lambda run: run.seconds) if ok else None


def run_measured(command, log_prefix: Path) -> Run:
    """Runs one engine process; wall time from spawn to exit, peak RSS from wait4 (this child
    only: RUSAGE_CHILDREN would carry the maximum over every earlier run)."""
    stdout_path = log_prefix.with_suffix(".stdout")
    stderr_path = log_prefix.with_suffix(".stderr")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        try:
            process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO)
        except OSError as error:  # e.g. sluice not built: a failed run, not a crash
            return Run(0.0, 0.0, 127, "", f"cannot start {command[0]}: {error}")
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        seconds=seconds,
        peak_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
        exit_code=process.returncode,
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )


def engine_command(engine, args, input_path, out_dir):
    if engine in ("sluice", SLUICE_ONE_THREAD):
        return [
            str(args.sluice),
            "run",
            str(args.function),
            "--input",
            str(input_path),
            "--data-dir",
            str(out_dir),
            *(["--threads", "1"] if engine == SLUICE_ONE_THREAD else []),
        ]
    return [
        sys.executable,
        str(PEER_SCRIPT),
        "--engine",
        engine,
        "--input",
        str(input_path),
        "--out",
        str(out_dir),
    ]


def canonical_column(name):
    """Maps an engine's column name to `{metric}_{stat}` or `count`, so sluice may name its
    columns its own way (`cpu_mean`, `latency_max`, `n`, …) and still be compared."""
    lowered = name.lower()
    if lowered in ("count", "n", "len", "rows", "row_count", "events"):
        return "count"
    metric = next(
        (m for key, m in (("cpu", "cpu_utilization"), ("latency", "latency"),
                          ("loss", "packet_loss"), ("throughput", "throughput")) if key in lowered),
        None,
    )
    stat = next(
        (s for key, s in (("min", "min"), ("max", "max"), ("mean", "mean"), ("avg", "mean"))
         if key in lowered),
        None,
    )
    if lowered == "company":
        return "company"
    return f"{metric}_{stat}" if metric and stat else None


def read_parquet_output(result: EngineResult, out_dir: Path):
    """Loads every Parquet file the engine wrote under out_dir into company -> values."""
    files = sorted(out_dir.rglob("*.parquet"))
    if not files:
        result.mismatch.append(f"no Parquet file under {out_dir}")
        return
    table = {}
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            row_group = parquet.metadata.row_group(group)
            for column in range(row_group.num_columns):
                result.codecs.add(row_group.column(column).compression)
        for row in parquet.read().to_pylist():
            named = {canonical_column(k): v for k, v in row.items()}
            company = named.pop("company", None)
            if company is None:
                result.mismatch.append(f"{path.name}: no `company` column")
                return
            if company in table:
                # Several rows per company means per-batch partial aggregates: not the job.
                result.mismatch.append(
                    f"company {company} appears more than once in the Parquet output "
                    "(partial aggregates per batch?)"
                )
                return
            table[company] = {k: v for k, v in named.items() if k is not None}
    result.table = table


def parse_top10(stdout):
    """Finds the top 10 in an engine's stdout. Accepts our peers' `{"top10": [...]}`, a bare JSON
    array of rows, or one JSON object per line; rows need `company` and a CPU-mean field."""
    candidates = []
    try:
        candidates.append(json.loads(stdout))
    except ValueError:
        pass
    line_rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith(("{", "[")):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        candidates.append(value)
        if isinstance(value, dict) and "company" in value:
            line_rows.append(value)
    if line_rows:
        candidates.append(line_rows)

    for value in candidates:
        rows = value.get("top10") if isinstance(value, dict) else value
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            continue
        parsed = []
        for row in rows:
            mean_key = next((k for k in row if canonical_column(k) == TOP_BY), None)
            if "company" not in row or mean_key is None:
                break
            parsed.append((row["company"], float(row[mean_key])))
        else:
            return parsed[:10]
    return None


def close(a, b):
    if a is None or b is None:
        return a is b
    return abs(a - b) <= REL_TOLERANCE * max(abs(a), abs(b), 1e-300)


def compare(result: EngineResult, reference: EngineResult):
    """Records every disagreement of result with reference (both tables and both top 10s)."""
    if result.table is not None and reference.table is not None:
        ours, theirs = result.table, reference.table
        if set(ours) != set(theirs):
            only = sorted(set(ours) ^ set(theirs))[:5]
            result.mismatch.append(f"different companies (e.g. {only})")
        expected = [f"{m}_{s}" for m in METRICS for s in STATS] + ["count"]
        missing = [c for c in expected if c not in next(iter(ours.values()), {})]
        if missing:
            result.mismatch.append(f"missing columns {missing}")
        bad = []
        for company in sorted(set(ours) & set(theirs)):
            for column in expected:
                a, b = ours[company].get(column), theirs[company].get(column)
                if column in missing:
                    continue
                if not close(None if a is None else float(a), None if b is None else float(b)):
                    bad.append(f"{company}.{column}: {a} vs {b}")
        if bad:
            result.mismatch.append(f"{len(bad)} values differ from {reference.name}, e.g. {bad[:3]}")
    if result.top10 is None:
        result.mismatch.append("no top 10 found on stdout")
    elif reference.top10 is not None:
        if [c for c, _ in result.top10] != [c for c, _ in reference.top10]:
            result.mismatch.append(
                f"top 10 companies differ from {reference.name}: "
                f"{[c for c, _ in result.top10]} vs {[c for c, _ in reference.top10]}"
            )
        elif not all(close(a, b) for (_, a), (_, b) in zip(result.top10, reference.top10)):
            result.mismatch.append(f"top 10 means differ from {reference.name} beyond {REL_TOLERANCE}")


def count_rows(path: Path):
    """Counts lines, which also pulls the file into the page cache before anything is timed."""
    rows = 0
    with open(path, "rb") as file:
        while chunk := file.read(16 << 20):
            rows += chunk.count(b"\n")
    return rows


def machine_summary(args):
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown memory"
    versions = []
    for package in ("polars", "duckdb", "pandas", "pyarrow"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    sluice_version = "not found"
    if Path(args.sluice).exists():
        try:
            sluice_version = subprocess.run(
                [str(args.sluice), "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            sluice_version = "unknown"
    commit = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        if dirty:
            commit += " (uncommitted changes)"
    except OSError:
        pass
    return [
        f"- machine: {cpu}, {os.cpu_count()} logical cores, {memory}, "
        f"{platform.system()} {platform.release()}",
        f"- sluice: {sluice_version}, commit {commit}",
        f"- peers: Python {platform.python_version()}, {', '.join(versions)}",
        "- load average (1/5/15 min) when the runs ended: " + " / ".join(f"{load:.1f}" for load in os.getloadavg()),
    ]


def in_process_seconds(run: Run):
    """The engine's own timing of the job, without process startup, if it printed one."""
    for line in run.stdout.splitlines():
        if '"seconds_in_process"' in line:
            try:
                return float(json.loads(line)["seconds_in_process"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def ratio_text(seconds, baseline):
    if baseline is None:
        return "–"
    ratio = seconds / baseline
    return f"{ratio:.2f}×"


def scaling_line(all_threads_seconds, one_thread_seconds, megabytes):
    """The thread-scaling sentence under a table: MB/s on one thread and on all, and the speedup."""
    return (f"Threads: sluice on {os.cpu_count()} threads {megabytes / all_threads_seconds:,.0f} MB/s, "
            f"on 1 thread {megabytes / one_thread_seconds:,.0f} MB/s: "
            f"**{one_thread_seconds / all_threads_seconds:.2f}×** from 1 to {os.cpu_count()} threads.")


def render(args, results, input_path, input_bytes, input_rows, reference):
    now = datetime.datetime.now(datetime.timezone.utc)
    sluice = next((r for r in results if r.name == "sluice" and r.best), None)
    baseline_name = "sluice" if sluice else None
    if baseline_name is None:
        fastest = min((r for r in results if r.best), key=lambda r: r.best.seconds, default=None)
        baseline_name = fastest.name if fastest else None
    baseline = next((r.best.seconds for r in results if r.name == baseline_name), None)

    spec_path = Path(str(input_path) + ".spec")
    spec = spec_path.read_text().strip() if spec_path.exists() else "no .spec sidecar"
    lines = [
        f"# Seed job: sluice vs peers — {now:%Y-%m-%d %H:%M} UTC",
        "",
        "Job: read JSON lines → group by company → min/max/mean of cpu_utilization, latency, "
        "packet_loss, throughput + count → zstd Parquet → top 10 companies by mean CPU.",
        "",
        f"- input: `{input_path}` — {input_bytes / 1e6:,.1f} MB, {input_rows:,} rows ({spec})",
        f"- best of {args.repeat} run(s) per engine (pandas: 1); each run is a fresh process, "
        "timed from spawn to exit (startup included); file in page cache",
        *machine_summary(args),
        "",
        f"| engine | seconds | MB/s | rows/s | peak RSS MiB | time vs {baseline_name or '–'} "
        "| in-process s | all runs (s) | answer |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        best = result.best
        if best is None:
            lines.append(f"| {result.name} | failed | | | | | | | {result.error or 'failed'} |")
            continue
        runs = ", ".join(f"{run.seconds:.2f}" for run in result.runs if run.exit_code == 0)
        if result.mismatch:
            answer = "**MISMATCH**: " + "; ".join(result.mismatch)
        elif result is reference:
            answer = "reference"
        else:
            answer = f"agrees with {reference.name}" if reference else "unchecked"
        own_seconds = in_process_seconds(best)
        in_process = "–" if own_seconds is None else f"{own_seconds:.2f}"
        codecs = ",".join(sorted(result.codecs))
        if codecs and codecs != "ZSTD":
            answer += f" (Parquet codec {codecs}, not ZSTD)"
        lines.append(
            f"| {result.name} | {best.seconds:.2f} | {input_bytes / 1e6 / best.seconds:,.0f} "
            f"| {input_rows / best.seconds:,.0f} | {best.peak_rss_mib:,.0f} "
            f"| {ratio_text(best.seconds, baseline)} | {in_process} | {runs} | {answer} |"
        )
    lines.append("")
    one_thread = next((r for r in results if r.name == SLUICE_ONE_THREAD and r.best), None)
    if sluice and one_thread:
        lines += [scaling_line(sluice.best.seconds, one_thread.best.seconds, input_bytes / 1e6), ""]
    if reference and reference.top10:
        lines += [f"Top 10 by mean CPU ({reference.name}):", "", "| # | company | mean CPU |",
                  "|---:|---|---:|"]
        lines += [f"| {i} | {c} | {m:.3f} |" for i, (c, m) in enumerate(reference.top10, 1)]
        lines.append("")
    return "\n".join(lines)


def results_path(results_dir: Path):
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"seed-{datetime.date.today():%Y-%m-%d}"
    path = results_dir / f"{stem}.md"
    n = 2
    while path.exists():  # several runs a day keep their own files
        path = results_dir / f"{stem}-{n}.md"
        n += 1
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--engines", default="sluice,polars,duckdb,pandas",
                        help="comma-separated, from sluice,polars,duckdb,pandas")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; best is reported")
    parser.add_argument("--sluice", type=Path, default=REPO / "target" / "release" / "sluice")
    parser.add_argument("--function", type=Path, default=Path("functions/log-aggregator"))
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-threads-row", action="store_true",
                        help="leave out the sluice --threads 1 run")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed run of each engine on a small sample")
    args = parser.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ["sluice", *PEERS]]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}")
    if "sluice" in engines and not args.no_threads_row:
        engines.insert(engines.index("sluice") + 1, SLUICE_ONE_THREAD)
    input_path = args.input.resolve()
    if not input_path.is_file():
        parser.error(f"input {input_path} does not exist")

    input_bytes = input_path.stat().st_size
    print(f"counting rows of {input_path} ({input_bytes / 1e6:,.1f} MB; warms the page cache)")
    input_rows = count_rows(input_path)

    scratch = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    results = {name: EngineResult(name) for name in engines}
    try:
        if not args.no_warmup:
            # Untimed: builds/compiles the sluice function and loads the peers' libraries once,
            # and fails fast if an engine cannot run at all.
            sample = scratch / "warmup.jsonl"
            with open(input_path, "rb") as src, open(sample, "wb") as dst:
                for _, line in zip(range(WARMUP_LINES), src):
                    dst.write(line)
            for name in engines:
                out_dir = scratch / f"warmup-{name}"
                print(f"warm-up {name} …", flush=True)
                run = run_measured(engine_command(name, args, sample, out_dir), scratch / f"warmup-{name}")
                if run.exit_code != 0:
                    results[name].error = f"warm-up exited {run.exit_code}"
                    print(f"!! {name} warm-up failed (exit {run.exit_code}):\n{run.stderr[-3000:]}",
                          file=sys.stderr)

        # Round-robin so slow drift (thermal, background work) spreads over every engine.
        for repetition in range(args.repeat):
            for name in engines:
                result = results[name]
                if result.error or (name == "pandas" and repetition > 0):
                    continue
                out_dir = scratch / f"{name}-{repetition}"
                print(f"run {repetition + 1}/{args.repeat} {name} …", end=" ", flush=True)
                run = run_measured(engine_command(name, args, input_path, out_dir),
                                   scratch / f"{name}-{repetition}")
                result.runs.append(run)
                if run.exit_code != 0:
                    result.error = f"exited {run.exit_code}"
                    print(f"FAILED (exit {run.exit_code})\n{run.stderr[-3000:]}", file=sys.stderr)
                    continue
                print(f"{run.seconds:.2f} s, {run.peak_rss_mib:,.0f} MiB", flush=True)
                if result.table is None and not result.mismatch:
                    read_parquet_output(result, out_dir)
                    result.top10 = parse_top10(run.stdout)
                shutil.rmtree(out_dir, ignore_errors=True)  # keep disk use to one output

        ordered = [results[name] for name in engines]
        checked = [r for r in ordered if r.best and r.table is not None]
        reference = next((r for r in checked if r.name == "sluice"), checked[0] if checked else None)
        for result in ordered:
            if result.best and reference and result is not reference:
                compare(result, reference)
            elif result is reference and result.top10 is None:
                result.mismatch.append("no top 10 found on stdout")

        report = render(args, ordered, args.input, input_bytes, input_rows, reference)
        path = results_path(args.results_dir)
        path.write_text(report + "\n")
        print()
        print(report)
        print(f"written to {path}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    failed = [r.name for r in ordered if not r.best]
    mismatched = [r.name for r in ordered if r.mismatch]
    if mismatched:
        print(f"\n!!!! ANSWERS DISAGREE: {', '.join(mismatched)} vs reference "
              f"{reference.name if reference else '–'} — see the table above !!!!", file=sys.stderr)
        return 2
    if failed:
        print(f"\n!! engines failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
