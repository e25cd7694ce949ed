//! Human-readable output: the run summary and JSON-lines replies as a table.

use std::path::Path;

use sluice_triggers::FileRun;

/// Decimal byte sizes (MB = 10^6 bytes), as throughput is reported in MB/s.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.2} {}", UNITS[unit]) }
}

/// Thousands separators for counts.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn summary(run: &FileRun, data_dir: &Path) {
    let written_bytes: u64 = run.written.iter().map(|w| w.bytes).sum();
    let written_rows: u64 = run.written.iter().map(|w| w.rows).sum();
    eprintln!();
    eprintln!("rows        {}", count(run.rows_parsed));
    eprintln!("input       {} in {} file(s)", bytes(run.input_bytes), run.input_files);
    eprintln!("batches     {} ({} failed)", run.batches, run.failed.len());
    eprintln!(
        "elapsed     {:.3} s  ({:.1} MB/s, {} rows/s)",
        run.elapsed.as_secs_f64(),
        run.mb_per_s(),
        count(run.rows_per_s() as u64)
    );
    eprintln!(
        "written     {} file(s), {} rows, {} under {}",
        run.written.len(),
        count(written_rows),
        bytes(written_bytes),
        data_dir.display()
    );
    if run.skipped_lines > 0 {
        eprintln!("skipped     {} malformed line(s)", run.skipped_lines);
    }
    for failed in &run.failed {
        eprintln!("failed      batch {}: {}", failed.key, failed.error);
    }
    for path in &run.dead_letters {
        eprintln!("dead letter {}", path.display());
    }
}

/// Renders JSON lines (one flat object per line) as an aligned text table; anything that
/// is not JSON objects is shown as text.
pub fn json_lines_table(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let rows: Option<Vec<serde_json::Map<String, serde_json::Value>>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect();
    let Some(rows) = rows.filter(|r| !r.is_empty()) else {
        return text.into_owned();
    };
    let headers: Vec<&String> = rows[0].keys().collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| headers.iter().map(|h| cell(row.get(*h))).collect())
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| cells.iter().map(|r| r[i].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::Number(n)) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or_default()),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_234_567), "1.23 MB");
        assert_eq!(count(4_464_000), "4,464,000");
        assert_eq!(count(12), "12");
    }

    #[test]
    fn json_lines_become_an_aligned_table() {
        let table = json_lines_table(b"{\"company\":\"a\",\"cpu\":1.5}\n{\"company\":\"bb\",\"cpu\":22.25}\n");
        assert_eq!(table, "company     cpu\n      a   1.500\n     bb  22.250");
        assert_eq!(json_lines_table(b"plain"), "plain");
    }
}
