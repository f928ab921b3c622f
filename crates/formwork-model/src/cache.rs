//! Per-sequence key/value caches.
//!
//! Every sequence owns one [`KvCache`]; the weights are shared. On candle, each layer keeps
//! keys and values in a buffer of shape `[kv_heads, capacity, head_dim]` that grows by
//! doubling, so a decode step writes one row in place instead of copying the whole history.
//! On Formwork's own CPU backend each layer keeps them as f16 (as llama.cpp's cache does),
//! `[position][kv_head][head_dim]`, in vectors that grow by doubling.

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::ModelError;
use crate::cpu::NativeCacheLayers;

/// First capacity (in tokens) given to a layer's buffer.
const INITIAL_CAPACITY: usize = 64;

/// The keys and values a sequence has computed so far, for every layer.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The CPU backend's buffers (empty until it first runs this cache).
    native: NativeCacheLayers,
    /// Values per position in one native layer buffer (`kv_heads * head_dim`).
    native_stride: usize,
    /// The sequence's prompt length, when known (see [`KvCache::set_prompt_len`]).
    prompt_len: Option<usize>,
    len: usize,
    capacity: usize,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for a model with `layers` layers and a context of `max_len` tokens.
    pub fn new(layers: usize, max_len: usize) -> KvCache {
        KvCache {
            layers: vec![None; layers],
            native: Vec::new(),
            native_stride: 0,
            prompt_len: None,
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
        let candle: usize = self
            .layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum();
        let native: usize = self
            .native
            .iter()
            .map(|(k, v)| (k.capacity() + v.capacity()) * 2)
            .sum();
        candle + native
    }

    /// Tells the CPU backend that this sequence's first `len` tokens are its prompt, so it
    /// computes them as llama.cpp computes a prompt of that length however the prompt is cut
    /// into forward passes (an engine prefilling in chunks sets it; the tokens then do not
    /// depend on the chunking). Without it each forward pass counts as a whole prompt.
    pub fn set_prompt_len(&mut self, len: usize) {
        self.prompt_len = Some(len);
    }

    /// The prompt length given to [`KvCache::set_prompt_len`].
    pub fn prompt_len(&self) -> Option<usize> {
        self.prompt_len
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
        let used = self.len * self.native_stride;
        let native = self
            .native
            .iter()
            .map(|(k, v)| {
                (
                    k[..used.min(k.len())].to_vec(),
                    v[..used.min(v.len())].to_vec(),
                )
            })
            .collect();
        Ok(KvCache {
            layers,
            native,
            native_stride: self.native_stride,
            prompt_len: self.prompt_len,
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
        if !self.native.is_empty() {
            return Err(ModelError::Cache {
                message: "this cache was filled by another backend".into(),
            });
        }
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

    /// Makes sure the CPU backend's buffers exist: `layers` layers of `stride` values per
    /// position. A cache first used by candle cannot be used by the CPU backend.
    pub(crate) fn native_layers(&mut self, layers: usize, stride: usize) -> Result<(), ModelError> {
        if self.layers.iter().any(Option::is_some) || (self.len > 0 && self.native.is_empty()) {
            return Err(ModelError::Cache {
                message: "this cache was filled by another backend".into(),
            });
        }
        if self.native.is_empty() {
            self.native = vec![(Vec::new(), Vec::new()); layers];
            self.native_stride = stride;
        }
        if self.native.len() != layers || self.native_stride != stride {
            return Err(ModelError::Cache {
                message: "this cache belongs to a model of another shape".into(),
            });
        }
        Ok(())
    }

    /// Writes new keys and values (f32, `t x stride`) for `layer` after the held tokens,
    /// rounded to f16. Anything written after the held tokens before (a failed pass) is
    /// dropped first.
    pub(crate) fn native_append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let used = self.len * self.native_stride;
        let (kb, vb) = &mut self.native[layer];
        kb.truncate(used);
        vb.truncate(used);
        kb.extend(k.iter().map(|&x| f16::from_f32(x)));
        vb.extend(v.iter().map(|&x| f16::from_f32(x)));
    }

    /// The keys and values held for `layer`, including rows appended but not committed.
    pub(crate) fn native_layer(&self, layer: usize) -> (&[f16], &[f16]) {
        let (k, v) = &self.native[layer];
        (k, v)
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
