//! Metadata values, with the GGUF type they were stored as.

/// One metadata value, as stored: integers and floats keep their width (so a file written
/// back has the types readers such as llama.cpp expect), and the accessors widen them.
/// Strings that are not valid UTF-8 are kept as raw bytes in [`Value::Bytes`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8` (type 0).
    U8(u8),
    /// `int8` (type 1).
    I8(i8),
    /// `uint16` (type 2).
    U16(u16),
    /// `int16` (type 3).
    I16(i16),
    /// `uint32` (type 4).
    U32(u32),
    /// `int32` (type 5).
    I32(i32),
    /// `float32` (type 6).
    F32(f32),
    /// `bool` (type 7).
    Bool(bool),
    /// A UTF-8 `string` (type 8).
    String(String),
    /// A `string` (type 8) that is not valid UTF-8.
    Bytes(Vec<u8>),
    /// An `array` (type 9); GGUF arrays are homogeneous.
    Array(Vec<Value>),
    /// `uint64` (type 10).
    U64(u64),
    /// `int64` (type 11).
    I64(i64),
    /// `float64` (type 12).
    F64(f64),
}

/// GGUF value type codes.
pub(crate) mod code {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// The fewest bytes a value of type `ty` takes in the file, `None` for unknown types.
    pub fn min_size(ty: u32) -> Option<u64> {
        Some(match ty {
            U8 | I8 | BOOL => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            // A string's or an array's length; an array also has its element type.
            STRING | U64 | I64 | F64 => 8,
            ARRAY => 12,
            _ => return None,
        })
    }
}

impl Value {
    /// The GGUF type code of this value.
    pub fn type_code(&self) -> u32 {
        match self {
            Value::U8(_) => code::U8,
            Value::I8(_) => code::I8,
            Value::U16(_) => code::U16,
            Value::I16(_) => code::I16,
            Value::U32(_) => code::U32,
            Value::I32(_) => code::I32,
            Value::F32(_) => code::F32,
            Value::Bool(_) => code::BOOL,
            Value::String(_) | Value::Bytes(_) => code::STRING,
            Value::Array(_) => code::ARRAY,
            Value::U64(_) => code::U64,
            Value::I64(_) => code::I64,
            Value::F64(_) => code::F64,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(i64::from(v)),
            Value::I8(v) => Some(i64::from(v)),
            Value::U16(v) => Some(i64::from(v)),
            Value::I16(v) => Some(i64::from(v)),
            Value::U32(v) => Some(i64::from(v)),
            Value::I32(v) => Some(i64::from(v)),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a number (integers are converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(f64::from(v)),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as a string, if it is a valid UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The raw bytes of a string value (valid UTF-8 or not).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_widen_and_refuse_what_does_not_fit() {
        assert_eq!(Value::I32(-3).as_i64(), Some(-3));
        assert_eq!(Value::I32(-3).as_u64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U8(7).as_f64(), Some(7.0));
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::F32(0.5).as_u64(), None);
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(Value::U8(1).as_bool(), None);
        assert_eq!(Value::Bytes(vec![0xFF]).as_str(), None);
        assert_eq!(Value::Bytes(vec![0xFF]).as_bytes(), Some(&[0xFF][..]));
        assert_eq!(Value::String("a".into()).as_bytes(), Some(&b"a"[..]));
        assert_eq!(Value::Array(vec![]).as_array(), Some(&[][..]));
    }
}
