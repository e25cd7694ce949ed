#!/usr/bin/env python3
"""The seed's baseline on a live topic: a confluent-kafka consumer that gathers messages into
batches, parses them with json, aggregates each batch with pandas (per company: min, max and
mean of the four metrics, and a row count), writes the aggregate as zstd Parquet, and commits
the batch's offsets once the file is written.

usage: kafka_consumer.py BROKERS TOPIC GROUP MESSAGES BATCH OUT_DIR
Prints {"messages": ..., "bytes": ..., "seconds": ...} once MESSAGES messages are committed.
"""

import json
import sys
import time
from pathlib import Path

import pandas as pd
from confluent_kafka import Consumer, KafkaException

METRICS = ["cpu_utilization", "latency", "packet_loss", "throughput"]


def write_aggregate(rows, out_dir: Path, name: str):
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("company")[METRICS].agg(["min", "max", "mean"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    grouped["rows"] = frame.groupby("company").size()
    grouped.reset_index().to_parquet(out_dir / f"{name}.parquet", compression="zstd", index=False)


def main():
    brokers, topic, group, expected, batch_size, out_dir = sys.argv[1:7]
    expected, batch_size, out_dir = int(expected), int(batch_size), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    done, payload_bytes, written = 0, 0, 0
    while done < expected:
        messages = consumer.consume(num_messages=batch_size, timeout=0.2)
        rows = []
        for message in messages:
            if message.error():
                raise KafkaException(message.error())
            payload_bytes += len(message.value())
            rows.append(json.loads(message.value()))
        if not rows:
            continue
        write_aggregate(rows, out_dir, f"batch-{written:06}")
        written += 1
        consumer.commit(asynchronous=False)
        done += len(rows)
    consumer.close()
    seconds = time.perf_counter() - started
    print(json.dumps({"messages": done, "bytes": payload_bytes, "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
