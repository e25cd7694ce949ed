//! Deterministic generator for the seed dataset: per-company network metrics as JSON lines, the
//! shape of the original RAPIDS/Nuclio benchmark. `sluice gen`, `sluice demo` and `bench/` use it.
//!
//! The same spec gives byte-identical output on every platform and toolchain: the random stream is
//! our own SplitMix64 (not a library RNG whose algorithm may change between versions) and floats
//! are printed with a fixed number of decimals by integer arithmetic, never by `Display`.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// One row per company every 5 s.
const INTERVAL_MS: i64 = 5_000;
const TICKS_PER_HOUR: f64 = 3_600_000.0 / INTERVAL_MS as f64;
const DAY_MS: i64 = 86_400_000;
/// 2024-01-01T00:00:00Z.
const DEFAULT_START_MS: i64 = 1_704_067_200_000;
/// Probability that one `*_is_error` flag is true, in 1/65536 (655 ≈ 1 %); compared with 16
/// random bits so one `u64` draw decides all four flags of a row.
const ERROR_THRESHOLD_16: u64 = 655;
/// Rows are formatted into a chunk of this size, then written with one `write_all`.
const CHUNK_BYTES: usize = 1 << 20;

/// Size and shape of a generated seed dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedSpec {
    /// Number of companies, named `company_000`, `company_001`, ….
    pub companies: usize,
    /// Time span covered; each company gets one row per 5 s.
    pub hours: f64,
    /// Seed of the random stream; the same seed gives the same bytes.
    pub seed: u64,
    /// Timestamp of the first row, epoch milliseconds.
    pub start_ms: i64,
}

impl Default for SeedSpec {
    /// The full benchmark size: 100 companies × 62 h = 4,464,000 rows (≈ 1.1 GB).
    fn default() -> Self {
        SeedSpec {
            companies: 100,
            hours: 62.0,
            seed: 42,
            start_ms: DEFAULT_START_MS,
        }
    }
}

impl SeedSpec {
    /// Number of 5-second ticks in `hours` (each tick has one row per company).
    fn ticks(&self) -> u64 {
        let ticks = self.hours * TICKS_PER_HOUR;
        // The epsilon keeps e.g. 0.1 h at 72 ticks despite binary rounding.
        if ticks.is_finite() && ticks > 0.0 {
            (ticks + 1e-9).floor() as u64
        } else {
            0
        }
    }

    /// Number of rows the spec produces.
    pub fn rows(&self) -> u64 {
        self.companies as u64 * self.ticks()
    }

    /// The default spec (100 companies, seed 42) with `hours` chosen so the file is about `bytes`
    /// long (at least one tick). The row size is measured on a generated sample, so the estimate
    /// follows any change to the format.
    pub fn with_target_bytes(bytes: u64) -> SeedSpec {
        let base = SeedSpec::default();
        let sample = SeedSpec { hours: 0.1, ..base };
        let mut sink = io::sink();
        let counted = generate(&mut sink, &sample).expect("writing to io::sink cannot fail");
        let bytes_per_tick = counted.bytes as f64 / sample.ticks() as f64;
        let ticks = (bytes as f64 / bytes_per_tick).round().max(1.0);
        SeedSpec {
            hours: ticks / TICKS_PER_HOUR,
            ..base
        }
    }
}

/// What `write_seed_dataset` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub rows: u64,
    pub bytes: u64,
}

/// Writes the dataset as JSON lines to `path` (created or truncated), deterministic for a given
/// spec. Rows are ordered by timestamp, then company, like a live feed.
pub fn write_seed_dataset(path: &Path, spec: &SeedSpec) -> io::Result<Generated> {
    let mut file = File::create(path)?;
    let generated = generate(&mut file, spec)?;
    file.flush()?;
    Ok(generated)
}

/// Generates into any writer; the file and the size estimate share this one code path.
fn generate<W: Write>(out: &mut W, spec: &SeedSpec) -> io::Result<Generated> {
    let mut rng = SplitMix64::new(spec.seed);
    let companies = profiles(spec, &mut rng);
    let mut rows = RowWriter::new(out);

    for tick in 0..spec.ticks() {
        let timestamp = spec.start_ms + tick as i64 * INTERVAL_MS;
        // Position in the day drives the daily load cycle.
        let day_angle = std::f64::consts::TAU * timestamp.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        for company in &companies {
            company.write_row(rows.buffer(), &mut rng, day_angle, timestamp);
            rows.row_done()?;
        }
    }
    rows.finish()
}

/// Buffers generated rows and writes them out in chunks of about `CHUNK_BYTES`, counting
/// rows and bytes as it goes; shared by every dataset generator.
pub(crate) struct RowWriter<'a, W: Write> {
    out: &'a mut W,
    chunk: Vec<u8>,
    generated: Generated,
}

impl<'a, W: Write> RowWriter<'a, W> {
    pub(crate) fn new(out: &'a mut W) -> Self {
        RowWriter { out, chunk: Vec::with_capacity(CHUNK_BYTES + 1024), generated: Generated { rows: 0, bytes: 0 } }
    }

    /// Where the next row is appended.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.chunk
    }

    /// Bytes written so far, including those still buffered.
    pub(crate) fn bytes(&self) -> u64 {
        self.generated.bytes + self.chunk.len() as u64
    }

    /// Counts the row just appended and flushes a full chunk.
    pub(crate) fn row_done(&mut self) -> io::Result<()> {
        self.generated.rows += 1;
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<Generated> {
        self.flush()?;
        Ok(self.generated)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.chunk)?;
        self.generated.bytes += self.chunk.len() as u64;
        self.chunk.clear();
        Ok(())
    }
}

/// A company's fixed character: its own base load, so per-company statistics differ and the top
/// 10 by mean CPU is a stable, meaningful answer.
struct Company {
    /// `{"company":"company_007","cpu_utilization":`, prebuilt once.
    prefix: Vec<u8>,
    cpu_base: f64,
    cpu_swing: f64,
    phase: f64,
    latency_base: f64,
    loss_base: f64,
    throughput_base: f64,
}

fn profiles(spec: &SeedSpec, rng: &mut SplitMix64) -> Vec<Company> {
    // Spread the CPU bases evenly over 5..85 % and shuffle them, so no two companies share a base
    // and the ranking does not follow the name order.
    let n = spec.companies;
    let mut ranks: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        ranks.swap(i, j);
    }
    ranks
        .iter()
        .enumerate()
        .map(|(index, &rank)| {
            let cpu_base = 5.0 + 80.0 * (rank as f64 + 0.5) / n.max(1) as f64;
            Company {
                prefix: format!("{{\"company\":\"company_{index:03}\",\"cpu_utilization\":")
                    .into_bytes(),
                cpu_base,
                cpu_swing: 3.0 + 7.0 * rng.unit(),
                phase: std::f64::consts::TAU * rng.unit(),
                latency_base: 5.0 + 95.0 * rng.unit(),
                loss_base: 0.001 + 0.02 * rng.unit(),
                throughput_base: 100.0 + 1900.0 * rng.unit(),
            }
        })
        .collect()
}

impl Company {
    fn write_row(&self, buf: &mut Vec<u8>, rng: &mut SplitMix64, day_angle: f64, timestamp: i64) {
        let cycle = (day_angle + self.phase).sin();

        // Busy hours raise CPU; rare spikes (≈ 0.2 %) give the max something to find.
        let spike = if rng.next_u64().is_multiple_of(512) {
            30.0
        } else {
            0.0
        };
        let cpu =
            (self.cpu_base + self.cpu_swing * cycle + 4.0 * rng.noise() + spike).clamp(0.0, 100.0);
        // Latency and throughput follow the load; loss is heavy-tailed.
        let latency =
            (self.latency_base * (1.0 + 0.004 * (cpu - 50.0)) * (0.15 * rng.noise()).exp())
                .max(0.1);
        let loss = (self.loss_base * (0.6 * rng.noise()).exp()).min(1.0);
        let throughput =
            (self.throughput_base * (1.0 + 0.3 * cycle) * (1.0 + 0.05 * rng.noise())).max(0.0);

        let flags = rng.next_u64();
        let is_error = |slot: u32| (flags >> (16 * slot)) & 0xffff < ERROR_THRESHOLD_16;

        buf.extend_from_slice(&self.prefix);
        push_fixed(buf, cpu, 3);
        buf.extend_from_slice(b",\"cpu_utilization_is_error\":");
        push_bool(buf, is_error(0));
        buf.extend_from_slice(b",\"latency\":");
        push_fixed(buf, latency, 3);
        buf.extend_from_slice(b",\"latency_is_error\":");
        push_bool(buf, is_error(1));
        buf.extend_from_slice(b",\"packet_loss\":");
        push_fixed(buf, loss, 5);
        buf.extend_from_slice(b",\"packet_loss_is_error\":");
        push_bool(buf, is_error(2));
        buf.extend_from_slice(b",\"throughput\":");
        push_fixed(buf, throughput, 3);
        buf.extend_from_slice(b",\"throughput_is_error\":");
        push_bool(buf, is_error(3));
        buf.extend_from_slice(b",\"timestamp\":");
        push_i64(buf, timestamp);
        buf.extend_from_slice(b"}\n");
    }
}

/// SplitMix64: tiny, fast, and fully specified, so the output never depends on a crate version.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Roughly standard normal (mean 0, sd 1, bounded by ±3.5): the sum of four 16-bit uniforms
    /// from one draw, which is far cheaper than Box–Muller and shaped well enough for demo data.
    fn noise(&mut self) -> f64 {
        let bits = self.next_u64();
        let sum: u64 = (0..4).map(|i| (bits >> (16 * i)) & 0xffff).sum();
        // Sum of 4 uniforms on [0,1): mean 2, variance 1/3.
        (sum as f64 / 65_536.0 - 2.0) * 3.0_f64.sqrt()
    }
}

fn push_bool(buf: &mut Vec<u8>, value: bool) {
    buf.extend_from_slice(if value { b"true" } else { b"false" });
}

/// Writes a non-negative `value` with exactly `decimals` digits after the point. Always printing
/// the point keeps every reader's type inference on float.
pub(crate) fn push_fixed(buf: &mut Vec<u8>, value: f64, decimals: u32) {
    debug_assert!(value >= 0.0 && value.is_finite());
    let scale = 10u64.pow(decimals);
    let scaled = (value * scale as f64).round() as u64;
    push_u64(buf, scaled / scale);
    buf.push(b'.');
    let mut fraction = scaled % scale;
    let start = buf.len();
    buf.resize(start + decimals as usize, b'0');
    for slot in buf[start..].iter_mut().rev() {
        *slot = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
}

pub(crate) fn push_u64(buf: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

fn push_i64(buf: &mut Vec<u8>, value: i64) {
    if value < 0 {
        buf.push(b'-');
    }
    push_u64(buf, value.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file in the temp dir, removed on drop, unique per test and process.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            TempFile(std::env::temp_dir().join(format!(
                "sluice-datagen-{}-{name}.jsonl",
                std::process::id()
            )))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn small(companies: usize, hours: f64, seed: u64) -> SeedSpec {
        SeedSpec {
            companies,
            hours,
            seed,
            ..SeedSpec::default()
        }
    }

    fn generate_bytes(spec: &SeedSpec) -> Vec<u8> {
        let mut out = Vec::new();
        generate(&mut out, spec).unwrap();
        out
    }

    const FIELDS: [&str; 10] = [
        "company",
        "cpu_utilization",
        "cpu_utilization_is_error",
        "latency",
        "latency_is_error",
        "packet_loss",
        "packet_loss_is_error",
        "throughput",
        "throughput_is_error",
        "timestamp",
    ];

    #[test]
    fn default_is_the_full_benchmark_size() {
        let spec = SeedSpec::default();
        assert_eq!(spec.rows(), 4_464_000);
        assert_eq!(spec.start_ms, 1_704_067_200_000);
    }

    #[test]
    fn row_count_matches_spec_and_file() {
        let spec = small(3, 0.1, 7);
        assert_eq!(spec.rows(), 3 * 72);
        let file = TempFile::new("rows");
        let generated = write_seed_dataset(&file.0, &spec).unwrap();
        let text = std::fs::read_to_string(&file.0).unwrap();
        assert_eq!(generated.rows, spec.rows());
        assert_eq!(generated.bytes, text.len() as u64);
        assert_eq!(text.lines().count() as u64, spec.rows());
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn empty_spans_give_empty_files() {
        assert_eq!(small(5, 0.0, 1).rows(), 0);
        assert_eq!(small(0, 1.0, 1).rows(), 0);
        assert!(generate_bytes(&small(5, 0.0, 1)).is_empty());
    }

    #[test]
    fn same_spec_same_bytes_other_seed_other_bytes() {
        let spec = small(10, 0.2, 42);
        let first = generate_bytes(&spec);
        assert_eq!(first, generate_bytes(&spec));
        assert_ne!(first, generate_bytes(&small(10, 0.2, 43)));

        let file = TempFile::new("determinism");
        write_seed_dataset(&file.0, &spec).unwrap();
        assert_eq!(std::fs::read(&file.0).unwrap(), first);
    }

    #[test]
    fn first_row_shape_is_pinned() {
        // The first row starts the file at start_ms with company_000.
        let bytes = generate_bytes(&small(2, 0.01, 42));
        let first = std::str::from_utf8(&bytes).unwrap().lines().next().unwrap();
        assert!(
            first.starts_with("{\"company\":\"company_000\",\"cpu_utilization\":"),
            "{first}"
        );
        assert!(first.ends_with(",\"timestamp\":1704067200000}"), "{first}");
    }

    #[test]
    fn every_line_parses_with_the_fields_in_order_and_typed() {
        let spec = small(100, 0.1, 42);
        let bytes = generate_bytes(&spec);
        let text = std::str::from_utf8(&bytes).unwrap();
        for (index, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {index} does not parse: {e}: {line}"));
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), FIELDS.len(), "{line}");

            // Field order: each key appears after the previous one in the raw line.
            let mut last = 0;
            for field in FIELDS {
                let at = line.find(&format!("\"{field}\":")).unwrap();
                assert!(at >= last, "{field} out of order in {line}");
                last = at;
            }

            let company = object["company"].as_str().unwrap();
            assert_eq!(company, format!("company_{:03}", index % 100));
            let cpu = object["cpu_utilization"].as_f64().unwrap();
            assert!(object["cpu_utilization"].is_f64() && (0.0..=100.0).contains(&cpu));
            assert!(object["latency"].is_f64() && object["latency"].as_f64().unwrap() > 0.0);
            let loss = object["packet_loss"].as_f64().unwrap();
            assert!(object["packet_loss"].is_f64() && (0.0..=1.0).contains(&loss));
            assert!(object["throughput"].is_f64() && object["throughput"].as_f64().unwrap() >= 0.0);
            for flag in FIELDS.iter().filter(|f| f.ends_with("_is_error")) {
                assert!(object[*flag].is_boolean(), "{flag} in {line}");
            }
            let timestamp = object["timestamp"].as_i64().unwrap();
            assert_eq!(
                timestamp,
                spec.start_ms + (index / 100) as i64 * INTERVAL_MS
            );
        }
    }

    #[test]
    fn about_one_percent_of_flags_are_errors() {
        let bytes = generate_bytes(&small(100, 0.5, 42));
        let text = std::str::from_utf8(&bytes).unwrap();
        let flags = text.matches("_is_error\":").count();
        let errors = text.matches("_is_error\":true").count();
        let rate = errors as f64 / flags as f64;
        assert_eq!(flags, 4 * 36_000);
        assert!((0.007..0.013).contains(&rate), "error rate {rate}");
    }

    #[test]
    fn companies_have_distinct_mean_cpu() {
        let bytes = generate_bytes(&small(100, 0.5, 42));
        let mut sums = vec![(0.0, 0u32); 100];
        for line in std::str::from_utf8(&bytes).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let company = value["company"].as_str().unwrap();
            let index: usize = company["company_".len()..].parse().unwrap();
            sums[index].0 += value["cpu_utilization"].as_f64().unwrap();
            sums[index].1 += 1;
        }
        let mut means: Vec<f64> = sums.iter().map(|(sum, n)| sum / *n as f64).collect();
        means.sort_by(|a, b| b.partial_cmp(a).unwrap());
        // Bases are 0.8 points apart; the 10th and 11th must be clearly separated.
        assert!(
            means[0] - means[99] > 60.0,
            "spread {}",
            means[0] - means[99]
        );
        assert!(means[9] - means[10] > 0.1, "{} vs {}", means[9], means[10]);
    }

    #[test]
    fn target_bytes_lands_close() {
        for target in [5_000_000u64, 20_000_000] {
            let spec = SeedSpec::with_target_bytes(target);
            assert_eq!(spec.companies, 100);
            let bytes = generate_bytes(&spec).len() as f64;
            let error = (bytes - target as f64).abs() / target as f64;
            assert!(error < 0.02, "target {target}, got {bytes}");
        }
        assert_eq!(SeedSpec::with_target_bytes(0).rows(), 100);
    }

    #[test]
    fn fixed_point_formatting() {
        let mut buf = Vec::new();
        push_fixed(&mut buf, 0.0, 3);
        buf.push(b' ');
        push_fixed(&mut buf, 99.9996, 3);
        buf.push(b' ');
        push_fixed(&mut buf, 0.01234, 5);
        buf.push(b' ');
        push_i64(&mut buf, -1234);
        buf.push(b' ');
        push_u64(&mut buf, u64::MAX);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "0.000 100.000 0.01234 -1234 18446744073709551615"
        );
    }
}
