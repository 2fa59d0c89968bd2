//! Presentation of query results for people: binary ids as hex.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;

/// Replaces every top-level binary column (trace and span ids) by its lowercase hex.
pub fn hex_ids(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, ArrowError> {
    batches.iter().map(hex_batch).collect()
}

fn hex_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if matches!(
            field.data_type(),
            DataType::FixedSizeBinary(_) | DataType::Binary
        ) {
            let binary = arrow::compute::cast(column, &DataType::Binary)?;
            let hex: StringArray = binary
                .as_binary::<i32>()
                .iter()
                .map(|v| v.map(crate::ids::hex))
                .collect();
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
            columns.push(Arc::new(hex) as ArrayRef);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    debug_assert!(columns.iter().all(|c| c.len() == batch.num_rows()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
