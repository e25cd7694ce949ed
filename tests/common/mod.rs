//! Shared helpers of the end-to-end tests: the guest programs (built once, shared by every
//! test), a host runtime, the `sluice` binary, and Parquet read back from disk.

pub mod control_plane;
pub mod streams;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_manifest::Manifest;
use sluice_runtime::{Runtime, RuntimeConfig};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Builds every guest program in `functions/` once per test process.
pub fn build_functions() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(repo_root().join("functions"))
            .status()
            .expect("running cargo for the guest programs");
        assert!(status.success(), "building functions/ failed");
    });
}

/// The path of a built guest component, e.g. `misbehave` or `wrong-world`.
pub fn component(name: &str) -> PathBuf {
    build_functions();
    repo_root().join("target/wasm/wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// A function's manifest from `functions/<name>`, with its component built.
pub fn manifest(name: &str) -> Manifest {
    build_functions();
    Manifest::load(&repo_root().join("functions").join(name)).expect("loading the function's manifest")
}

/// One host runtime shared by the tests of a process, as one host serves many functions.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let config = RuntimeConfig {
                cache_dir: Some(repo_root().join("target/sluice-test-cache")),
                ..RuntimeConfig::default()
            };
            Arc::new(Runtime::new(config).expect("starting the runtime"))
        })
        .clone()
}

/// The `sluice` binary of the same build profile as this test.
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("sluice");
    assert!(bin.is_file(), "{} is missing: build it first (`cargo build --release -p sluice`)", bin.display());
    bin
}

/// Every file under `dir` (recursively) whose path satisfies `keep`, sorted by path.
fn files_under(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if keep(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every Parquet file under `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |path| path.extension().is_some_and(|e| e == "parquet"))
}

/// Files whose names mark them as unfinished writes (temporaries left behind).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |path| path.to_string_lossy().ends_with(".tmp"))
}

/// Reads every row group of every Parquet file under `dir`.
pub fn read_parquet(dir: &Path) -> Vec<RecordBatch> {
    parquet_files(dir)
        .iter()
        .flat_map(|path| {
            let file = std::fs::File::open(path).expect("opening a Parquet file");
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap_or_else(|e| panic!("{} is not valid Parquet: {e}", path.display()))
                .build()
                .expect("building the Parquet reader");
            reader.map(|batch| batch.expect("reading a row group")).collect::<Vec<_>>()
        })
        .collect()
}

/// Total rows in batches read back.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
