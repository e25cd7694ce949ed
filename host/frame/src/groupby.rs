//! Hash group-by on the CPU.
//!
//! Two phases, both parallel over row chunks with rayon:
//! 1. every row gets a dense group id (`u32`), numbered in order of first appearance: each chunk
//!    hashes its rows into local ids, then the chunks' groups are merged in chunk order;
//! 2. every aggregate runs a tight loop over `(group id, value)` slices into per-group state,
//!    one partial state per chunk, merged at the end (skipped when groups are as many as rows).
//!
//! min/max/first/last keep a row index per group and gather values with `take` at the end, so
//! one code path serves every column type.

use std::hash::Hash;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use rayon::prelude::*;

use crate::error::FrameError;
use crate::eval::evaluate;
use crate::expr::{AggFn, Expr};

type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Rows per chunk below which parallelism does not pay for itself.
const MIN_CHUNK_ROWS: usize = 1 << 16;

/// Dense group ids for every row, numbered by first appearance.
struct Groups {
    ids: Vec<u32>,
    /// Index of each group's first row.
    first_rows: Vec<u32>,
}

impl Groups {
    fn len(&self) -> usize {
        self.first_rows.len()
    }
}

fn chunk_ranges(rows: usize) -> Vec<Range<usize>> {
    let threads = rayon::current_num_threads().max(1);
    let size = (rows / (threads * 4)).max(MIN_CHUNK_ROWS);
    (0..rows).step_by(size).map(|s| s..(s + size).min(rows)).collect()
}

/// Assigns group ids from a per-row key; `key(i)` must be cheap (it borrows from the arrays).
fn assign_groups<K, F>(rows: usize, key: F) -> Result<Groups, FrameError>
where
    K: Hash + Eq + Send,
    F: Fn(usize) -> K + Sync,
{
    let ranges = chunk_ranges(rows);
    let locals: Vec<(Vec<u32>, Vec<u32>)> = ranges
        .par_iter()
        .map(|r| {
            let mut map: HashMap<K, u32> = HashMap::default();
            let mut ids = Vec::with_capacity(r.len());
            let mut firsts = Vec::new();
            for i in r.clone() {
                let next = firsts.len() as u32;
                let id = *map.entry(key(i)).or_insert_with(|| {
                    firsts.push(i as u32);
                    next
                });
                ids.push(id);
            }
            (ids, firsts)
        })
        .collect();

    let mut global: HashMap<K, u32> = HashMap::default();
    let mut first_rows = Vec::new();
    let mut remaps = Vec::with_capacity(locals.len());
    for (_, firsts) in &locals {
        let remap: Vec<u32> = firsts
            .iter()
            .map(|&row| {
                let next = first_rows.len() as u32;
                *global.entry(key(row as usize)).or_insert_with(|| {
                    first_rows.push(row);
                    next
                })
            })
            .collect();
        remaps.push(remap);
    }
    if first_rows.len() > u32::MAX as usize - 1 {
        return Err(FrameError::Limit(format!("group_by produced {} groups", first_rows.len())));
    }
    let mut ids = vec![0u32; rows];
    let mut slices = Vec::with_capacity(ranges.len());
    let mut rest = ids.as_mut_slice();
    for r in &ranges {
        let (head, tail) = rest.split_at_mut(r.len());
        slices.push(head);
        rest = tail;
    }
    slices.into_par_iter().zip(locals).zip(remaps).for_each(|((dst, (local, _)), remap)| {
        for (d, l) in dst.iter_mut().zip(local) {
            *d = remap[l as usize];
        }
    });
    Ok(Groups { ids, first_rows })
}

fn group_rows(batch: &RecordBatch, keys: &[ArrayRef]) -> Result<Groups, FrameError> {
    let rows = batch.num_rows();
    if keys.is_empty() {
        // One group holding every row, even when there are none (an aggregate over the frame).
        return Ok(Groups { ids: vec![0; rows], first_rows: vec![0] });
    }
    if keys.len() == 1 {
        let a = &keys[0];
        let valid = |i: usize| a.is_valid(i);
        match a.data_type() {
            DataType::Utf8 => {
                let s = a.as_string::<i32>();
                return assign_groups(rows, |i| valid(i).then(|| s.value(i).as_bytes()));
            }
            DataType::Int64 => {
                let v = a.as_primitive::<Int64Type>().values();
                return assign_groups(rows, |i| valid(i).then(|| v[i]));
            }
            DataType::Timestamp(..) => {
                let v = a.as_primitive::<TimestampMillisecondType>().values();
                return assign_groups(rows, |i| valid(i).then(|| v[i]));
            }
            DataType::Boolean => {
                let b = a.as_boolean();
                return assign_groups(rows, |i| valid(i).then(|| b.value(i)));
            }
            _ => {}
        }
    }
    // Several keys (or another type): Arrow's row format gives one comparable byte string per row.
    let converter = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    let encoded = converter.convert_columns(keys)?;
    assign_groups(rows, |i| encoded.row(i).data())
}

/// Folds `step` over row ranges into per-group state, in parallel when groups are few.
fn fold<S, Step, Merge>(ids: &[u32], groups: usize, init: impl Fn() -> S + Sync, step: Step, merge: Merge) -> Result<S, FrameError>
where
    S: Send,
    Step: Fn(&mut S, Range<usize>) -> Result<(), FrameError> + Sync,
    Merge: Fn(&mut S, S) -> Result<(), FrameError> + Sync,
{
    let ranges = chunk_ranges(ids.len());
    if ranges.len() <= 1 || groups.saturating_mul(ranges.len()) > ids.len() {
        let mut s = init();
        step(&mut s, 0..ids.len())?;
        return Ok(s);
    }
    let partials: Vec<S> = ranges
        .into_par_iter()
        .map(|r| {
            let mut s = init();
            step(&mut s, r)?;
            Ok(s)
        })
        .collect::<Result<_, FrameError>>()?;
    let mut it = partials.into_iter();
    let mut acc = it.next().expect("at least one chunk");
    for p in it {
        merge(&mut acc, p)?;
    }
    Ok(acc)
}

/// Non-null values per group (or rows per group for `count_rows`).
fn count(ids: &[u32], groups: usize, values: Option<&ArrayRef>) -> Result<ArrayRef, FrameError> {
    let nulls = values.and_then(|v| v.logical_nulls());
    let counts = fold(
        ids,
        groups,
        || vec![0i64; groups],
        |c, r| {
            match &nulls {
                None => ids[r].iter().for_each(|&g| c[g as usize] += 1),
                Some(n) => r.for_each(|i| c[ids[i] as usize] += n.is_valid(i) as i64),
            }
            Ok(())
        },
        |a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            Ok(())
        },
    )?;
    Ok(Arc::new(Int64Array::from(counts)))
}

/// Per-group float sums and value counts (ints converted), the state of sum and mean.
fn float_sums(ids: &[u32], groups: usize, values: &Float64Array) -> Result<(Vec<f64>, Vec<u64>), FrameError> {
    let v = values.values();
    let nulls = values.nulls();
    fold(
        ids,
        groups,
        || (vec![0f64; groups], vec![0u64; groups]),
        |(s, c), r| {
            match nulls {
                None => {
                    for (&g, &x) in ids[r.clone()].iter().zip(&v[r]) {
                        s[g as usize] += x;
                        c[g as usize] += 1;
                    }
                }
                Some(n) => {
                    for i in r {
                        if n.is_valid(i) {
                            s[ids[i] as usize] += v[i];
                            c[ids[i] as usize] += 1;
                        }
                    }
                }
            }
            Ok(())
        },
        |(s, c), (s2, c2)| {
            s.iter_mut().zip(s2).for_each(|(x, y)| *x += y);
            c.iter_mut().zip(c2).for_each(|(x, y)| *x += y);
            Ok(())
        },
    )
}

fn int_sums(ids: &[u32], groups: usize, values: &Int64Array, name: &str) -> Result<ArrayRef, FrameError> {
    let v = values.values();
    let nulls = values.nulls();
    let overflow = || FrameError::InvalidArgument(format!("sum of `{name}` overflows int64"));
    let (sums, counts) = fold(
        ids,
        groups,
        || (vec![0i64; groups], vec![0u64; groups]),
        |(s, c), r| {
            for i in r {
                if nulls.is_none_or(|n| n.is_valid(i)) {
                    let g = ids[i] as usize;
                    s[g] = s[g].checked_add(v[i]).ok_or_else(overflow)?;
                    c[g] += 1;
                }
            }
            Ok(())
        },
        |(s, c), (s2, c2)| {
            for (x, y) in s.iter_mut().zip(s2) {
                *x = x.checked_add(y).ok_or_else(overflow)?;
            }
            c.iter_mut().zip(c2).for_each(|(x, y)| *x += y);
            Ok(())
        },
    )?;
    Ok(Arc::new(Int64Array::from_iter(sums.into_iter().zip(counts).map(|(s, c)| (c > 0).then_some(s)))))
}

/// Row index of each group's minimum (`want_max == false`) or maximum non-null value;
/// `None` when the column type has no order.
fn extreme_rows(ids: &[u32], groups: usize, values: &ArrayRef, want_max: bool) -> Option<Result<Vec<Option<u32>>, FrameError>> {
    fn run<L: Fn(usize, usize) -> bool + Sync>(
        ids: &[u32],
        groups: usize,
        values: &ArrayRef,
        want_max: bool,
        less: L,
    ) -> Result<Vec<Option<u32>>, FrameError> {
        let nulls = values.logical_nulls();
        let better = |cand: usize, cur: Option<u32>| match cur {
            None => true,
            Some(cur) => {
                let cur = cur as usize;
                if want_max { less(cur, cand) } else { less(cand, cur) }
            }
        };
        fold(
            ids,
            groups,
            || vec![None; groups],
            |best, r| {
                for i in r {
                    if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
                        let g = ids[i] as usize;
                        if better(i, best[g]) {
                            best[g] = Some(i as u32);
                        }
                    }
                }
                Ok(())
            },
            |a, b| {
                // Partials come in row order, so ties keep the earlier row.
                for (x, y) in a.iter_mut().zip(b) {
                    if let Some(y) = y
                        && better(y as usize, *x)
                    {
                        *x = Some(y);
                    }
                }
                Ok(())
            },
        )
    }
    Some(match values.data_type() {
        DataType::Int64 => {
            let v = values.as_primitive::<Int64Type>().values();
            run(ids, groups, values, want_max, |a, b| v[a] < v[b])
        }
        DataType::Timestamp(..) => {
            let v = values.as_primitive::<TimestampMillisecondType>().values();
            run(ids, groups, values, want_max, |a, b| v[a] < v[b])
        }
        DataType::Float64 => {
            let v = values.as_primitive::<Float64Type>().values();
            run(ids, groups, values, want_max, |a, b| v[a] < v[b])
        }
        DataType::Utf8 => {
            let s = values.as_string::<i32>();
            run(ids, groups, values, want_max, |a, b| s.value(a) < s.value(b))
        }
        DataType::Boolean => {
            let s = values.as_boolean();
            run(ids, groups, values, want_max, |a, b| !s.value(a) & s.value(b))
        }
        _ => return None,
    })
}

/// Splits an aggregation into its input, function and output name; rejects anything else.
pub(crate) fn parse_agg(expr: &Expr) -> Result<(Option<&Expr>, AggFn, String), FrameError> {
    let name = expr.output_name();
    let mut e = expr;
    while let Expr::Alias(inner, _) = e {
        e = inner;
    }
    match e {
        Expr::CountRows => Ok((None, AggFn::Count, name)),
        Expr::Aggregate(inner, how) if !inner.contains_aggregate() => Ok((Some(inner), *how, name)),
        _ => Err(FrameError::InvalidArgument(format!(
            "`{expr}` is not an aggregation; use an aggregate function (count, sum, mean, min, max, first, last) or count_rows"
        ))),
    }
}

/// Groups `batch` by the `keys` columns and computes `aggs` per group.
///
/// Output: key columns, then one column per aggregation, one row per group in order of first
/// appearance. Null keys form their own group. With no keys the whole batch is one group (one
/// output row, even for an empty batch).
pub fn group_by(batch: &RecordBatch, keys: &[String], aggs: &[Expr]) -> Result<RecordBatch, FrameError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(keys.len() + aggs.len());
    let mut key_arrays = Vec::with_capacity(keys.len());
    for k in keys {
        let idx = schema.index_of(k).map_err(|_| FrameError::column_not_found(k, &schema))?;
        let dt = schema.field(idx).data_type();
        if !matches!(dt, DataType::Utf8 | DataType::Int64 | DataType::Boolean | DataType::Timestamp(..) | DataType::Float64) {
            return Err(FrameError::TypeMismatch(format!("cannot group by column `{k}` of type {dt}")));
        }
        fields.push(Field::new(k.clone(), dt.clone(), true));
        key_arrays.push(batch.column(idx).clone());
    }
    let parsed = aggs.iter().map(parse_agg).collect::<Result<Vec<_>, _>>()?;

    let groups = group_rows(batch, &key_arrays)?;
    let n = groups.len();
    let ids = &groups.ids;
    let first: UInt32Array = (0..n).map(|g| groups.first_rows.get(g).copied().filter(|_| !ids.is_empty())).collect();
    tracing::debug!(rows = batch.num_rows(), groups = n, "group_by");

    let mut columns: Vec<ArrayRef> = key_arrays.iter().map(|k| take(k, &first, None)).collect::<Result<_, _>>()?;
    let mut last: Option<UInt32Array> = None;
    for (input, how, name) in parsed {
        let values = input.map(|e| evaluate(batch, e)).transpose()?;
        let mismatch = |v: &ArrayRef| {
            FrameError::TypeMismatch(format!("cannot compute {} of {} `{}`", how.name(), crate::eval::type_name(v.data_type()), input.map(|e| e.to_string()).unwrap_or_default()))
        };
        let out: ArrayRef = match (how, &values) {
            (AggFn::Count, v) => count(ids, n, v.as_ref())?,
            (_, None) => unreachable!("only count has no input"),
            (AggFn::Sum, Some(v)) => match v.data_type() {
                DataType::Int64 => int_sums(ids, n, v.as_primitive::<Int64Type>(), &name)?,
                DataType::Float64 => {
                    let (s, c) = float_sums(ids, n, v.as_primitive::<Float64Type>())?;
                    Arc::new(Float64Array::from_iter(s.into_iter().zip(c).map(|(s, c)| (c > 0).then_some(s))))
                }
                _ => return Err(mismatch(v)),
            },
            (AggFn::Mean, Some(v)) => {
                let floats = match v.data_type() {
                    DataType::Int64 | DataType::Float64 => arrow::compute::cast(v, &DataType::Float64)?,
                    _ => return Err(mismatch(v)),
                };
                let (s, c) = float_sums(ids, n, floats.as_primitive::<Float64Type>())?;
                Arc::new(Float64Array::from_iter(s.into_iter().zip(c).map(|(s, c)| (c > 0).then(|| s / c as f64))))
            }
            (AggFn::Min | AggFn::Max, Some(v)) => {
                let rows = extreme_rows(ids, n, v, how == AggFn::Max).ok_or_else(|| mismatch(v))??;
                take(v, &UInt32Array::from(rows), None)?
            }
            (AggFn::First, Some(v)) => take(v, &first, None)?,
            (AggFn::Last, Some(v)) => {
                let idx = last.get_or_insert_with(|| {
                    let mut l: Vec<Option<u32>> = vec![None; n];
                    for (i, &g) in ids.iter().enumerate() {
                        l[g as usize] = Some(i as u32);
                    }
                    UInt32Array::from(l)
                });
                take(v, idx, None)?
            }
        };
        fields.push(Field::new(name, out.data_type().clone(), true));
        columns.push(out);
    }
    crate::cpu::check_unique_names(&fields)?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, StringArray};
    use crate::expr::Scalar;

    fn col(n: &str) -> Expr {
        Expr::col(n)
    }

    /// Deterministic pseudo-random rows with nulls in keys and values.
    fn data(rows: usize) -> RecordBatch {
        let mut x = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut k1 = Vec::new();
        let mut k2 = Vec::new();
        let mut k3 = Vec::new();
        let mut v = Vec::new();
        let mut w = Vec::new();
        for _ in 0..rows {
            let r = next();
            k1.push((r % 13 != 0).then(|| format!("c{}", r % 7)));
            k2.push((r % 11 != 0).then_some((r >> 8) as i64 % 3));
            k3.push(Some((r >> 16) % 2 == 0));
            v.push((r % 5 != 0).then(|| ((r >> 20) % 1000) as f64 / 10.0));
            w.push((r % 3 != 0).then(|| ((r >> 30) % 100) as i64 - 50));
        }
        RecordBatch::try_from_iter(vec![
            ("k1", Arc::new(StringArray::from(k1)) as ArrayRef),
            ("k2", Arc::new(Int64Array::from(k2)) as ArrayRef),
            ("k3", Arc::new(BooleanArray::from(k3)) as ArrayRef),
            ("v", Arc::new(Float64Array::from(v)) as ArrayRef),
            ("w", Arc::new(Int64Array::from(w)) as ArrayRef),
        ])
        .unwrap()
    }

    type Key = (Option<String>, Option<i64>, Option<bool>);

    #[test]
    fn multi_key_group_by_matches_naive_computation() {
        // Large enough to take the parallel, chunked paths.
        let batch = data(300_000);
        let aggs = vec![
            Expr::CountRows,
            col("v").aggregate(AggFn::Count),
            col("v").aggregate(AggFn::Sum),
            col("v").aggregate(AggFn::Mean),
            col("v").aggregate(AggFn::Min),
            col("v").aggregate(AggFn::Max),
            col("w").aggregate(AggFn::Sum),
            col("w").aggregate(AggFn::First),
            col("w").aggregate(AggFn::Last).alias("w_last_row"),
            col("k1").aggregate(AggFn::Max).alias("k1_max"),
        ];
        let keys = vec!["k1".to_string(), "k2".to_string(), "k3".to_string()];
        let out = group_by(&batch, &keys, &aggs).unwrap();

        let k1 = batch.column(0).as_string::<i32>();
        let k2 = batch.column(1).as_primitive::<Int64Type>();
        let k3 = batch.column(2).as_boolean();
        let v = batch.column(3).as_primitive::<Float64Type>();
        let w = batch.column(4).as_primitive::<Int64Type>();
        let mut order: Vec<Key> = Vec::new();
        let mut rows_of: std::collections::HashMap<Key, Vec<usize>> = Default::default();
        for i in 0..batch.num_rows() {
            let key = (
                k1.is_valid(i).then(|| k1.value(i).to_string()),
                k2.is_valid(i).then(|| k2.value(i)),
                k3.is_valid(i).then(|| k3.value(i)),
            );
            rows_of.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Vec::new()
            }).push(i);
        }
        assert_eq!(out.num_rows(), order.len());
        let names: Vec<_> = out.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["k1", "k2", "k3", "count", "v_count", "v_sum", "v_mean", "v_min", "v_max", "w_sum", "w_first", "w_last_row", "k1_max"]);
        let o = |i: usize| out.column(i).clone();
        for (g, key) in order.iter().enumerate() {
            let rows = &rows_of[key];
            assert_eq!(o(0).as_string::<i32>().is_valid(g).then(|| o(0).as_string::<i32>().value(g).to_string()), key.0);
            assert_eq!(o(3).as_primitive::<Int64Type>().value(g), rows.len() as i64);
            let vs: Vec<f64> = rows.iter().filter(|&&i| v.is_valid(i)).map(|&i| v.value(i)).collect();
            assert_eq!(o(4).as_primitive::<Int64Type>().value(g), vs.len() as i64);
            if vs.is_empty() {
                assert!(o(5).is_null(g) && o(6).is_null(g) && o(7).is_null(g));
            } else {
                let sum: f64 = vs.iter().sum();
                assert!((o(5).as_primitive::<Float64Type>().value(g) - sum).abs() < 1e-6);
                assert!((o(6).as_primitive::<Float64Type>().value(g) - sum / vs.len() as f64).abs() < 1e-9);
                assert_eq!(o(7).as_primitive::<Float64Type>().value(g), vs.iter().cloned().fold(f64::INFINITY, f64::min));
                assert_eq!(o(8).as_primitive::<Float64Type>().value(g), vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            }
            let ws: Vec<i64> = rows.iter().filter(|&&i| w.is_valid(i)).map(|&i| w.value(i)).collect();
            assert_eq!(o(9).as_primitive::<Int64Type>().is_valid(g), !ws.is_empty());
            if !ws.is_empty() {
                assert_eq!(o(9).as_primitive::<Int64Type>().value(g), ws.iter().sum::<i64>());
            }
            let first = rows[0];
            assert_eq!(o(10).is_valid(g), w.is_valid(first));
            if w.is_valid(first) {
                assert_eq!(o(10).as_primitive::<Int64Type>().value(g), w.value(first));
            }
            let last = *rows.last().unwrap();
            assert_eq!(o(11).is_valid(g), w.is_valid(last));
            assert_eq!(o(12).as_string::<i32>().is_valid(g), key.0.is_some());
        }
    }

    #[test]
    fn single_string_key_keeps_first_appearance_order_and_null_group() {
        let batch = data(200_000);
        let out = group_by(&batch, &["k1".into()], &[Expr::CountRows]).unwrap();
        let k = out.column(0).as_string::<i32>();
        let mut seen = Vec::new();
        let src = batch.column(0).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let key = src.is_valid(i).then(|| src.value(i));
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        let got: Vec<Option<&str>> = k.iter().collect();
        assert_eq!(got, seen);
        let total: i64 = out.column(1).as_primitive::<Int64Type>().values().iter().sum();
        assert_eq!(total, 200_000);
    }

    #[test]
    fn no_keys_is_one_group_even_when_empty() {
        let batch = data(0);
        let out = group_by(&batch, &[], &[Expr::CountRows, col("v").aggregate(AggFn::Sum)]).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(out.column(0).as_primitive::<Int64Type>().value(0), 0);
        assert!(out.column(1).is_null(0));
    }

    #[test]
    fn rejects_non_aggregates_and_bad_types() {
        let batch = data(10);
        let err = group_by(&batch, &["k1".into()], &[col("v")]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
        let err = group_by(&batch, &["k1".into()], &[col("k1").aggregate(AggFn::Mean)]).unwrap_err();
        assert!(err.to_string().contains("cannot compute mean of utf8 `k1`"), "{err}");
        let err = group_by(&batch, &["zz".into()], &[Expr::CountRows]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::ColumnNotFound);
        let err = group_by(&batch, &["k1".into()], &[Expr::lit(Scalar::Int(1)).aggregate(AggFn::Sum).aggregate(AggFn::Sum)]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
    }
}
