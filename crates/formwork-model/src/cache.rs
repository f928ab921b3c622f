//! Per-sequence key/value caches.
//!
//! Every sequence owns one [`KvCache`]; the weights are shared. Each layer keeps keys and
//! values in a buffer of shape `[kv_heads, capacity, head_dim]` that grows by doubling, so a
//! decode step writes one row in place instead of copying the whole history.

use candle_core::{DType, Device, Tensor};

use crate::ModelError;

/// First capacity (in tokens) given to a layer's buffer.
const INITIAL_CAPACITY: usize = 64;

/// The keys and values a sequence has computed so far, for every layer.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for a model with `layers` layers and a context of `max_len` tokens.
    pub fn new(layers: usize, max_len: usize) -> KvCache {
        KvCache {
            layers: vec![None; layers],
            len: 0,
            capacity: 0,
            max_len,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most tokens the cache may hold (the model's context length).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes held by the buffers (allocated capacity, not just the used part).
    pub fn memory_usage(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Forgets every token after the first `len` (for prefix reuse and rollback).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// A deep copy: the copy and the original grow independently (for `n > 1` sharing one
    /// prefill).
    pub fn try_clone(&self) -> Result<KvCache, ModelError> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(match layer {
                Some((k, v)) => Some((k.copy()?, v.copy()?)),
                None => None,
            });
        }
        Ok(KvCache {
            layers,
            len: self.len,
            capacity: self.capacity,
            max_len: self.max_len,
        })
    }

    /// Writes `t` new rows of keys and values (`[kv_heads, t, head_dim]`) for `layer` after the
    /// held tokens and returns views of all keys and values, `[kv_heads, len + t, head_dim]`.
    /// The length only moves on [`KvCache::commit`], once every layer has been written.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (kv_heads, t, head_dim) = k.dims3()?;
        let needed = self.len + t;
        if needed > self.max_len {
            return Err(ModelError::ContextOverflow {
                tokens: needed,
                context_length: self.max_len,
            });
        }
        let slot = &mut self.layers[layer];
        let grow = match slot {
            None => true,
            Some((kb, _)) => kb.dim(1)? < needed,
        };
        if grow {
            let capacity = needed
                .max(self.capacity)
                .max(INITIAL_CAPACITY)
                .next_power_of_two()
                .min(self.max_len);
            let kb = Tensor::zeros((kv_heads, capacity, head_dim), DType::F32, k.device())?;
            let vb = Tensor::zeros((kv_heads, capacity, head_dim), DType::F32, k.device())?;
            if let Some((old_k, old_v)) = slot.take()
                && self.len > 0
            {
                kb.slice_set(&old_k.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                vb.slice_set(&old_v.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            }
            self.capacity = self.capacity.max(capacity);
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().expect("the slot was filled above");
        kb.slice_set(&k.contiguous()?, 1, self.len)?;
        vb.slice_set(&v.contiguous()?, 1, self.len)?;
        Ok((kb.narrow(1, 0, needed)?, vb.narrow(1, 0, needed)?))
    }

    /// Moves the length forward by `t` tokens after every layer has been appended to.
    pub(crate) fn commit(&mut self, t: usize) {
        self.len += t;
    }

    /// The device the buffers live on, if any were allocated.
    pub fn device(&self) -> Option<Device> {
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
    }
}
