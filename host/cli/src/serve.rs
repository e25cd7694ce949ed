//! `sluice serve`: runs every stream trigger (Kafka, HTTP, cron) the functions' manifests
//! name, and the control plane's REST API (deployed functions, tenants, metrics), until
//! SIGTERM or SIGINT; then stops taking events, settles and commits what is in flight, and
//! exits 0.
//!
//! The control plane runs when no `--function` is given, or when any of its options is
//! (`--api-listen`, `--state-dir`, `--admin-token-file`, `SLUICE_ADMIN_TOKEN`), so several
//! `--function` hosts on one machine do not contend for its port.

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

use sluice_server::{ControlPlane, ServerConfig};

use crate::build;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A function's directory (holding `sluice.toml`); repeat for several functions.
    #[arg(long = "function")]
    functions: Vec<PathBuf>,
    /// Where each function's sinks and dead-letter files go: `<data-dir>/<function>`, and for
    /// deployed functions `<data-dir>/<tenant>/<function>`.
    #[arg(long, default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Address of the HTTP listener for functions with an `http` trigger.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Address of the control plane's REST API [default: 127.0.0.1:8090].
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// The function store: tenants, versions, components [default: sluice-state].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A file holding the admin token (else `SLUICE_ADMIN_TOKEN`); without one, tenants cannot be managed.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Deploys with a larger component are refused with 413.
    #[arg(long, default_value_t = 64 << 20)]
    max_component_bytes: usize,
    /// Guest log lines kept per function and second; more are dropped and counted.
    #[arg(long, default_value_t = 200)]
    log_lines_per_second: u32,
    /// Where frames are computed, overriding every manifest's `device`: auto | cpu | cuda.
    #[arg(long, value_parser = crate::run::parse_device)]
    device: Option<sluice_manifest::DevicePreference>,
}

impl ServeArgs {
    /// The admin token, when one is configured.
    fn admin_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the admin token file {}", path.display()))?;
            let token = text.trim().to_string();
            anyhow::ensure!(!token.is_empty(), "the admin token file {} is empty", path.display());
            return Ok(Some(token));
        }
        Ok(std::env::var("SLUICE_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty()))
    }

    fn control_plane_wanted(&self, admin_token: &Option<String>) -> bool {
        self.functions.is_empty() || self.api_listen.is_some() || self.state_dir.is_some() || admin_token.is_some()
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(serve_until_signal(args))
}

async fn serve_until_signal(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let admin_token = args.admin_token()?;
    let control_plane_wanted = args.control_plane_wanted(&admin_token);
    // Installed before any function loads, so every function's metrics are recorded.
    let metrics = if control_plane_wanted { Some(sluice_server::install_recorder()?) } else { None };
    let runtime = Arc::new(Runtime::new(RuntimeConfig { device: args.device, ..RuntimeConfig::default() })?);
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
        spawn_http_listener(args.http_listen, served_over_http, &shutdown, &mut triggers).await?;
    }
    let control_plane = if control_plane_wanted {
        let config = ServerConfig {
            state_dir: args.state_dir.clone().unwrap_or_else(|| PathBuf::from("sluice-state")),
            data_dir: args.data_dir.clone(),
            admin_token,
            max_component_bytes: args.max_component_bytes,
            log_lines_per_second: args.log_lines_per_second,
        };
        let address = args.api_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090)));
        Some(spawn_control_plane(config, runtime.clone(), metrics, address, &shutdown, &mut triggers).await?)
    } else {
        None
    };
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
    if let Some(control_plane) = &control_plane {
        control_plane.shutdown().await;
    }
    while let Some(ended) = triggers.join_next().await {
        failed |= report(ended);
    }
    eprintln!("sluice serve: drained and stopped");
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Binds the API's address, serves the REST API on it until `shutdown`, and restores the
/// function store in the background (`/readyz` answers 503 until it is done).
async fn spawn_control_plane(
    config: ServerConfig,
    runtime: Arc<Runtime>,
    metrics: Option<sluice_server::PrometheusHandle>,
    address: SocketAddr,
    shutdown: &Shutdown,
    triggers: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Arc<ControlPlane>> {
    let max_component_bytes = config.max_component_bytes;
    let plane = ControlPlane::new(config, runtime)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the control plane's API listener to {address}"))?;
    tracing::info!(%address, "control plane listening");
    eprintln!("sluice serve: control plane API on http://{address}");
    let router = sluice_server::router(plane.clone(), metrics, max_component_bytes, shutdown.clone());
    let stopped = shutdown.clone().stopped();
    triggers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stopped).await.context("control plane API") });
    let booting = plane.clone();
    tokio::spawn(async move {
        if let Err(error) = booting.boot().await {
            tracing::error!(%error, "cannot restore the function store");
        }
    });
    Ok(plane)
}

/// Binds `address` and serves the functions' HTTP triggers on it until `shutdown`.
pub(crate) async fn spawn_http_listener(
    address: SocketAddr,
    served_over_http: Vec<HttpFunction>,
    shutdown: &Shutdown,
    triggers: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the HTTP listener to {address}"))?;
    tracing::info!(%address, functions = served_over_http.len(), "http trigger listening");
    let (router, _stats) = http_router(served_over_http);
    let stopped = shutdown.clone().stopped();
    triggers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stopped).await.context("http listener") });
    Ok(())
}

pub(crate) fn load(runtime: &Runtime, manifest: &Manifest, data_root: &Path) -> anyhow::Result<Arc<FunctionSlot>> {
    let function = runtime
        .load_function(manifest, data_root)
        .with_context(|| format!("loading {}", manifest.component_path().display()))?;
    Ok(FunctionSlot::new(Arc::new(function)))
}

pub(crate) fn start_triggers(
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
                let source = KafkaSource::new(kafka.clone(), limits, retry).with_dead_letter_topic(manifest.retry.dead_letter_topic.clone());
                let (function, shutdown) = (function.clone(), shutdown.clone());
                triggers.spawn(async move { Ok(source.run(function, shutdown).await?) });
            }
            TriggerSpec::Http(http) => served_over_http.push(HttpFunction {
                function: function.clone(),
                spec: http.clone(),
                limits,
                instances: manifest.limits.max_instances as usize,
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
pub(crate) fn report(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> bool {
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
