//! The seed job end to end: `sluice run` builds the example handler, runs it over JSON
//! lines through the host, and the Parquet it writes equals an aggregate computed here,
//! independently, with serde_json and plain Rust.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use sluice_e2e::{read_parquet, repo_root, sluice_bin};

const METRICS: [&str; 4] = ["cpu_utilization", "latency", "packet_loss", "throughput"];

#[derive(Default, Debug)]
struct Expected {
    n: i64,
    min: [f64; 4],
    max: [f64; 4],
    sum: [f64; 4],
}

/// Writes seed-shaped JSON lines with a small deterministic generator of its own; some
/// metric values are whole numbers, as real feeds have them.
fn write_dataset(path: &std::path::Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for row in 0..rows {
        let company = format!("company_{:03}", row % 37);
        let mut values = [0.0; 4];
        for value in values.iter_mut() {
            let r = next();
            *value = if r % 5 == 0 { (r % 1000) as f64 } else { (r % 100_000) as f64 / 97.0 };
        }
        let flag = next() % 50 == 0;
        writeln!(
            out,
            r#"{{"company":"{company}","cpu_utilization":{},"cpu_utilization_is_error":{flag},"latency":{},"latency_is_error":false,"packet_loss":{},"packet_loss_is_error":false,"throughput":{},"throughput_is_error":{flag},"timestamp":{}}}"#,
            values[0],
            values[1],
            values[2],
            values[3],
            1_700_000_000_000_i64 + row as i64 * 5000
        )
        .unwrap();
    }
}

fn aggregate_independently(path: &std::path::Path) -> BTreeMap<String, Expected> {
    let mut groups: BTreeMap<String, Expected> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let group = groups.entry(value["company"].as_str().unwrap().to_string()).or_insert_with(|| Expected {
            min: [f64::INFINITY; 4],
            max: [f64::NEG_INFINITY; 4],
            ..Expected::default()
        });
        group.n += 1;
        for (i, metric) in METRICS.iter().enumerate() {
            let x = value[metric].as_f64().unwrap();
            group.min[i] = group.min[i].min(x);
            group.max[i] = group.max[i].max(x);
            group.sum[i] += x;
        }
    }
    groups
}

fn f64_column<'a>(batch: &'a RecordBatch, name: &str) -> &'a Float64Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing from {:?}", batch.schema()))
        .as_any()
        .downcast_ref()
        .unwrap_or_else(|| panic!("column {name} is not float64"))
}

#[test]
fn sluice_run_writes_the_same_aggregate_as_plain_rust() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("metrics.jsonl");
    write_dataset(&input, 50_000);
    let expected = aggregate_independently(&input);
    let data_dir = dir.path().join("data");

    let output = Command::new(sluice_bin())
        .args(["run", "functions/log-aggregator", "--input"])
        .arg(&input)
        .arg("--data-dir")
        .arg(&data_dir)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sluice run failed: {stderr}");
    assert!(stderr.contains("50,000"), "summary should count the rows: {stderr}");

    let batches = read_parquet(&data_dir.join("metrics"));
    let mut seen = 0;
    for batch in &batches {
        let companies: &StringArray = batch.column_by_name("company").unwrap().as_any().downcast_ref().unwrap();
        let counts: &Int64Array = batch.column_by_name("n").unwrap().as_any().downcast_ref().unwrap();
        for row in 0..batch.num_rows() {
            let want = &expected[companies.value(row)];
            assert_eq!(counts.value(row), want.n, "count of {}", companies.value(row));
            for (i, metric) in METRICS.iter().enumerate() {
                let min = f64_column(batch, &format!("{metric}_min")).value(row);
                let max = f64_column(batch, &format!("{metric}_max")).value(row);
                let mean = f64_column(batch, &format!("{metric}_mean")).value(row);
                assert_eq!(min, want.min[i], "{metric}_min of {}", companies.value(row));
                assert_eq!(max, want.max[i], "{metric}_max of {}", companies.value(row));
                let want_mean = want.sum[i] / want.n as f64;
                assert!(
                    ((mean - want_mean) / want_mean).abs() <= 1e-9,
                    "{metric}_mean of {}: {mean} vs {want_mean}",
                    companies.value(row)
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, expected.len(), "one row per company");
}

#[test]
fn demo_prints_the_ten_busiest_companies_and_the_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(sluice_bin())
        .args(["demo", "--hours", "0.05", "--dir"])
        .arg(dir.path())
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stderr}");
    let company_rows = stdout.lines().filter(|l| l.contains("company_")).count();
    assert_eq!(company_rows, 10, "ten companies in:\n{stdout}");
    assert!(stderr.contains("MB/s") && stderr.contains("rows/s"), "throughput in:\n{stderr}");
    let written = read_parquet(&dir.path().join("metrics"));
    assert_eq!(sluice_e2e::row_count(&written), 100, "one row per company");
}
