#!/usr/bin/env python3
"""Kafka benchmark harness: one nisshi broker, one topic filled once with the seed job's JSON
lines, then four consumers of the whole topic, one at a time:

- drain:  a bare rdkafka consumer that only reads (host/triggers/examples/kafka_drain.rs),
          assigning itself every partition without the group protocol: the ceiling this
          broker and machine allow;
- drain in a group: the same, subscribed as a member of its own consumer group, as the other
          two are (it pays the group join and offset lookup they pay);
- sluice: `sluice serve` with functions/log-aggregator's component behind a kafka trigger
          (batch -> per-company aggregate -> zstd Parquet, offsets committed once durable);
- python: the seed's baseline, confluent-kafka + json + pandas + Parquet, the same batches
          (bench/peers/kafka_consumer.py).

Each is timed from process spawn until every message is consumed: drain and python exit then;
sluice keeps serving, so its group's committed offsets are polled until they reach the end of
every partition. Called by bench/kafka, which builds and installs what this needs.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

REPO = Path(__file__).resolve().parent.parent
TOPIC = "bench-metrics"
# How long a partial batch waits for more messages: the same 0.2 s as the Python baseline's
# consume() timeout, so both finish their last, partial batch alike.
MAX_WAIT_MS = 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, within: float):
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench/kafka: the broker did not listen on {port} within {within}s")
            time.sleep(0.05)


def start_broker(nisshi: Path, port: int, log: Path) -> subprocess.Popen:
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [str(nisshi), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://nisshi/", "--group-initial-rebalance-delay", "0s"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
    )
    wait_for_port(port, 30)
    return broker


def fill_topic(nisshi: Path, brokers: str, source: Path, messages: int, partitions: int) -> int:
    subprocess.run([str(nisshi), "topic", "create", "--broker", f"tcp://{brokers}",
                    "--partitions", str(partitions), TOPIC], check=True, stdout=subprocess.DEVNULL)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.size": 1 << 20})
    payload_bytes = 0
    with open(source, "rb") as lines:
        for index in range(messages):
            line = lines.readline().rstrip(b"\n")
            if not line:
                raise SystemExit(f"bench/kafka: {source} holds fewer than {messages} lines")
            payload_bytes += len(line)
            while True:
                try:
                    producer.produce(TOPIC, line, partition=index % partitions)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("bench/kafka: the broker did not acknowledge every message")
    return payload_bytes


def run_to_exit(command, log: Path) -> dict:
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=open(log, "wb"), cwd=REPO)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"bench/kafka: {command[0]} failed ({finished.returncode}); see {log}")
    reported = json.loads(finished.stdout.decode().strip().splitlines()[-1])
    return {"seconds": seconds, "messages": reported["messages"], "bytes": reported["bytes"], "load": os.getloadavg()[0]}


class CommitProbe:
    """Reads a group's committed offsets through one client made before the timed run: making
    a client per look took 55 ms, which would have been counted against sluice."""

    def __init__(self, brokers: str, group: str, partitions: int):
        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
        self.partitions = [TopicPartition(TOPIC, p) for p in range(partitions)]
        self.total()

    def total(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.partitions, timeout=10))

    def close(self):
        self.consumer.close()


def warm_compile_cache(sluice: Path, source: Path, work: Path):
    """Runs log-aggregator once on a few lines, untimed, so that the timed runs find the
    component compiled for this host build in the cache, as a deployed function would."""
    sample = work / "warm.jsonl"
    with open(source, "rb") as lines, open(sample, "wb") as out:
        for _ in range(1000):
            out.write(lines.readline())
    subprocess.run([str(sluice), "run", str(REPO / "functions/log-aggregator"), "--input", str(sample),
                    "--data-dir", str(work / "warm")], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=REPO)


def run_sluice(sluice: Path, brokers: str, messages: int, partitions: int, batch: int,
               instances: int, work: Path, roll_ms=None, label="", max_wait_ms=MAX_WAIT_MS) -> float:
    """Times one `sluice serve`; `roll_ms` sets the sink's roll-ms (None: the binary's default,
    and no roll settings at all, so that a build from before rolling sinks parses it)."""
    run = f"{label}{batch}-{instances}-{roll_ms}-{max_wait_ms}"
    group = f"bench-sluice-{run}"
    function = work / f"sluice-{run}"
    function.mkdir()
    roll = "" if roll_ms is None else f"roll-ms = {roll_ms}\n"
    component = REPO / "target/wasm/wasm32-wasip2/release/log_aggregator.wasm"
    (function / "sluice.toml").write_text(f"""name = "log-aggregator"
component = "{component}"

[config]
top = "10"
sink = "metrics"

[[triggers]]
kind = "kafka"
brokers = "{brokers}"
topics = ["{TOPIC}"]
group = "{group}"

[batching]
max-events = {batch}
max-wait-ms = {max_wait_ms}

[sinks.metrics]
path = "metrics"
compression = "zstd"
zstd-level = 3
{roll}
[limits]
memory-mb = 512
timeout-ms = 600000
instances = {instances}
""")
    log = work / f"sluice-{run}.log"
    probe = CommitProbe(brokers, group, partitions)
    started = time.perf_counter()
    serve = subprocess.Popen(
        [str(sluice), "serve", "--function", str(function), "--data-dir", str(work / f"data-{run}"),
         "--http-listen", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=REPO,
    )
    try:
        while probe.total() < messages:
            if serve.poll() is not None:
                raise SystemExit(f"bench/kafka: sluice serve exited ({serve.returncode}); see {log}")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        probe.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    return seconds


def median(rows) -> float:
    return statistics.median(row["seconds"] for row in rows)


def rate(row) -> str:
    return f"{row['bytes'] / row['seconds'] / 1e6:.1f} MB/s, {row['messages'] / row['seconds']:,.0f} msg/s"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="JSON lines to produce, one message each")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10_000, help="messages per handler call / pandas batch")
    parser.add_argument("--repeat", type=int, default=3,
                        help="drain and sluice runs, alternating; the fastest of each is reported")
    parser.add_argument("--sweep", action="store_true", help="also run sluice at other batch sizes and instance counts")
    parser.add_argument("--sluice", type=Path, required=True)
    parser.add_argument("--sluice-before", type=Path,
                        help="another sluice build (e.g. before a change) run in the same session, for a before/after row")
    parser.add_argument("--drain", type=Path, required=True)
    parser.add_argument("--nisshi", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-kafka-bench-"))
    port = free_port()
    brokers = f"127.0.0.1:{port}"
    broker = start_broker(args.nisshi, port, work / "nisshi.log")
    try:
        print(f"== producing {args.messages:,} messages over {args.partitions} partitions")
        payload_bytes = fill_topic(args.nisshi, brokers, args.input, args.messages, args.partitions)
        results = {}
        warm_compile_cache(args.sluice, args.input, work)
        runs = {"drain": [], "group drain": [], "sluice": []}
        for attempt in range(args.repeat):
            print(f"== drain (bare rdkafka), run {attempt + 1} of {args.repeat}")
            runs["drain"].append(run_to_exit([str(args.drain), brokers, TOPIC, str(args.messages)], work / f"drain-{attempt}.log"))
            print(f"== drain in a consumer group, run {attempt + 1} of {args.repeat}")
            runs["group drain"].append(run_to_exit([str(args.drain), brokers, TOPIC, str(args.messages), "--group",
                                                    f"bench-drain-{attempt}"], work / f"group-drain-{attempt}.log"))
            print(f"== sluice, run {attempt + 1} of {args.repeat}")
            seconds = run_sluice(args.sluice, brokers, args.messages, args.partitions, args.batch, 2, work, label=f"r{attempt}-")
            runs["sluice"].append({"seconds": seconds, "messages": args.messages, "bytes": payload_bytes, "load": os.getloadavg()[0]})
        for name, attempts in runs.items():
            results[name] = min(attempts, key=lambda row: row["seconds"])
        if args.sluice_before:
            print(f"== sluice before ({args.sluice_before})")
            warm_compile_cache(args.sluice_before, args.input, work)
            seconds = run_sluice(args.sluice_before, brokers, args.messages, args.partitions, args.batch, 2, work,
                                 label="before-")
            results["sluice-before"] = {"seconds": seconds, "messages": args.messages, "bytes": payload_bytes, "load": os.getloadavg()[0]}
        print("== python (confluent-kafka + json + pandas + Parquet)")
        results["python"] = run_to_exit(
            [os.environ.get("PYTHON", "python3"), str(REPO / "bench/peers/kafka_consumer.py"), brokers, TOPIC,
             "bench-python", str(args.messages), str(args.batch), str(work / "python-out")],
            work / "python.log",
        )
        sweep = []
        if args.sweep:
            for batch, instances, roll_ms, wait in [(1_000, 2, None, MAX_WAIT_MS), (50_000, 2, None, MAX_WAIT_MS),
                                                    (args.batch, 1, None, MAX_WAIT_MS), (args.batch, 4, None, MAX_WAIT_MS),
                                                    (args.batch, 2, 100, MAX_WAIT_MS), (args.batch, 2, 5_000, MAX_WAIT_MS),
                                                    (args.batch, 2, None, 20)]:
                print(f"== sluice, batch {batch}, {instances} instance(s), roll-ms {roll_ms or 'default'}, max-wait-ms {wait}")
                seconds = run_sluice(args.sluice, brokers, args.messages, args.partitions, batch, instances, work, roll_ms,
                                     max_wait_ms=wait)
                row = {"seconds": seconds, "messages": args.messages, "bytes": payload_bytes, "load": os.getloadavg()[0]}
                sweep.append((batch, instances, roll_ms, wait, row))
    finally:
        broker.terminate()
        broker.wait(30)

    for name, row in results.items():
        if row["messages"] != args.messages:
            raise SystemExit(f"bench/kafka: {name} read {row['messages']} of {args.messages} messages")
    sluice, drain, python = results["sluice"], results["drain"], results["python"]
    lines = [
        f"# Kafka -> handler -> Parquet, {datetime.date.today()}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}",
        f"- broker: nisshi (memory storage) on loopback; topic of {args.messages:,} seed-job JSON lines "
        f"({payload_bytes / 1e6:.1f} MB payload) over {args.partitions} partitions",
        f"- drains and sluice: best of {args.repeat} alternating runs (drain "
        + ", ".join(f"{row['seconds']:.2f}" for row in runs["drain"]) + " s; drain in a group "
        + ", ".join(f"{row['seconds']:.2f}" for row in runs["group drain"]) + " s; sluice "
        + ", ".join(f"{row['seconds']:.2f}" for row in runs["sluice"]) + " s); python: one run",
        f"- medians of those runs: drain {median(runs['drain']):.2f} s, drain in a group "
        f"{median(runs['group drain']):.2f} s, sluice {median(runs['sluice']):.2f} s: sluice at "
        f"{median(runs['drain']) / median(runs['sluice']):.2f} of the drain and "
        f"{median(runs['group drain']) / median(runs['sluice']):.2f} of the drain in a group",
        "- drain: assigns itself every partition from the beginning (no group protocol), the ceiling; "
        "drain in a group: subscribes as a group member, as sluice and python do (group join, offset lookup)",
        f"- batches of {args.batch:,} messages, a partial one closed after {MAX_WAIT_MS} ms; each engine timed from spawn until every message is consumed "
        "(sluice and python: aggregated, written as zstd Parquet and committed); sluice's component "
        "compiled before timing (an untimed `sluice run` on 1,000 lines)",
        "",
        "| engine | seconds | MB/s | messages/s | vs drain | vs python | load (1 min, after) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("drain (bare rdkafka)", drain), ("drain in a consumer group", results["group drain"]),
            ("sluice (2 instances)", sluice)]
    if "sluice-before" in results:
        rows.append((f"sluice before ({args.sluice_before.name})", results["sluice-before"]))
    rows.append(("python (confluent-kafka + pandas)", python))
    for name, row in rows:
        lines.append(
            f"| {name} | {row['seconds']:.2f} | {row['bytes'] / row['seconds'] / 1e6:.1f} | "
            f"{row['messages'] / row['seconds']:,.0f} | {drain['seconds'] / row['seconds']:.2f} | "
            f"{python['seconds'] / row['seconds']:.2f} | {row['load']:.1f} |"
        )
    if sweep:
        lines += ["", "sluice at other batch sizes, instance counts, roll times and batch waits (one run each):", "",
                  "| max-events | instances | roll-ms | max-wait-ms | seconds | MB/s | messages/s | vs drain | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for batch, instances, roll_ms, wait, row in sweep:
            lines.append(f"| {batch:,} | {instances} | {roll_ms or 'default'} | {wait} | {row['seconds']:.2f} | "
                         f"{row['bytes'] / row['seconds'] / 1e6:.1f} | "
                         f"{row['messages'] / row['seconds']:,.0f} | {drain['seconds'] / row['seconds']:.2f} | "
                         f"{row['load']:.1f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out = REPO / "bench/results" / f"kafka-{datetime.date.today()}.md"
    n = 1
    while out.exists():
        n += 1
        out = REPO / "bench/results" / f"kafka-{datetime.date.today()}-{n}.md"
    out.write_text(report)
    print(f"written to {out.relative_to(REPO)}; work files in {work}")


if __name__ == "__main__":
    main()
