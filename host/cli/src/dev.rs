//! `sluice dev`: the developer loop. Builds a function, serves its stream triggers as `sluice
//! serve` does, watches its sources and, on every save, rebuilds and swaps the new version into
//! the running triggers through its [`FunctionSlot`]; batches already running finish on the old
//! version. A failed build (or a manifest that no longer loads) is printed and the old version
//! keeps serving. Every reload reports its save-to-serving time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use sluice_manifest::{MANIFEST_FILE, Manifest};
use sluice_runtime::{FunctionSlot, Runtime, RuntimeConfig};
use sluice_triggers::ShutdownSignal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::{build, serve};

#[derive(clap::Args)]
pub struct DevArgs {
    /// The function's directory (holding `sluice.toml`).
    function: PathBuf,
    /// Where the function's sinks and dead-letter files go: `<data-dir>/<function>`.
    #[arg(long, default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Address of the HTTP listener for an `http` trigger.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// How often the sources are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
}

pub fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let manifest_path = args.function.join(MANIFEST_FILE);
    anyhow::ensure!(manifest_path.is_file(), "{} does not exist: `sluice dev` takes a function's directory", manifest_path.display());
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let poll = Duration::from_millis(args.poll_ms.max(10));
    // Until a first version builds and loads there is nothing to serve: report why and retry
    // on the next change, as a later failed reload would.
    let (manifest, slot) = loop {
        let seen = Sources::scan(&args.function);
        match first_version(&runtime, &args) {
            Ok(loaded) => break loaded,
            Err(error) => {
                eprintln!("sluice dev: {error:#}");
                eprintln!("sluice dev: nothing serves yet; fix the sources and save to retry");
                while Sources::scan(&args.function) == seen {
                    std::thread::sleep(poll);
                }
            }
        }
    };
    let data_root = args.data_dir.join(&manifest.name);
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let reloader = Reloader { dir: args.function.clone(), name: manifest.name.clone(), runtime, data_root, slot };
    tokio.block_on(serve_and_watch(args, manifest, reloader, poll))
}

fn first_version(runtime: &Runtime, args: &DevArgs) -> anyhow::Result<(Manifest, Arc<FunctionSlot>)> {
    let manifest = Manifest::load(&args.function)?;
    build::build_if_needed(&manifest, false)?;
    let slot = serve::load(runtime, &manifest, &args.data_dir.join(&manifest.name))?;
    Ok((manifest, slot))
}

async fn serve_and_watch(args: DevArgs, manifest: Manifest, reloader: Reloader, poll: Duration) -> anyhow::Result<ExitCode> {
    let (signal_stop, shutdown) = ShutdownSignal::new();
    let mut triggers: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut served_over_http = Vec::new();
    serve::start_triggers(&manifest, &reloader.slot, &shutdown, &mut triggers, &mut served_over_http)?;
    let http = !served_over_http.is_empty();
    if http {
        serve::spawn_http_listener(args.http_listen, served_over_http, &shutdown, &mut triggers).await?;
    }
    anyhow::ensure!(
        !triggers.is_empty(),
        "{} names no kafka, http or cron trigger for `sluice dev` to serve; add one (e.g. [[triggers]] kind = \"http\") or use `sluice run`",
        manifest.dir.join(MANIFEST_FILE).display()
    );
    if http {
        eprintln!("sluice dev: {} answers at http://{}/functions/{}", manifest.name, args.http_listen, manifest.name);
    }
    eprintln!("sluice dev: watching {} (src/, Cargo.toml, sluice.toml); Ctrl-C stops", reloader.dir.display());

    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || reloader.watch(&watching, poll))
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut failed = false;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
        Some(ended) = triggers.join_next() => failed |= serve::report(ended),
    }
    watching.store(false, Ordering::Relaxed);
    signal_stop.stop();
    while let Some(ended) = triggers.join_next().await {
        failed |= serve::report(ended);
    }
    watcher.join().map_err(|_| anyhow::anyhow!("the source watcher panicked"))?;
    eprintln!("sluice dev: stopped");
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Rebuilds the function from its directory and swaps it into the triggers' slot.
struct Reloader {
    dir: PathBuf,
    name: String,
    runtime: Arc<Runtime>,
    data_root: PathBuf,
    slot: Arc<FunctionSlot>,
}

/// How long one reload took, from the save that caused it to the new version taking batches.
struct Reload {
    build: Duration,
    load: Duration,
    save_to_serving: Duration,
}

impl Reloader {
    /// Polls the sources until `watching` turns false; each change is one reload.
    fn watch(&self, watching: &AtomicBool, poll: Duration) {
        let mut seen = Sources::scan(&self.dir);
        while watching.load(Ordering::Relaxed) {
            std::thread::sleep(poll);
            let now = Sources::scan(&self.dir);
            if now == seen {
                continue;
            }
            // Saved at the newest modification; a deletion has none, so it counts from now.
            let saved_at = now.newest().filter(|newest| Some(*newest) > seen.newest()).unwrap_or_else(SystemTime::now);
            seen = now;
            eprintln!("sluice dev: change detected, rebuilding {}", self.name);
            match self.reload(saved_at) {
                Ok(reload) => {
                    let save_to_serving_ms = reload.save_to_serving.as_millis();
                    let (build_ms, load_ms) = (reload.build.as_millis(), reload.load.as_millis());
                    tracing::info!(function = %self.name, save_to_serving_ms, build_ms, load_ms, "reloaded");
                    eprintln!(
                        "sluice dev: reloaded {} in {save_to_serving_ms} ms from save to serving (build {build_ms} ms, load {load_ms} ms)",
                        self.name
                    );
                }
                Err(error) => {
                    tracing::warn!(function = %self.name, error = %format!("{error:#}"), "reload failed");
                    eprintln!("sluice dev: reload failed, the previous version keeps serving: {error:#}");
                }
            }
        }
    }

    fn reload(&self, saved_at: SystemTime) -> anyhow::Result<Reload> {
        let manifest = Manifest::load(&self.dir)?;
        anyhow::ensure!(
            manifest.name == self.name,
            "the manifest now names `{}`; a running `sluice dev` keeps serving `{}` (restart it to rename)",
            manifest.name,
            self.name
        );
        let started = Instant::now();
        build::build_if_needed(&manifest, true)?;
        let build = started.elapsed();
        let loading = Instant::now();
        let function = self
            .runtime
            .load_function(&manifest, &self.data_root)
            .with_context(|| format!("loading {}", manifest.component_path().display()))?;
        self.slot.replace(Arc::new(function));
        let load = loading.elapsed();
        let save_to_serving = SystemTime::now().duration_since(saved_at).unwrap_or_default();
        Ok(Reload { build, load, save_to_serving })
    }
}

/// The watched files (everything under `src/`, `Cargo.toml`, `sluice.toml`) with their
/// modification times and sizes.
#[derive(PartialEq, Eq)]
struct Sources(Vec<(PathBuf, SystemTime, u64)>);

impl Sources {
    fn scan(dir: &Path) -> Sources {
        let mut files = Vec::new();
        let mut pending = vec![dir.join("src"), dir.join("Cargo.toml"), dir.join(MANIFEST_FILE)];
        while let Some(path) = pending.pop() {
            let Ok(metadata) = path.metadata() else { continue };
            if metadata.is_dir() {
                let entries = std::fs::read_dir(&path).into_iter().flatten().flatten();
                pending.extend(entries.map(|entry| entry.path()));
            } else if let Ok(modified) = metadata.modified() {
                files.push((path, modified, metadata.len()));
            }
        }
        files.sort();
        Sources(files)
    }

    fn newest(&self) -> Option<SystemTime> {
        self.0.iter().map(|(_, modified, _)| *modified).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_under_src_or_to_either_manifest_is_seen_and_build_output_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/nested")).unwrap();
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        for file in ["src/lib.rs", "src/nested/mod.rs", "Cargo.toml", "sluice.toml"] {
            std::fs::write(dir.path().join(file), "v1").unwrap();
        }
        let before = Sources::scan(dir.path());
        assert_eq!(before.0.len(), 4);
        std::fs::write(dir.path().join("target/out.wasm"), "built").unwrap();
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        assert!(Sources::scan(dir.path()) == before, "build output and other files are not watched");
        for file in ["src/nested/mod.rs", "sluice.toml"] {
            std::fs::write(dir.path().join(file), "v2 is longer").unwrap();
            assert!(Sources::scan(dir.path()) != before, "{file} changed");
            std::fs::write(dir.path().join(file), "v1").unwrap();
        }
        std::fs::remove_file(dir.path().join("src/lib.rs")).unwrap();
        assert_eq!(Sources::scan(dir.path()).0.len(), 3);
    }
}
