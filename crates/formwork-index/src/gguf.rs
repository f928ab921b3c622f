//! A small reader for the metadata of GGUF model files (versions 2 and 3).
//!
//! Only the header and the key/value section are read; tensor infos and tensor data are never
//! touched, so reading the metadata of a large model costs a few milliseconds. Every length in
//! the file is checked against the bytes that remain before anything is allocated for it, and
//! nested arrays are bounded in depth, so a corrupt or hostile file yields a [`GgufError`],
//! never a panic or a huge allocation.

use std::io::{BufReader, Read};
use std::path::Path;

/// Why GGUF metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("reading the GGUF file: {0}")]
    Io(String),
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (bad magic)")]
    NotGguf,
    /// A GGUF version this reader does not know (it reads 2 and 3).
    #[error("unsupported GGUF version {0} (2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// The file ends inside the metadata, or a length points past its end.
    #[error("the GGUF file is truncated or a length in it is corrupt")]
    Truncated,
    /// A value type code that GGUF does not define.
    #[error("unknown GGUF value type {0}")]
    InvalidType(u32),
    /// Arrays nested deeper than this reader accepts.
    #[error("GGUF arrays nested too deeply")]
    TooDeep,
    /// A key is not valid UTF-8.
    #[error("a GGUF key is not valid UTF-8")]
    InvalidKey,
}

/// One metadata value. Integer types are widened; strings that are not valid UTF-8 are kept
/// as raw bytes in [`GgufValue::Bytes`].
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type (`u8`, `u16`, `u32`, `u64`).
    Uint(u64),
    /// Any signed integer type (`i8`, `i16`, `i32`, `i64`).
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// A string that is not valid UTF-8.
    Bytes(Vec<u8>),
    /// An array (GGUF arrays are homogeneous).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::Uint(v) => i64::try_from(v).ok(),
            GgufValue::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string, if it is a valid UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The raw bytes of a string value (valid UTF-8 or not).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            GgufValue::String(s) => Some(s.as_bytes()),
            GgufValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file: its version, tensor count and key/value pairs in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufMetadata {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// How many tensors the file declares (their infos are not read).
    pub tensor_count: u64,
    entries: Vec<(String, GgufValue)>,
}

const MAGIC: [u8; 4] = *b"GGUF";
const MAX_DEPTH: usize = 4;

impl GgufMetadata {
    /// Reads the metadata of the GGUF file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path)
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?
            .len();
        Self::from_reader(BufReader::with_capacity(1 << 16, file), len)
    }

    /// Reads metadata from `reader`, which holds at most `len` bytes (`u64::MAX` if unknown).
    pub fn from_reader(reader: impl Read, len: u64) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader,
            remaining: len,
        };
        let mut magic = [0u8; 4];
        r.fill(&mut magic)?;
        if magic != MAGIC {
            return Err(GgufError::NotGguf);
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        // Each pair takes at least 12 bytes (key length and value type).
        r.check_count(kv_count, 12)?;
        let mut entries = Vec::with_capacity(kv_count.min(1 << 12) as usize);
        for _ in 0..kv_count {
            let key = String::from_utf8(r.string()?).map_err(|_| GgufError::InvalidKey)?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            entries.push((key, value));
        }
        Ok(GgufMetadata {
            version,
            tensor_count,
            entries,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All key/value pairs, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

struct Reader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        if (buf.len() as u64) > self.remaining {
            return Err(GgufError::Truncated);
        }
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Truncated
            } else {
                GgufError::Io(e.to_string())
            }
        })?;
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Fails unless `count` items of at least `min_size` bytes each can fit in what remains.
    fn check_count(&self, count: u64, min_size: u64) -> Result<(), GgufError> {
        if count
            .checked_mul(min_size)
            .is_none_or(|n| n > self.remaining)
        {
            return Err(GgufError::Truncated);
        }
        Ok(())
    }

    fn string(&mut self) -> Result<Vec<u8>, GgufError> {
        let len = self.u64()?;
        self.check_count(len, 1)?;
        let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
        let read = (&mut self.inner)
            .take(len)
            .read_to_end(&mut out)
            .map_err(|e| GgufError::Io(e.to_string()))?;
        if read as u64 != len {
            return Err(GgufError::Truncated);
        }
        self.remaining -= len;
        Ok(out)
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::Uint(u64::from(self.array::<1>()?[0])),
            1 => GgufValue::Int(i64::from(self.array::<1>()?[0] as i8)),
            2 => GgufValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => GgufValue::Uint(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => {
                let bytes = self.string()?;
                match String::from_utf8(bytes) {
                    Ok(s) => GgufValue::String(s),
                    Err(e) => GgufValue::Bytes(e.into_bytes()),
                }
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(GgufError::TooDeep);
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                let min_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(GgufError::InvalidType(other)),
                };
                self.check_count(count, min_size)?;
                let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(GgufError::InvalidType(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }

    fn sample() -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&7u64.to_le_bytes());
        f.extend_from_slice(&3u64.to_le_bytes());
        string(&mut f, b"general.name");
        f.extend_from_slice(&8u32.to_le_bytes());
        string(&mut f, b"tiny");
        string(&mut f, b"tokenizer.ggml.eos_token_id");
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        string(&mut f, b"tokenizer.ggml.token_type");
        f.extend_from_slice(&9u32.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        f.extend_from_slice(&1i32.to_le_bytes());
        f.extend_from_slice(&3i32.to_le_bytes());
        f
    }

    #[test]
    fn reads_a_small_file() {
        let f = sample();
        let m = GgufMetadata::from_reader(&f[..], f.len() as u64).unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.tensor_count, 7);
        assert_eq!(
            m.get("general.name").and_then(GgufValue::as_str),
            Some("tiny")
        );
        assert_eq!(
            m.get("tokenizer.ggml.eos_token_id")
                .and_then(GgufValue::as_u64),
            Some(2)
        );
        let types = m
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .unwrap();
        assert_eq!(types, &[GgufValue::Int(1), GgufValue::Int(3)]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let f = sample();
        // Every truncation is an error, never a panic.
        for cut in 0..f.len() {
            let r = GgufMetadata::from_reader(&f[..cut], cut as u64);
            assert!(r.is_err(), "cut at {cut}");
            let r = GgufMetadata::from_reader(&f[..cut], u64::MAX);
            assert!(r.is_err(), "cut at {cut} (unknown length)");
        }
        let mut bad = f.clone();
        bad[0] = b'X';
        assert_eq!(
            GgufMetadata::from_reader(&bad[..], u64::MAX),
            Err(GgufError::NotGguf)
        );
        let mut bad = f.clone();
        bad[4] = 1;
        assert_eq!(
            GgufMetadata::from_reader(&bad[..], u64::MAX),
            Err(GgufError::UnsupportedVersion(1))
        );
        // A huge declared key/value count.
        let mut bad = f.clone();
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            GgufMetadata::from_reader(&bad[..], bad.len() as u64),
            Err(GgufError::Truncated)
        );
        // Every single-byte corruption is an error or a value, never a panic.
        for i in 0..f.len() {
            for v in [0u8, 0xFF, 0x7F, 9] {
                let mut bad = f.clone();
                bad[i] = v;
                let _ = GgufMetadata::from_reader(&bad[..], bad.len() as u64);
                let _ = GgufMetadata::from_reader(&bad[..], u64::MAX);
            }
        }
    }
}
