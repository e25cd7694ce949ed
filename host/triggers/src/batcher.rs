//! Cuts a stream of events into batches: a batch closes at whichever of `max-events`,
//! `max-bytes` and `max-wait-ms` (counted from its first event) comes first.

use std::time::{Duration, Instant};

use sluice_manifest::Batching;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: u64,
    pub max_wait: Duration,
}

impl From<&Batching> for BatchLimits {
    fn from(batching: &Batching) -> Self {
        BatchLimits {
            max_events: usize::try_from(batching.max_events).unwrap_or(usize::MAX),
            max_bytes: batching.max_bytes,
            max_wait: Duration::from_millis(batching.max_wait_ms),
        }
    }
}

/// Events gathered for the next batch, in a collection `C` (a `Vec` of events, or a packed
/// form that the trigger fills itself through [`Accumulator::push_with`]).
#[derive(Debug)]
pub struct Accumulator<C> {
    limits: BatchLimits,
    items: C,
    events: usize,
    bytes: u64,
    opened: Option<Instant>,
}

impl<T> Accumulator<Vec<T>> {
    /// Adds an event of `bytes` body bytes; the first event starts the batch's clock.
    pub fn push(&mut self, item: T, bytes: u64) {
        self.push_with(bytes, |items| items.push(item));
    }
}

impl<C: Default> Accumulator<C> {
    pub fn new(limits: BatchLimits) -> Self {
        Accumulator { limits, items: C::default(), events: 0, bytes: 0, opened: None }
    }

    /// Counts one event of `bytes` body bytes, which `add` puts into the collection; the
    /// first event starts the batch's clock.
    pub fn push_with(&mut self, bytes: u64, add: impl FnOnce(&mut C)) {
        self.opened.get_or_insert_with(Instant::now);
        add(&mut self.items);
        self.events += 1;
        self.bytes += bytes;
    }

    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Whether the batch reached `max-events` or `max-bytes`.
    pub fn is_full(&self) -> bool {
        self.events >= self.limits.max_events || self.bytes >= self.limits.max_bytes
    }

    /// Whether the batch should close now: full, or its first event waited `max-wait`.
    pub fn is_due(&self, now: Instant) -> bool {
        !self.is_empty() && (self.is_full() || self.remaining_wait(now).is_zero())
    }

    /// How long the batch may still wait for events; `max-wait` while it is empty.
    pub fn remaining_wait(&self, now: Instant) -> Duration {
        match self.opened {
            Some(opened) => (opened + self.limits.max_wait).saturating_duration_since(now),
            None => self.limits.max_wait,
        }
    }

    /// Closes the batch and starts an empty one.
    pub fn take(&mut self) -> C {
        self.events = 0;
        self.bytes = 0;
        self.opened = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_events: usize, max_bytes: u64, max_wait_ms: u64) -> BatchLimits {
        BatchLimits { max_events, max_bytes, max_wait: Duration::from_millis(max_wait_ms) }
    }

    #[test]
    fn closes_at_max_events_or_max_bytes() {
        let mut by_events = Accumulator::new(limits(2, 1000, 60_000));
        by_events.push('a', 1);
        assert!(!by_events.is_due(Instant::now()));
        by_events.push('b', 1);
        assert!(by_events.is_due(Instant::now()));
        assert_eq!(by_events.take(), vec!['a', 'b']);
        assert!(by_events.is_empty() && !by_events.is_due(Instant::now()));

        let mut by_bytes = Accumulator::new(limits(100, 10, 60_000));
        by_bytes.push('a', 6);
        assert!(!by_bytes.is_full());
        by_bytes.push('b', 6);
        assert!(by_bytes.is_full());
    }

    #[test]
    fn closes_when_the_first_event_waited_max_wait() {
        let mut acc = Accumulator::new(limits(100, 1000, 50));
        let start = Instant::now();
        assert_eq!(acc.remaining_wait(start), Duration::from_millis(50));
        acc.push('a', 1);
        assert!(!acc.is_due(Instant::now()));
        let later = Instant::now() + Duration::from_millis(51);
        assert!(acc.remaining_wait(later).is_zero());
        assert!(acc.is_due(later));
        acc.take();
        assert_eq!(acc.remaining_wait(later), Duration::from_millis(50));
    }
}
