//! The control plane's live state: tenants (by name and by token hash), each tenant's
//! deployed functions with their slots, triggers, logs and shared limits, kept in step with
//! the store on disk.
//!
//! Mutations (tenant changes, deploys, rollbacks, deletes) are serialized by one lock and
//! compile outside the state lock, so invocations and HTTP requests never wait for a deploy.
//! A deploy is validated completely (manifest, quotas, component, sinks) before anything is
//! stored or swapped: a refused deploy leaves the running version untouched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sluice_manifest::{Manifest, TriggerSpec};
use sluice_frame::cuda::GpuBudget;
use sluice_runtime::{Deployment, Function, FunctionSlot, Runtime, SinkBudget};
use sluice_triggers::{
    BatchLimits, CronSchedule, CronStats, HttpFunction, KafkaSource, RetryPolicy, Shutdown, ShutdownSignal, http_router,
    run_cron,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::auth::{Caller, bearer, check_name, new_token, same_hash, token_hash};
use crate::error::ApiError;
use crate::logs::{FunctionLog, VersionLog};
use crate::quotas::{Quotas, QuotasUpdate};
use crate::store::{FunctionRecord, Store, StoreError, TenantRecord, VersionRecord};

/// Settings of the control plane, from `sluice serve`'s flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the function store lives.
    pub state_dir: PathBuf,
    /// Sinks of a deployed function resolve under `<data-dir>/<tenant>/<function>`.
    pub data_dir: PathBuf,
    /// The admin token in clear (from a file or the environment); only its hash is kept.
    pub admin_token: Option<String>,
    /// Uploads with a larger component are refused with 413.
    pub max_component_bytes: usize,
    /// Guest log lines kept per function and second; more are dropped and counted.
    pub log_lines_per_second: u32,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}

/// The triggers of one deployed function, stopped together.
struct Triggers {
    signal: ShutdownSignal,
    tasks: Vec<JoinHandle<()>>,
    /// Serves the function's HTTP trigger under `/t/{tenant}/functions/{name}`.
    http: Option<Router>,
    /// What the triggers were started from; a deploy that changes it restarts them.
    signature: String,
}

impl Triggers {
    async fn stop(self) {
        self.signal.stop();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct Deployed {
    record: FunctionRecord,
    /// `None` when the active version could not be started on boot (see `last_error`).
    slot: Option<Arc<FunctionSlot>>,
    triggers: Option<Triggers>,
    log: Arc<FunctionLog>,
    last_error: Arc<Mutex<Option<String>>>,
}

struct TenantState {
    record: TenantRecord,
    instances: Arc<Semaphore>,
    sink_budget: Arc<SinkBudget>,
    /// The GPU memory quota, shared by the GPU budgets of the tenant's functions.
    gpu_budget: Arc<GpuBudget>,
    functions: BTreeMap<String, Deployed>,
}

#[derive(Default)]
struct State {
    tenants: BTreeMap<String, TenantState>,
    by_token_hash: HashMap<String, String>,
}

pub struct ControlPlane {
    config: ServerConfig,
    admin_hash: Option<String>,
    runtime: Arc<Runtime>,
    store: Store,
    state: RwLock<State>,
    mutations: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    run: String,
    invocations: AtomicU64,
}

/// A function the caller may use: its slot and where its log goes.
pub struct Target {
    pub slot: Arc<FunctionSlot>,
    pub log: Arc<FunctionLog>,
}

impl ControlPlane {
    pub fn new(config: ServerConfig, runtime: Arc<Runtime>) -> Result<Arc<ControlPlane>, ApiError> {
        let store = Store::open(&config.state_dir)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ApiError::internal(format!("data dir {}: {e}", config.data_dir.display())))?;
        if config.admin_token.is_none() {
            tracing::warn!("no admin token configured: tenant management is disabled");
        }
        let run = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
        );
        Ok(Arc::new(ControlPlane {
            admin_hash: config.admin_token.as_deref().map(token_hash),
            config,
            runtime,
            store,
            state: RwLock::new(State::default()),
            mutations: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            run,
            invocations: AtomicU64::new(0),
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Loads every tenant and starts each function's active version; a version that no
    /// longer starts is reported as `failed` and does not stop the others.
    pub async fn boot(self: &Arc<Self>) -> Result<(), ApiError> {
        let _serialized = self.mutations.lock().await;
        for record in self.store.tenants()? {
            let tenant = record.name.clone();
            let functions = self.store.functions(&tenant)?;
            self.insert_tenant(record);
            for function in functions {
                let name = function.name.clone();
                let log = Arc::new(FunctionLog::new(&tenant, &name, self.config.log_lines_per_second));
                let last_error = Arc::new(Mutex::new(None));
                let active = function.active_version;
                let mut deployed = Deployed { record: function, slot: None, triggers: None, log, last_error };
                match self.start_version(&tenant, &mut deployed, active).await {
                    Ok(()) => tracing::info!(%tenant, function = %name, "function restored"),
                    Err(error) => {
                        tracing::error!(%tenant, function = %name, %error, "cannot restore function");
                        *deployed.last_error.lock().expect("last error lock") = Some(error.message);
                    }
                }
                self.tenant_mut(&tenant, |t| {
                    t.functions.insert(name, deployed);
                });
            }
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops every function's triggers, letting what is in flight finish.
    pub async fn shutdown(&self) {
        let _serialized = self.mutations.lock().await;
        let triggers: Vec<Triggers> = {
            let mut state = self.state.write().expect("state lock");
            state
                .tenants
                .values_mut()
                .flat_map(|t| t.functions.values_mut().filter_map(|f| f.triggers.take()))
                .collect()
        };
        for set in triggers {
            set.stop().await;
        }
    }

    fn insert_tenant(&self, record: TenantRecord) {
        let used = bytes_under(&self.config.data_dir.join(&record.name));
        let tenant = TenantState {
            instances: Arc::new(Semaphore::new(record.quotas.instances as usize)),
            sink_budget: SinkBudget::new(record.quotas.sink_bytes, used),
            gpu_budget: GpuBudget::new(format!("tenant `{}`", record.name), record.quotas.gpu_memory_mb << 20),
            record,
            functions: BTreeMap::new(),
        };
        let mut state = self.state.write().expect("state lock");
        state.by_token_hash.insert(tenant.record.token_sha256.clone(), tenant.record.name.clone());
        state.tenants.insert(tenant.record.name.clone(), tenant);
    }

    fn tenant_mut<T>(&self, tenant: &str, change: impl FnOnce(&mut TenantState) -> T) -> Option<T> {
        self.state.write().expect("state lock").tenants.get_mut(tenant).map(change)
    }

    fn tenant_ref<T>(&self, tenant: &str, read: impl FnOnce(&TenantState) -> T) -> Option<T> {
        self.state.read().expect("state lock").tenants.get(tenant).map(read)
    }

    /// Who the request's bearer token belongs to; 401 for a missing or unknown token.
    pub fn caller(&self, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
        let hash = token_hash(bearer(headers)?);
        if self.admin_hash.as_deref().is_some_and(|admin| same_hash(admin, &hash)) {
            return Ok(Caller::Admin);
        }
        match self.state.read().expect("state lock").by_token_hash.get(&hash) {
            Some(tenant) => Ok(Caller::Tenant(tenant.clone())),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")),
        }
    }

    // ---- tenants (admin) ----

    pub async fn create_tenant(&self, name: &str, quotas: &QuotasUpdate) -> Result<Value, ApiError> {
        check_name("tenant", name)?;
        let quotas = Quotas::default().updated(quotas)?;
        let _serialized = self.mutations.lock().await;
        if self.tenant_ref(name, |_| ()).is_some() {
            return Err(ApiError::new(StatusCode::CONFLICT, "tenant-exists", format!("tenant `{name}` already exists")));
        }
        let token = new_token()?;
        let record = TenantRecord { name: name.to_string(), token_sha256: token_hash(&token), quotas: quotas.clone() };
        self.store.put_tenant(&record)?;
        self.insert_tenant(record);
        tracing::info!(tenant = name, "tenant created");
        Ok(json!({ "name": name, "token": token, "quotas": quotas }))
    }

    pub fn list_tenants(&self) -> Value {
        let state = self.state.read().expect("state lock");
        let tenants: Vec<Value> = state
            .tenants
            .values()
            .map(|t| json!({ "name": t.record.name, "quotas": t.record.quotas, "functions": t.functions.len() }))
            .collect();
        Value::Array(tenants)
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<(), ApiError> {
        let _serialized = self.mutations.lock().await;
        let removed = {
            let mut state = self.state.write().expect("state lock");
            let removed = state.tenants.remove(name);
            if let Some(tenant) = &removed {
                state.by_token_hash.remove(&tenant.record.token_sha256);
            }
            removed
        };
        let tenant = removed.ok_or_else(|| no_tenant(name))?;
        for (_, deployed) in tenant.functions {
            if let Some(triggers) = deployed.triggers {
                triggers.stop().await;
            }
        }
        self.store.delete_tenant(name)?;
        tracing::info!(tenant = name, "tenant deleted");
        Ok(())
    }

    pub async fn set_quotas(&self, name: &str, update: &QuotasUpdate) -> Result<Value, ApiError> {
        let _serialized = self.mutations.lock().await;
        let (current, instances, budget, gpu_budget) = self
            .tenant_ref(name, |t| (t.record.clone(), t.instances.clone(), t.sink_budget.clone(), t.gpu_budget.clone()))
            .ok_or_else(|| no_tenant(name))?;
        let quotas = current.quotas.updated(update)?;
        let record = TenantRecord { quotas: quotas.clone(), ..current.clone() };
        self.store.put_tenant(&record)?;
        // Running invocations keep their permits; a lower cap takes hold as they end.
        let (old, new) = (current.quotas.instances as usize, quotas.instances as usize);
        if new > old {
            instances.add_permits(new - old);
        } else {
            let forgotten = instances.forget_permits(old - new);
            if forgotten < old - new {
                tokio::spawn(shrink_later(instances.clone(), old - new - forgotten));
            }
        }
        budget.set_limit_bytes(quotas.sink_bytes);
        gpu_budget.set_limit(quotas.gpu_memory_mb << 20);
        self.tenant_mut(name, |t| t.record = record);
        Ok(json!({ "name": name, "quotas": quotas }))
    }

    // ---- functions (tenant) ----

    /// Brings every running function's GPU-memory gauge up to date (see `/metrics`).
    pub fn report_gpu_memory(&self) {
        let state = self.state.read().expect("state lock");
        for tenant in state.tenants.values() {
            for slot in tenant.functions.values().filter_map(|f| f.slot.as_ref()) {
                slot.current().report_gpu_memory();
            }
        }
    }

    pub fn list_functions(&self, tenant: &str) -> Value {
        let list = self.tenant_ref(tenant, |t| {
            t.functions
                .values()
                .map(|f| json!({ "name": f.record.name, "active_version": f.record.active_version, "status": status(f) }))
                .collect::<Vec<_>>()
        });
        Value::Array(list.unwrap_or_default())
    }

    pub fn get_function(&self, tenant: &str, name: &str) -> Result<Value, ApiError> {
        self.tenant_ref(tenant, |t| t.functions.get(name).map(|f| document(tenant, f)))
            .flatten()
            .ok_or_else(|| no_function(name))
    }

    /// The running version of a function the tenant owns (404 otherwise, also for another
    /// tenant's function), and its log.
    pub fn target(&self, tenant: &str, name: &str) -> Result<Target, ApiError> {
        self.tenant_ref(tenant, |t| {
            t.functions.get(name).map(|f| (f.slot.clone(), f.log.clone(), f.last_error.lock().expect("lock").clone()))
        })
        .flatten()
        .ok_or_else(|| no_function(name))
        .and_then(|(slot, log, last_error)| match slot {
            Some(slot) => Ok(Target { slot, log }),
            None => Err(ApiError::new(
                StatusCode::CONFLICT,
                "function-failed",
                format!("function `{name}` is not running: {}", last_error.unwrap_or_default()),
            )),
        })
    }

    /// The log of a function the tenant owns, running or not.
    pub fn log(&self, tenant: &str, name: &str) -> Result<Arc<FunctionLog>, ApiError> {
        self.tenant_ref(tenant, |t| t.functions.get(name).map(|f| f.log.clone()))
            .flatten()
            .ok_or_else(|| no_function(name))
    }

    /// The router of a deployed function's HTTP trigger.
    pub fn http_route(&self, tenant: &str, name: &str) -> Option<Router> {
        self.tenant_ref(tenant, |t| t.functions.get(name).and_then(|f| f.triggers.as_ref()).and_then(|t| t.http.clone()))
            .flatten()
    }

    /// A batch key no other invocation of this process uses.
    pub fn next_batch_key(&self, prefix: &str) -> String {
        format!("{prefix}-{}-{}", self.run, self.invocations.fetch_add(1, Ordering::Relaxed))
    }

    /// Validates and stores a new version, then swaps it in (starting the triggers on a
    /// first deploy, restarting them when the manifest changed them).
    pub async fn deploy(&self, tenant: &str, name: &str, manifest_text: &str, component: Vec<u8>) -> Result<Value, ApiError> {
        check_name("function", name)?;
        if component.len() > self.config.max_component_bytes {
            return Err(too_large(self.config.max_component_bytes));
        }
        let manifest = Manifest::parse(manifest_text, Path::new("sluice.toml (uploaded)"), self.config.state_dir.clone())
            .map_err(|e| ApiError::unprocessable("invalid-manifest", e.to_string()))?;
        if manifest.name != name {
            return Err(ApiError::unprocessable(
                "name-mismatch",
                format!("the manifest names function `{}` but the upload is for `{name}`", manifest.name),
            ));
        }
        let _serialized = self.mutations.lock().await;
        let (quotas, existing, count) = self
            .tenant_ref(tenant, |t| (t.record.quotas.clone(), t.functions.get(name).map(|f| f.record.clone()), t.functions.len()))
            .ok_or_else(|| no_tenant(tenant))?;
        if existing.is_none() && count >= quotas.functions as usize {
            return Err(ApiError::quota(format!(
                "the tenant already has {count} functions, its quota of functions is {}",
                quotas.functions
            )));
        }
        quotas.admit(&manifest)?;
        let version = existing.as_ref().map_or(1, |r| r.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1);
        let (log, last_error) = self
            .tenant_ref(tenant, |t| t.functions.get(name).map(|f| (f.log.clone(), f.last_error.clone())))
            .flatten()
            .unwrap_or_else(|| {
                (Arc::new(FunctionLog::new(tenant, name, self.config.log_lines_per_second)), Arc::new(Mutex::new(None)))
            });
        let function = self.compile(tenant, &manifest, component.clone(), version, &log, &last_error).await?;
        let stored = self.store.add_version(tenant, name, version, manifest_text, &component)?;
        let mut record = existing.unwrap_or_else(|| FunctionRecord { name: name.to_string(), active_version: 0, versions: Vec::new() });
        record.versions.push(stored);
        record.active_version = version;
        self.store.put_function(tenant, &record)?;
        *last_error.lock().expect("last error lock") = None;
        self.activate(tenant, name, record, &manifest, function, log, last_error).await;
        tracing::info!(tenant, function = name, version, "deployed");
        self.get_function(tenant, name)
    }

    /// Makes an earlier version active again (recompiling from the cache) and swaps it in.
    pub async fn rollback(&self, tenant: &str, name: &str, version: u64) -> Result<Value, ApiError> {
        let _serialized = self.mutations.lock().await;
        let (mut record, log, last_error) = self
            .tenant_ref(tenant, |t| t.functions.get(name).map(|f| (f.record.clone(), f.log.clone(), f.last_error.clone())))
            .flatten()
            .ok_or_else(|| no_function(name))?;
        let stored = record.version(version).cloned().ok_or_else(|| {
            let known: Vec<String> = record.versions.iter().map(|v| v.version.to_string()).collect();
            ApiError::not_found("version-not-found", format!("function `{name}` has no version {version}; it has {}", known.join(", ")))
        })?;
        let (manifest, function) = self.load_stored(tenant, name, &stored, &log, &last_error).await?;
        record.active_version = version;
        self.store.put_function(tenant, &record)?;
        *last_error.lock().expect("last error lock") = None;
        self.activate(tenant, name, record, &manifest, function, log, last_error).await;
        tracing::info!(tenant, function = name, version, "rolled back");
        self.get_function(tenant, name)
    }

    pub async fn delete_function(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        let _serialized = self.mutations.lock().await;
        let removed = self.tenant_mut(tenant, |t| t.functions.remove(name)).flatten().ok_or_else(|| no_function(name))?;
        if let Some(triggers) = removed.triggers {
            triggers.stop().await;
        }
        self.store.delete_function(tenant, name)?;
        tracing::info!(tenant, function = name, "deleted");
        Ok(())
    }

    async fn start_version(&self, tenant: &str, deployed: &mut Deployed, version: u64) -> Result<(), ApiError> {
        let name = deployed.record.name.clone();
        let stored = deployed
            .record
            .version(version)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("function `{name}`: the store has no version {version}")))?;
        let (manifest, function) = self.load_stored(tenant, &name, &stored, &deployed.log, &deployed.last_error).await?;
        let slot = FunctionSlot::new(Arc::new(function));
        deployed.triggers = Some(start_triggers(&manifest, &slot)?);
        deployed.slot = Some(slot);
        Ok(())
    }

    async fn load_stored(
        &self,
        tenant: &str,
        name: &str,
        stored: &VersionRecord,
        log: &Arc<FunctionLog>,
        last_error: &Arc<Mutex<Option<String>>>,
    ) -> Result<(Manifest, Function), ApiError> {
        let (text, bytes) = self.store.load_version(tenant, name, stored)?;
        let manifest = Manifest::parse(&text, Path::new("sluice.toml (stored)"), self.config.state_dir.clone())
            .map_err(|e| ApiError::internal(format!("stored version {} of `{name}`: {e}", stored.version)))?;
        let function = self.compile(tenant, &manifest, bytes, stored.version, log, last_error).await?;
        Ok((manifest, function))
    }

    /// Compiles (or takes from the cache) and links a version, with its sinks resolved under
    /// the tenant's data root, on a blocking thread.
    async fn compile(
        &self,
        tenant: &str,
        manifest: &Manifest,
        component: Vec<u8>,
        version: u64,
        log: &Arc<FunctionLog>,
        last_error: &Arc<Mutex<Option<String>>>,
    ) -> Result<Function, ApiError> {
        let (instances, sink_budget, gpu_budget) = self
            .tenant_ref(tenant, |t| (t.instances.clone(), t.sink_budget.clone(), t.gpu_budget.clone()))
            .ok_or_else(|| no_tenant(tenant))?;
        let data_root = self.function_data_root(tenant, &manifest.name)?;
        let deployment = Deployment {
            tenant: tenant.to_string(),
            version,
            tenant_instances: Some(instances),
            sink_budget: Some(sink_budget),
            gpu_budget: Some(gpu_budget),
            guest_log: Some(Arc::new(VersionLog { log: log.clone(), version, last_error: last_error.clone() })),
        };
        let runtime = self.runtime.clone();
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || runtime.load_function_bytes(&manifest, &component, &data_root, deployment))
            .await
            .map_err(|e| ApiError::internal(format!("compiling the component: {e}")))?
            .map_err(|e| ApiError::from_load(&e))
    }

    /// `<data-dir>/<tenant>/<function>`, created, refused if a symlink takes it out of the
    /// tenant's data root.
    fn function_data_root(&self, tenant: &str, function: &str) -> Result<PathBuf, ApiError> {
        let tenant_root = self.config.data_dir.join(tenant);
        let root = tenant_root.join(function);
        std::fs::create_dir_all(&root).map_err(|e| ApiError::internal(format!("data root {}: {e}", root.display())))?;
        let canonical = |path: &Path| {
            path.canonicalize().map_err(|e| ApiError::internal(format!("data root {}: {e}", path.display())))
        };
        let (tenant_root, resolved) = (canonical(&tenant_root)?, canonical(&root)?);
        let data_dir = canonical(&self.config.data_dir)?;
        if !tenant_root.starts_with(&data_dir) || !resolved.starts_with(&tenant_root) {
            return Err(ApiError::unprocessable(
                "sink-refused",
                format!("the data root of `{function}` resolves outside the tenant's data root (a symlink points out)"),
            ));
        }
        Ok(resolved)
    }

    /// Puts a loaded version in place: a swap in the existing slot when the triggers stay
    /// the same; else the new triggers start, take the old ones' place in one step (an HTTP
    /// route is never missing), and the old ones drain.
    #[allow(clippy::too_many_arguments)]
    async fn activate(
        &self,
        tenant: &str,
        name: &str,
        record: FunctionRecord,
        manifest: &Manifest,
        function: Function,
        log: Arc<FunctionLog>,
        last_error: Arc<Mutex<Option<String>>>,
    ) {
        let function = Arc::new(function);
        let signature = trigger_signature(manifest);
        let swapped_in_place = self
            .tenant_mut(tenant, |t| {
                let deployed = t.functions.get_mut(name)?;
                match (&deployed.slot, &deployed.triggers) {
                    (Some(slot), Some(triggers)) if triggers.signature == signature => {
                        slot.replace(function.clone());
                        deployed.record = record.clone();
                        Some(())
                    }
                    _ => None,
                }
            })
            .flatten()
            .is_some();
        if swapped_in_place {
            return;
        }
        let slot = self
            .tenant_ref(tenant, |t| t.functions.get(name).and_then(|f| f.slot.clone()))
            .flatten()
            .inspect(|slot| {
                slot.replace(function.clone());
            })
            .unwrap_or_else(|| FunctionSlot::new(function));
        let triggers = start_triggers_logged(manifest, &slot, &last_error);
        let replaced = self
            .tenant_mut(tenant, |t| {
                let deployed = Deployed { record, slot: Some(slot), triggers: Some(triggers), log, last_error };
                t.functions.insert(name.to_string(), deployed)
            })
            .flatten();
        if let Some(old) = replaced.and_then(|old| old.triggers) {
            old.stop().await;
        }
    }
}

/// Gives up tenant permits as running invocations return them.
async fn shrink_later(instances: Arc<Semaphore>, count: usize) {
    if let Ok(permits) = instances.acquire_many_owned(count as u32).await {
        permits.forget();
    }
}

fn start_triggers_logged(manifest: &Manifest, slot: &Arc<FunctionSlot>, last_error: &Mutex<Option<String>>) -> Triggers {
    start_triggers(manifest, slot).unwrap_or_else(|error| {
        *last_error.lock().expect("last error lock") = Some(error.message);
        let (signal, _) = ShutdownSignal::new();
        Triggers { signal, tasks: Vec::new(), http: None, signature: String::new() }
    })
}

/// What decides whether a deploy can swap in place: everything the triggers were built from.
fn trigger_signature(manifest: &Manifest) -> String {
    format!("{:?}|{:?}|{:?}|{}", manifest.triggers, manifest.batching, manifest.retry, manifest.limits.max_instances)
}

/// Starts the Kafka and cron triggers the manifest names and builds its HTTP route; file
/// triggers belong to `sluice run`.
fn start_triggers(manifest: &Manifest, slot: &Arc<FunctionSlot>) -> Result<Triggers, ApiError> {
    let (signal, shutdown) = ShutdownSignal::new();
    let limits = BatchLimits::from(&manifest.batching);
    let retry = RetryPolicy::from(&manifest.retry);
    let mut tasks = Vec::new();
    let mut http = None;
    for spec in &manifest.triggers {
        match spec {
            TriggerSpec::File { .. } => {}
            TriggerSpec::Kafka(kafka) => {
                let source = KafkaSource::new(kafka.clone(), limits, retry).with_dead_letter_topic(manifest.retry.dead_letter_topic.clone());
                let (slot, shutdown): (Arc<FunctionSlot>, Shutdown) = (slot.clone(), shutdown.clone());
                tasks.push(tokio::spawn(async move {
                    let name = slot.name().to_string();
                    if let Err(error) = source.run(slot, shutdown).await {
                        tracing::error!(function = %name, %error, "kafka trigger stopped");
                    }
                }));
            }
            TriggerSpec::Cron(cron) => {
                let schedule = CronSchedule::try_from(cron)
                    .map_err(|e| ApiError::unprocessable("invalid-manifest", format!("cron trigger: {e}")))?;
                let (slot, shutdown) = (slot.clone(), shutdown.clone());
                tasks.push(tokio::spawn(async move {
                    run_cron(slot, schedule, retry, Arc::new(CronStats::default()), shutdown).await;
                }));
            }
            TriggerSpec::Http(spec) => {
                let served = HttpFunction {
                    function: slot.clone(),
                    spec: spec.clone(),
                    limits,
                    instances: manifest.limits.max_instances as usize,
                };
                http = Some(http_router(vec![served]).0);
            }
        }
    }
    Ok(Triggers { signal, tasks, http, signature: trigger_signature(manifest) })
}

fn status(deployed: &Deployed) -> &'static str {
    if deployed.slot.is_some() { "running" } else { "failed" }
}

/// The function document of the API.
fn document(tenant: &str, deployed: &Deployed) -> Value {
    let record = &deployed.record;
    let instances = deployed.slot.as_ref().map_or(0, |slot| slot.current().instances_in_use());
    let http_path = deployed
        .triggers
        .as_ref()
        .and_then(|t| t.http.as_ref())
        .map(|_| format!("/t/{tenant}/functions/{}", record.name));
    json!({
        "name": record.name,
        "status": status(deployed),
        "active_version": record.active_version,
        "versions": record.versions,
        "instances": instances,
        "last_error": deployed.last_error.lock().expect("last error lock").clone(),
        "http_path": http_path,
    })
}

fn no_tenant(name: &str) -> ApiError {
    ApiError::not_found("tenant-not-found", format!("no tenant `{name}`"))
}

fn no_function(name: &str) -> ApiError {
    ApiError::not_found("function-not-found", format!("no function `{name}`"))
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "component-too-large",
        format!("the component exceeds this server's limit of {limit} bytes (--max-component-bytes)"),
    )
}

/// Bytes of every file under `dir` (what a tenant's sinks already hold).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}
