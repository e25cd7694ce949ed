//! `sluice serve`: runs every stream trigger (Kafka, HTTP, cron) the functions' manifests
//! name, until SIGTERM or SIGINT; then stops taking events, settles and commits what is in
//! flight, and exits 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sluice_manifest::{Manifest, TriggerSpec};
use sluice_runtime::{FunctionSlot, Runtime, RuntimeConfig};
use sluice_triggers::{
    BatchLimits, CronSchedule, CronStats, HttpFunction, KafkaSource, RetryPolicy, Shutdown, ShutdownSignal,
    http_router, run_cron,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::build;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A function's directory (holding `sluice.toml`); repeat for several functions.
    #[arg(long = "function", required = true)]
    functions: Vec<PathBuf>,
    /// Where each function's sinks and dead-letter files go: `<data-dir>/<function>`.
    #[arg(long, default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Address of the HTTP listener for functions with an `http` trigger.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(serve_until_signal(args))
}

async fn serve_until_signal(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let (signal_stop, shutdown) = ShutdownSignal::new();
    let mut triggers: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut served_over_http = Vec::new();
    for dir in &args.functions {
        let manifest = Manifest::load(dir)?;
        build::build_if_needed(&manifest, false)?;
        let function = load(&runtime, &manifest, &args.data_dir.join(&manifest.name))?;
        start_triggers(&manifest, &function, &shutdown, &mut triggers, &mut served_over_http)?;
    }
    if !served_over_http.is_empty() {
        let listener = tokio::net::TcpListener::bind(args.http_listen)
            .await
            .with_context(|| format!("binding the HTTP listener to {}", args.http_listen))?;
        tracing::info!(address = %args.http_listen, functions = served_over_http.len(), "http trigger listening");
        let (router, _stats) = http_router(served_over_http);
        let stopped = shutdown.clone().stopped();
        triggers.spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stopped).await.context("http listener")
        });
    }
    if triggers.is_empty() {
        anyhow::bail!("none of the functions names a kafka, http or cron trigger; `sluice run` drives file triggers");
    }
    eprintln!("sluice serve: {} trigger(s) running; SIGTERM or Ctrl-C drains and stops", triggers.len());

    let mut terminate = signal(SignalKind::terminate())?;
    let mut failed = false;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
        Some(ended) = triggers.join_next() => {
            failed |= report(ended);
        }
    }
    signal_stop.stop();
    while let Some(ended) = triggers.join_next().await {
        failed |= report(ended);
    }
    eprintln!("sluice serve: drained and stopped");
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn load(runtime: &Runtime, manifest: &Manifest, data_root: &Path) -> anyhow::Result<Arc<FunctionSlot>> {
    let function = runtime
        .load_function(manifest, data_root)
        .with_context(|| format!("loading {}", manifest.component_path().display()))?;
    Ok(FunctionSlot::new(Arc::new(function)))
}

fn start_triggers(
    manifest: &Manifest,
    function: &Arc<FunctionSlot>,
    shutdown: &Shutdown,
    triggers: &mut JoinSet<anyhow::Result<()>>,
    served_over_http: &mut Vec<HttpFunction>,
) -> anyhow::Result<()> {
    let limits = BatchLimits::from(&manifest.batching);
    let retry = RetryPolicy::from(&manifest.retry);
    for spec in &manifest.triggers {
        match spec {
            TriggerSpec::File { .. } => {
                tracing::info!(function = %manifest.name, "file trigger: driven by `sluice run`, not by serve");
            }
            TriggerSpec::Kafka(kafka) => {
                let source = KafkaSource::new(kafka.clone(), limits, retry);
                let (function, shutdown) = (function.clone(), shutdown.clone());
                triggers.spawn(async move { Ok(source.run(function, shutdown).await?) });
            }
            TriggerSpec::Http(http) => served_over_http.push(HttpFunction {
                function: function.clone(),
                spec: http.clone(),
                limits,
                instances: manifest.limits.instances as usize,
            }),
            TriggerSpec::Cron(cron) => {
                let schedule = CronSchedule::try_from(cron).with_context(|| format!("function `{}`", manifest.name))?;
                let (function, shutdown) = (function.clone(), shutdown.clone());
                triggers.spawn(async move {
                    run_cron(function, schedule, retry, Arc::new(CronStats::default()), shutdown).await;
                    Ok(())
                });
            }
        }
    }
    Ok(())
}

/// Logs how a trigger ended; true when it failed.
fn report(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> bool {
    match ended {
        Ok(Ok(())) => false,
        Ok(Err(error)) => {
            eprintln!("error: {error:#}");
            true
        }
        Err(panic) => {
            eprintln!("error: a trigger panicked: {panic}");
            true
        }
    }
}
