//! The shared CUDA device, per-invocation sessions and device-resident frames.
//!
//! One [`CudaDevice`] (context, compiled kernels, pinned staging memory) serves the whole
//! process; each invocation gets a [`CudaSession`] (its own stream, its tenant's budget).
//! A [`DeviceFrame`]'s columns live in GPU memory between host calls: operations run as
//! kernels on the session's stream and only copy-outs (`record_batch`, `column`, JSON) bring
//! data back. Every column is 8-byte words (int64, float64 bits, booleans 0/1, utf8 codes into
//! a sorted host dictionary) plus an optional validity byte per row.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UInt32Array, new_null_array};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimestampMillisecondType};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;

use crate::cuda::budget::{BudgetError, GpuBudget, GpuReservation};
use crate::cuda::kernels::{CompileError, KERNEL_SOURCES, cached_cubin, nvrtc_present};
use crate::cuda::layout::{device_rows, encode_utf8, grid};
use crate::error::FrameError;
use crate::expr::DType;
use crate::frame::Frame;

/// Why the CUDA backend cannot serve on this host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaUnavailable {
    #[error("no CUDA driver: libcuda cannot be loaded")]
    NoDriver,
    #[error("the CUDA driver reports no usable GPU ({0})")]
    NoDevice(String),
    #[error("NVRTC (libnvrtc.so.12) cannot be loaded, so the kernels cannot be compiled")]
    NoNvrtc,
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("CUDA driver error while opening the GPU: {0}")]
    Driver(String),
}

/// Why a device operation did not run on the device. All but `Driver` send that operation
/// to the CPU backend, which computes the same result (or reports the error the CPU reports).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GpuError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("not supported on the GPU: {0}")]
    Unsupported(String),
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
}

pub(crate) fn unsupported(why: impl Into<String>) -> GpuError {
    GpuError::Unsupported(why.into())
}

pub(crate) struct Kernels {
    pub gather_u64: CudaFunction,
    pub remap_codes: CudaFunction,
    pub fill_u32: CudaFunction,
    pub fill_u64: CudaFunction,
    pub fill_u8: CudaFunction,
    pub filter_count: CudaFunction,
    pub exclusive_scan_u32: CudaFunction,
    pub filter_compact: CudaFunction,
    pub eval_program: CudaFunction,
    pub gb_insert: CudaFunction,
    pub gb_dense_ids: CudaFunction,
    pub gb_count: CudaFunction,
    pub gb_count_shared: CudaFunction,
    pub gb_sum_i64: CudaFunction,
    pub gb_sum_i64_shared: CudaFunction,
    pub gb_sum_f64: CudaFunction,
    pub gb_sum_f64_shared: CudaFunction,
    pub gb_extreme_value: CudaFunction,
    pub gb_extreme_row: CudaFunction,
    pub gb_pick_extreme: CudaFunction,
    pub sort_keys: CudaFunction,
    pub bitonic_step: CudaFunction,
    pub sort_rows: CudaFunction,
}

/// The process's GPU: one context shared by every function, instance and tenant.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    name: String,
    arch: String,
    pub(crate) kernels: Kernels,
    /// Page-locked memory uploads are staged through; grown to the largest column seen.
    staging: Mutex<Option<PinnedHostSlice<u64>>>,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaDevice").field("name", &self.name).field("arch", &self.arch).finish()
    }
}

static SHARED: OnceLock<Result<Arc<CudaDevice>, CudaUnavailable>> = OnceLock::new();

impl CudaDevice {
    /// The process-wide device, opened on first use (kernels compiled or read from
    /// `kernel_cache`, which only the first call's value is used for); the same answer after.
    pub fn shared(kernel_cache: Option<&Path>) -> Result<Arc<CudaDevice>, CudaUnavailable> {
        SHARED.get_or_init(|| CudaDevice::open(kernel_cache)).clone()
    }

    fn open(kernel_cache: Option<&Path>) -> Result<Arc<CudaDevice>, CudaUnavailable> {
        if !crate::cuda::driver_present() {
            return Err(CudaUnavailable::NoDriver);
        }
        if !nvrtc_present() {
            return Err(CudaUnavailable::NoNvrtc);
        }
        let count = CudaContext::device_count().map_err(|e| CudaUnavailable::NoDevice(e.to_string()))?;
        if count < 1 {
            return Err(CudaUnavailable::NoDevice("0 devices".into()));
        }
        let driver = |e: DriverError| CudaUnavailable::Driver(e.to_string());
        let ctx = CudaContext::new(0).map_err(driver)?;
        // Each session's buffers are used on its own stream only, so cross-stream event
        // tracking is not needed.
        // SAFETY: called before any buffer exists.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().map_err(driver)?;
        let mut modules = HashMap::new();
        for (file, source) in KERNEL_SOURCES {
            let cubin = cached_cubin(kernel_cache, file, source, &arch)?;
            modules.insert(file, ctx.load_module(Ptx::from_binary(cubin)).map_err(driver)?);
        }
        let f = |file: &str, kernel: &str| modules[file].load_function(kernel).map_err(driver);
        let kernels = Kernels {
            gather_u64: f("gather", "gather_u64")?,
            remap_codes: f("gather", "remap_codes")?,
            fill_u32: f("gather", "fill_u32")?,
            fill_u64: f("gather", "fill_u64")?,
            fill_u8: f("gather", "fill_u8")?,
            filter_count: f("filter", "filter_count")?,
            exclusive_scan_u32: f("filter", "exclusive_scan_u32")?,
            filter_compact: f("filter", "filter_compact")?,
            eval_program: f("expr", "eval_program")?,
            gb_insert: f("groupby", "gb_insert")?,
            gb_dense_ids: f("groupby", "gb_dense_ids")?,
            gb_count: f("groupby", "gb_count")?,
            gb_count_shared: f("groupby", "gb_count_shared")?,
            gb_sum_i64: f("groupby", "gb_sum_i64")?,
            gb_sum_i64_shared: f("groupby", "gb_sum_i64_shared")?,
            gb_sum_f64: f("groupby", "gb_sum_f64")?,
            gb_sum_f64_shared: f("groupby", "gb_sum_f64_shared")?,
            gb_extreme_value: f("groupby", "gb_extreme_value")?,
            gb_extreme_row: f("groupby", "gb_extreme_row")?,
            gb_pick_extreme: f("groupby", "gb_pick_extreme")?,
            sort_keys: f("sort", "sort_keys")?,
            bitonic_step: f("sort", "bitonic_step")?,
            sort_rows: f("sort", "sort_rows")?,
        };
        tracing::info!(gpu = %name, arch, "CUDA device opened; kernels ready");
        Ok(Arc::new(CudaDevice { ctx, name, arch, kernels, staging: Mutex::new(None) }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// A session for one invocation: its own stream, allocations charged to `budget`.
    pub fn session(self: &Arc<Self>, budget: Arc<GpuBudget>) -> Result<Arc<CudaSession>, FrameError> {
        let stream = self.ctx.new_stream().map_err(|e| FrameError::Device(format!("cannot create a CUDA stream: {e}")))?;
        Ok(Arc::new(CudaSession { device: self.clone(), stream, budget }))
    }
}

/// One invocation's use of the device: a stream and the budget its frames are charged to.
pub struct CudaSession {
    pub(crate) device: Arc<CudaDevice>,
    pub(crate) stream: Arc<CudaStream>,
    budget: Arc<GpuBudget>,
}

impl fmt::Debug for CudaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaSession").field("device", &self.device).field("budget", &self.budget).finish()
    }
}

/// Device memory with its budget reservation; both released on drop.
pub(crate) struct Buffer<T> {
    slice: CudaSlice<T>,
    _reservation: GpuReservation,
}

impl<T> Drop for Buffer<T> {
    fn drop(&mut self) {
        // cudarc frees the slice right after this without making the context current, and a
        // failed free would surface as the error of some later, unrelated call: bind it here
        // (frames may be dropped on any thread).
        let _ = self.slice.context().bind_to_thread();
    }
}

impl<T> Buffer<T> {
    /// The device address of element `offset`.
    pub fn ptr(&self, stream: &CudaStream, offset: usize) -> u64 {
        let (base, _sync) = self.slice.device_ptr(stream);
        base + (offset * std::mem::size_of::<T>()) as u64
    }
}

/// One kernel argument; pointers are device addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    U8(u8),
}

impl CudaSession {
    pub(crate) fn kernels(&self) -> &Kernels {
        &self.device.kernels
    }

    /// Zeroed device memory for `len` values, reserved against the budget first.
    pub(crate) fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize, what: &str) -> Result<Buffer<T>, GpuError> {
        let bytes = (len.max(1) * std::mem::size_of::<T>()) as u64;
        let reservation = self.budget.reserve(bytes, what)?;
        let slice = self.stream.alloc_zeros::<T>(len.max(1))?;
        Ok(Buffer { slice, _reservation: reservation })
    }

    /// Copies small host data (programs, pointer tables, group maps) to the device.
    pub(crate) fn upload_small<T: DeviceRepr + ValidAsZeroBits>(&self, values: &[T], what: &str) -> Result<Buffer<T>, GpuError> {
        let mut buffer = self.alloc::<T>(values.len(), what)?;
        if !values.is_empty() {
            self.stream.memcpy_htod(values, &mut buffer.slice.slice_mut(0..values.len()))?;
        }
        Ok(buffer)
    }

    /// Copies words to the device through the shared pinned staging buffer.
    fn upload_words(&self, words: impl ExactSizeIterator<Item = u64>, what: &str) -> Result<Buffer<u64>, GpuError> {
        let n = words.len();
        let mut buffer = self.alloc::<u64>(n, what)?;
        if n == 0 {
            return Ok(buffer);
        }
        let mut staging = self.device.staging.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if staging.as_ref().is_none_or(|s| s.len() < n) {
            *staging = None;
            // SAFETY: the memory is written below before it is read.
            *staging = Some(unsafe { self.device.ctx.alloc_pinned::<u64>(n.next_power_of_two()) }?);
        }
        let pinned = staging.as_mut().expect("allocated above");
        let host = pinned.as_mut_slice()?;
        for (slot, word) in host.iter_mut().zip(words) {
            *slot = word;
        }
        self.stream.memcpy_htod(&host[..n], &mut buffer.slice.slice_mut(0..n))?;
        // The staging memory is reused by the next upload.
        self.stream.synchronize()?;
        Ok(buffer)
    }

    pub(crate) fn download<T: DeviceRepr>(&self, buffer: &Buffer<T>, offset: usize, len: usize) -> Result<Vec<T>, GpuError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let values = self.stream.clone_dtoh(&buffer.slice.slice(offset..offset + len))?;
        self.stream.synchronize()?;
        Ok(values)
    }

    /// Launches `kernel` on this session's stream.
    pub(crate) fn launch(&self, kernel: &CudaFunction, config: LaunchConfig, args: &[Arg]) -> Result<(), GpuError> {
        let mut builder = self.stream.launch_builder(kernel);
        for arg in args {
            match arg {
                Arg::Ptr(v) | Arg::U64(v) => builder.arg(v),
                Arg::U32(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::U8(v) => builder.arg(v),
            };
        }
        // SAFETY: every launch site passes the kernel's parameters in order with their C types,
        // and device pointers to buffers at least as long as the counts passed with them.
        unsafe { builder.launch(config) }?;
        Ok(())
    }

    /// A grid-stride launch over `n` items.
    pub(crate) fn launch_over(&self, kernel: &CudaFunction, n: usize, args: &[Arg]) -> Result<(), GpuError> {
        if n == 0 {
            return Ok(());
        }
        let (blocks, threads) = grid(n);
        self.launch(kernel, LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }, args)
    }

    /// `n` copies of `value` (a 4-byte fill).
    pub(crate) fn filled_u32(&self, n: usize, value: u32, what: &str) -> Result<Buffer<u32>, GpuError> {
        let buffer = self.alloc::<u32>(n, what)?;
        self.launch_over(&self.kernels().fill_u32, n, &[Arg::Ptr(buffer.ptr(&self.stream, 0)), Arg::U32(n as u32), Arg::U32(value)])?;
        Ok(buffer)
    }

    pub(crate) fn filled_u64(&self, n: usize, value: u64, what: &str) -> Result<Buffer<u64>, GpuError> {
        let buffer = self.alloc::<u64>(n, what)?;
        self.launch_over(&self.kernels().fill_u64, n, &[Arg::Ptr(buffer.ptr(&self.stream, 0)), Arg::U32(n as u32), Arg::U64(value)])?;
        Ok(buffer)
    }

    /// Moves a host frame onto the device; a frame that does not fit the budget (or a driver
    /// failure) keeps it on the host, where the CPU backend serves it.
    pub fn adopt(self: &Arc<Self>, frame: Frame) -> Frame {
        if frame.is_on_device() {
            return frame;
        }
        let Ok(batch) = frame.record_batch() else { return frame };
        match self.upload(batch) {
            Ok(device) => Frame::on_device(Arc::new(device)),
            Err(GpuError::Driver(error)) => {
                tracing::warn!(%error, "upload to the GPU failed; the frame stays on the CPU");
                frame
            }
            Err(reason) => {
                tracing::debug!(%reason, rows = batch.num_rows(), "frame stays on the CPU");
                frame
            }
        }
    }

    /// Uploads every column of a host batch (engine dtypes), utf8 dictionary-encoded.
    pub(crate) fn upload(self: &Arc<Self>, batch: &RecordBatch) -> Result<DeviceFrame, GpuError> {
        let rows = device_rows(batch.num_rows()).map_err(|e| unsupported(e.to_string()))? as usize;
        let schema = batch.schema();
        let mut names = Vec::with_capacity(batch.num_columns());
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let what = format!("column `{}` ({rows} rows)", field.name());
            let dtype = DType::from_arrow(field.data_type()).ok_or_else(|| unsupported(format!("column type {}", field.data_type())))?;
            let mut dictionary = None;
            let (values, validity) = match dtype {
                DType::Int64 => (self.upload_words(array.as_primitive::<Int64Type>().values().iter().map(|v| *v as u64), &what)?, array.nulls()),
                DType::TimestampMs => {
                    (self.upload_words(array.as_primitive::<TimestampMillisecondType>().values().iter().map(|v| *v as u64), &what)?, array.nulls())
                }
                DType::Float64 => (self.upload_words(array.as_primitive::<Float64Type>().values().iter().map(|v| v.to_bits()), &what)?, array.nulls()),
                DType::Boolean => (self.upload_words(array.as_boolean().values().iter().map(u64::from), &what)?, array.nulls()),
                DType::Utf8 => {
                    let encoded = encode_utf8(array.as_string::<i32>());
                    dictionary = Some(Arc::new(encoded.dictionary));
                    let values = self.upload_words(encoded.codes.into_iter(), &what)?;
                    let validity = match encoded.validity {
                        Some(bytes) => Some(Arc::new(self.upload_small(&bytes, &what)?)),
                        None => None,
                    };
                    names.push(field.name().clone());
                    columns.push(DeviceColumn { dtype, values: Arc::new(values), validity, offset: 0, dictionary, nullable: field.is_nullable() });
                    continue;
                }
            };
            let validity = match validity.filter(|n| n.null_count() > 0) {
                Some(nulls) => {
                    let bytes: Vec<u8> = nulls.iter().map(u8::from).collect();
                    Some(Arc::new(self.upload_small(&bytes, &what)?))
                }
                None => None,
            };
            names.push(field.name().clone());
            columns.push(DeviceColumn { dtype, values: Arc::new(values), validity, offset: 0, dictionary, nullable: field.is_nullable() });
        }
        Ok(DeviceFrame::new(self.clone(), names, columns, rows))
    }

    /// A device column from host words (small aggregation results).
    pub(crate) fn column_from_host(&self, dtype: DType, words: Vec<u64>, validity: Option<Vec<u8>>, what: &str) -> Result<DeviceColumn, GpuError> {
        let values = self.upload_small(&words, what)?;
        let validity = match validity {
            Some(bytes) => Some(Arc::new(self.upload_small(&bytes, what)?)),
            None => None,
        };
        Ok(DeviceColumn { dtype, values: Arc::new(values), validity, offset: 0, dictionary: None, nullable: true })
    }
}

/// One column in device memory; `offset` makes slices zero-copy.
#[derive(Clone)]
pub(crate) struct DeviceColumn {
    pub dtype: DType,
    pub values: Arc<Buffer<u64>>,
    pub validity: Option<Arc<Buffer<u8>>>,
    pub offset: usize,
    /// The sorted distinct values a utf8 column's codes index.
    pub dictionary: Option<Arc<StringArray>>,
    /// The schema's nullability, kept as the CPU backend keeps it (inputs' fields through
    /// filter/sort/slice/concat, nullable for computed columns).
    pub nullable: bool,
}

impl DeviceColumn {
    pub fn values_ptr(&self, stream: &CudaStream) -> u64 {
        self.values.ptr(stream, self.offset)
    }

    /// The validity bytes' address, or 0 (a null pointer: every row valid).
    pub fn validity_ptr(&self, stream: &CudaStream) -> u64 {
        self.validity.as_ref().map_or(0, |v| v.ptr(stream, self.offset))
    }
}

/// A frame whose columns live in GPU memory.
pub struct DeviceFrame {
    pub(crate) session: Arc<CudaSession>,
    pub(crate) names: Vec<String>,
    pub(crate) columns: Vec<DeviceColumn>,
    pub(crate) rows: usize,
    /// The host copy, made by the first copy-out.
    host: OnceLock<RecordBatch>,
}

impl fmt::Debug for DeviceFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceFrame").field("names", &self.names).field("rows", &self.rows).finish()
    }
}

impl DeviceFrame {
    pub(crate) fn new(session: Arc<CudaSession>, names: Vec<String>, columns: Vec<DeviceColumn>, rows: usize) -> DeviceFrame {
        DeviceFrame { session, names, columns, rows, host: OnceLock::new() }
    }

    pub fn num_rows(&self) -> usize {
        self.rows
    }

    pub fn schema(&self) -> Vec<(String, DType)> {
        self.names.iter().cloned().zip(self.columns.iter().map(|c| c.dtype)).collect()
    }

    pub(crate) fn column(&self, name: &str) -> Option<&DeviceColumn> {
        self.names.iter().position(|n| n == name).map(|i| &self.columns[i])
    }

    /// Rows `offset..offset + len` (already clamped), sharing the device buffers.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> DeviceFrame {
        let columns = self.columns.iter().map(|c| DeviceColumn { offset: c.offset + offset, ..c.clone() }).collect();
        DeviceFrame::new(self.session.clone(), self.names.clone(), columns, len)
    }

    /// The frame in host memory, copied once.
    pub fn record_batch(&self) -> Result<&RecordBatch, FrameError> {
        if let Some(batch) = self.host.get() {
            return Ok(batch);
        }
        let batch = self.download().map_err(|e| FrameError::Device(format!("copying a frame from the GPU: {e}")))?;
        Ok(self.host.get_or_init(|| batch))
    }

    fn download(&self) -> Result<RecordBatch, GpuError> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (name, column) in self.names.iter().zip(&self.columns) {
            let array = self.download_column(column)?;
            fields.push(Field::new(name, array.data_type().clone(), column.nullable));
            arrays.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
            .map_err(|e| unsupported(format!("assembling the downloaded frame: {e}")))
    }

    fn download_column(&self, column: &DeviceColumn) -> Result<ArrayRef, GpuError> {
        let n = self.rows;
        let words = self.session.download(&column.values, column.offset, n)?;
        let nulls = match &column.validity {
            Some(v) => Some(NullBuffer::from(self.session.download(v, column.offset, n)?.iter().map(|b| *b != 0).collect::<Vec<bool>>())),
            None => None,
        };
        Ok(match column.dtype {
            DType::Int64 => Arc::new(Int64Array::new(ScalarBuffer::from(words.into_iter().map(|w| w as i64).collect::<Vec<_>>()), nulls)),
            DType::TimestampMs => {
                Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(words.into_iter().map(|w| w as i64).collect::<Vec<_>>()), nulls))
            }
            DType::Float64 => Arc::new(Float64Array::new(ScalarBuffer::from(words.into_iter().map(f64::from_bits).collect::<Vec<_>>()), nulls)),
            DType::Boolean => Arc::new(BooleanArray::new(BooleanBuffer::from_iter(words.iter().map(|w| *w != 0)), nulls)),
            DType::Utf8 => {
                let dictionary = column.dictionary.as_ref().ok_or_else(|| unsupported("utf8 column without dictionary"))?;
                if dictionary.is_empty() {
                    new_null_array(&DataType::Utf8, n)
                } else {
                    let codes = UInt32Array::new(ScalarBuffer::from(words.into_iter().map(|w| w as u32).collect::<Vec<_>>()), nulls);
                    take(dictionary.as_ref(), &codes, None).map_err(|e| unsupported(format!("decoding utf8 codes: {e}")))?
                }
            }
        })
    }
}
