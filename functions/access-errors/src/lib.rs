//! The filter + derive job: server errors (`status >= 500`) of web access logs, with the derived
//! `latency_s = latency_ms / 1000`, grouped by service and host: error count, mean and max
//! latency in seconds, bytes sent. Written to the sink named by config `sink`; the reply is the
//! aggregate as JSON lines.

use sluice_sdk::prelude::*;

sluice_sdk::handler!(handle);

fn handle(batch: Batch) -> Result<Outcome> {
    let sink = config::get_or("sink", "errors");
    let logs = batch.json_with(ReadOptions::new().schema([
        ("service", DType::Utf8),
        ("host", DType::Utf8),
        ("status", DType::Int64),
        ("latency_ms", DType::Float64),
        ("bytes", DType::Int64),
    ]))?;
    let errors = logs
        .filter(col("status").gt_eq(500))?
        .with_columns([(col("latency_ms") / 1000.0).alias("latency_s")])?;
    let by_host = errors.group_by(
        ["service", "host"],
        [
            count().alias("errors"),
            col("latency_s").mean().alias("latency_s_mean"),
            col("latency_s").max().alias("latency_s_max"),
            col("bytes").sum().alias("bytes_sum"),
        ],
    )?;
    by_host.write(&sink)?;
    Outcome::json(&by_host.sort([SortKey::asc("service"), SortKey::asc("host")])?)
}
