//! A function that can be replaced while it serves.
//!
//! Triggers hold a [`FunctionSlot`] and take [`FunctionSlot::current`] once per batch, so a
//! new version swaps in atomically: batches that already started finish on the version
//! they took, every later batch runs on the new one, and the trigger itself (a Kafka
//! consumer with its partitions, an HTTP route, a schedule) is never restarted.

use std::sync::{Arc, RwLock};

use crate::function::Function;

pub struct FunctionSlot {
    name: String,
    current: RwLock<Arc<Function>>,
}

impl FunctionSlot {
    pub fn new(function: Arc<Function>) -> Arc<FunctionSlot> {
        Arc::new(FunctionSlot { name: function.name().to_string(), current: RwLock::new(function) })
    }

    /// The function's name, the same for every version the slot holds.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version that takes the next batch.
    pub fn current(&self) -> Arc<Function> {
        self.current.read().expect("function slot lock").clone()
    }

    /// Puts `next` in place and returns the version it replaced; batches running on the old
    /// version keep their reference and finish on it.
    pub fn replace(&self, next: Arc<Function>) -> Arc<Function> {
        std::mem::replace(&mut *self.current.write().expect("function slot lock"), next)
    }
}

impl std::fmt::Debug for FunctionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSlot").field("name", &self.name).field("hash", &self.current().hash()).finish()
    }
}
