//! A small reader for the metadata of a GGUF file.
//!
//! It reads the header and the key/value section of a GGUF v2 or v3 file and
//! stops there: tensor infos and tensor data are never touched, so reading
//! the metadata of a multi-gigabyte model costs a few megabytes of I/O (the
//! vocabulary). Strings, integers, floats, booleans and arrays of strings are
//! kept; other arrays (token scores, token types...) are skipped and only
//! their length is recorded. Malformed input gives an error, never a panic.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::Error;

const MAGIC: &[u8; 4] = b"GGUF";
/// No string in a sane GGUF file is this long; refuse rather than allocate.
const MAX_STRING: u64 = 1 << 28;
/// Nor is any array this long.
const MAX_ARRAY: u64 = 1 << 28;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    UInt(u64),
    /// Any signed integer type.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (invalid UTF-8 is replaced).
    String(String),
    /// An array of strings.
    StringArray(Vec<String>),
    /// An array of another type, skipped: its element type id and length.
    SkippedArray {
        /// The GGUF type id of the elements.
        element_type: u32,
        /// The number of elements.
        len: u64,
    },
}

impl GgufValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::UInt(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMetadata {
    /// The format version (2 or 3).
    pub version: u32,
    /// The number of tensors the file declares.
    pub tensor_count: u64,
    /// The key/value pairs, by key.
    pub kv: BTreeMap<String, GgufValue>,
}

impl GgufMetadata {
    /// Reads the metadata of the GGUF file at `path`.
    pub fn from_path(path: &Path) -> Result<GgufMetadata, Error> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::bad_source(Some(path), format!("cannot open: {e}")))?;
        GgufMetadata::read(BufReader::new(file)).map_err(|msg| Error::bad_source(Some(path), msg))
    }

    /// Reads GGUF metadata from the start of a GGUF stream.
    pub fn from_reader<R: Read>(reader: R) -> Result<GgufMetadata, Error> {
        GgufMetadata::read(reader).map_err(|msg| Error::bad_source(None, msg))
    }

    fn read<R: Read>(reader: R) -> Result<GgufMetadata, String> {
        let mut r = Reader { inner: reader };
        let mut magic = [0u8; 4];
        r.fill(&mut magic)?;
        if &magic != MAGIC {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "unsupported GGUF version {version} (2 and 3 are read)"
            ));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        let mut kv = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty)?;
            kv.insert(key, value);
        }
        Ok(GgufMetadata {
            version,
            tensor_count,
            kv,
        })
    }

    /// The string value of `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(GgufValue::as_str)
    }

    /// The string-valued pairs, as
    /// [`TemplateSource::from_gguf_metadata`](crate::TemplateSource::from_gguf_metadata) takes them.
    pub fn string_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.kv
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
    }

    /// The text of token `id` of the vocabulary (`tokenizer.ggml.tokens`).
    pub fn token(&self, id: u64) -> Option<&str> {
        match self.kv.get("tokenizer.ggml.tokens")? {
            GgufValue::StringArray(tokens) => {
                tokens.get(usize::try_from(id).ok()?).map(String::as_str)
            }
            _ => None,
        }
    }

    /// The text of the token whose id is stored under `key`
    /// (e.g. `tokenizer.ggml.bos_token_id`).
    pub fn token_by_id_key(&self, key: &str) -> Option<&str> {
        self.token(self.kv.get(key)?.as_u64()?)
    }
}

struct Reader<R> {
    inner: R,
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.inner
            .read_exact(buf)
            .map_err(|e| format!("truncated GGUF metadata: {e}"))
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let chunk = n.min(buf.len() as u64) as usize;
            self.fill(&mut buf[..chunk])?;
            n -= chunk as u64;
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(format!("GGUF string of {len} bytes is too long"));
        }
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| format!("truncated GGUF metadata: {e}"))?;
        if buf.len() as u64 != len {
            return Err("truncated GGUF metadata: string runs past the end".into());
        }
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn value(&mut self, ty: u32) -> Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::UInt(u64::from(self.bytes::<1>()?[0])),
            1 => GgufValue::Int(i64::from(i8::from_le_bytes(self.bytes()?))),
            2 => GgufValue::UInt(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => GgufValue::UInt(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                let element_type = self.u32()?;
                let len = self.u64()?;
                if len > MAX_ARRAY {
                    return Err(format!("GGUF array of {len} elements is too long"));
                }
                if element_type == 8 {
                    let mut items = Vec::with_capacity(len.min(1 << 20) as usize);
                    for _ in 0..len {
                        items.push(self.string()?);
                    }
                    GgufValue::StringArray(items)
                } else {
                    let size = match element_type {
                        0 | 1 | 7 => 1,
                        2 | 3 => 2,
                        4..=6 => 4,
                        10..=12 => 8,
                        9 => return Err("nested GGUF arrays are not supported".into()),
                        other => return Err(format!("unknown GGUF value type {other}")),
                    };
                    self.skip(len * size)?;
                    GgufValue::SkippedArray { element_type, len }
                }
            }
            10 => GgufValue::UInt(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format!("unknown GGUF value type {other}")),
        })
    }
}

/// Writes a GGUF v3 header with the given metadata and no tensors. For tests
/// and tools that need a small GGUF file.
pub fn write_metadata(kv: &[(&str, GgufValue)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        string(&mut out, key);
        match value {
            GgufValue::UInt(v) => {
                out.extend_from_slice(&10u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            GgufValue::Int(v) => {
                out.extend_from_slice(&11u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            GgufValue::Float(v) => {
                out.extend_from_slice(&12u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            GgufValue::Bool(v) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            GgufValue::String(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(&mut out, s);
            }
            GgufValue::StringArray(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    string(&mut out, s);
                }
            }
            GgufValue::SkippedArray { len, .. } => {
                // Written as an array of f32 zeros.
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                for _ in 0..*len {
                    out.extend_from_slice(&0f32.to_le_bytes());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let bytes = write_metadata(&[
            ("general.architecture", GgufValue::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::StringArray(vec!["<s>".into(), "</s>".into(), "a".into()]),
            ),
            (
                "tokenizer.ggml.scores",
                GgufValue::SkippedArray {
                    element_type: 6,
                    len: 3,
                },
            ),
            ("tokenizer.ggml.bos_token_id", GgufValue::UInt(0)),
            ("tokenizer.ggml.eos_token_id", GgufValue::UInt(1)),
            (
                "tokenizer.chat_template",
                GgufValue::String("{{ x }}".into()),
            ),
        ]);
        let meta = GgufMetadata::from_reader(&bytes[..]).unwrap();
        assert_eq!(meta.version, 3);
        assert_eq!(meta.get_str("tokenizer.chat_template"), Some("{{ x }}"));
        assert_eq!(
            meta.token_by_id_key("tokenizer.ggml.bos_token_id"),
            Some("<s>")
        );
        assert_eq!(
            meta.token_by_id_key("tokenizer.ggml.eos_token_id"),
            Some("</s>")
        );
        assert_eq!(
            meta.kv["tokenizer.ggml.scores"],
            GgufValue::SkippedArray {
                element_type: 6,
                len: 3
            }
        );
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        let bytes = write_metadata(&[("k", GgufValue::String("value".into()))]);
        for n in 0..bytes.len() {
            assert!(
                GgufMetadata::from_reader(&bytes[..n]).is_err(),
                "prefix {n}"
            );
        }
        assert!(GgufMetadata::from_reader(&b"GGML\x03\0\0\0"[..]).is_err());
        let mut huge = bytes.clone();
        // Claim an enormous key length.
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GgufMetadata::from_reader(&huge[..]).is_err());
    }
}
