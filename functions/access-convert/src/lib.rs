//! The convert job: web access logs, every field (nested `user.id`/`user.country` flattened),
//! to zstd Parquet in the sink named by config `sink`. Replies with the number of rows written.

use sluice_sdk::prelude::*;

sluice_sdk::handler!(handle);

fn handle(batch: Batch) -> Result<Outcome> {
    let sink = config::get_or("sink", "logs");
    // Declared types keep every batch's Parquet schema the same, nulls or not.
    let logs = batch.json_with(ReadOptions::new().schema([
        ("ts", DType::TimestampMs),
        ("service", DType::Utf8),
        ("host", DType::Utf8),
        ("method", DType::Utf8),
        ("path", DType::Utf8),
        ("status", DType::Int64),
        ("latency_ms", DType::Float64),
        ("bytes", DType::Int64),
        ("user.id", DType::Utf8),
        ("user.country", DType::Utf8),
        ("referrer", DType::Utf8),
        ("agent", DType::Utf8),
    ]))?;
    let written = logs.write(&sink)?;
    Ok(Outcome::text(format!("{}\n", written.rows)))
}
