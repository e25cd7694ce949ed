//! The frame operations on device-resident columns, as kernel launches. Each returns
//! `GpuError::Unsupported`/`Budget` for what it does not run on the device; [`DeviceFrame`]'s
//! public operations then run that one operation on the CPU backend (see `mod.rs`).

use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::Field;
use cudarc::driver::LaunchConfig;

use crate::backend::SortKey;
use crate::cuda::device::{Arg, Buffer, DeviceColumn, DeviceFrame, GpuError, unsupported};
use crate::cuda::layout::{FILTER_BLOCK, NO_ROW, bitonic_schedule, filter_blocks, fits_shared, grid, hash_capacity, int_sum, merge_dictionaries, number_groups};
use crate::cuda::program::{self, Columns, Program};
use crate::expr::{AggFn, DType, Expr};

impl Columns for DeviceFrame {
    fn dtype(&self, name: &str) -> Option<DType> {
        self.column(name).map(|c| c.dtype)
    }

    fn dictionary(&self, name: &str) -> Option<&StringArray> {
        self.column(name).and_then(|c| c.dictionary.as_deref())
    }
}

/// Output names must be unique, as the CPU backend requires; a clash is left to the CPU's error.
fn check_names(names: &[String]) -> Result<(), GpuError> {
    let fields: Vec<Field> = names.iter().map(|n| Field::new(n, arrow::datatypes::DataType::Null, true)).collect();
    crate::cpu::check_unique_names(&fields).map_err(|e| unsupported(e.to_string()))
}

impl DeviceFrame {
    fn derive(&self, names: Vec<String>, columns: Vec<DeviceColumn>, rows: usize) -> DeviceFrame {
        DeviceFrame::new(self.session.clone(), names, columns, rows)
    }

    /// Evaluates a compiled program over every row: one fused launch.
    fn run_program(&self, program: &Program) -> Result<DeviceColumn, GpuError> {
        let s = &self.session;
        let stream = &s.stream;
        let n = self.rows;
        let inputs: Vec<&DeviceColumn> = program.columns.iter().map(|c| self.column(c).expect("compiled against this frame")).collect();
        let value_ptrs: Vec<u64> = inputs.iter().map(|c| c.values_ptr(stream)).collect();
        let validity_ptrs: Vec<u64> = inputs.iter().map(|c| c.validity_ptr(stream)).collect();
        let code = s.upload_small(&program.code, "expression program")?;
        let values_table = s.upload_small(&value_ptrs, "expression inputs")?;
        let validity_table = s.upload_small(&validity_ptrs, "expression inputs")?;
        let out = s.alloc::<u64>(n, "expression result")?;
        let out_valid = s.alloc::<u8>(n, "expression result")?;
        let status = s.alloc::<u32>(1, "expression status")?;
        s.launch_over(
            &s.kernels().eval_program,
            n,
            &[
                Arg::Ptr(code.ptr(stream, 0)),
                Arg::I32((program.code.len() / 3) as i32),
                Arg::Ptr(values_table.ptr(stream, 0)),
                Arg::Ptr(validity_table.ptr(stream, 0)),
                Arg::U32(n as u32),
                Arg::Ptr(out.ptr(stream, 0)),
                Arg::Ptr(out_valid.ptr(stream, 0)),
                Arg::Ptr(status.ptr(stream, 0)),
            ],
        )?;
        if s.download(&status, 0, 1)?[0] != 0 {
            return Err(unsupported("int64 overflow or a float outside int64 range; the CPU reports it"));
        }
        Ok(DeviceColumn { dtype: program.dtype, values: Arc::new(out), validity: Some(Arc::new(out_valid)), offset: 0, dictionary: None, nullable: true })
    }

    /// A row-wise expression as a column: a bare column is shared, anything else compiled.
    fn expression(&self, expr: &Expr) -> Result<DeviceColumn, GpuError> {
        if let Some(name) = program::bare_column(expr) {
            let column = self.column(name).ok_or_else(|| unsupported(format!("no column `{name}`")))?;
            return Ok(DeviceColumn { nullable: true, ..column.clone() });
        }
        let program = program::compile(expr, self).ok_or_else(|| unsupported(format!("expression `{expr}`")))?;
        self.run_program(&program)
    }

    pub(crate) fn try_project(&self, exprs: &[Expr]) -> Result<DeviceFrame, GpuError> {
        let names: Vec<String> = exprs.iter().map(Expr::output_name).collect();
        check_names(&names)?;
        let columns = exprs.iter().map(|e| self.expression(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.derive(names, columns, self.rows))
    }

    /// Gathers every column at `rows` (`NO_ROW` gathers a null).
    fn gather(&self, rows: &Buffer<u32>, m: usize) -> Result<DeviceFrame, GpuError> {
        let columns = self.columns.iter().map(|c| self.gather_column(c, rows, m)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.derive(self.names.clone(), columns, m))
    }

    fn gather_column(&self, column: &DeviceColumn, rows: &Buffer<u32>, m: usize) -> Result<DeviceColumn, GpuError> {
        let s = &self.session;
        let stream = &s.stream;
        let values = s.alloc::<u64>(m, "gathered column")?;
        let validity = s.alloc::<u8>(m, "gathered column")?;
        s.launch_over(
            &s.kernels().gather_u64,
            m,
            &[
                Arg::Ptr(column.values_ptr(stream)),
                Arg::Ptr(column.validity_ptr(stream)),
                Arg::Ptr(rows.ptr(stream, 0)),
                Arg::U32(m as u32),
                Arg::Ptr(values.ptr(stream, 0)),
                Arg::Ptr(validity.ptr(stream, 0)),
            ],
        )?;
        Ok(DeviceColumn {
            dtype: column.dtype,
            values: Arc::new(values),
            validity: Some(Arc::new(validity)),
            offset: 0,
            dictionary: column.dictionary.clone(),
            nullable: column.nullable,
        })
    }

    pub(crate) fn try_filter(&self, predicate: &Expr) -> Result<DeviceFrame, GpuError> {
        let program = program::compile(predicate, self).ok_or_else(|| unsupported(format!("predicate `{predicate}`")))?;
        if program.dtype != DType::Boolean {
            return Err(unsupported("a predicate that is not boolean"));
        }
        let n = self.rows;
        if n == 0 {
            return Ok(self.slice(0, 0));
        }
        let mask = self.run_program(&program)?;
        let s = &self.session;
        let stream = &s.stream;
        let blocks = filter_blocks(n) as usize;
        let counts = s.alloc::<u32>(blocks, "filter block counts")?;
        let offsets = s.alloc::<u32>(blocks + 1, "filter block offsets")?;
        let per_row = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (FILTER_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let mask_args = [Arg::Ptr(mask.values_ptr(stream)), Arg::Ptr(mask.validity_ptr(stream)), Arg::U32(n as u32)];
        let mut args = mask_args.to_vec();
        args.push(Arg::Ptr(counts.ptr(stream, 0)));
        s.launch(&s.kernels().filter_count, per_row, &args)?;
        let one_block = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        s.launch(&s.kernels().exclusive_scan_u32, one_block, &[Arg::Ptr(counts.ptr(stream, 0)), Arg::U32(blocks as u32), Arg::Ptr(offsets.ptr(stream, 0))])?;
        let kept = s.download(&offsets, blocks, 1)?[0] as usize;
        let rows = s.alloc::<u32>(kept, "filtered rows")?;
        let mut args = mask_args.to_vec();
        args.extend([Arg::Ptr(offsets.ptr(stream, 0)), Arg::Ptr(rows.ptr(stream, 0))]);
        s.launch(&s.kernels().filter_compact, per_row, &args)?;
        self.gather(&rows, kept)
    }

    pub(crate) fn try_sort(&self, keys: &[SortKey], limit: Option<usize>) -> Result<DeviceFrame, GpuError> {
        let [key] = keys else { return Err(unsupported("sorting by several columns")) };
        let column = self.column(&key.column).ok_or_else(|| unsupported(format!("no column `{}`", key.column)))?;
        let s = &self.session;
        let stream = &s.stream;
        let n = self.rows;
        let (padded, steps) = bitonic_schedule(n);
        let k1 = s.alloc::<u64>(padded as usize, "sort keys")?;
        let k2 = s.alloc::<u64>(padded as usize, "sort keys")?;
        let kind = i32::from(column.dtype == DType::Float64);
        s.launch_over(
            &s.kernels().sort_keys,
            padded as usize,
            &[
                Arg::Ptr(column.values_ptr(stream)),
                Arg::Ptr(column.validity_ptr(stream)),
                Arg::U32(n as u32),
                Arg::I32(kind),
                Arg::I32(i32::from(key.descending)),
                Arg::U32(padded),
                Arg::Ptr(k1.ptr(stream, 0)),
                Arg::Ptr(k2.ptr(stream, 0)),
            ],
        )?;
        for (j, k) in steps {
            s.launch_over(&s.kernels().bitonic_step, padded as usize, &[Arg::Ptr(k1.ptr(stream, 0)), Arg::Ptr(k2.ptr(stream, 0)), Arg::U32(padded), Arg::U32(j), Arg::U32(k)])?;
        }
        let m = limit.map_or(n, |l| l.min(n));
        let rows = s.alloc::<u32>(m, "sorted rows")?;
        s.launch_over(&s.kernels().sort_rows, m, &[Arg::Ptr(k2.ptr(stream, 0)), Arg::U32(m as u32), Arg::Ptr(rows.ptr(stream, 0))])?;
        self.gather(&rows, m)
    }

    pub(crate) fn try_concat(frames: &[&DeviceFrame]) -> Result<DeviceFrame, GpuError> {
        let first = frames[0];
        if frames.iter().any(|f| !Arc::ptr_eq(&f.session, &first.session)) {
            return Err(unsupported("frames of different invocations"));
        }
        let s = &first.session;
        let stream = &s.stream;
        let total: usize = frames.iter().map(|f| f.rows).sum();
        crate::cuda::layout::device_rows(total).map_err(|e| unsupported(e.to_string()))?;
        let mut columns = Vec::with_capacity(first.columns.len());
        for (c, template) in first.columns.iter().enumerate() {
            let parts: Vec<&DeviceColumn> = frames.iter().map(|f| &f.columns[c]).collect();
            let values = s.alloc::<u64>(total, "concatenated column")?;
            let nullable = parts.iter().any(|p| p.validity.is_some());
            let validity = if nullable { Some(s.alloc::<u8>(total, "concatenated column")?) } else { None };
            let (dictionary, mappings) = match template.dtype {
                DType::Utf8 => {
                    let dictionaries: Vec<&StringArray> =
                        parts.iter().map(|p| p.dictionary.as_deref().ok_or_else(|| unsupported("utf8 column without dictionary"))).collect::<Result<_, _>>()?;
                    let (merged, mappings) = merge_dictionaries(&dictionaries);
                    (Some(Arc::new(merged)), Some(mappings))
                }
                _ => (None, None),
            };
            let mut at = 0usize;
            for (i, (frame, part)) in frames.iter().zip(&parts).enumerate() {
                let rows = frame.rows;
                if rows == 0 {
                    continue;
                }
                // SAFETY: both ranges lie inside live buffers of this session's stream.
                unsafe { cudarc::driver::result::memcpy_dtod_async(values.ptr(stream, at), part.values_ptr(stream), rows * 8, stream.cu_stream()) }?;
                if let Some(validity) = &validity {
                    match &part.validity {
                        // SAFETY: as above.
                        Some(_) => unsafe { cudarc::driver::result::memcpy_dtod_async(validity.ptr(stream, at), part.validity_ptr(stream), rows, stream.cu_stream()) }?,
                        None => s.launch_over(&s.kernels().fill_u8, rows, &[Arg::Ptr(validity.ptr(stream, at)), Arg::U32(rows as u32), Arg::U8(1)])?,
                    }
                }
                if let Some(mappings) = &mappings {
                    let mapping = s.upload_small(&mappings[i], "dictionary mapping")?;
                    let validity_ptr = validity.as_ref().map_or(0, |v| v.ptr(stream, at));
                    s.launch_over(&s.kernels().remap_codes, rows, &[Arg::Ptr(values.ptr(stream, at)), Arg::Ptr(validity_ptr), Arg::U32(rows as u32), Arg::Ptr(mapping.ptr(stream, 0))])?;
                    // The mapping must outlive the launch that reads it.
                    stream.synchronize()?;
                }
                at += rows;
            }
            columns.push(DeviceColumn { dtype: template.dtype, values: Arc::new(values), validity: validity.map(Arc::new), offset: 0, dictionary, nullable: template.nullable });
        }
        Ok(first.derive(first.names.clone(), columns, total))
    }

    pub(crate) fn try_group_by(&self, keys: &[String], aggs: &[Expr]) -> Result<DeviceFrame, GpuError> {
        if keys.len() > 1 {
            return Err(unsupported("group-by on several keys"));
        }
        let parsed = aggs.iter().map(crate::groupby::parse_agg).collect::<Result<Vec<_>, _>>().map_err(|e| unsupported(e.to_string()))?;
        let mut names: Vec<String> = keys.to_vec();
        names.extend(parsed.iter().map(|(_, _, name)| name.clone()));
        check_names(&names)?;
        let groups = match keys.first() {
            Some(key) => self.hash_groups(key)?,
            None => self.single_group()?,
        };
        let n_groups = groups.firsts.len();
        let s = &self.session;
        let firsts = s.upload_small(&groups.firsts, "group first rows")?;
        let mut columns = Vec::with_capacity(names.len());
        if let Some(key) = keys.first() {
            let column = DeviceColumn { nullable: true, ..self.column(key).expect("checked by hash_groups").clone() };
            columns.push(self.gather_column(&column, &firsts, n_groups)?);
        }
        for (input, how, _) in &parsed {
            let column = match input {
                Some(e) => Some(self.expression(e)?),
                None => None,
            };
            let out = match (how, &column) {
                (AggFn::Count, c) => self.count(&groups, c.as_ref())?,
                (_, None) => return Err(unsupported("an aggregation without input")),
                (AggFn::Sum, Some(c)) => self.sum(&groups, c)?,
                (AggFn::Mean, Some(c)) => self.mean(&groups, c)?,
                (AggFn::Min | AggFn::Max, Some(c)) => {
                    let rows = self.extreme_rows(&groups, c, *how == AggFn::Max)?;
                    self.gather_column(c, &rows, n_groups)?
                }
                (AggFn::First, Some(c)) => self.gather_column(c, &firsts, n_groups)?,
                (AggFn::Last, Some(c)) => {
                    let lasts = s.upload_small(&groups.lasts, "group last rows")?;
                    self.gather_column(c, &lasts, n_groups)?
                }
            };
            columns.push(out);
        }
        Ok(self.derive(names, columns, n_groups))
    }
}

/// Every row's dense group id and each group's first and last row.
struct Groups {
    of_row: Buffer<u32>,
    firsts: Vec<u32>,
    lasts: Vec<u32>,
}

impl DeviceFrame {
    /// Without keys: one group, even of no rows (as the CPU backend).
    fn single_group(&self) -> Result<Groups, GpuError> {
        let n = self.rows;
        let of_row = self.session.alloc::<u32>(n, "group ids")?;
        let (first, last) = if n == 0 { (NO_ROW, NO_ROW) } else { (0, n as u32 - 1) };
        Ok(Groups { of_row, firsts: vec![first], lasts: vec![last] })
    }

    fn hash_groups(&self, key: &str) -> Result<Groups, GpuError> {
        let column = self.column(key).ok_or_else(|| unsupported(format!("no column `{key}`")))?;
        if column.dtype == DType::Float64 {
            return Err(unsupported("float64 group keys"));
        }
        let s = &self.session;
        let stream = &s.stream;
        let n = self.rows;
        let cap = hash_capacity(n) as usize;
        let table = s.filled_u64(cap, u64::MAX, "group-by hash table")?;
        let slots = s.alloc::<u32>(n, "group-by slots")?;
        let first_row = s.filled_u32(cap + 2, NO_ROW, "group-by first rows")?;
        let last_row = s.alloc::<u32>(cap + 2, "group-by last rows")?;
        s.launch_over(
            &s.kernels().gb_insert,
            n,
            &[
                Arg::Ptr(column.values_ptr(stream)),
                Arg::Ptr(column.validity_ptr(stream)),
                Arg::U32(n as u32),
                Arg::Ptr(table.ptr(stream, 0)),
                Arg::U32(cap as u32),
                Arg::Ptr(slots.ptr(stream, 0)),
                Arg::Ptr(first_row.ptr(stream, 0)),
                Arg::Ptr(last_row.ptr(stream, 0)),
            ],
        )?;
        let first_of_slot = s.download(&first_row, 0, cap + 2)?;
        let last_of_slot = s.download(&last_row, 0, cap + 2)?;
        let (slot_to_group, firsts) = number_groups(&first_of_slot);
        let mut lasts = vec![NO_ROW; firsts.len()];
        for (slot, group) in slot_to_group.iter().enumerate() {
            if *group != NO_ROW {
                lasts[*group as usize] = last_of_slot[slot];
            }
        }
        let slot_to_group = s.upload_small(&slot_to_group, "group numbering")?;
        let of_row = s.alloc::<u32>(n, "group ids")?;
        s.launch_over(&s.kernels().gb_dense_ids, n, &[Arg::Ptr(slots.ptr(stream, 0)), Arg::Ptr(slot_to_group.ptr(stream, 0)), Arg::U32(n as u32), Arg::Ptr(of_row.ptr(stream, 0))])?;
        Ok(Groups { of_row, firsts, lasts })
    }

    /// A launch over the rows that uses `words` 8-byte partials per group in shared memory
    /// when they fit (few groups), else the global-atomics kernel.
    fn per_group_launch(&self, groups: usize, words: usize, shared: &cudarc::driver::CudaFunction, global: &cudarc::driver::CudaFunction, args: &[Arg], shared_extra: Arg) -> Result<(), GpuError> {
        let s = &self.session;
        let n = self.rows;
        if n == 0 {
            return Ok(());
        }
        if fits_shared(groups, words) {
            let (blocks, threads) = grid(n);
            let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: (groups * words * 8) as u32 };
            // The shared kernels take the group count after the row count (see groupby.cu).
            let mut shared_args = args[..args.len() - words].to_vec();
            shared_args.push(shared_extra);
            shared_args.extend_from_slice(&args[args.len() - words..]);
            s.launch(shared, config, &shared_args)
        } else {
            s.launch_over(global, n, args)
        }
    }

    fn count(&self, groups: &Groups, column: Option<&DeviceColumn>) -> Result<DeviceColumn, GpuError> {
        let s = &self.session;
        let stream = &s.stream;
        let g = groups.firsts.len();
        let counts = s.alloc::<u64>(g, "group counts")?;
        let validity = column.map_or(0, |c| c.validity_ptr(stream));
        self.per_group_launch(
            g,
            1,
            &s.kernels().gb_count_shared,
            &s.kernels().gb_count,
            &[Arg::Ptr(groups.of_row.ptr(stream, 0)), Arg::Ptr(validity), Arg::U32(self.rows as u32), Arg::Ptr(counts.ptr(stream, 0))],
            Arg::U32(g as u32),
        )?;
        Ok(DeviceColumn { dtype: DType::Int64, values: Arc::new(counts), validity: None, offset: 0, dictionary: None, nullable: true })
    }

    /// Float sums and counts per group (`as_int`: the input is int64).
    fn float_sums(&self, groups: &Groups, column: &DeviceColumn, as_int: bool) -> Result<(Vec<f64>, Vec<u64>), GpuError> {
        let s = &self.session;
        let stream = &s.stream;
        let g = groups.firsts.len();
        let sums = s.alloc::<f64>(g, "group sums")?;
        let counts = s.alloc::<u64>(g, "group counts")?;
        let n = self.rows;
        let base = [
            Arg::Ptr(groups.of_row.ptr(stream, 0)),
            Arg::Ptr(column.values_ptr(stream)),
            Arg::Ptr(column.validity_ptr(stream)),
            Arg::U32(n as u32),
            Arg::I32(i32::from(as_int)),
        ];
        let outputs = [Arg::Ptr(sums.ptr(stream, 0)), Arg::Ptr(counts.ptr(stream, 0))];
        let args: Vec<Arg> = base.iter().chain(&outputs).copied().collect();
        self.per_group_launch(g, 2, &s.kernels().gb_sum_f64_shared, &s.kernels().gb_sum_f64, &args, Arg::U32(g as u32))?;
        Ok((s.download(&sums, 0, g)?, s.download(&counts, 0, g)?))
    }

    fn sum(&self, groups: &Groups, column: &DeviceColumn) -> Result<DeviceColumn, GpuError> {
        let s = &self.session;
        let g = groups.firsts.len();
        match column.dtype {
            DType::Float64 => {
                let (sums, counts) = self.float_sums(groups, column, false)?;
                let valid: Vec<u8> = counts.iter().map(|c| u8::from(*c > 0)).collect();
                s.column_from_host(DType::Float64, sums.iter().map(|x| x.to_bits()).collect(), Some(valid), "group sums")
            }
            DType::Int64 => {
                let stream = &s.stream;
                let lo = s.alloc::<u64>(g, "group sums")?;
                let hi = s.alloc::<u64>(g, "group sums")?;
                let counts = s.alloc::<u64>(g, "group counts")?;
                let args = [
                    Arg::Ptr(groups.of_row.ptr(stream, 0)),
                    Arg::Ptr(column.values_ptr(stream)),
                    Arg::Ptr(column.validity_ptr(stream)),
                    Arg::U32(self.rows as u32),
                    Arg::Ptr(lo.ptr(stream, 0)),
                    Arg::Ptr(hi.ptr(stream, 0)),
                    Arg::Ptr(counts.ptr(stream, 0)),
                ];
                self.per_group_launch(g, 3, &s.kernels().gb_sum_i64_shared, &s.kernels().gb_sum_i64, &args, Arg::U32(g as u32))?;
                let (lo, hi, counts) = (s.download(&lo, 0, g)?, s.download(&hi, 0, g)?, s.download(&counts, 0, g)?);
                let mut words = Vec::with_capacity(g);
                for (l, h) in lo.iter().zip(&hi) {
                    words.push(int_sum(*l, *h).ok_or_else(|| unsupported("an int64 sum that overflows; the CPU reports it"))? as u64);
                }
                let valid: Vec<u8> = counts.iter().map(|c| u8::from(*c > 0)).collect();
                s.column_from_host(DType::Int64, words, Some(valid), "group sums")
            }
            other => Err(unsupported(format!("sum of {other}"))),
        }
    }

    fn mean(&self, groups: &Groups, column: &DeviceColumn) -> Result<DeviceColumn, GpuError> {
        let as_int = match column.dtype {
            DType::Int64 => true,
            DType::Float64 => false,
            other => return Err(unsupported(format!("mean of {other}"))),
        };
        let (sums, counts) = self.float_sums(groups, column, as_int)?;
        let words = sums.iter().zip(&counts).map(|(s, c)| if *c > 0 { (s / *c as f64).to_bits() } else { 0 }).collect();
        let valid = counts.iter().map(|c| u8::from(*c > 0)).collect();
        self.session.column_from_host(DType::Float64, words, Some(valid), "group means")
    }

    /// The row each group's min (max) takes its value from, as the CPU backend picks it.
    fn extreme_rows(&self, groups: &Groups, column: &DeviceColumn, want_max: bool) -> Result<Buffer<u32>, GpuError> {
        let s = &self.session;
        let stream = &s.stream;
        let g = groups.firsts.len();
        let n = self.rows;
        let is_float = i32::from(column.dtype == DType::Float64);
        let start = if want_max { i64::MIN } else { i64::MAX };
        let best = s.filled_u64(g, start as u64, "group extremes")?;
        let first_valid = s.filled_u32(g, NO_ROW, "group extremes")?;
        let best_row = s.filled_u32(g, NO_ROW, "group extremes")?;
        let rows = s.alloc::<u32>(g, "group extremes")?;
        let of_row = Arg::Ptr(groups.of_row.ptr(stream, 0));
        let values = Arg::Ptr(column.values_ptr(stream));
        let validity = Arg::Ptr(column.validity_ptr(stream));
        s.launch_over(
            &s.kernels().gb_extreme_value,
            n,
            &[of_row, values, validity, Arg::U32(n as u32), Arg::I32(is_float), Arg::I32(i32::from(want_max)), Arg::Ptr(best.ptr(stream, 0)), Arg::Ptr(first_valid.ptr(stream, 0))],
        )?;
        s.launch_over(
            &s.kernels().gb_extreme_row,
            n,
            &[of_row, values, validity, Arg::U32(n as u32), Arg::I32(is_float), Arg::Ptr(best.ptr(stream, 0)), Arg::Ptr(best_row.ptr(stream, 0))],
        )?;
        s.launch_over(
            &s.kernels().gb_pick_extreme,
            g,
            &[Arg::Ptr(first_valid.ptr(stream, 0)), Arg::Ptr(best_row.ptr(stream, 0)), values, Arg::I32(is_float), Arg::U32(g as u32), Arg::Ptr(rows.ptr(stream, 0))],
        )?;
        Ok(rows)
    }
}
