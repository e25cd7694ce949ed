//! `sluice run` and `sluice demo`: a function over files, through the file trigger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_manifest::{DevicePreference, FileMode, Manifest, TriggerSpec};
use sluice_runtime::{Runtime, RuntimeConfig};
use sluice_triggers::{FileRun, FileTrigger, Progress, resolve_inputs};

use crate::{build, datagen, render};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The function's directory (holding `sluice.toml`).
    function: PathBuf,
    /// Input: a file, a directory of `*.jsonl`, or a glob pattern.
    #[arg(long)]
    input: String,
    /// Where sinks and dead-letter files go (default: `sluice-data/<function>`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the manifest's file-trigger mode.
    #[arg(long, value_parser = parse_mode)]
    mode: Option<FileMode>,
    /// Rebuild the component even if it looks up to date.
    #[arg(long)]
    build: bool,
    /// Compile without the on-disk cache of compiled components.
    #[arg(long)]
    no_cache: bool,
    /// Threads of the host's dataframe engine (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Where frames are computed, overriding the manifest's `device`: auto | cpu | cuda.
    #[arg(long, value_parser = parse_device)]
    device: Option<DevicePreference>,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Hours of generated data (one row per company every 5 s; 62 h is the full 1.2 GB benchmark).
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Where the dataset and the Parquet output go.
    #[arg(long, default_value = "sluice-data/demo")]
    dir: PathBuf,
}

/// `--device` of `sluice run` and `sluice serve`.
pub(crate) fn parse_device(text: &str) -> Result<DevicePreference, String> {
    match text {
        "auto" => Ok(DevicePreference::Auto),
        "cpu" => Ok(DevicePreference::Cpu),
        "cuda" => Ok(DevicePreference::Cuda),
        other => Err(format!("unknown device `{other}`: use `auto`, `cpu` or `cuda`")),
    }
}

fn parse_mode(text: &str) -> Result<FileMode, String> {
    match text {
        "whole" => Ok(FileMode::Whole),
        "chunked" => Ok(FileMode::Chunked),
        other => Err(format!("unknown mode `{other}`: use `whole` or `chunked`")),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(threads) = args.threads {
        anyhow::ensure!(threads > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("cannot size the engine's thread pool")?;
    }
    let manifest = Manifest::load(&args.function)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| Path::new("sluice-data").join(&manifest.name));
    let inputs = resolve_inputs(&args.input)?;
    let run = execute(&manifest, &inputs, &data_dir, args.mode, args.build, !args.no_cache, args.device)?;
    // The handler's replies are its result: print them as they are, for pipes and scripts.
    for reply in &run.last_replies {
        std::io::Write::write_all(&mut std::io::stdout(), &reply.body)?;
    }
    render::summary(&run, &data_dir);
    Ok(if run.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let function = example_function_dir();
    let manifest = Manifest::load(&function)?;
    std::fs::create_dir_all(&args.dir)?;
    let input = args.dir.join(format!("metrics-{}h.jsonl", args.hours));
    if !input.is_file() {
        let spec = datagen::SeedSpec { hours: args.hours, ..Default::default() };
        eprintln!("generating {} rows of company metrics into {}", spec.rows(), input.display());
        datagen::write_seed_dataset(&input, &spec).with_context(|| format!("writing {}", input.display()))?;
    }
    let run = execute(&manifest, &[input], &args.dir, Some(FileMode::Whole), false, true, None)?;
    println!("\nTen busiest companies (by mean CPU utilization):\n");
    for reply in &run.last_replies {
        println!("{}", render::json_lines_table(&reply.body));
    }
    render::summary(&run, &args.dir);
    Ok(if run.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The example handler shipped with the repository, found from the working directory or
/// from where this binary was built.
fn example_function_dir() -> PathBuf {
    let relative = Path::new("functions/log-aggregator");
    if relative.is_dir() {
        return relative.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn execute(
    manifest: &Manifest,
    inputs: &[PathBuf],
    data_dir: &Path,
    mode: Option<FileMode>,
    force_build: bool,
    cache: bool,
    device: Option<DevicePreference>,
) -> anyhow::Result<FileRun> {
    build::build_if_needed(manifest, force_build)?;
    let mut trigger = file_trigger(manifest);
    if let Some(mode) = mode {
        trigger.mode = mode;
    }
    let config = RuntimeConfig {
        cache_dir: if cache { RuntimeConfig::default().cache_dir } else { None },
        device,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config)?;
    let function = runtime
        .load_function(manifest, data_dir)
        .with_context(|| format!("loading {}", manifest.component_path().display()))?;
    let total: u64 = inputs.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let progress = ProgressReporter::new(total, trigger.mode);
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let run = tokio.block_on(trigger.run(&function, inputs, &progress));
    progress.bar.finish_and_clear();
    Ok(run?)
}

/// The manifest's file trigger, or a `whole`-mode default when it declares none.
fn file_trigger(manifest: &Manifest) -> FileTrigger {
    let (mode, bad_lines) = manifest
        .triggers
        .iter()
        .find_map(|trigger| match trigger {
            TriggerSpec::File { mode, bad_lines } => Some((*mode, *bad_lines)),
            _ => None,
        })
        .unwrap_or_default();
    FileTrigger { mode, bad_lines, batching: manifest.batching.clone() }
}

/// A progress bar on stderr: bytes done for chunked runs, a spinner for a single whole batch.
struct ProgressReporter {
    bar: ProgressBar,
}

impl ProgressReporter {
    fn new(total: u64, mode: FileMode) -> Self {
        let bar = match mode {
            FileMode::Chunked => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                        .expect("valid progress template"),
                );
                bar
            }
            FileMode::Whole => {
                let bar = ProgressBar::new_spinner();
                bar.set_message(format!("handling {} as one batch", render::bytes(total)));
                bar
            }
        };
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        ProgressReporter { bar }
    }
}

impl Progress for ProgressReporter {
    fn batch_done(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
