//! Reading a GGUF file: the header and metadata ([`Metadata`]), the tensor infos
//! ([`GgufFile`]) and a tensor's bytes ([`GgufFile::tensor_data`]).
//!
//! Every length in the file is checked against the bytes that remain before anything is
//! allocated for it, and nested arrays are bounded in depth, so a corrupt or hostile file
//! yields a [`GgufError`], never a panic or a huge allocation.

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::GgufError;
use crate::tensor::{GgmlType, TensorInfo};
use crate::value::{Value, code};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The metadata key of the tensor data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The alignment of tensor data when [`ALIGNMENT_KEY`] is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// The deepest nesting of arrays the reader accepts.
const MAX_DEPTH: usize = 4;

/// The header and metadata of a GGUF file: its version, tensor count and key/value pairs in
/// file order. Reading it stops before the tensor infos, so it costs what the metadata
/// weighs (mostly the vocabulary), whatever the size of the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// How many tensors the file declares.
    pub tensor_count: u64,
    entries: Vec<(String, Value)>,
}

impl Metadata {
    /// Reads the header and metadata of the GGUF file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Metadata, GgufError> {
        let (file, len) = open(path.as_ref())?;
        Metadata::from_reader(file, len)
    }

    /// Reads the header and metadata from `reader`, which holds at most `len` bytes
    /// (`u64::MAX` if unknown).
    pub fn from_reader(reader: impl Read, len: u64) -> Result<Metadata, GgufError> {
        Metadata::parse(&mut Reader::new(reader, len))
    }

    fn parse<R: Read>(r: &mut Reader<R>) -> Result<Metadata, GgufError> {
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
        let mut seen = HashSet::new();
        for _ in 0..kv_count {
            let key = String::from_utf8(r.string()?).map_err(|_| GgufError::InvalidKey)?;
            if !seen.insert(key.clone()) {
                return Err(GgufError::DuplicateKey(key));
            }
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            entries.push((key, value));
        }
        Ok(Metadata {
            version,
            tensor_count,
            entries,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All key/value pairs, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of key/value pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no key/value pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Everything in a GGUF file but the tensor data: the [`Metadata`], the infos of every
/// tensor, and where the data starts. Read a tensor's bytes with [`GgufFile::tensor_data`].
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// The header and key/value pairs.
    pub metadata: Metadata,
    tensors: Vec<TensorInfo>,
    /// The alignment of tensor data (`general.alignment`, 32 by default).
    pub alignment: u64,
    /// Where the tensor data starts in the file: the end of the tensor infos, rounded up to
    /// the alignment. Tensor offsets count from here.
    pub data_offset: u64,
    /// The file's length, `u64::MAX` when it was not known.
    len: u64,
}

impl GgufFile {
    /// Reads the header, metadata and tensor infos of the GGUF file at `path`. Every tensor
    /// of a known type is checked to lie within the file.
    pub fn read(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let (file, len) = open(path.as_ref())?;
        GgufFile::from_reader(file, len)
    }

    /// Reads the header, metadata and tensor infos from `reader`, which holds at most `len`
    /// bytes (`u64::MAX` if unknown: tensor data is then not checked against the end).
    pub fn from_reader(reader: impl Read, len: u64) -> Result<GgufFile, GgufError> {
        let mut r = Reader::new(reader, len);
        let metadata = Metadata::parse(&mut r)?;
        let alignment = match metadata.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or(GgufError::InvalidAlignment)?,
        };
        // Each info takes at least 24 bytes (name length, dimension count, type, offset).
        r.check_count(metadata.tensor_count, 24)?;
        let mut tensors = Vec::with_capacity(metadata.tensor_count.min(1 << 12) as usize);
        let mut names = HashSet::new();
        for _ in 0..metadata.tensor_count {
            let info = r.tensor_info(alignment)?;
            if !names.insert(info.name.clone()) {
                return Err(GgufError::tensor(&info.name, "appears twice"));
            }
            tensors.push(info);
        }
        let data_offset = r
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or(GgufError::Truncated)?;
        for t in &tensors {
            let end = t
                .byte_len()
                .and_then(|n| data_offset.checked_add(t.offset)?.checked_add(n as u64));
            if len != u64::MAX && t.ggml_type.block().is_some() && end.is_none_or(|e| e > len) {
                return Err(GgufError::tensor(
                    &t.name,
                    format!(
                        "its {} bytes at offset {} run past the end of the file ({len} bytes)",
                        t.byte_len().unwrap_or(0),
                        t.offset
                    ),
                ));
            }
        }
        Ok(GgufFile {
            metadata,
            tensors,
            alignment,
            data_offset,
            len,
        })
    }

    /// The infos of every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads the bytes of `tensor` (one of [`GgufFile::tensors`]) from `reader`, the file
    /// this was read from: exactly [`TensorInfo::byte_len`] bytes, as GGML lays them out.
    pub fn tensor_data<R: Read + Seek>(
        &self,
        reader: &mut R,
        tensor: &TensorInfo,
    ) -> Result<Vec<u8>, GgufError> {
        let name = &tensor.name;
        let size = tensor.byte_len().ok_or_else(|| {
            GgufError::tensor(name, format!("unknown GGML type {}", tensor.ggml_type.0))
        })?;
        let start = self
            .data_offset
            .checked_add(tensor.offset)
            .ok_or_else(|| GgufError::tensor(name, "its offset overflows"))?;
        let read_err = |e: std::io::Error| {
            GgufError::tensor(name, format!("cannot read {size} bytes at {start}: {e}"))
        };
        reader.seek(SeekFrom::Start(start)).map_err(read_err)?;
        if self.len != u64::MAX {
            // The size was checked against the file's length.
            let mut data = vec![0u8; size];
            reader.read_exact(&mut data).map_err(read_err)?;
            Ok(data)
        } else {
            let mut data = Vec::with_capacity(size.min(1 << 24));
            reader
                .take(size as u64)
                .read_to_end(&mut data)
                .map_err(read_err)?;
            if data.len() != size {
                return Err(read_err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(data)
        }
    }
}

fn open(path: &Path) -> Result<(BufReader<std::fs::File>, u64), GgufError> {
    let io = |e: std::io::Error| GgufError::Io(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    Ok((BufReader::with_capacity(1 << 16, file), len))
}

struct Reader<R> {
    inner: R,
    remaining: u64,
    /// Bytes read so far.
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn new(inner: R, len: u64) -> Reader<R> {
        Reader {
            inner,
            remaining: len,
            pos: 0,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        if (buf.len() as u64) > self.remaining {
            return Err(GgufError::Truncated);
        }
        self.inner.read_exact(buf).map_err(GgufError::io)?;
        self.advance(buf.len() as u64);
        Ok(())
    }

    fn advance(&mut self, n: u64) {
        self.remaining -= n;
        self.pos += n;
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
            .map_err(GgufError::io)?;
        if read as u64 != len {
            return Err(GgufError::Truncated);
        }
        self.advance(len);
        Ok(out)
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            code::U8 => Value::U8(self.array::<1>()?[0]),
            code::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            code::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            code::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            code::U32 => Value::U32(self.u32()?),
            code::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            code::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            code::BOOL => Value::Bool(self.array::<1>()?[0] != 0),
            code::STRING => match String::from_utf8(self.string()?) {
                Ok(s) => Value::String(s),
                Err(e) => Value::Bytes(e.into_bytes()),
            },
            code::ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(GgufError::TooDeep);
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                let min_size = code::min_size(elem).ok_or(GgufError::InvalidType(elem))?;
                self.check_count(count, min_size)?;
                let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            code::U64 => Value::U64(self.u64()?),
            code::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            code::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(GgufError::InvalidType(other)),
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name = match String::from_utf8(self.string()?) {
            Ok(name) => name,
            Err(e) => {
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                return Err(GgufError::tensor(&lossy, "the name is not UTF-8"));
            }
        };
        let n_dims = self.u32()?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::tensor(
                &name,
                format!("{n_dims} dimensions (at most {MAX_DIMS})"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(self.u64()?);
        }
        let ggml_type = GgmlType(self.u32()?);
        let offset = self.u64()?;
        let too_big = || GgufError::tensor(&name, format!("dimensions {ne:?} are too large"));
        let elements = ne
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(too_big)?;
        if let Some((block_elems, block_bytes)) = ggml_type.block() {
            let inner = ne.first().copied().unwrap_or(1);
            if !inner.is_multiple_of(block_elems as u64) {
                return Err(GgufError::tensor(
                    &name,
                    format!("rows of {inner} are not whole {ggml_type} blocks of {block_elems}"),
                ));
            }
            (elements / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(too_big)?;
        }
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::tensor(
                &name,
                format!("offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        let shape = ne
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).map_err(|_| too_big()))
            .collect::<Result<_, _>>()?;
        Ok(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::write::{TensorData, write};

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }

    /// A header declaring 7 tensors (whose infos are absent) and three pairs, written by hand.
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
        let m = Metadata::from_reader(&f[..], f.len() as u64).unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.tensor_count, 7);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("general.name").and_then(Value::as_str), Some("tiny"));
        assert_eq!(
            m.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64),
            Some(2)
        );
        let types = m
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(types, &[Value::I32(1), Value::I32(3)]);
        let keys: Vec<&str> = m.entries().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "general.name",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.token_type"
            ]
        );
        // The tensor infos the header declares are not there.
        assert_eq!(
            GgufFile::from_reader(&f[..], f.len() as u64),
            Err(GgufError::Truncated)
        );
    }

    #[test]
    fn corrupt_metadata_is_an_error() {
        let f = sample();
        // Every truncation is an error, never a panic.
        for cut in 0..f.len() {
            let r = Metadata::from_reader(&f[..cut], cut as u64);
            assert!(r.is_err(), "cut at {cut}");
            let r = Metadata::from_reader(&f[..cut], u64::MAX);
            assert!(r.is_err(), "cut at {cut} (unknown length)");
        }
        let mut bad = f.clone();
        bad[0] = b'X';
        assert_eq!(
            Metadata::from_reader(&bad[..], u64::MAX),
            Err(GgufError::NotGguf)
        );
        let mut bad = f.clone();
        bad[4] = 1;
        assert_eq!(
            Metadata::from_reader(&bad[..], u64::MAX),
            Err(GgufError::UnsupportedVersion(1))
        );
        // A huge declared key/value count.
        let mut bad = f.clone();
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Metadata::from_reader(&bad[..], bad.len() as u64),
            Err(GgufError::Truncated)
        );
        // A huge key length.
        let mut bad = f.clone();
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Metadata::from_reader(&bad[..], bad.len() as u64),
            Err(GgufError::Truncated)
        );
        assert!(Metadata::from_reader(&bad[..], u64::MAX).is_err());
        // Every single-byte corruption is an error or a value, never a panic.
        for i in 0..f.len() {
            for v in [0u8, 0xFF, 0x7F, 9] {
                let mut bad = f.clone();
                bad[i] = v;
                let _ = Metadata::from_reader(&bad[..], bad.len() as u64);
                let _ = Metadata::from_reader(&bad[..], u64::MAX);
            }
        }
    }

    #[test]
    fn nested_arrays_are_bounded_and_duplicate_keys_refused() {
        let nested = (0..5).fold(Value::U8(1), |v, _| Value::Array(vec![v]));
        let mut f = Vec::new();
        write(&mut f, &[("deep", nested)], &[]).unwrap();
        assert_eq!(
            Metadata::from_reader(&f[..], f.len() as u64),
            Err(GgufError::TooDeep)
        );
        let ok = (0..4).fold(Value::U8(1), |v, _| Value::Array(vec![v]));
        let mut f = Vec::new();
        write(&mut f, &[("deep", ok.clone())], &[]).unwrap();
        let m = Metadata::from_reader(&f[..], f.len() as u64).unwrap();
        assert_eq!(m.get("deep"), Some(&ok));

        let mut f = Vec::new();
        write(&mut f, &[("k", Value::U8(1)), ("k", Value::U8(2))], &[]).unwrap();
        assert_eq!(
            Metadata::from_reader(&f[..], f.len() as u64),
            Err(GgufError::DuplicateKey("k".into()))
        );
    }

    /// Every value type, a non-UTF-8 string, and two tensors: a Q8_0 matrix and an F32
    /// vector.
    fn model_file(alignment: Option<u32>) -> (Vec<u8>, Vec<(&'static str, Value)>, Vec<u8>) {
        let mut kv = vec![
            ("general.architecture", Value::String("llama".into())),
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-3)),
            ("u16", Value::U16(60_000)),
            ("i16", Value::I16(-30_000)),
            ("u32", Value::U32(4_000_000_000)),
            ("i32", Value::I32(-2_000_000_000)),
            ("f32", Value::F32(0.25)),
            ("bool", Value::Bool(true)),
            ("bytes", Value::Bytes(vec![0xFF, 0xFE])),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f64", Value::F64(-1.5)),
            (
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("<s>".into()), Value::String("a".into())]),
            ),
            ("empty", Value::Array(vec![])),
        ];
        if let Some(a) = alignment {
            kv.push((ALIGNMENT_KEY, Value::U32(a)));
        }
        // Two rows of one Q8_0 block each (34 bytes a block), and 3 f32s.
        let q8: Vec<u8> = (0..68).map(|i| i as u8).collect();
        let f32s: Vec<u8> = [1f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let tensors = [
            TensorData {
                name: "token_embd.weight",
                shape: &[2, 32],
                ggml_type: GgmlType::Q8_0,
                data: &q8,
            },
            TensorData {
                name: "output_norm.weight",
                shape: &[3],
                ggml_type: GgmlType::F32,
                data: &f32s,
            },
        ];
        let mut f = Vec::new();
        write(&mut f, &kv, &tensors).unwrap();
        (f, kv, [q8, f32s].concat())
    }

    #[test]
    fn reads_what_it_writes_tensors_included() {
        for alignment in [None, Some(1), Some(64)] {
            let (f, kv, data) = model_file(alignment);
            let file = GgufFile::from_reader(&f[..], f.len() as u64).unwrap();
            let pairs: Vec<(&str, &Value)> = file.metadata.entries().collect();
            let expected: Vec<(&str, &Value)> = kv.iter().map(|(k, v)| (*k, v)).collect();
            assert_eq!(pairs, expected);
            let align = u64::from(alignment.unwrap_or(32));
            assert_eq!(file.alignment, align);
            assert_eq!(file.data_offset % align, 0);
            let emb = file.tensor("token_embd.weight").unwrap();
            assert_eq!(emb.shape, [2, 32]);
            assert_eq!(emb.ggml_type, GgmlType::Q8_0);
            assert_eq!(emb.elements(), 64);
            assert_eq!(emb.byte_len(), Some(68));
            let norm = &file.tensors()[1];
            assert_eq!(norm.shape, [3]);
            assert_eq!(norm.offset % align, 0);
            let mut cursor = Cursor::new(&f);
            assert_eq!(file.tensor_data(&mut cursor, emb).unwrap(), &data[..68]);
            assert_eq!(file.tensor_data(&mut cursor, norm).unwrap(), &data[68..]);
            // The same through a stream of unknown length.
            let unknown = GgufFile::from_reader(&f[..], u64::MAX).unwrap();
            assert_eq!(unknown.data_offset, file.data_offset);
            assert_eq!(unknown.tensor_data(&mut cursor, norm).unwrap(), &data[68..]);
            assert_eq!(file.tensor("missing"), None);
        }
    }

    #[test]
    fn reads_a_file_from_a_path() {
        let (f, _, _) = model_file(None);
        let path = std::env::temp_dir().join(format!("formwork-gguf-{}.gguf", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        let file = GgufFile::read(&path).unwrap();
        assert_eq!(file.tensors().len(), 2);
        assert_eq!(Metadata::read(&path).unwrap(), file.metadata);
        std::fs::remove_file(&path).unwrap();
        let err = Metadata::read(&path).unwrap_err();
        assert!(
            matches!(&err, GgufError::Io(m) if m.contains("formwork-gguf-")),
            "{err}"
        );
    }

    #[test]
    fn corrupt_tensor_infos_are_errors() {
        let (f, _, _) = model_file(None);
        let file = GgufFile::from_reader(&f[..], f.len() as u64).unwrap();
        // Cut anywhere: an error, never a panic (the data of the last tensor included).
        for cut in 0..f.len() {
            assert!(
                GgufFile::from_reader(&f[..cut], cut as u64).is_err(),
                "cut at {cut}"
            );
            if let Ok(g) = GgufFile::from_reader(&f[..cut], u64::MAX) {
                // Only the data is cut: reading it fails.
                let mut cursor = Cursor::new(&f[..cut]);
                let all = g.tensors().iter().map(|t| g.tensor_data(&mut cursor, t));
                assert!(all.into_iter().any(|r| r.is_err()), "cut at {cut}");
            }
        }
        // Any single-byte corruption: an error or a file whose tensors read or fail cleanly.
        for i in 0..file.data_offset as usize {
            for v in [0u8, 0xFF, 0x7F, 5] {
                let mut bad = f.clone();
                bad[i] = v;
                for len in [bad.len() as u64, u64::MAX] {
                    if let Ok(g) = GgufFile::from_reader(&bad[..], len) {
                        let mut cursor = Cursor::new(&bad);
                        for t in g.tensors() {
                            let _ = g.tensor_data(&mut cursor, t);
                        }
                    }
                }
            }
        }
    }

    /// The file of `model_file`, with the info of the first tensor patched: `at` bytes
    /// after the start of its name's length.
    fn patched(at: usize, bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let (mut f, _, _) = model_file(None);
        let name = b"token_embd.weight";
        let start = f.windows(name.len()).position(|w| w == name).unwrap() - 8;
        f[start + at..start + at + bytes.len()].copy_from_slice(bytes);
        GgufFile::from_reader(&f[..], f.len() as u64)
    }

    fn reason(r: Result<GgufFile, GgufError>) -> String {
        match r {
            Err(GgufError::InvalidTensor { name, reason }) => format!("{name}: {reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tensor_infos_are_checked() {
        // Layout of an info: name length (8), name (17), dimension count (4), dims (8 each),
        // type (4), offset (8).
        let dims_at = 8 + 17;
        assert!(reason(patched(dims_at, &5u32.to_le_bytes())).contains("5 dimensions"));
        // A row of 33 elements is not whole Q8_0 blocks.
        assert!(
            reason(patched(dims_at + 4, &33u64.to_le_bytes())).contains("not whole Q8_0 blocks")
        );
        // 2^32 rows of a block: past the end of the file.
        let r = reason(patched(dims_at + 12, &(1u64 << 32).to_le_bytes()));
        assert!(r.contains("run past the end of the file"), "{r}");
        // An element count that overflows.
        let r = reason(patched(dims_at + 12, &u64::MAX.to_le_bytes()));
        assert!(r.contains("too large"), "{r}");
        // A misaligned offset.
        let offset_at = dims_at + 4 + 16 + 4;
        let r = reason(patched(offset_at, &3u64.to_le_bytes()));
        assert!(r.contains("not a multiple of the alignment 32"), "{r}");
        // An offset far past the end.
        let r = reason(patched(offset_at, &(u64::MAX - 31).to_le_bytes()));
        assert!(r.contains("run past the end"), "{r}");
        // Two tensors of one name.
        let t = TensorData {
            name: "x",
            shape: &[1],
            ggml_type: GgmlType::F32,
            data: &[0; 4],
        };
        let mut f = Vec::new();
        write(&mut f, &[], &[t, t]).unwrap();
        let r = reason(GgufFile::from_reader(&f[..], f.len() as u64));
        assert_eq!(r, "x: appears twice");
        // An unknown type reads, but its data does not.
        let (mut f, _, _) = model_file(None);
        let name = b"token_embd.weight";
        let start = f.windows(name.len()).position(|w| w == name).unwrap() - 8;
        f[start + dims_at + 20..start + dims_at + 24].copy_from_slice(&4u32.to_le_bytes());
        let file = GgufFile::from_reader(&f[..], f.len() as u64).unwrap();
        let t = &file.tensors()[0];
        assert_eq!(t.byte_len(), None);
        let err = file.tensor_data(&mut Cursor::new(&f), t).unwrap_err();
        assert!(err.to_string().contains("unknown GGML type 4"), "{err}");
    }

    #[test]
    fn alignment_must_be_a_power_of_two() {
        for bad in [Value::U32(0), Value::U32(48), Value::String("32".into())] {
            let mut f = Vec::new();
            // Written by hand: the writer refuses a bad alignment too.
            assert!(write(&mut f, &[(ALIGNMENT_KEY, bad.clone())], &[]).is_err());
            f.clear();
            f.extend_from_slice(b"GGUF");
            f.extend_from_slice(&3u32.to_le_bytes());
            f.extend_from_slice(&0u64.to_le_bytes());
            f.extend_from_slice(&1u64.to_le_bytes());
            string(&mut f, ALIGNMENT_KEY.as_bytes());
            f.extend_from_slice(&bad.type_code().to_le_bytes());
            match &bad {
                Value::U32(v) => f.extend_from_slice(&v.to_le_bytes()),
                _ => string(&mut f, b"32"),
            }
            assert_eq!(
                GgufFile::from_reader(&f[..], f.len() as u64),
                Err(GgufError::InvalidAlignment)
            );
            // The metadata alone does not care.
            assert!(Metadata::from_reader(&f[..], f.len() as u64).is_ok());
        }
    }

    #[test]
    fn the_writer_refuses_data_that_does_not_fit() {
        let t = TensorData {
            name: "x",
            shape: &[2, 32],
            ggml_type: GgmlType::Q8_0,
            data: &[0; 67],
        };
        assert!(write(&mut Vec::new(), &[], &[t]).is_err());
        let mixed = Value::Array(vec![Value::U8(1), Value::I8(1)]);
        assert!(write(&mut Vec::new(), &[("k", mixed)], &[]).is_err());
    }
}
