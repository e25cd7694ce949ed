//! What one tenant may use. A deploy whose manifest asks for more than its tenant's quota is
//! refused (never silently clamped), so what runs is what the manifest says.

use serde::{Deserialize, Serialize};
use sluice_manifest::Manifest;

use crate::error::ApiError;

/// A tenant's quotas; every field has a default, documented on the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Functions deployed at once (default 10).
    pub functions: u32,
    /// Invocations running at once across all the tenant's functions; also the most one
    /// manifest may ask for in `limits.instances` (default 4).
    pub instances: u32,
    /// The most `limits.memory-mb` a manifest may ask for (default 256).
    pub memory_mb: u64,
    /// The most `limits.timeout-ms` a manifest may ask for (default 60000).
    pub timeout_ms: u64,
    /// The most `limits.gpu-memory-mb` (the CUDA backend's per-invocation budget) a manifest
    /// may ask for (default 2048, the manifest's own default).
    pub gpu_memory_mb: u64,
    /// Bytes of Parquet files the tenant's sinks may hold under its data root (default 10 GiB).
    pub sink_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            functions: 10,
            instances: 4,
            memory_mb: 256,
            timeout_ms: 60_000,
            gpu_memory_mb: 2048,
            sink_bytes: 10 << 30,
        }
    }
}

/// Quotas as given on input: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasUpdate {
    pub functions: Option<u32>,
    pub instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub gpu_memory_mb: Option<u64>,
    pub sink_bytes: Option<u64>,
}

impl Quotas {
    /// `self` with the fields `update` sets; refuses zero instances, memory and timeout
    /// (a tenant that can run nothing is a deleted tenant).
    pub fn updated(&self, update: &QuotasUpdate) -> Result<Quotas, ApiError> {
        let quotas = Quotas {
            functions: update.functions.unwrap_or(self.functions),
            instances: update.instances.unwrap_or(self.instances),
            memory_mb: update.memory_mb.unwrap_or(self.memory_mb),
            timeout_ms: update.timeout_ms.unwrap_or(self.timeout_ms),
            gpu_memory_mb: update.gpu_memory_mb.unwrap_or(self.gpu_memory_mb),
            sink_bytes: update.sink_bytes.unwrap_or(self.sink_bytes),
        };
        if quotas.instances == 0 || quotas.memory_mb == 0 || quotas.timeout_ms == 0 {
            return Err(ApiError::unprocessable("invalid-quotas", "quotas: instances, memory_mb and timeout_ms must be > 0"));
        }
        Ok(quotas)
    }

    /// Refuses a manifest whose limits exceed these quotas, naming the limit.
    pub fn admit(&self, manifest: &Manifest) -> Result<(), ApiError> {
        let limits = &manifest.limits;
        let over = [
            ("instances", u64::from(limits.max_instances), u64::from(self.instances)),
            ("memory-mb", limits.memory_mb, self.memory_mb),
            ("timeout-ms", limits.timeout_ms, self.timeout_ms),
            ("gpu-memory-mb", limits.gpu_memory_mb, self.gpu_memory_mb),
        ];
        for (limit, asked, allowed) in over {
            if asked > allowed {
                return Err(ApiError::quota(format!(
                    "manifest limits.{limit} = {asked} exceeds the tenant's quota of {allowed}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(limits: &str) -> Manifest {
        let text = format!("name = \"f\"\ncomponent = \"f.wasm\"\n[limits]\n{limits}");
        Manifest::parse(&text, std::path::Path::new("sluice.toml"), ".".into()).unwrap()
    }

    #[test]
    fn a_manifest_over_a_quota_is_refused_naming_the_limit() {
        let quotas = Quotas::default();
        quotas.admit(&manifest("instances = 4\nmemory-mb = 256")).unwrap();
        let refused = quotas.admit(&manifest("instances = 5")).unwrap_err();
        assert!(refused.message.contains("limits.instances = 5") && refused.message.contains("quota of 4"), "{refused}");
        let refused = quotas.admit(&manifest("memory-mb = 512")).unwrap_err();
        assert!(refused.message.contains("memory-mb"), "{refused}");
        let refused = quotas.admit(&manifest("gpu-memory-mb = 4096")).unwrap_err();
        assert!(refused.message.contains("gpu-memory-mb = 4096"), "{refused}");
    }

    #[test]
    fn updates_keep_unset_fields_and_refuse_zero_instances() {
        let quotas = Quotas::default().updated(&QuotasUpdate { functions: Some(2), ..Default::default() }).unwrap();
        assert_eq!((quotas.functions, quotas.instances), (2, 4));
        let refused = quotas.updated(&QuotasUpdate { instances: Some(0), ..Default::default() }).unwrap_err();
        assert_eq!(refused.cause, "invalid-quotas");
    }
}
