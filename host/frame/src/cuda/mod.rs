//! The CUDA backend: frames whose columns live in GPU memory, operated on by CUDA C kernels
//! (`host/frame/kernels/*.cu`) that NVRTC compiles at run time for the device's architecture.
//!
//! cudarc loads `libcuda` and `libnvrtc` dynamically, so the host builds and runs without a
//! CUDA toolkit; where either library or a GPU is missing, [`select`] says why and the CPU
//! backend serves. An operation the device does not run (several sort or group keys, float
//! group keys, string-valued expressions) or that does not fit the budget runs on the CPU for
//! that call; the result returns to the device when it fits.

mod budget;
mod device;
mod exec;
mod kernels;
mod layout;
mod program;

use std::path::Path;
use std::sync::Arc;

pub use budget::{BudgetError, GpuBudget, GpuReservation};
pub use device::{CudaDevice, CudaSession, CudaUnavailable, DeviceFrame};
pub use kernels::{CompileError, KERNEL_SOURCES, compile_kernel, nvrtc_present};

use crate::backend::SortKey;
use crate::error::FrameError;
use crate::expr::Expr;
use crate::frame::Frame;
use device::GpuError;

/// Whether the CUDA driver library (libcuda) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Which backend a function asks for (the manifest's `device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// CUDA where it works, else the CPU.
    Auto,
    Cpu,
    /// CUDA or a load error.
    Cuda,
}

/// Where a function's frames are computed.
#[derive(Clone, Debug)]
pub enum Placement<D> {
    Cpu,
    Cuda(D),
}

/// Resolves a request against what `probe` finds: `auto` falls back to the CPU, `cuda` fails
/// with the reason. The probe only runs when CUDA may be used.
pub fn choose<D>(request: DeviceRequest, probe: impl FnOnce() -> Result<D, CudaUnavailable>) -> Result<Placement<D>, CudaUnavailable> {
    match request {
        DeviceRequest::Cpu => Ok(Placement::Cpu),
        DeviceRequest::Cuda => probe().map(Placement::Cuda),
        DeviceRequest::Auto => Ok(probe().map_or(Placement::Cpu, Placement::Cuda)),
    }
}

/// [`choose`] with the process's real device; kernels are cached under `kernel_cache`.
/// Logs once per process which backend `auto` gets and why.
pub fn select(request: DeviceRequest, kernel_cache: Option<&Path>) -> Result<Placement<Arc<CudaDevice>>, CudaUnavailable> {
    let probe = || CudaDevice::shared(kernel_cache);
    let placement = choose(request, probe)?;
    if request == DeviceRequest::Auto {
        static LOGGED: std::sync::Once = std::sync::Once::new();
        LOGGED.call_once(|| match (&placement, CudaDevice::shared(kernel_cache)) {
            (Placement::Cuda(device), _) => tracing::info!(gpu = device.name(), arch = device.arch(), "device auto: the CUDA backend serves"),
            (Placement::Cpu, Err(reason)) => tracing::info!(%reason, "device auto: the CPU backend serves"),
            (Placement::Cpu, Ok(_)) => {}
        });
    }
    Ok(placement)
}

impl DeviceFrame {
    /// Runs `gpu` on the device; what it does not run there runs as `cpu` on the host copy,
    /// and that result moves back to the device when it fits.
    fn run(
        self: &Arc<Self>,
        op: &'static str,
        gpu: impl FnOnce(&DeviceFrame) -> Result<DeviceFrame, GpuError>,
        cpu: impl FnOnce(&Frame) -> Result<Frame, FrameError>,
    ) -> Result<Frame, FrameError> {
        match gpu(self) {
            Ok(frame) => Ok(Frame::on_device(Arc::new(frame))),
            Err(GpuError::Driver(error)) => Err(FrameError::Device(format!("{op} on the GPU: {error}"))),
            Err(reason) => {
                tracing::debug!(op, %reason, "running on the CPU backend");
                let host = Frame::new(self.record_batch()?.clone());
                Ok(self.session.adopt(cpu(&host)?))
            }
        }
    }

    pub(crate) fn project(self: &Arc<Self>, exprs: &[Expr]) -> Result<Frame, FrameError> {
        self.run("project", |d| d.try_project(exprs), |f| f.select(exprs))
    }

    pub(crate) fn filter(self: &Arc<Self>, predicate: &Expr) -> Result<Frame, FrameError> {
        self.run("filter", |d| d.try_filter(predicate), |f| f.filter(predicate))
    }

    pub(crate) fn group_by(self: &Arc<Self>, keys: &[String], aggs: &[Expr]) -> Result<Frame, FrameError> {
        self.run("group_by", |d| d.try_group_by(keys, aggs), |f| f.group_by(keys, aggs))
    }

    pub(crate) fn sort(self: &Arc<Self>, keys: &[SortKey], limit: Option<usize>) -> Result<Frame, FrameError> {
        let (by, descending): (Vec<String>, Vec<bool>) = keys.iter().map(|k| (k.column.clone(), k.descending)).unzip();
        self.run(
            "sort",
            |d| d.try_sort(keys, limit),
            |f| match limit {
                Some(k) => f.top_k(k, &by[0], descending[0]),
                None => f.sort(&by, &descending),
            },
        )
    }

    /// Concatenates device frames of one invocation; otherwise on the CPU.
    pub(crate) fn concat(frames: &[&Arc<DeviceFrame>]) -> Result<Frame, FrameError> {
        let plain: Vec<&DeviceFrame> = frames.iter().map(|f| f.as_ref()).collect();
        frames[0].run("concat", |_| DeviceFrame::try_concat(&plain), |_| {
            let hosts = frames.iter().map(|f| f.record_batch().map(|b| Frame::new(b.clone()))).collect::<Result<Vec<_>, _>>()?;
            Frame::concat(&hosts.iter().collect::<Vec<_>>())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_missing() -> Result<&'static str, CudaUnavailable> {
        Err(CudaUnavailable::NoDriver)
    }

    #[test]
    fn auto_falls_back_to_cpu_and_cuda_names_why() {
        assert!(matches!(choose(DeviceRequest::Auto, gpu_missing), Ok(Placement::Cpu)));
        let err = choose(DeviceRequest::Cuda, gpu_missing).unwrap_err();
        assert_eq!(err.to_string(), "no CUDA driver: libcuda cannot be loaded");
        assert!(matches!(choose(DeviceRequest::Auto, || Ok("gpu")), Ok(Placement::Cuda("gpu"))));
        assert!(matches!(choose(DeviceRequest::Cuda, || Ok("gpu")), Ok(Placement::Cuda("gpu"))));
    }

    #[test]
    fn cpu_never_probes() {
        let placement = choose(DeviceRequest::Cpu, || -> Result<(), _> { panic!("probed a device for `cpu`") });
        assert!(matches!(placement, Ok(Placement::Cpu)));
    }

    /// On a machine without a driver (CI), the real probe says so instead of panicking.
    #[test]
    fn real_probe_without_a_driver_gives_the_reason() {
        if driver_present() {
            eprintln!("skipped: this machine has a CUDA driver");
            return;
        }
        assert!(matches!(select(DeviceRequest::Auto, None), Ok(Placement::Cpu)));
        let err = select(DeviceRequest::Cuda, None).unwrap_err();
        assert!(matches!(err, CudaUnavailable::NoDriver), "{err}");
    }
}
