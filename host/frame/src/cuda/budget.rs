//! GPU memory accounting: every device allocation of a tenant's frames is reserved against a
//! budget first, so one tenant cannot take the shared device's memory from the others. A
//! function's budget may sit within its tenant's: a reservation then holds bytes of both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A reservation the budget refused: names what was asked and what is left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GPU memory budget `{owner}` exceeded: {what} needs {requested} bytes but only {remaining} of {limit} bytes remain")]
pub struct BudgetError {
    pub owner: String,
    pub what: String,
    pub requested: u64,
    pub remaining: u64,
    pub limit: u64,
}

/// A byte budget shared by every allocation charged to one owner (a function or a tenant).
#[derive(Debug)]
pub struct GpuBudget {
    owner: String,
    limit: AtomicU64,
    used: AtomicU64,
    /// The budget this one is part of (a tenant's, for a function's budget).
    parent: Option<Arc<GpuBudget>>,
}

impl GpuBudget {
    pub fn new(owner: impl Into<String>, limit_bytes: u64) -> Arc<GpuBudget> {
        Arc::new(GpuBudget { owner: owner.into(), limit: AtomicU64::new(limit_bytes), used: AtomicU64::new(0), parent: None })
    }

    /// A budget whose reservations also count against `parent` and fail when either is full.
    pub fn within(owner: impl Into<String>, limit_bytes: u64, parent: Arc<GpuBudget>) -> Arc<GpuBudget> {
        Arc::new(GpuBudget {
            owner: owner.into(),
            limit: AtomicU64::new(limit_bytes),
            used: AtomicU64::new(0),
            parent: Some(parent),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Changes the limit (a tenant's quota was changed); bytes held stay held.
    pub fn set_limit(&self, limit_bytes: u64) {
        self.limit.store(limit_bytes, Ordering::Release);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes` for `what` (named in the error), released when the reservation drops.
    pub fn reserve(self: &Arc<Self>, bytes: u64, what: &str) -> Result<GpuReservation, BudgetError> {
        let parent = self.parent.as_ref().map(|parent| parent.reserve(bytes, what)).transpose()?;
        let limit = self.limit();
        let mut current = self.used.load(Ordering::Acquire);
        loop {
            let remaining = limit.saturating_sub(current);
            if bytes > remaining {
                return Err(BudgetError { owner: self.owner.clone(), what: what.to_string(), requested: bytes, remaining, limit });
            }
            match self.used.compare_exchange_weak(current, current + bytes, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(GpuReservation { budget: self.clone(), bytes, _parent: parent.map(Box::new) }),
                Err(seen) => current = seen,
            }
        }
    }
}

/// Bytes held against a [`GpuBudget`] while the allocation they account for lives.
#[derive(Debug)]
pub struct GpuReservation {
    budget: Arc<GpuBudget>,
    bytes: u64,
    /// The same bytes held in the parent budget, released with this one.
    _parent: Option<Box<GpuReservation>>,
}

impl GpuReservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for GpuReservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_released_on_drop() {
        let budget = GpuBudget::new("fn-a", 1000);
        let a = budget.reserve(600, "column `x`").unwrap();
        let b = budget.reserve(400, "column `y`").unwrap();
        assert_eq!(budget.used(), 1000);
        drop(a);
        assert_eq!(budget.used(), 400);
        let c = budget.reserve(600, "column `z`").unwrap();
        assert_eq!((b.bytes(), c.bytes(), budget.used()), (400, 600, 1000));
    }

    #[test]
    fn refusal_names_request_and_remaining_and_changes_nothing() {
        let budget = GpuBudget::new("tenant acme", 1000);
        let _held = budget.reserve(700, "column `x`").unwrap();
        let err = budget.reserve(301, "column `cpu` (301 bytes)").unwrap_err();
        assert_eq!((err.requested, err.remaining, err.limit), (301, 300, 1000));
        assert_eq!(
            err.to_string(),
            "GPU memory budget `tenant acme` exceeded: column `cpu` (301 bytes) needs 301 bytes but only 300 of 1000 bytes remain"
        );
        assert_eq!(budget.used(), 700);
        budget.reserve(300, "fits exactly").unwrap();
    }

    #[test]
    fn a_function_budget_within_its_tenants_is_bounded_by_both() {
        let tenant = GpuBudget::new("tenant acme", 1000);
        let a = GpuBudget::within("function `a`", 800, tenant.clone());
        let b = GpuBudget::within("function `b`", 800, tenant.clone());
        let held_a = a.reserve(700, "column `x`").unwrap();
        let err = b.reserve(400, "column `y`").unwrap_err();
        assert_eq!((err.owner.as_str(), err.remaining), ("tenant acme", 300));
        assert_eq!((tenant.used(), b.used()), (700, 0));
        let err = a.reserve(150, "column `z`").unwrap_err();
        assert_eq!((err.owner.as_str(), err.remaining), ("function `a`", 100));
        assert_eq!(tenant.used(), 700, "a refusal by the function's budget gives the tenant's bytes back");
        let held_b = b.reserve(300, "column `y`").unwrap();
        drop(held_a);
        assert_eq!((tenant.used(), a.used(), b.used()), (300, 0, 300));
        tenant.set_limit(200);
        assert!(b.reserve(1, "over the lowered quota").is_err());
        drop(held_b);
        assert_eq!(tenant.used(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = GpuBudget::new("shared", 10_000);
        let held: Vec<GpuReservation> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..100).filter_map(|_| budget.reserve(17, "x").ok()).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 10_000 / 17);
        assert!(budget.used() <= budget.limit());
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
