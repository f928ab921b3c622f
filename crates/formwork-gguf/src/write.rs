//! Writing GGUF v3 files: for tests and tools that need a small model file.

use std::io::{self, Write};

use crate::read::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};
use crate::tensor::GgmlType;
use crate::value::{Value, code};

/// A tensor to write: its name, shape (outermost first, as [`crate::TensorInfo::shape`]),
/// type, and bytes as GGML lays them out.
#[derive(Debug, Clone, Copy)]
pub struct TensorData<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// The dimensions, outermost first.
    pub shape: &'a [usize],
    /// The element type.
    pub ggml_type: GgmlType,
    /// The bytes: exactly what the shape holds in this type.
    pub data: &'a [u8],
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Writes a GGUF v3 file: the metadata pairs in order, then the tensor infos, then each
/// tensor's data aligned to `general.alignment` (32 unless the metadata sets it). A tensor
/// whose data does not match its shape and type, or an array whose elements differ in type,
/// is an [`io::ErrorKind::InvalidInput`] error.
pub fn write(
    out: &mut impl Write,
    metadata: &[(&str, Value)],
    tensors: &[TensorData<'_>],
) -> io::Result<()> {
    let alignment = match metadata.iter().find(|(k, _)| *k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => v
            .as_u64()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| invalid(format!("{ALIGNMENT_KEY} is not a power of two")))?,
    };
    let mut head = Vec::new();
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut head, key.as_bytes());
        head.extend_from_slice(&value.type_code().to_le_bytes());
        payload(&mut head, value)?;
    }
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        let elements: usize = t.shape.iter().product();
        let expected = t
            .ggml_type
            .block()
            .filter(|(n, _)| t.shape.last().is_none_or(|d| d % n == 0))
            .map(|(n, bytes)| elements / n * bytes);
        if expected != Some(t.data.len()) {
            return Err(invalid(format!(
                "tensor `{}`: {} bytes do not hold {:?} {} elements",
                t.name,
                t.data.len(),
                t.shape,
                t.ggml_type
            )));
        }
        string(&mut head, t.name.as_bytes());
        head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.0.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
    }
    let data_start = (head.len() as u64).next_multiple_of(alignment);
    head.resize(data_start as usize, 0);
    out.write_all(&head)?;
    let mut written = 0u64;
    for (t, &at) in tensors.iter().zip(&offsets) {
        out.write_all(&vec![0u8; (at - written) as usize])?;
        out.write_all(t.data)?;
        written = at + t.data.len() as u64;
    }
    Ok(())
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// Writes a value without its type code.
fn payload(out: &mut Vec<u8>, value: &Value) -> io::Result<()> {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => string(out, s.as_bytes()),
        Value::Bytes(b) => string(out, b),
        Value::Array(items) => {
            // An empty array is written as an array of `uint8`.
            let elem = items.first().map_or(code::U8, Value::type_code);
            if items.iter().any(|v| v.type_code() != elem) {
                return Err(invalid("array elements of different types".into()));
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                payload(out, item)?;
            }
        }
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
    Ok(())
}
