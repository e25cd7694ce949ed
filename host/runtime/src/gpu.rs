//! Which backend computes a function's frames: the manifest's `device`, unless the host's
//! `--device` flag overrides it. `cuda` without a usable GPU is a load error for that function;
//! `auto` falls back to the CPU (logged once per process). Each invocation of a CUDA function
//! gets its own stream on the one shared device; the frames of all its invocations are charged
//! to one budget of the function's `gpu-memory-mb`, itself within its tenant's quota if any.

use std::path::Path;
use std::sync::Arc;

use sluice_frame::cuda::{self, CudaDevice, CudaSession, DeviceRequest, GpuBudget, Placement};
use sluice_manifest::DevicePreference;

use crate::error::LoadError;

/// A function's share of the GPU.
#[derive(Debug)]
pub struct FunctionGpu {
    device: Arc<CudaDevice>,
    budget: Arc<GpuBudget>,
    name: String,
}

impl FunctionGpu {
    /// A session for one invocation, charged to the function's budget; `None` (the CPU serves
    /// this invocation) if the driver cannot make a stream.
    pub fn session(&self) -> Option<Arc<CudaSession>> {
        match self.device.session(self.budget.clone()) {
            Ok(session) => Some(session),
            Err(error) => {
                tracing::warn!(function = %self.name, %error, "no CUDA stream; this invocation runs on the CPU");
                None
            }
        }
    }

    /// Bytes the function's frames hold on the device now.
    pub fn used_bytes(&self) -> u64 {
        self.budget.used()
    }
}

fn request(preference: DevicePreference) -> DeviceRequest {
    match preference {
        DevicePreference::Auto => DeviceRequest::Auto,
        DevicePreference::Cpu => DeviceRequest::Cpu,
        DevicePreference::Cuda => DeviceRequest::Cuda,
    }
}

/// Places a function: `host_override` (the `--device` flag) wins over the manifest's choice.
pub(crate) fn place(
    function: &str,
    manifest_choice: DevicePreference,
    host_override: Option<DevicePreference>,
    gpu_memory_mb: u64,
    tenant_budget: Option<&Arc<GpuBudget>>,
    kernel_cache: Option<&Path>,
) -> Result<Option<FunctionGpu>, LoadError> {
    let chosen = host_override.unwrap_or(manifest_choice);
    let placement = cuda::select(request(chosen), kernel_cache)
        .map_err(|reason| LoadError::DeviceUnavailable { function: function.to_string(), reason: reason.to_string() })?;
    Ok(match placement {
        Placement::Cpu => None,
        Placement::Cuda(device) => {
            tracing::info!(function, gpu = device.name(), gpu_memory_mb, "function runs on the CUDA backend");
            let owner = format!("function `{function}`");
            let budget = match tenant_budget {
                Some(tenant) => GpuBudget::within(owner, gpu_memory_mb << 20, tenant.clone()),
                None => GpuBudget::new(owner, gpu_memory_mb << 20),
            };
            Some(FunctionGpu { device, budget, name: function.to_string() })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI has no GPU driver: `cuda` is a load error naming the function and why, `auto` and
    /// `cpu` load on the CPU, and the host flag overrides the manifest either way.
    #[test]
    fn placement_without_a_gpu() {
        if cuda::driver_present() {
            eprintln!("skipped: this machine has a CUDA driver");
            return;
        }
        let err = place("agg", DevicePreference::Cuda, None, 64, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function `agg`: device `cuda` was requested, but no CUDA driver: libcuda cannot be loaded; use `auto` or `cpu`"
        );
        assert!(place("agg", DevicePreference::Auto, None, 64, None, None).unwrap().is_none());
        assert!(place("agg", DevicePreference::Cpu, None, 64, None, None).unwrap().is_none());
        assert!(place("agg", DevicePreference::Cuda, Some(DevicePreference::Cpu), 64, None, None).unwrap().is_none());
        assert!(place("agg", DevicePreference::Cpu, Some(DevicePreference::Cuda), 64, None, None).is_err());
    }
}
