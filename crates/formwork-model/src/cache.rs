//! Per-sequence key/value caches.
//!
//! Every sequence owns one [`KvCache`]; the weights are shared. A cache comes from
//! [`crate::Model::new_cache`] and only runs on a model of the same backend and shape. The
//! [`KvCache`] keeps what every backend shares (how many tokens are held, the context limit,
//! the prompt length); the keys and values themselves are in buffers of the backend that made
//! the cache, in that backend's layout ([`crate::candle`]'s tensors, [`crate::cpu`]'s f16
//! blocks).
//!
//! A backend may hold its buffers in blocks of a fixed number of positions
//! ([`KvCache::block_tokens`]; the CPU backend does): then full blocks are shared by reference
//! instead of copied ([`KvCache::try_clone`]), handed out as [`KvBlock`]s
//! ([`KvCache::blocks`]) and put at the start of a new cache ([`KvCache::attach_prefix`]),
//! which is how the engine reuses the prompt prefix of earlier requests.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::ModelError;
use crate::config::TransformerConfig;

/// A backend's key/value buffers for one sequence: the backend's own type, reached again
/// through [`KvCache::buffers_mut`].
pub(crate) trait CacheBuffers: Any + Send + Sync + fmt::Debug {
    /// Bytes allocated (capacity, not just the used part).
    fn memory_usage(&self) -> usize;

    /// A copy that keeps at least the first `len` positions and grows independently (full
    /// shared blocks may be shared rather than copied).
    fn try_clone(&self, len: usize) -> Result<Box<dyn CacheBuffers>, ModelError>;

    /// Positions per block, for buffers held in shareable blocks.
    fn block_tokens(&self) -> Option<usize> {
        None
    }

    /// Handles of the full blocks among the first `len` positions, in order.
    fn full_blocks(&self, _len: usize) -> Vec<SharedBlock> {
        Vec::new()
    }

    /// Replaces the buffers by these full blocks (the cache's first positions).
    fn attach(&mut self, _blocks: &[SharedBlock]) -> Result<(), ModelError> {
        Err(ModelError::Cache {
            message: "this backend's caches do not share blocks".into(),
        })
    }
}

/// A backend's block, type-erased.
pub(crate) type SharedBlock = Arc<dyn Any + Send + Sync>;

/// A full block of a cache: the keys and values of [`KvCache::block_tokens`] positions for
/// every layer. Cloning it is cheap (a reference count), and what it holds never changes: a
/// cache writing into a block others hold copies it first.
#[derive(Clone)]
pub struct KvBlock(SharedBlock);

impl KvBlock {
    /// Whether a cache (or another handle) holds this block besides this handle.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Whether both handles are the same block.
    pub fn same(&self, other: &KvBlock) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for KvBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvBlock")
            .field("holders", &Arc::strong_count(&self.0))
            .finish()
    }
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

    /// A copy that grows independently of the original (for `n > 1` sharing one prefill):
    /// where the backend holds blocks, the full ones are shared, not copied.
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

    /// Positions per shareable block, when the backend holds its buffers in blocks (the CPU
    /// backend does; candle does not).
    pub fn block_tokens(&self) -> Option<usize> {
        self.buffers.block_tokens()
    }

    /// Handles of the cache's full blocks, in order (none where the backend has no blocks).
    pub fn blocks(&self) -> Vec<KvBlock> {
        self.buffers
            .full_blocks(self.len)
            .into_iter()
            .map(KvBlock)
            .collect()
    }

    /// Starts an empty cache with these blocks (of a cache of the same backend and shape) as
    /// its first positions; it then holds `blocks.len() * block_tokens` tokens.
    pub fn attach_prefix(&mut self, blocks: &[KvBlock]) -> Result<(), ModelError> {
        let Some(per_block) = self.block_tokens() else {
            return Err(ModelError::Cache {
                message: "this backend's caches do not share blocks".into(),
            });
        };
        if !self.is_empty() {
            return Err(ModelError::Cache {
                message: "a prefix is attached to an empty cache only".into(),
            });
        }
        let len = blocks.len() * per_block;
        if len > self.max_len {
            return Err(ModelError::Cache {
                message: format!(
                    "{len} tokens of blocks exceed the context of {}",
                    self.max_len
                ),
            });
        }
        let handles: Vec<SharedBlock> = blocks.iter().map(|b| b.0.clone()).collect();
        self.buffers.attach(&handles)?;
        self.len = len;
        Ok(())
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
