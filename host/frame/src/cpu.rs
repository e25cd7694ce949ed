//! The CPU backend: Arrow compute kernels plus the engine's own group-by.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, UInt32Array};
use arrow::compute::{SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::backend::{Backend, Device, SortKey};
use crate::error::FrameError;
use crate::eval::{eval, evaluate, type_name};
use crate::expr::Expr;
use crate::groupby;

/// Runs every operation on the host CPU with Arrow kernels (group-by in parallel with rayon).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

pub(crate) fn check_unique_names(fields: &[Field]) -> Result<(), FrameError> {
    let mut seen = HashSet::new();
    for f in fields {
        if !seen.insert(f.name().as_str()) {
            return Err(FrameError::InvalidArgument(format!(
                "duplicate output column `{}`; give one of the expressions another name with alias",
                f.name()
            )));
        }
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn evaluate(&self, batch: &RecordBatch, expr: &Expr) -> Result<ArrayRef, FrameError> {
        evaluate(batch, expr)
    }

    fn project(&self, batch: &RecordBatch, exprs: &[Expr]) -> Result<RecordBatch, FrameError> {
        let mut fields = Vec::with_capacity(exprs.len());
        let mut columns = Vec::with_capacity(exprs.len());
        for e in exprs {
            let mut a = evaluate(batch, e)?;
            if a.data_type() == &DataType::Null {
                // A bare `null` literal: store it as a null utf8 column, a type the engine knows.
                a = arrow::array::new_null_array(&DataType::Utf8, a.len());
            }
            fields.push(Field::new(e.output_name(), a.data_type().clone(), true));
            columns.push(a);
        }
        check_unique_names(&fields)?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
    }

    fn filter(&self, batch: &RecordBatch, predicate: &Expr) -> Result<RecordBatch, FrameError> {
        let value = eval(batch, predicate)?;
        let mask = value.into_array(batch.num_rows())?;
        match mask.data_type() {
            DataType::Boolean => Ok(filter_record_batch(batch, mask.as_boolean())?),
            DataType::Null => Ok(batch.slice(0, 0)),
            other => Err(FrameError::TypeMismatch(format!(
                "filter predicate `{predicate}` must be boolean, found {}",
                type_name(other)
            ))),
        }
    }

    fn group_by(&self, batch: &RecordBatch, keys: &[String], aggs: &[Expr]) -> Result<RecordBatch, FrameError> {
        groupby::group_by(batch, keys, aggs)
    }

    fn sort(&self, batch: &RecordBatch, keys: &[SortKey], limit: Option<usize>) -> Result<RecordBatch, FrameError> {
        let schema = batch.schema();
        let mut columns = Vec::with_capacity(keys.len() + 1);
        for k in keys {
            let idx = schema.index_of(&k.column).map_err(|_| FrameError::column_not_found(&k.column, &schema))?;
            columns.push(SortColumn {
                values: batch.column(idx).clone(),
                options: Some(SortOptions { descending: k.descending, nulls_first: false }),
            });
        }
        // Arrow's sort is not stable; the row number as last key makes it so.
        let rows = u32::try_from(batch.num_rows())
            .map_err(|_| FrameError::Limit(format!("cannot sort {} rows (at most {})", batch.num_rows(), u32::MAX)))?;
        columns.push(SortColumn { values: Arc::new(UInt32Array::from_iter_values(0..rows)), options: None });
        let indices = lexsort_to_indices(&columns, limit)?;
        Ok(take_record_batch(batch, &indices)?)
    }

    fn concat(&self, batches: &[&RecordBatch]) -> Result<RecordBatch, FrameError> {
        let schema = batches[0].schema();
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        if schema.fields().is_empty() {
            let options = RecordBatchOptions::new().with_row_count(Some(total));
            return Ok(RecordBatch::try_new_with_options(schema, vec![], &options)?);
        }
        Ok(concat_batches(&schema, batches.iter().copied())?)
    }
}
