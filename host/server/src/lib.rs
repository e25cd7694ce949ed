//! sluice's control plane: tenants with hashed bearer tokens, a content-addressed function
//! store on disk, deploys validated and hot-swapped into running triggers, quotas, guest
//! logs and Prometheus metrics, served as a REST API by `sluice serve`.

mod api;
mod auth;
mod error;
mod logs;
mod metrics;
mod openapi;
mod plane;
mod quotas;
mod store;

pub use api::router;
pub use error::ApiError;
pub use metrics::install_recorder;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use plane::{ControlPlane, ServerConfig};
pub use quotas::{Quotas, QuotasUpdate};
