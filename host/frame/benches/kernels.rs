//! Micro-benchmarks of the kernels behind the seed job: JSON-lines ingest (declared schema with
//! projection, and full inference) and the hash group-by, on generated seed-shaped rows.
//!
//! `cargo bench -p sluice-frame` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_frame::{AggFn, DType, Expr, JsonSource, ReadOptions, read_json_lines};

/// Seed-shaped JSON lines: 100 companies, four metrics, flags and a timestamp.
fn seed_lines(rows: usize) -> Vec<u8> {
    let mut out = String::with_capacity(rows * 260);
    for i in 0..rows {
        out.push_str(&format!(
            "{{\"company\":\"company_{:03}\",\"cpu_utilization\":{}.{},\"cpu_utilization_is_error\":false,\"latency\":{}.25,\"latency_is_error\":{},\"packet_loss\":0.0{},\"packet_loss_is_error\":false,\"throughput\":{}.5,\"throughput_is_error\":false,\"timestamp\":{}}}\n",
            i % 100,
            i % 100,
            i % 7,
            i % 50,
            i % 3 == 0,
            i % 9,
            800 + i % 300,
            1_704_067_200_000u64 + i as u64
        ));
    }
    out.into_bytes()
}

const METRICS: [&str; 4] = ["cpu_utilization", "latency", "packet_loss", "throughput"];

fn ingest(c: &mut Criterion) {
    let data = seed_lines(200_000);
    let source = [JsonSource { name: "bench", data: &data, first_line: 1 }];
    let declared = ReadOptions {
        fields: Some(std::iter::once("company").chain(METRICS).map(String::from).collect()),
        schema: std::iter::once(("company".to_string(), DType::Utf8))
            .chain(METRICS.map(|m| (m.to_string(), DType::Float64)))
            .collect(),
        ..Default::default()
    };
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("projected_declared", |b| b.iter(|| black_box(read_json_lines(&source, &declared).unwrap())));
    group.bench_function("all_fields_inferred", |b| {
        b.iter(|| black_box(read_json_lines(&source, &ReadOptions::default()).unwrap()))
    });
    group.finish();
}

fn group_by(c: &mut Criterion) {
    let data = seed_lines(1_000_000);
    let frame = read_json_lines(&[JsonSource { name: "bench", data: &data, first_line: 1 }], &ReadOptions::default())
        .unwrap()
        .frame;
    let mut aggs: Vec<Expr> = METRICS
        .iter()
        .flat_map(|m| [AggFn::Min, AggFn::Max, AggFn::Mean].map(|f| Expr::col(*m).aggregate(f)))
        .collect();
    aggs.push(Expr::CountRows);
    let mut group = c.benchmark_group("group_by");
    group.throughput(Throughput::Elements(frame.num_rows() as u64));
    group.bench_function("utf8_key_13_aggs", |b| b.iter(|| black_box(frame.group_by(&["company".into()], &aggs).unwrap())));
    group.bench_function("int_key_count", |b| {
        b.iter(|| black_box(frame.group_by(&["timestamp".into()], &[Expr::CountRows]).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, ingest, group_by);
criterion_main!(benches);
