//! Guest logs become host `tracing` events tagged with function and invocation;
//! the `config` interface serves the manifest's `[config]` table.

use crate::bindings::sluice::function::{config, log};
use crate::deployment::GuestLogLine;
use crate::state::InvocationState;

impl log::Host for InvocationState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let function = self.function.name.as_str();
        let invocation = self.invocation_id;
        let (tenant, version) = (self.function.deployment.tenant.as_str(), self.function.deployment.version);
        let level = match level {
            log::Level::Trace => {
                tracing::trace!(target: "guest", tenant, function, version, invocation, "{message}");
                "trace"
            }
            log::Level::Debug => {
                tracing::debug!(target: "guest", tenant, function, version, invocation, "{message}");
                "debug"
            }
            log::Level::Info => {
                tracing::info!(target: "guest", tenant, function, version, invocation, "{message}");
                "info"
            }
            log::Level::Warn => {
                tracing::warn!(target: "guest", tenant, function, version, invocation, "{message}");
                "warn"
            }
            log::Level::Error => {
                tracing::error!(target: "guest", tenant, function, version, invocation, "{message}");
                "error"
            }
        };
        if let Some(sink) = &self.function.deployment.guest_log {
            sink.line(GuestLogLine { level, invocation, message });
        }
        Ok(())
    }
}

impl config::Host for InvocationState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.function.config.get(&key).cloned())
    }

    fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.function.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
