//! Per-sequence key/value caches.
//!
//! Every sequence owns one [`KvCache`]; the weights are shared. A cache comes from
//! [`crate::Model::new_cache`] and only runs on a model of the same backend and shape. The
//! [`KvCache`] keeps what every backend shares (how many tokens are held, the context limit,
//! the prompt length); the keys and values themselves are in buffers of the backend that made
//! the cache, in that backend's layout ([`crate::candle`]'s tensors, [`crate::cpu`]'s f16
//! vectors).

use std::any::Any;
use std::fmt;

use crate::ModelError;
use crate::config::TransformerConfig;

/// A backend's key/value buffers for one sequence: the backend's own type, reached again
/// through [`KvCache::buffers_mut`].
pub(crate) trait CacheBuffers: Any + Send + Sync + fmt::Debug {
    /// Bytes allocated (capacity, not just the used part).
    fn memory_usage(&self) -> usize;

    /// A deep copy that keeps at least the first `len` positions.
    fn try_clone(&self, len: usize) -> Result<Box<dyn CacheBuffers>, ModelError>;
}

/// The keys and values a sequence has computed so far, for every layer.
pub struct KvCache {
    buffers: Box<dyn CacheBuffers>,
    /// Layers and values per position (`kv_heads * head_dim`) of the model that made it.
    shape: (usize, usize),
    /// The sequence's prompt length, when known (see [`KvCache::set_prompt_len`]).
    prompt_len: Option<usize>,
    len: usize,
    max_len: usize,
    /// Set by [`crate::testing::FaultyModel`]: every `try_clone` fails.
    clone_fault: bool,
}

impl fmt::Debug for KvCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("max_len", &self.max_len)
            .field("prompt_len", &self.prompt_len)
            .field("memory_usage", &self.memory_usage())
            .finish_non_exhaustive()
    }
}

impl KvCache {
    /// An empty cache of a model with this configuration, holding its keys and values in
    /// `buffers`.
    pub(crate) fn new(config: &TransformerConfig, buffers: impl CacheBuffers) -> KvCache {
        KvCache {
            buffers: Box::new(buffers),
            shape: (config.layers, config.kv_heads * config.head_dim),
            prompt_len: None,
            len: 0,
            max_len: config.context_length,
            clone_fault: false,
        }
    }

    /// Makes every later [`KvCache::try_clone`] of this cache fail (fault injection).
    #[cfg(feature = "testing")]
    pub(crate) fn inject_clone_fault(&mut self) {
        self.clone_fault = true;
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
        self.buffers.memory_usage()
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
        if self.clone_fault {
            return Err(ModelError::Cache {
                message: "an injected fault: this cache cannot be cloned".into(),
            });
        }
        Ok(KvCache {
            buffers: self.buffers.try_clone(self.len)?,
            shape: self.shape,
            prompt_len: self.prompt_len,
            len: self.len,
            max_len: self.max_len,
            clone_fault: false,
        })
    }

    /// The buffers, as the type of the backend asking, when this cache was made by that
    /// backend for a model of this configuration's shape.
    pub(crate) fn buffers_mut<T: CacheBuffers>(
        &mut self,
        config: &TransformerConfig,
    ) -> Result<&mut T, ModelError> {
        if self.shape != (config.layers, config.kv_heads * config.head_dim) {
            return Err(ModelError::Cache {
                message: "this cache belongs to a model of another shape".into(),
            });
        }
        let buffers: &mut dyn Any = self.buffers.as_mut();
        buffers
            .downcast_mut::<T>()
            .ok_or_else(|| ModelError::Cache {
                message: "this cache was made by another backend".into(),
            })
    }

    /// Moves the length forward by `t` tokens after every layer has been written.
    pub(crate) fn commit(&mut self, t: usize) {
        self.len += t;
    }
}
