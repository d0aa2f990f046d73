//! Projects one field of a compound (record) array as an array of its own, so the legacy
//! pre-0.7 layout (compound `obs`/`var`/`obsm`) reads like any other column or matrix.

use std::sync::Arc;

use super::{ArrayMeta, ArraySource, ChunkGrid, DType, Field, FieldType, StorageError, StorageResult};

/// One field of a 1-D compound array, as a 1-D array (or 2-D for sub-array fields).
pub struct FieldSource {
    parent: Arc<dyn ArraySource>,
    field: Field,
    record_size: usize,
    meta: ArrayMeta,
}

impl FieldSource {
    /// Projects `field` of `parent` (which must be a 1-D compound array).
    pub fn new(parent: Arc<dyn ArraySource>, field: Field) -> StorageResult<Self> {
        let pm = parent.meta();
        let DType::Compound { record_size, .. } = pm.dtype else {
            return Err(StorageError::corrupt(&pm.path, "not a compound array"));
        };
        if pm.shape.len() != 1 {
            return Err(StorageError::unsupported(&pm.path, "compound arrays of rank other than 1"));
        }
        let n = pm.shape[0];
        let rows_per_chunk = pm.grid.chunk[0];
        let (dtype, shape, chunk) = match field.dtype {
            FieldType::Num(t, 1) => (DType::Num(t), vec![n], vec![rows_per_chunk]),
            FieldType::Num(t, k) => (DType::Num(t), vec![n, k as u64], vec![rows_per_chunk, k as u64]),
            FieldType::FixedStr(_) | FieldType::VarStr => (DType::Str, vec![n], vec![rows_per_chunk]),
        };
        let meta = ArrayMeta {
            path: format!("{}[{}]", pm.path, field.name),
            dtype,
            grid: ChunkGrid::new(shape.clone(), chunk),
            shape,
            null: false,
            storage_desc: format!("field of {}", pm.storage_desc),
        };
        Ok(FieldSource { parent, field, record_size, meta })
    }

    fn field_bytes(&self) -> usize {
        match self.field.dtype {
            FieldType::Num(t, k) => t.size() * k,
            FieldType::FixedStr(len) => len,
            FieldType::VarStr => 0,
        }
    }

    /// Extracts this field from packed records.
    fn extract(&self, records: &[u8]) -> StorageResult<Vec<u8>> {
        let (off, len) = (self.field.offset, self.field_bytes());
        if off + len > self.record_size || records.len() % self.record_size.max(1) != 0 {
            return Err(StorageError::corrupt(&self.meta.path, "record layout mismatch"));
        }
        let mut out = Vec::with_capacity(records.len() / self.record_size.max(1) * len);
        for rec in records.chunks_exact(self.record_size) {
            out.extend_from_slice(&rec[off..off + len]);
        }
        Ok(out)
    }
}

impl ArraySource for FieldSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let records = self.parent.read_chunk(index)?;
        self.extract(&records)
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        match self.field.dtype {
            FieldType::VarStr => self.parent.read_field_strings(&self.field.name, start, end),
            FieldType::FixedStr(len) => {
                let per = self.parent.meta().grid.chunk[0];
                let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
                if start >= end {
                    return Ok(out);
                }
                for c in start / per..=(end - 1) / per {
                    let bytes = self.extract(&self.parent.read_chunk(c)?)?;
                    let c0 = c * per;
                    for (i, s) in bytes.chunks_exact(len.max(1)).enumerate() {
                        let row = c0 + i as u64;
                        if row >= start && row < end {
                            let trimmed = match s.iter().position(|&b| b == 0) {
                                Some(p) => &s[..p],
                                None => s,
                            };
                            out.push(String::from_utf8_lossy(trimmed).into_owned());
                        }
                    }
                }
                Ok(out)
            }
            FieldType::Num(..) => Err(StorageError::corrupt(&self.meta.path, "not a string field")),
        }
    }
}
