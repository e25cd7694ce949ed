//! The CUDA C kernel sources and their compilation: NVRTC compiles each source to machine code
//! (CUBIN) for the device's architecture once per process; the CUBIN is cached on disk by
//! source hash and architecture, so later processes skip NVRTC. Machine code, not PTX, so a
//! driver older than the NVRTC release still loads it (no PTX JIT involved).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};
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
    unsafe { sys::is_culib_present() }
}

/// Compiles one source to a CUBIN for `arch` (`sm_80`, `sm_90`, ...). The caller checks
/// [`nvrtc_present`] first. FMA contraction is off so float results match the CPU's.
pub fn compile_kernel(name: &str, source: &str, arch: &str) -> Result<Vec<u8>, CompileError> {
    let error = |log: String| CompileError { name: name.to_string(), arch: arch.to_string(), log };
    let source = CString::new(source).map_err(|_| error("the source contains a NUL byte".into()))?;
    let file = CString::new(format!("{name}.cu")).map_err(|_| error("the name contains a NUL byte".into()))?;
    let program = result::create_program(&source, Some(&file)).map_err(|e| error(format!("{e:?}")))?;
    let options = [format!("--gpu-architecture={arch}"), "--fmad=false".to_string()];
    // SAFETY: `program` was created above and is destroyed once, after its last use; the log
    // and the CUBIN are copied into buffers of the sizes NVRTC reports.
    let compiled = unsafe {
        match result::compile_program(program, &options) {
            Err(e) => Err(error(match result::get_program_log(program) {
                Ok(log) => CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned(),
                Err(_) => format!("{e:?}"),
            })),
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(program, &mut size).result().map_err(|e| error(format!("{e:?}")))?;
                let mut cubin = vec![0u8; size];
                sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()).result().map_err(|e| error(format!("{e:?}")))?;
                Ok(cubin)
            }
        }
    };
    // SAFETY: as above; a failed destroy leaks one program, nothing worse.
    let _ = unsafe { result::destroy_program(program) };
    compiled
}

/// Where the CUBIN of `source` for `arch` is cached under `dir`.
pub(crate) fn cache_path(dir: &Path, name: &str, source: &str, arch: &str) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update(arch.as_bytes());
    let digest = hex::encode(hash.finalize());
    dir.join(format!("{name}-{arch}-{}.cubin", &digest[..16]))
}

/// The CUBIN of one source: read from the disk cache, else compiled and written there (a
/// failed cache write only costs a recompile next time).
pub(crate) fn cached_cubin(dir: Option<&Path>, name: &str, source: &str, arch: &str) -> Result<Vec<u8>, CompileError> {
    let Some(dir) = dir else { return compile_kernel(name, source, arch) };
    let path = cache_path(dir, name, source, arch);
    if let Ok(cubin) = std::fs::read(&path) {
        tracing::debug!(kernel = name, arch, path = %path.display(), "kernels from the disk cache");
        return Ok(cubin);
    }
    let cubin = compile_kernel(name, source, arch)?;
    let staged = path.with_extension(format!("cubin.{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&staged, &cubin)).and_then(|()| std::fs::rename(&staged, &path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot cache compiled kernels");
    }
    Ok(cubin)
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
                let cubin = compile_kernel(name, source, arch).unwrap_or_else(|e| panic!("{e}"));
                assert!(cubin.starts_with(b"\x7fELF"), "{name} for {arch}: not an ELF CUBIN");
                // Every `extern "C" __global__` function is a symbol of the CUBIN.
                for kernel in source.split("__global__ void ").skip(1).map(|rest| &rest[..rest.find('(').unwrap()]) {
                    assert!(cubin.windows(kernel.len()).any(|w| w == kernel.as_bytes()), "{name} for {arch}: no kernel `{kernel}`");
                }
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
    fn cubin_is_cached_by_source_and_arch() {
        if !nvrtc_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (name, source) = KERNEL_SOURCES[2];
        let first = cached_cubin(Some(dir.path()), name, source, "sm_80").unwrap();
        let path = cache_path(dir.path(), name, source, "sm_80");
        assert!(path.exists());
        assert_ne!(path, cache_path(dir.path(), name, source, "sm_90"));
        assert_ne!(path, cache_path(dir.path(), name, "// changed\n", "sm_80"));
        // A second load reads the file: a marker written into it comes back.
        std::fs::write(&path, [first.as_slice(), b"cached"].concat()).unwrap();
        assert!(cached_cubin(Some(dir.path()), name, source, "sm_80").unwrap().ends_with(b"cached"));
    }
}
