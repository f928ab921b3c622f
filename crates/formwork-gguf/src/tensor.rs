//! Tensor infos: each tensor's name, shape, GGML type and where its bytes are.

/// A GGML tensor type, by its code in the file (`ggml_type` in ggml.h).
///
/// The known types have constants and a block layout ([`GgmlType::block`]); a code this
/// crate does not know is kept as is, and reading its data is an error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// Name, elements per block and bytes per block of each known type, by code.
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    /// 32-bit floats.
    pub const F32: GgmlType = GgmlType(0);
    /// 16-bit IEEE floats.
    pub const F16: GgmlType = GgmlType(1);
    /// 4-bit blocks of 32 with a scale.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// 4-bit blocks of 32 with a scale and a minimum.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// 5-bit blocks of 32 with a scale.
    pub const Q5_0: GgmlType = GgmlType(6);
    /// 5-bit blocks of 32 with a scale and a minimum.
    pub const Q5_1: GgmlType = GgmlType(7);
    /// 8-bit blocks of 32 with a scale.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// 8-bit blocks of 32 with a scale and a sum.
    pub const Q8_1: GgmlType = GgmlType(9);
    /// 2-bit k-quant super-blocks of 256.
    pub const Q2K: GgmlType = GgmlType(10);
    /// 3-bit k-quant super-blocks of 256.
    pub const Q3K: GgmlType = GgmlType(11);
    /// 4-bit k-quant super-blocks of 256.
    pub const Q4K: GgmlType = GgmlType(12);
    /// 5-bit k-quant super-blocks of 256.
    pub const Q5K: GgmlType = GgmlType(13);
    /// 6-bit k-quant super-blocks of 256.
    pub const Q6K: GgmlType = GgmlType(14);
    /// 8-bit k-quant super-blocks of 256.
    pub const Q8K: GgmlType = GgmlType(15);
    /// bfloat16.
    pub const BF16: GgmlType = GgmlType(30);

    /// The type's name as ggml spells it (`Q4_K`), `None` for a code this crate does not know.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|e| e.1)
    }

    /// Elements per block and bytes per block, `None` for a code this crate does not know.
    pub fn block(self) -> Option<(usize, usize)> {
        self.entry().map(|e| (e.2, e.3))
    }

    fn entry(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        TYPES.iter().find(|e| e.0 == self.0)
    }
}

impl std::fmt::Debug for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "GgmlType({})", self.0),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The dimensions, outermost first (`[rows, columns]` for a matrix), as candle and
    /// PyTorch write shapes. The file stores them innermost first (ggml's `ne`).
    pub shape: Vec<usize>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Where the data starts, relative to [`crate::GgufFile::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// The number of elements.
    pub fn elements(&self) -> usize {
        // The reader checked that the product fits.
        self.shape.iter().product()
    }

    /// The size of the data in bytes, `None` for a type this crate does not know.
    pub fn byte_len(&self) -> Option<usize> {
        let (elems, bytes) = self.ggml_type.block()?;
        // The reader checked that whole blocks fit and that the size does not overflow.
        Some(self.elements() / elems * bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_have_names_and_blocks() {
        assert_eq!(GgmlType::Q4_1.name(), Some("Q4_1"));
        assert_eq!(GgmlType::Q4_1.block(), Some((32, 20)));
        assert_eq!(GgmlType::Q6K.block(), Some((256, 210)));
        assert_eq!(GgmlType::BF16.block(), Some((1, 2)));
        assert_eq!(GgmlType(4).block(), None);
        assert_eq!(format!("{:?}", GgmlType(4)), "GgmlType(4)");
        assert_eq!(GgmlType::Q8_0.to_string(), "Q8_0");
        // Codes are unique.
        for (i, a) in TYPES.iter().enumerate() {
            assert!(TYPES[i + 1..].iter().all(|b| b.0 != a.0 && b.1 != a.1));
        }
    }
}
