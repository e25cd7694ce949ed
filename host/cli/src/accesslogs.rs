//! Deterministic generator for the access-log benchmark dataset: web access logs as JSON lines,
//! with a nested `user` object, strings that need escapes and unicode, and nulls.
//!
//! Like the seed generator it draws from our own SplitMix64 and prints numbers by integer
//! arithmetic, so the same spec gives the same bytes everywhere.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::datagen::{Generated, RowWriter, SplitMix64, push_fixed, push_u64};

/// 2024-01-01T00:00:00Z.
const START_MS: u64 = 1_704_067_200_000;
const SERVICES: [&str; 8] = ["checkout", "search", "catalog", "auth", "payments", "cart", "reviews", "images"];
const HOSTS_PER_SERVICE: u64 = 12;
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const COUNTRIES: [&str; 8] = ["DE", "FR", "JP", "US", "BR", "IN", "GB", "NG"];
/// Search terms with escapes (quote, backslash, tab) and unicode, some as `\u` escapes.
const TERMS: [&str; 8] = [
    "caf\u{e9}",
    "na\\u00efve",
    "\u{65e5}\u{672c}\u{8a9e}",
    "say \\\"hi\\\"",
    "tab\\tstop",
    "back\\\\slash",
    "\u{1f680} launch",
    "stra\u{df}e",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.4.0",
    "Go-http-client/2.0",
];

/// Writes about `target_bytes` of access logs to `path`; rows are in time order, 1 to 4 ms apart.
pub fn write_access_logs(path: &Path, target_bytes: u64, seed: u64) -> io::Result<Generated> {
    let mut file = File::create(path)?;
    let generated = generate(&mut file, target_bytes, seed)?;
    file.flush()?;
    Ok(generated)
}

fn generate<W: Write>(out: &mut W, target_bytes: u64, seed: u64) -> io::Result<Generated> {
    let mut rng = SplitMix64::new(seed);
    let mut rows = RowWriter::new(out);
    let mut ts = START_MS;
    while rows.bytes() < target_bytes {
        ts += 1 + rng.next_u64() % 4;
        write_row(rows.buffer(), &mut rng, ts);
        rows.row_done()?;
    }
    rows.finish()
}

fn pick<'a>(rng: &mut SplitMix64, from: &[&'a str]) -> &'a str {
    from[(rng.next_u64() % from.len() as u64) as usize]
}

fn write_row(buf: &mut Vec<u8>, rng: &mut SplitMix64, ts: u64) {
    let service = (rng.next_u64() % SERVICES.len() as u64) as usize;
    let r = rng.next_u64();
    // About 3 % server errors, more on payments; 10 % client errors.
    let status = match r % 1000 {
        0..=24 => 500 + (r >> 10) % 4,
        25..=29 if service == 4 => 503,
        30..=129 => [400, 401, 404, 429][((r >> 12) % 4) as usize],
        _ => [200, 200, 200, 201, 204, 301, 304][((r >> 14) % 7) as usize],
    };
    let slow = if status >= 500 { 4.0 } else { 1.0 };
    let latency = (5.0 + 40.0 * rng.unit() * rng.unit()) * slow * (1.0 + service as f64 / 4.0);

    buf.extend_from_slice(b"{\"ts\":");
    push_u64(buf, ts);
    buf.extend_from_slice(b",\"service\":\"");
    buf.extend_from_slice(SERVICES[service].as_bytes());
    buf.extend_from_slice(b"\",\"host\":\"");
    buf.extend_from_slice(SERVICES[service].as_bytes());
    buf.push(b'-');
    push_u64(buf, rng.next_u64() % HOSTS_PER_SERVICE);
    buf.extend_from_slice(b"\",\"method\":\"");
    buf.extend_from_slice(pick(rng, &METHODS).as_bytes());
    buf.extend_from_slice(b"\",\"path\":\"/api/v2/");
    buf.extend_from_slice(SERVICES[service].as_bytes());
    buf.extend_from_slice(b"/items/");
    push_u64(buf, rng.next_u64() % 100_000);
    buf.extend_from_slice(b"?q=");
    buf.extend_from_slice(pick(rng, &TERMS).as_bytes());
    buf.extend_from_slice(b"\",\"status\":");
    push_u64(buf, status);
    buf.extend_from_slice(b",\"latency_ms\":");
    push_fixed(buf, latency, 3);
    buf.extend_from_slice(b",\"bytes\":");
    push_u64(buf, 200 + rng.next_u64() % 50_000);
    let u = rng.next_u64();
    if u % 10 == 0 {
        // Anonymous request: no user at all.
        buf.extend_from_slice(b",\"user\":null");
    } else {
        buf.extend_from_slice(b",\"user\":{\"id\":\"u");
        push_u64(buf, (u >> 8) % 1_000_000);
        buf.extend_from_slice(b"\",\"country\":");
        if u % 7 == 0 {
            buf.extend_from_slice(b"null");
        } else {
            buf.push(b'"');
            buf.extend_from_slice(COUNTRIES[((u >> 32) % COUNTRIES.len() as u64) as usize].as_bytes());
            buf.push(b'"');
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b",\"referrer\":");
    if r % 3 == 0 {
        buf.extend_from_slice(b"\"https://example.com/\\u00fcber?from=");
        buf.extend_from_slice(SERVICES[(r >> 20) as usize % SERVICES.len()].as_bytes());
        buf.push(b'"');
    } else {
        buf.extend_from_slice(b"null");
    }
    buf.extend_from_slice(b",\"agent\":\"");
    buf.extend_from_slice(pick(rng, &AGENTS).as_bytes());
    buf.extend_from_slice(b"\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(target: u64, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let made = generate(&mut out, target, seed).unwrap();
        assert_eq!(made.bytes, out.len() as u64);
        out
    }

    #[test]
    fn deterministic_valid_json_with_nested_users_and_nulls() {
        let data = bytes(200_000, 7);
        assert_eq!(data, bytes(200_000, 7));
        assert_ne!(data, bytes(200_000, 8));
        let mut users = 0;
        let mut null_users = 0;
        let mut errors = 0;
        let mut lines = 0;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let row: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            lines += 1;
            match &row["user"] {
                serde_json::Value::Object(u) => {
                    users += 1;
                    assert!(u["id"].is_string());
                }
                serde_json::Value::Null => null_users += 1,
                other => panic!("user is {other}"),
            }
            errors += (row["status"].as_u64().unwrap() >= 500) as usize;
            assert!(row["latency_ms"].is_f64() || row["latency_ms"].is_u64());
        }
        assert!(users > 0 && null_users > 0 && errors > 0, "{users} {null_users} {errors}");
        assert!(data.len() >= 200_000 && lines > 500);
        assert!(String::from_utf8(data).unwrap().contains("\u{65e5}\u{672c}"));
    }
}
