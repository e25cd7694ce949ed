//! Rust bindings for the `handler` world, generated from `wit/` at build time.
//!
//! The WIT resources map onto host types, so a guest handle always refers to data that
//! stays in host memory.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "handler",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "sluice:function/dataframe.expr": sluice_frame::Expr,
        "sluice:function/dataframe.frame": sluice_frame::LazyFrame,
        "sluice:function/events.batch": crate::batch::SharedBatch,
    },
});

pub use sluice::function::types::{Dtype, Error as GuestError, ErrorCode as GuestErrorCode, Reply, Scalar as GuestScalar};
