//! The Rust SDK for writing sluice handlers.
//!
//! A handler is a function from a [`Batch`] of events to an [`Outcome`]. It never touches bulk
//! data itself: [`Batch::json`] asks the host to parse every event into a [`Frame`], a handle to
//! a dataframe that stays in host memory (on the GPU when the host has one), and the [`Expr`]
//! builder describes the work the host's engine does on it. Only what the handler explicitly asks
//! for ([`Frame::column`], [`Frame::to_json_lines`], [`Batch::body`]) is copied into the guest.
//!
//! ```no_run
//! use sluice_sdk::prelude::*;
//!
//! sluice_sdk::handler!(handle);
//!
//! fn handle(batch: Batch) -> Result<Outcome> {
//!     let events = batch.json()?;
//!     let by_company = events.group_by(
//!         ["company"],
//!         [col("cpu_utilization").mean().alias("cpu_mean"), count().alias("n")],
//!     )?;
//!     by_company.write("metrics")?;
//!     Outcome::json(&by_company.top_k(10, "cpu_mean")?)
//! }
//! # fn main() {}
//! ```
//!
//! Build handlers with `cargo build --release --target wasm32-wasip2`; the result is a component
//! of the `sluice:function/handler` world.

mod batch;
pub mod config;
mod error;
mod expr;
mod frame;
pub mod log;
mod outcome;

pub use batch::{
    Batch, CronMeta, EventMeta, FileMeta, HttpMeta, KafkaMeta, ReadOptions, TriggerKind,
};
pub use error::{Error, ErrorCode, Result};
pub use expr::{Expr, IntoExpr, Scalar, col, count, lit};
pub use frame::{DType, Frame, SortKey, WriteStats};
pub use outcome::{Outcome, Reply};

/// Everything a handler usually needs, for `use sluice_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::config;
    pub use crate::{
        Batch, DType, Error, ErrorCode, Expr, Frame, Outcome, ReadOptions, Reply, Result, Scalar,
        SortKey, col, count, lit,
    };
    pub use crate::{debug, error, info, trace, warn};
}

/// Bindings generated from `wit/`; the wrappers in this crate are the supported API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../wit",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_handler",
    });
}

/// Declares `handle` as the function the host calls for every batch.
///
/// `handle` must have the signature `fn(Batch) -> Result<Outcome>`. The macro expands to the
/// component's `handle` export, converting an [`Error`] into the host's error record.
///
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// sluice_sdk::handler!(handle);
///
/// fn handle(batch: Batch) -> Result<Outcome> {
///     Ok(Outcome::text(format!("{} events", batch.len())))
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! handler {
    ($handle:path) => {
        const _: () = {
            struct Handler;

            impl $crate::bindings::Guest for Handler {
                fn handle(
                    batch: &$crate::bindings::Batch,
                ) -> ::core::result::Result<$crate::Outcome, $crate::bindings::Error> {
                    $crate::__invoke(batch, $handle)
                }
            }

    $crate::bindings::export_handler!(Handler with_types_in $crate::bindings);
        };
    };
}

/// Runs a handler on the batch the host lent for this call; used by [`handler!`].
#[doc(hidden)]
pub fn __invoke(
    batch: &bindings::Batch,
    handle: impl FnOnce(Batch<'_>) -> Result<Outcome>,
) -> std::result::Result<Outcome, bindings::Error> {
    handle(Batch::new(batch)).map_err(Into::into)
}
