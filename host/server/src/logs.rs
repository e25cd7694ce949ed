//! Guest log lines per function: a bounded ring of recent lines, a live follow channel, and a
//! per-function rate limit (lines beyond it in one second are dropped and counted).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_runtime::{GuestLogLine, GuestLogSink, InvokeError};
use tokio::sync::broadcast;

/// Lines kept per function for `GET .../logs`.
pub const RING_LINES: usize = 1000;

/// One line as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub ts: String,
    pub level: &'static str,
    pub tenant: String,
    pub function: String,
    pub version: u64,
    pub invocation: u64,
    pub message: String,
}

struct RateWindow {
    started: Instant,
    lines: u32,
}

/// The log of one function, across its versions.
pub struct FunctionLog {
    tenant: String,
    function: String,
    lines_per_second: u32,
    ring: Mutex<VecDeque<LogLine>>,
    window: Mutex<RateWindow>,
    dropped: AtomicU64,
    follow: broadcast::Sender<LogLine>,
}

impl FunctionLog {
    pub fn new(tenant: &str, function: &str, lines_per_second: u32) -> FunctionLog {
        FunctionLog {
            tenant: tenant.to_string(),
            function: function.to_string(),
            lines_per_second,
            ring: Mutex::new(VecDeque::with_capacity(RING_LINES)),
            window: Mutex::new(RateWindow { started: Instant::now(), lines: 0 }),
            dropped: AtomicU64::new(0),
            follow: broadcast::channel(RING_LINES).0,
        }
    }

    /// Records a line unless the function is over its rate this second.
    pub fn push(&self, version: u64, level: &'static str, invocation: u64, message: String) {
        if !self.admit() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(
                "sluice_log_lines_dropped_total",
                "tenant" => self.tenant.clone(),
                "function" => self.function.clone(),
                "version" => version.to_string()
            )
            .increment(1);
            return;
        }
        let line = LogLine {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            level,
            tenant: self.tenant.clone(),
            function: self.function.clone(),
            version,
            invocation,
            message,
        };
        let mut ring = self.ring.lock().expect("log ring lock");
        if ring.len() == RING_LINES {
            ring.pop_front();
        }
        ring.push_back(line.clone());
        drop(ring);
        let _ = self.follow.send(line);
    }

    fn admit(&self) -> bool {
        let mut window = self.window.lock().expect("log rate lock");
        if window.started.elapsed() >= Duration::from_secs(1) {
            *window = RateWindow { started: Instant::now(), lines: 0 };
        }
        window.lines += 1;
        window.lines <= self.lines_per_second
    }

    /// The last `limit` lines, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().expect("log ring lock");
        ring.iter().skip(ring.len().saturating_sub(limit)).cloned().collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.follow.subscribe()
    }
}

/// What one loaded version reports into its function's log: guest lines and failed invocations.
pub struct VersionLog {
    pub log: std::sync::Arc<FunctionLog>,
    pub version: u64,
    /// The last invocation error, for the function document.
    pub last_error: std::sync::Arc<Mutex<Option<String>>>,
}

impl GuestLogSink for VersionLog {
    fn line(&self, line: GuestLogLine) {
        self.log.push(self.version, line.level, line.invocation, line.message);
    }

    fn invocation_failed(&self, invocation: u64, error: &InvokeError) {
        let message = format!("invocation failed ({}): {error}", error.cause());
        *self.last_error.lock().expect("last error lock") = Some(message.clone());
        self.log.push(self.version, "error", invocation, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_rate_are_dropped_and_counted() {
        let log = FunctionLog::new("t", "f", 5);
        for n in 0..8 {
            log.push(1, "info", n, format!("line {n}"));
        }
        let kept = log.recent(100);
        assert_eq!(kept.len(), 5);
        assert_eq!(log.dropped(), 3);
        assert_eq!(kept[0].message, "line 0");
        assert_eq!((kept[4].tenant.as_str(), kept[4].function.as_str(), kept[4].invocation), ("t", "f", 4));
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_and_followers_see_new_ones() {
        let log = FunctionLog::new("t", "f", u32::MAX);
        let mut follower = log.subscribe();
        for n in 0..(RING_LINES as u64 + 10) {
            log.push(2, "info", n, n.to_string());
        }
        let recent = log.recent(3);
        let tail: Vec<&str> = recent.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(tail, ["1007", "1008", "1009"]);
        assert_eq!(log.recent(usize::MAX).len(), RING_LINES);
        assert!(follower.try_recv().is_ok());
    }
}
