//! The CUDA C kernel sources and their compilation: NVRTC compiles each source for the
//! device's architecture once per process; the PTX is cached on disk by source hash and
//! architecture, so later processes skip NVRTC.

use std::path::{Path, PathBuf};

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use sha2::{Digest, Sha256};

/// Every kernel family, by file name; embedded so the binary carries its kernels.
pub const KERNEL_SOURCES: [(&str, &str); 5] = [
    ("expr", include_str!("../../kernels/expr.cu")),
    ("filter", include_str!("../../kernels/filter.cu")),
    ("gather", include_str!("../../kernels/gather.cu")),
    ("groupby", include_str!("../../kernels/groupby.cu")),
    ("sort", include_str!("../../kernels/sort.cu")),
];

/// Why a kernel source did not compile: names the source, architecture and NVRTC's log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("NVRTC could not compile kernels/{name}.cu for {arch}: {log}")]
pub struct CompileError {
    pub name: String,
    pub arch: String,
    pub log: String,
}

/// Whether the NVRTC library can be loaded (cudarc panics on first use when it cannot).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its known names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one source to PTX for `arch` (`sm_80`, `sm_90`, ...). The caller checks
/// [`nvrtc_present`] first. FMA contraction is off so float results match the CPU's.
pub fn compile_kernel(name: &str, source: &str, arch: &str) -> Result<String, CompileError> {
    let virtual_arch = arch.replacen("sm_", "compute_", 1);
    let options = CompileOptions {
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={virtual_arch}")],
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, options).map_err(|e| CompileError {
        name: name.to_string(),
        arch: arch.to_string(),
        log: match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })?;
    Ok(ptx.to_src())
}

/// Where the PTX of `source` for `arch` is cached under `dir`.
pub(crate) fn cache_path(dir: &Path, name: &str, source: &str, arch: &str) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update(arch.as_bytes());
    let digest = hex::encode(hash.finalize());
    dir.join(format!("{name}-{arch}-{}.ptx", &digest[..16]))
}

/// The PTX of one source: read from the disk cache, else compiled and written there (a failed
/// cache write only costs a recompile next time).
pub(crate) fn cached_ptx(dir: Option<&Path>, name: &str, source: &str, arch: &str) -> Result<String, CompileError> {
    let Some(dir) = dir else { return compile_kernel(name, source, arch) };
    let path = cache_path(dir, name, source, arch);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        tracing::debug!(kernel = name, arch, path = %path.display(), "PTX from the disk cache");
        return Ok(ptx);
    }
    let ptx = compile_kernel(name, source, arch)?;
    let staged = path.with_extension(format!("ptx.{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&staged, &ptx)).and_then(|()| std::fs::rename(&staged, &path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot cache compiled kernels");
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SLUICE_REQUIRE_NVRTC=1` (set by scripts/test, which installs NVRTC) turns a missing
    /// library into a failure instead of a skip.
    fn nvrtc_or_skip() -> bool {
        if nvrtc_present() {
            return true;
        }
        assert!(
            std::env::var("SLUICE_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded; put tools/venv-nvrtc's nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH"
        );
        eprintln!("skipped: libnvrtc is not on the library path (scripts/test installs it)");
        false
    }

    #[test]
    fn every_kernel_compiles_for_sm80_and_sm90() {
        if !nvrtc_or_skip() {
            return;
        }
        for arch in ["sm_80", "sm_90"] {
            for (name, source) in KERNEL_SOURCES {
                let ptx = compile_kernel(name, source, arch).unwrap_or_else(|e| panic!("{e}"));
                let target = format!(".target {arch}");
                assert!(ptx.contains(&target), "{name} for {arch}: no `{target}` in the PTX");
                assert!(ptx.contains(".visible .entry"), "{name}: no kernel entry in the PTX");
            }
        }
    }

    #[test]
    fn compile_errors_name_source_and_log() {
        if !nvrtc_or_skip() {
            return;
        }
        let err = compile_kernel("broken", "extern \"C\" __global__ void k() { undefined_call(); }", "sm_80").unwrap_err();
        assert!(err.to_string().starts_with("NVRTC could not compile kernels/broken.cu for sm_80"), "{err}");
        assert!(err.log.contains("undefined_call"), "{}", err.log);
    }

    #[test]
    fn ptx_is_cached_by_source_and_arch() {
        if !nvrtc_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (name, source) = KERNEL_SOURCES[2];
        let first = cached_ptx(Some(dir.path()), name, source, "sm_80").unwrap();
        let path = cache_path(dir.path(), name, source, "sm_80");
        assert!(path.exists());
        assert_ne!(path, cache_path(dir.path(), name, source, "sm_90"));
        assert_ne!(path, cache_path(dir.path(), name, "// changed\n", "sm_80"));
        // A second load reads the file: a marker written into it comes back.
        std::fs::write(&path, format!("{first}// cached\n")).unwrap();
        assert!(cached_ptx(Some(dir.path()), name, source, "sm_80").unwrap().ends_with("// cached\n"));
    }
}
