//! The CPU backend's key/value buffers: per layer, keys and values as f16 (as llama.cpp's
//! cache holds them), `[position][kv_head][head_dim]`, in vectors that grow by doubling.

use half::f16;

use crate::ModelError;
use crate::cache::CacheBuffers;

/// One sequence's keys and values on the CPU backend.
#[derive(Debug)]
pub(crate) struct NativeCache {
    /// Per layer, keys and values.
    layers: Vec<(Vec<f16>, Vec<f16>)>,
    /// Values per position in one layer buffer (`kv_heads * head_dim`).
    stride: usize,
}

impl NativeCache {
    /// Empty buffers for `layers` layers of `stride` values per position.
    pub(crate) fn new(layers: usize, stride: usize) -> NativeCache {
        NativeCache {
            layers: vec![(Vec::new(), Vec::new()); layers],
            stride,
        }
    }

    /// Writes new keys and values (f32, `t x stride`) for `layer` after the first `len`
    /// positions, rounded to f16. Anything written after those positions before (a failed
    /// pass, a truncated cache) is dropped first.
    pub(crate) fn append(&mut self, layer: usize, len: usize, k: &[f32], v: &[f32]) {
        let used = len * self.stride;
        let (kb, vb) = &mut self.layers[layer];
        kb.truncate(used);
        vb.truncate(used);
        kb.extend(k.iter().map(|&x| f16::from_f32(x)));
        vb.extend(v.iter().map(|&x| f16::from_f32(x)));
    }

    /// The keys and values held for `layer`, including rows appended but not committed.
    pub(crate) fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }
}

impl CacheBuffers for NativeCache {
    fn memory_usage(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.capacity() + v.capacity()) * size_of::<f16>())
            .sum()
    }

    fn try_clone(&self, len: usize) -> Result<Box<dyn CacheBuffers>, ModelError> {
        let used = len * self.stride;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                (
                    k[..used.min(k.len())].to_vec(),
                    v[..used.min(v.len())].to_vec(),
                )
            })
            .collect();
        Ok(Box::new(NativeCache {
            layers,
            stride: self.stride,
        }))
    }
}
