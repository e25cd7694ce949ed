//! The Prometheus exposition of every metric the runtime and triggers record, and the view a
//! tenant gets of it: only the samples labelled with its own name.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;

/// Bucket bounds of `sluice_batch_duration_seconds`, 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the process-wide recorder; the handle renders what it gathered.
pub fn install_recorder() -> Result<PrometheusHandle, ApiError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("sluice_batch_duration_seconds".into()), DURATION_BUCKETS)
        .map_err(|e| ApiError::internal(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| ApiError::internal(format!("installing the metrics recorder: {e}")))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("sluice_events_total", "Events handled in batches that succeeded.");
    describe_counter!("sluice_batches_total", "Batches handled successfully.");
    describe_counter!("sluice_errors_total", "Failed invocations, by cause.");
    describe_counter!("sluice_bytes_in_total", Unit::Bytes, "Event bytes of batches that succeeded.");
    describe_histogram!("sluice_batch_duration_seconds", Unit::Seconds, "Wall time of one invocation.");
    describe_gauge!("sluice_instances_in_use", "Invocations running now.");
    describe_counter!("sluice_sink_rows_written_total", "Rows made durable, per sink.");
    describe_counter!("sluice_sink_bytes_written_total", Unit::Bytes, "Parquet bytes made durable, per sink.");
    describe_gauge!("sluice_gpu_memory_bytes", Unit::Bytes, "GPU memory held by the function (0 on a CPU-only host).");
    describe_counter!("sluice_log_lines_dropped_total", "Guest log lines dropped by the per-function rate limit.");
    describe_gauge!("sluice_http_queue_depth", "HTTP requests admitted and not yet answered, or waiting to be batched.");
    describe_gauge!("sluice_kafka_consumer_lag", "Messages between the consumer's position and the partition's end.");
}

/// Keeps only the sample lines labelled `tenant="<tenant>"`, with the `# HELP`/`# TYPE`
/// lines of the families that keep at least one sample.
pub fn only_tenant(exposition: &str, tenant: &str) -> String {
    let label = format!("tenant=\"{tenant}\"");
    let mut out = String::new();
    let mut header = String::new();
    for line in exposition.lines() {
        if line.starts_with('#') {
            if !header.is_empty() && line.starts_with("# HELP") {
                header.clear();
            }
            header.push_str(line);
            header.push('\n');
            continue;
        }
        let labels = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(labels, _)| labels);
        let own = labels.is_some_and(|labels| labels.split(',').any(|pair| pair == label));
        if own {
            out.push_str(&header);
            header.clear();
            out.push_str(line);
            out.push('\n');
        } else if line.is_empty() {
            header.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_only_its_own_samples() {
        let text = "# HELP sluice_batches_total Batches.\n# TYPE sluice_batches_total counter\n\
            sluice_batches_total{tenant=\"acme\",function=\"f\",version=\"1\"} 3\n\
            sluice_batches_total{tenant=\"globex\",function=\"g\",version=\"1\"} 5\n\n\
            # HELP sluice_errors_total Errors.\n# TYPE sluice_errors_total counter\n\
            sluice_errors_total{tenant=\"globex\",function=\"g\",version=\"1\",cause=\"trap\"} 1\n";
        let view = only_tenant(text, "acme");
        assert!(view.contains("tenant=\"acme\"") && view.contains("# TYPE sluice_batches_total counter"), "{view}");
        assert!(!view.contains("globex") && !view.contains("sluice_errors_total"), "{view}");
        assert!(only_tenant(text, "acm").is_empty(), "a prefix of a name is another tenant");
    }
}
