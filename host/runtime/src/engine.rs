//! The wasmtime engine shared by every function on this host: component model, pooling
//! allocation (or on-demand where the pool cannot be reserved), epoch interruption.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_manifest::{DevicePreference, Manifest};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{Handler, HandlerPre};
use crate::cache::ComponentCache;
use crate::deployment::Deployment;
use crate::error::LoadError;
use crate::function::Function;
use crate::sinks::Sinks;
use crate::state::{FunctionContext, InvocationState};

/// How the engine allocates instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front: instantiation is a few microseconds.
    Pooling,
    /// Memory mapped per instance; used when the pool's address space cannot be reserved.
    OnDemand,
}

/// Settings of the host-wide engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances the pool holds at once (across all functions).
    pub pool_instances: u32,
    /// The largest linear memory any function may be given, in MiB.
    pub max_memory_mb: u64,
    /// How often the epoch advances; timeouts are measured in these ticks.
    pub epoch_tick: Duration,
    /// The host's `--device`: overrides every manifest's `device` when set.
    pub device: Option<DevicePreference>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: Some(ComponentCache::default_dir()),
            pool_instances: 64,
            max_memory_mb: 4096,
            epoch_tick: Duration::from_millis(10),
            device: None,
        }
    }
}

/// Advances the engine's epoch on a timer, so running guests notice their deadlines.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The host-wide wasm runtime: one engine and linker for every function.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InvocationState>,
    allocator: Allocator,
    cache: Option<ComponentCache>,
    /// The host's `--device` override and where compiled CUDA kernels are cached.
    device: Option<DevicePreference>,
    kernel_cache: Option<PathBuf>,
    _ticker: EpochTicker,
}

/// A component that passed validation: it is a component, it compiles, and it is of the
/// `handler` world.
pub struct HandlerComponent {
    pub(crate) pre: HandlerPre<InvocationState>,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
    /// Whether the compiled form came from the on-disk cache.
    pub cached: bool,
}

impl Runtime {
    /// Builds the engine, trying the pooling allocator first and falling back to
    /// on-demand allocation when the pool's reservation fails.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, LoadError> {
        let (engine, allocator) = match Engine::new(&engine_config(&config, Allocator::Pooling)) {
            Ok(engine) => (engine, Allocator::Pooling),
            Err(error) => {
                tracing::warn!(%error, "pooling allocator unavailable; falling back to on-demand allocation");
                let engine = Engine::new(&engine_config(&config, Allocator::OnDemand))
                    .map_err(|e| LoadError::Engine(e.to_string()))?;
                (engine, Allocator::OnDemand)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        let cache = config.cache_dir.clone().map(ComponentCache::new);
        let kernel_cache = config.cache_dir.as_ref().map(|dir| dir.join("kernels"));
        Ok(Runtime { engine, linker, allocator, cache, device: config.device, kernel_cache, _ticker: ticker })
    }

    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Validates and compiles a component (once per content hash, thanks to the cache).
    pub fn load_component(&self, bytes: &[u8]) -> Result<HandlerComponent, LoadError> {
        check_component_header(bytes)?;
        let hash = crate::cache::content_hash(bytes);
        let (component, cached) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes),
            None => Component::new(&self.engine, bytes).map(|c| (c, false)),
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        check_world(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("imports something this host does not provide: {e:#}")))?;
        let pre = HandlerPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("exports `handle` with another signature: {e:#}")))?;
        Ok(HandlerComponent { pre, hash, cached })
    }

    /// Loads a function from its manifest: reads and validates the component, resolves its
    /// sinks under `data_root`, and checks its device preference.
    pub fn load_function(&self, manifest: &Manifest, data_root: &Path) -> Result<Function, LoadError> {
        let path = manifest.component_path();
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
        self.load_function_bytes(manifest, &bytes, data_root, Deployment::default())
    }

    /// Loads a function whose component bytes came from elsewhere (the function store),
    /// ignoring the manifest's `component` path; `deployment` names its tenant and version.
    pub fn load_function_bytes(
        &self,
        manifest: &Manifest,
        bytes: &[u8],
        data_root: &Path,
        deployment: Deployment,
    ) -> Result<Function, LoadError> {
        let gpu = crate::gpu::place(
            &manifest.name,
            manifest.device,
            self.device,
            manifest.limits.gpu_memory_mb,
            deployment.gpu_budget.as_ref(),
            self.kernel_cache.as_deref(),
        )?;
        let component = self.load_component(bytes)?;
        let mut sinks = Sinks::resolve(data_root, &manifest.sinks)?;
        if let Some(budget) = &deployment.sink_budget {
            sinks = sinks.with_budget(budget.clone());
        }
        tracing::info!(
            function = %manifest.name,
            tenant = %deployment.tenant,
            version = deployment.version,
            hash = &component.hash[..12],
            cached = component.cached,
            "function loaded"
        );
        let context = FunctionContext { name: manifest.name.clone(), config: manifest.config.clone(), sinks, deployment, gpu };
        Ok(Function::new(self, component, context, manifest.limits.clone()))
    }
}

fn engine_config(config: &RuntimeConfig, allocator: Allocator) -> Config {
    let mut engine = Config::new();
    engine.wasm_component_model(true);
    engine.epoch_interruption(true);
    // Host calls (parsing, Parquet encoding) run on the guest's fiber stack.
    engine.async_stack_size(8 << 20);
    engine.max_wasm_stack(1 << 20);
    if allocator == Allocator::Pooling {
        let max_memory = usize::try_from(config.max_memory_mb << 20).unwrap_or(usize::MAX);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.pool_instances)
            .total_core_instances(config.pool_instances * 4)
            .total_memories(config.pool_instances * 2)
            .total_tables(config.pool_instances * 4)
            .total_stacks(config.pool_instances)
            .max_memory_size(max_memory);
        engine.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    engine
}

/// Tells a core module from a component before compiling, for a clearer refusal.
fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Core modules carry version 1 with layer 0; components carry layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Refuses components that do not export the `handle` function, naming what they export.
fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let has_handle = ty
        .exports(engine)
        .any(|(name, item)| name == "handle" && matches!(item.ty, ComponentItem::ComponentFunc(_)));
    if has_handle {
        return Ok(());
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    Err(LoadError::WrongWorld(if exports.is_empty() {
        "exports nothing".to_string()
    } else {
        format!("exports {}", exports.join(", "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_refused_before_compiling() {
        assert!(matches!(check_component_header(b"hello world"), Err(LoadError::NotWasm)));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(check_component_header(core), Err(LoadError::CoreModule)));
        let component = b"\0asm\x0d\0\x01\0";
        assert!(check_component_header(component).is_ok());
    }

    #[test]
    fn an_unreservable_pool_falls_back_to_on_demand() {
        let config = RuntimeConfig {
            cache_dir: None,
            // Far more address space than any machine has: the reservation must fail.
            pool_instances: 1 << 20,
            max_memory_mb: 1 << 30,
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config).unwrap();
        assert_eq!(runtime.allocator(), Allocator::OnDemand);
    }

    #[test]
    fn a_small_pool_is_used() {
        let config = RuntimeConfig { cache_dir: None, pool_instances: 2, max_memory_mb: 64, ..RuntimeConfig::default() };
        assert_eq!(Runtime::new(config).unwrap().allocator(), Allocator::Pooling);
    }
}
