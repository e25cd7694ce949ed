//! The CUDA backend end to end.
//!
//! Without a GPU (every CI run): `--device cuda` is a clear load error that writes nothing,
//! and `--device auto` falls back to the CPU and writes the same output as `--device cpu`.
//!
//! With `SLUICE_GPU_TESTS=1` on a machine with a GPU: the same plans run on random data on the
//! CPU backend and on the CUDA backend and must give identical frames (float sums and means
//! within a relative 1e-9, since the GPU adds in another order), and the seed job runs with
//! `--device cpu` and `--device cuda` over the same file, writing equal aggregates; both
//! throughputs are printed. Without the variable these tests print that they were skipped.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::DataType;
use sluice_e2e::{read_parquet, repo_root, sluice_bin};
use sluice_frame::cuda::{self, CudaDevice, CudaSession, GpuBudget};
use sluice_frame::{AggFn, BinaryOp, DType, Expr, Frame, Scalar};

/// Relative tolerance of float sums and means between the backends.
const FLOAT_TOLERANCE: f64 = 1e-9;

fn sluice_run(input: &Path, data_dir: &Path, device: &str) -> Output {
    Command::new(sluice_bin())
        .args(["run", "functions/log-aggregator", "--device", device, "--input"])
        .arg(input)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

/// Seed-shaped JSON lines from a small deterministic generator.
fn write_seed(path: &Path, rows: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(7);
    for row in 0..rows {
        let v: Vec<f64> = (0..4).map(|_| (rng.next() % 100_000) as f64 / 97.0).collect();
        writeln!(
            out,
            r#"{{"company":"company_{:03}","cpu_utilization":{},"latency":{},"packet_loss":{},"throughput":{},"timestamp":{}}}"#,
            row % 53,
            v[0],
            v[1],
            v[2],
            v[3],
            1_700_000_000_000_i64 + row as i64 * 5000
        )
        .unwrap();
    }
}

/// One written row: its non-float cells as text, its float cells.
type Row = (Vec<String>, Vec<f64>);

/// The written aggregate, rows sorted by their non-float cells.
fn aggregate_rows(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in read_parquet(dir) {
        for row in 0..batch.num_rows() {
            let mut text = Vec::new();
            let mut floats = Vec::new();
            for c in batch.columns() {
                match c.data_type() {
                    DataType::Float64 => floats.push(c.as_any().downcast_ref::<Float64Array>().unwrap().value(row)),
                    _ => text.push(arrow::util::display::array_value_to_string(c, row).unwrap()),
                }
            }
            rows.push((text, floats));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Equal rows, floats within [`FLOAT_TOLERANCE`] (means are sums added in another order).
fn assert_rows_close(a: &[Row], b: &[Row]) {
    assert_eq!(a.len(), b.len(), "row counts differ");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        for (p, q) in x.1.iter().zip(&y.1) {
            assert!(p == q || (p - q).abs() <= FLOAT_TOLERANCE * p.abs().max(q.abs()), "{:?}: {p} vs {q}", x.0);
        }
    }
}

#[test]
fn cuda_without_a_gpu_is_a_clear_load_error_and_auto_falls_back() {
    if cuda::driver_present() {
        eprintln!("skipped: this machine has a CUDA driver (the GPU tests below cover it)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("seed.jsonl");
    write_seed(&input, 2_000);

    let refused = sluice_run(&input, &work.path().join("cuda"), "cuda");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("function `log-aggregator`: device `cuda` was requested, but no CUDA driver: libcuda cannot be loaded; use `auto` or `cpu`"),
        "{stderr}"
    );
    assert!(!work.path().join("cuda").join("metrics").exists(), "nothing may be written");

    let auto = sluice_run(&input, &work.path().join("auto"), "auto");
    assert!(auto.status.success(), "{}", String::from_utf8_lossy(&auto.stderr));
    let cpu = sluice_run(&input, &work.path().join("cpu"), "cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    assert_eq!(aggregate_rows(&work.path().join("auto/metrics")), aggregate_rows(&work.path().join("cpu/metrics")));
    assert_eq!(aggregate_rows(&work.path().join("cpu/metrics")).len(), 53);
}

/// The GPU tests run only where asked (`SLUICE_GPU_TESTS=1`); they fail if asked without a GPU.
fn gpu_session() -> Option<Arc<CudaSession>> {
    if std::env::var("SLUICE_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set SLUICE_GPU_TESTS=1 on a machine with a GPU to run the CUDA differential tests");
        return None;
    }
    let device = CudaDevice::shared(None).unwrap_or_else(|reason| panic!("SLUICE_GPU_TESTS=1 but no CUDA backend: {reason}"));
    Some(device.session(GpuBudget::new("differential tests", 8 << 30)).unwrap())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random columns with nulls, NaN, infinities, extremes and a key of `groups` distinct values.
fn random_batch(rows: usize, groups: u64, seed: u64) -> RecordBatch {
    let mut rng = Rng(seed | 1);
    let mut ints = Vec::with_capacity(rows);
    let mut floats = Vec::with_capacity(rows);
    let mut keys = Vec::with_capacity(rows);
    let mut names = Vec::with_capacity(rows);
    let mut flags = Vec::with_capacity(rows);
    let mut times = Vec::with_capacity(rows);
    for _ in 0..rows {
        let r = rng.next();
        ints.push(match r % 50 {
            0 => None,
            // Large, yet no sum of two million of them overflows (the CPU would refuse it).
            1 => Some(1 << 40),
            2 => Some(-(1 << 40)),
            _ => Some((r % 2001) as i64 - 1000),
        });
        floats.push(match (r >> 8) % 60 {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(f64::INFINITY),
            3 => Some(-0.0),
            4 => Some(f64::MAX / 1e10),
            _ => Some(((r >> 16) % 1_000_000) as f64 / 977.0 - 500.0),
        });
        let key = (r >> 24) % groups.max(1);
        keys.push(if (r >> 40).is_multiple_of(97) { None } else { Some(key as i64) });
        names.push(if (r >> 44).is_multiple_of(89) { None } else { Some(format!("k{:05}", key % 5000)) });
        flags.push(if (r >> 50).is_multiple_of(31) { None } else { Some((r >> 52).is_multiple_of(3)) });
        times.push(1_700_000_000_000 + (r % 86_400_000) as i64);
    }
    RecordBatch::try_from_iter(vec![
        ("i", Arc::new(Int64Array::from(ints)) as ArrayRef),
        ("f", Arc::new(Float64Array::from(floats)) as ArrayRef),
        ("k", Arc::new(Int64Array::from(keys)) as ArrayRef),
        ("s", Arc::new(StringArray::from(names)) as ArrayRef),
        ("b", Arc::new(BooleanArray::from(flags)) as ArrayRef),
        ("t", Arc::new(TimestampMillisecondArray::from(times)) as ArrayRef),
    ])
    .unwrap()
}

fn col(name: &str) -> Expr {
    Expr::col(name)
}

fn int(v: i64) -> Expr {
    Expr::lit(Scalar::Int(v))
}

fn float(v: f64) -> Expr {
    Expr::lit(Scalar::Float(v))
}

/// Asserts two batches equal: same schema and values; float64 columns of aggregations that
/// sum within [`FLOAT_TOLERANCE`], all else exactly (NaN equal to NaN).
fn assert_same(what: &str, cpu: &RecordBatch, gpu: &RecordBatch, approximate: &[&str]) {
    assert_eq!(cpu.schema(), gpu.schema(), "{what}: schemas differ");
    assert_eq!(cpu.num_rows(), gpu.num_rows(), "{what}: row counts differ");
    for (field, (a, b)) in cpu.schema().fields().iter().zip(cpu.columns().iter().zip(gpu.columns())) {
        if field.data_type() == &DataType::Float64 {
            let (a, b) = (a.as_any().downcast_ref::<Float64Array>().unwrap(), b.as_any().downcast_ref::<Float64Array>().unwrap());
            for row in 0..a.len() {
                assert_eq!(a.is_null(row), b.is_null(row), "{what}: `{}` row {row} nullness", field.name());
                if a.is_null(row) {
                    continue;
                }
                let (x, y) = (a.value(row), b.value(row));
                let close = if approximate.contains(&field.name().as_str()) {
                    x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= FLOAT_TOLERANCE * x.abs().max(y.abs())
                } else {
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                };
                assert!(close, "{what}: `{}` row {row}: CPU {x} vs GPU {y}", field.name());
            }
        } else {
            assert_eq!(a, b, "{what}: column `{}` differs", field.name());
        }
    }
}

/// Runs `plan` on a CPU frame and on the same frame on the GPU and compares the results.
fn differential(session: &Arc<CudaSession>, what: &str, batch: &RecordBatch, approximate: &[&str], plan: impl Fn(&Frame) -> Frame) {
    let cpu_frame = Frame::new(batch.clone());
    let gpu_frame = session.adopt(cpu_frame.clone());
    assert!(gpu_frame.is_on_device(), "{what}: the input did not move to the GPU");
    let cpu = plan(&cpu_frame);
    let gpu = plan(&gpu_frame);
    assert_same(what, cpu.record_batch().unwrap(), gpu.record_batch().unwrap(), approximate);
}

fn aggregations() -> Vec<Expr> {
    vec![
        Expr::CountRows.alias("rows"),
        col("i").aggregate(AggFn::Count),
        col("i").aggregate(AggFn::Sum),
        col("f").aggregate(AggFn::Sum),
        col("i").aggregate(AggFn::Mean),
        col("f").aggregate(AggFn::Mean),
        col("i").aggregate(AggFn::Min),
        col("f").aggregate(AggFn::Min),
        col("f").aggregate(AggFn::Max),
        col("s").aggregate(AggFn::Max),
        col("b").aggregate(AggFn::Min),
        col("t").aggregate(AggFn::Max),
        col("f").aggregate(AggFn::First),
        col("s").aggregate(AggFn::Last),
        col("i").binary(BinaryOp::Mul, float(0.5)).aggregate(AggFn::Sum).alias("half_sum"),
    ]
}

const APPROXIMATE: [&str; 4] = ["f_sum", "i_mean", "f_mean", "half_sum"];

#[test]
fn row_wise_plans_match_the_cpu() {
    let Some(session) = gpu_session() else { return };
    for rows in [0usize, 1, 1000, 250_000] {
        let batch = random_batch(rows, 100, rows as u64 + 1);
        let what = |plan: &str| format!("{plan} on {rows} rows");
        differential(&session, &what("arithmetic"), &batch, &[], |f| {
            f.with_columns(&[
                col("i").binary(BinaryOp::Add, col("f")).alias("sum"),
                col("i").binary(BinaryOp::Div, int(7)).alias("ratio"),
                col("i").binary(BinaryOp::Rem, int(0)).alias("rem0"),
                col("f").binary(BinaryOp::Mul, float(2.5)).binary(BinaryOp::Sub, col("i")).alias("fused"),
                col("t").binary(BinaryOp::Sub, int(1_700_000_000_000)).alias("dt"),
                col("f").fill_null(Scalar::Int(3)).alias("filled"),
                col("i").cast(DType::Float64).alias("as_float"),
                col("b").cast(DType::Int64).alias("flag_int"),
            ])
            .unwrap()
        });
        differential(&session, &what("comparisons"), &batch, &[], |f| {
            f.select(&[
                col("f").binary(BinaryOp::Gt, col("i")).alias("gt"),
                col("f").binary(BinaryOp::Eq, float(f64::NAN)).alias("nan_eq"),
                col("s").binary(BinaryOp::LtEq, Expr::lit(Scalar::Text("k02500".into()))).alias("s_le"),
                col("s").binary(BinaryOp::Eq, Expr::lit(Scalar::Text("absent".into()))).alias("s_eq"),
                col("b").binary(BinaryOp::And, col("f").is_null()).alias("kleene_and"),
                col("b").binary(BinaryOp::Or, col("i").binary(BinaryOp::Lt, int(0))).not().alias("not_or"),
            ])
            .unwrap()
        });
        differential(&session, &what("filter"), &batch, &[], |f| {
            f.filter(&col("f").binary(BinaryOp::GtEq, float(0.0)).binary(BinaryOp::And, col("b"))).unwrap()
        });
        differential(&session, &what("sort"), &batch, &[], |f| f.sort(&["f".into()], &[true]).unwrap());
        differential(&session, &what("sort by utf8"), &batch, &[], |f| f.sort(&["s".into()], &[false]).unwrap());
        differential(&session, &what("top-k"), &batch, &[], |f| f.top_k(10, "i", false).unwrap());
        differential(&session, &what("slice and concat"), &batch, &[], |f| {
            let parts = [f.slice(0, rows / 3), f.slice(rows / 3, rows), f.slice(rows, 5)];
            Frame::concat(&parts.iter().collect::<Vec<_>>()).unwrap()
        });
    }
}

#[test]
fn group_by_matches_the_cpu_at_every_cardinality() {
    let Some(session) = gpu_session() else { return };
    for (rows, groups) in [(0usize, 1u64), (1, 1), (10_000, 1), (200_000, 7), (200_000, 3000), (2_000_000, 1_000_000)] {
        let batch = random_batch(rows, groups, groups + rows as u64);
        let what = format!("group-by of {rows} rows into ~{groups} groups");
        differential(&session, &format!("{what} on int64"), &batch, &APPROXIMATE, |f| f.group_by(&["k".into()], &aggregations()).unwrap());
        differential(&session, &format!("{what} on utf8"), &batch, &APPROXIMATE, |f| f.group_by(&["s".into()], &aggregations()).unwrap());
        differential(&session, &format!("{what} on boolean"), &batch, &APPROXIMATE, |f| f.group_by(&["b".into()], &aggregations()).unwrap());
        differential(&session, &format!("{what}, no keys"), &batch, &APPROXIMATE, |f| f.select(&aggregations()).unwrap());
    }
}

#[test]
fn errors_and_fallbacks_match_the_cpu() {
    let Some(session) = gpu_session() else { return };
    let batch = random_batch(1000, 10, 99);
    let gpu = session.adopt(Frame::new(batch.clone()));
    let cpu = Frame::new(batch);
    for plan in [
        col("i").binary(BinaryOp::Mul, int(i64::MAX)),
        col("f").cast(DType::Int64),
        col("s").binary(BinaryOp::Add, int(1)),
        col("missing"),
    ] {
        let (a, b) = (cpu.select(std::slice::from_ref(&plan)), gpu.select(std::slice::from_ref(&plan)));
        assert_eq!(a.unwrap_err().to_string(), b.unwrap_err().to_string(), "{plan}");
    }
    // Two sort keys and float keys are not run on the GPU: the CPU computes them, identically.
    differential(&session, "two sort keys", &random_batch(5000, 10, 5), &[], |f| f.sort(&["k".into(), "f".into()], &[false, true]).unwrap());
    differential(&session, "float group key", &random_batch(5000, 10, 6), &APPROXIMATE, |f| f.group_by(&["f".into()], &aggregations()).unwrap());
    // A budget too small for the frame keeps it on the CPU.
    let small = CudaDevice::shared(None).unwrap().session(GpuBudget::new("tiny", 1024)).unwrap();
    assert!(!small.adopt(Frame::new(random_batch(10_000, 10, 7))).is_on_device());
}

#[test]
fn the_seed_job_writes_the_same_aggregate_on_both_backends() {
    if gpu_session().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("seed.jsonl");
    write_seed(&input, 2_000_000);
    let bytes = std::fs::metadata(&input).unwrap().len() as f64;
    let mut outputs = Vec::new();
    for device in ["cpu", "cuda"] {
        let started = Instant::now();
        let output = sluice_run(&input, &work.path().join(device), device);
        let seconds = started.elapsed().as_secs_f64();
        assert!(output.status.success(), "{device}: {}", String::from_utf8_lossy(&output.stderr));
        eprintln!("seed job, --device {device}: {:.3} s, {:.3} GB/s of JSON", seconds, bytes / seconds / 1e9);
        outputs.push(aggregate_rows(&work.path().join(device).join("metrics")));
    }
    assert_rows_close(&outputs[0], &outputs[1]);
}
