//! Warm instances of a function: stores instantiated ahead of the batch that takes them.
//!
//! Every batch still runs in an instance of its own, used once (a guest never sees another
//! batch's memory); a warm instance only moves instantiation off the batch's path. What the
//! `[limits]` numbers mean:
//! - `max-instances`: invocations running at once. More batches wait (the trigger's bounded
//!   queue behind them pushes back: Kafka stops polling, HTTP answers 429).
//! - `min-instances`: warm instances kept ready while the function is idle. With 0 (the
//!   default) no instance is prepared ahead and nothing below applies.
//! - The pool grows when the queue backs up: after each invocation it prepares as many warm
//!   instances as invocations ran at once recently (at most `max-instances`), and it shrinks
//!   back to `min-instances` once no invocation started for [`WARM_IDLE`].

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store};

use crate::bindings::{Handler, HandlerPre};
use crate::function::yield_to_others;
use crate::state::{FunctionContext, InvocationState};

/// How long without a new invocation before warm instances above `min-instances` are dropped.
pub const WARM_IDLE: Duration = Duration::from_secs(3);

/// An instantiated store that no batch has used yet.
pub(crate) struct Warm {
    pub store: Store<InvocationState>,
    pub handler: Handler,
}

/// How many instances a function holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instantiated and waiting for a batch.
    pub warm: usize,
    /// Running a batch.
    pub running: usize,
    /// Warm plus running instances the pool keeps while the current load lasts.
    pub target: usize,
}

struct PoolState {
    ready: Vec<Warm>,
    running: usize,
    preparing: usize,
    /// The most invocations that ran at once since the pool last shrank.
    peak: usize,
    last_start: Instant,
    reaper_started: bool,
}

pub(crate) struct InstancePool {
    pre: HandlerPre<InvocationState>,
    engine: Engine,
    context: Arc<FunctionContext>,
    memory_limit: usize,
    min: usize,
    max: usize,
    state: Mutex<PoolState>,
}

impl InstancePool {
    pub fn new(
        pre: HandlerPre<InvocationState>,
        engine: Engine,
        context: Arc<FunctionContext>,
        memory_limit: usize,
        min: usize,
        max: usize,
    ) -> Arc<InstancePool> {
        let state = PoolState { ready: Vec::new(), running: 0, preparing: 0, peak: 0, last_start: Instant::now(), reaper_started: false };
        let pool = Arc::new(InstancePool { pre, engine, context, memory_limit, min, max, state: Mutex::new(state) });
        if min > 0 && tokio::runtime::Handle::try_current().is_ok() {
            pool.refill();
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().expect("instance pool lock")
    }

    /// A fresh store with the function's memory limit, its guest yielding every epoch tick
    /// until the invocation that takes it sets its deadline (and names its batch).
    pub fn new_store(&self) -> Store<InvocationState> {
        let state = InvocationState::new(self.context.clone(), self.memory_limit);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(yield_to_others()));
        store
    }

    /// Notes an invocation starting; hands it a warm instance if one is ready.
    pub fn start(&self) -> Option<Warm> {
        let mut state = self.lock();
        state.running += 1;
        state.peak = state.peak.max(state.running);
        state.last_start = Instant::now();
        state.ready.pop()
    }

    /// Notes an invocation done and prepares what the pool lacks.
    pub fn finish(self: &Arc<Self>) {
        self.lock().running -= 1;
        self.refill();
    }

    fn target(&self, state: &PoolState) -> usize {
        if self.min == 0 { 0 } else { state.peak.clamp(self.min, self.max) }
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats { warm: state.ready.len(), running: state.running, target: self.target(&state) }
    }

    /// Starts preparing warm instances up to the target; the first call also starts the
    /// task that shrinks an idle pool.
    fn refill(self: &Arc<Self>) {
        let mut state = self.lock();
        let target = self.target(&state);
        let have = state.ready.len() + state.preparing + state.running;
        let missing = target.saturating_sub(have);
        state.preparing += missing;
        let start_reaper = target > 0 && !std::mem::replace(&mut state.reaper_started, true);
        drop(state);
        for _ in 0..missing {
            let pool = self.clone();
            tokio::spawn(async move { pool.prepare().await });
        }
        if start_reaper {
            tokio::spawn(shrink_when_idle(Arc::downgrade(self)));
        }
    }

    async fn prepare(&self) {
        let mut store = self.new_store();
        let prepared = self.pre.instantiate_async(&mut store).await;
        let mut state = self.lock();
        state.preparing -= 1;
        match prepared {
            Ok(handler) => state.ready.push(Warm { store, handler }),
            Err(error) => tracing::warn!(function = %self.context.name, %error, "cannot prepare a warm instance"),
        }
    }

    /// Drops warm instances above `min-instances` once no invocation started for [`WARM_IDLE`].
    fn shrink_if_idle(&self) {
        let mut state = self.lock();
        if state.running == 0 && state.last_start.elapsed() >= WARM_IDLE && state.ready.len() > self.min {
            state.peak = 0;
            let keep = self.min;
            let dropped = state.ready.len() - keep;
            state.ready.truncate(keep);
            tracing::debug!(function = %self.context.name, dropped, "idle: warm instances dropped");
        }
    }
}

async fn shrink_when_idle(pool: Weak<InstancePool>) {
    loop {
        tokio::time::sleep(WARM_IDLE / 3).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.shrink_if_idle();
    }
}
