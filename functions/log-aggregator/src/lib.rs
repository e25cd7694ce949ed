//! The seed job: per-company summary statistics of network metrics.
//!
//! Groups the events by `company`; for each metric computes `{metric}_min`, `{metric}_max` and
//! `{metric}_mean`, plus `n` rows. Writes the summary to the sink named by config `sink` and
//! replies with the `top` companies by mean CPU utilization, as JSON lines.

use sluice_sdk::prelude::*;

const METRICS: [&str; 4] = ["cpu_utilization", "latency", "packet_loss", "throughput"];

sluice_sdk::handler!(handle);

fn handle(batch: Batch) -> Result<Outcome> {
    let sink = config::get_or("sink", "metrics");
    let top = config::parse_or("top", 10)?;

    // Declared types keep the sink's Parquet schema identical across batches, even one whose
    // metric values all happen to be whole numbers.
    let events = batch.json_with(
        ReadOptions::new()
            .fields(std::iter::once("company").chain(METRICS))
            .schema(
                std::iter::once(("company", DType::Utf8))
                    .chain(METRICS.map(|metric| (metric, DType::Float64))),
            ),
    )?;

    let mut aggregations = Vec::with_capacity(METRICS.len() * 3 + 1);
    for metric in METRICS {
        let value = col(metric);
        aggregations.push(value.min().alias(format!("{metric}_min")));
        aggregations.push(value.max().alias(format!("{metric}_max")));
        aggregations.push(value.mean().alias(format!("{metric}_mean")));
    }
    aggregations.push(count().alias("n"));

    // `events` is a plan: the host streams the batch through the group-by without ever holding
    // all of its rows, so the row total is read from the per-company counts.
    let by_company = events.group_by(["company"], &aggregations)?;
    by_company.write(&sink)?;
    let rows: i64 = by_company.column("n")?.iter().filter_map(Scalar::as_i64).sum();
    info!("aggregated {rows} rows into {} companies", by_company.num_rows());

    Outcome::json(&by_company.top_k(top, "cpu_utilization_mean")?)
}
