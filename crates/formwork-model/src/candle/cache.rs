//! The candle backend's key/value buffers: per layer, keys and values in tensors of shape
//! `[kv_heads, capacity, head_dim]` that grow by doubling, so a decode step writes one row in
//! place instead of copying the whole history.

use candle_core::{DType, Tensor};

use crate::ModelError;
use crate::cache::CacheBuffers;

/// First capacity (in tokens) given to a layer's buffer.
const INITIAL_CAPACITY: usize = 64;

/// One sequence's keys and values on candle.
#[derive(Debug)]
pub(crate) struct CandleCache {
    /// Per layer, keys and values (`None` until the layer is first written).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The largest capacity of any layer.
    capacity: usize,
}

impl CandleCache {
    /// Empty buffers for `layers` layers.
    pub(crate) fn new(layers: usize) -> CandleCache {
        CandleCache {
            layers: vec![None; layers],
            capacity: 0,
        }
    }

    /// Writes `t` new rows of keys and values (`[kv_heads, t, head_dim]`) for `layer` after
    /// the first `len` positions and returns views of all keys and values,
    /// `[kv_heads, len + t, head_dim]`. Buffers grow to at most `limit` positions (the
    /// context length, which `len + t` does not exceed).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        len: usize,
        k: &Tensor,
        v: &Tensor,
        limit: usize,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (kv_heads, t, head_dim) = k.dims3()?;
        let needed = len + t;
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
                .min(limit);
            let kb = Tensor::zeros((kv_heads, capacity, head_dim), DType::F32, k.device())?;
            let vb = Tensor::zeros((kv_heads, capacity, head_dim), DType::F32, k.device())?;
            if let Some((old_k, old_v)) = slot.take()
                && len > 0
            {
                kb.slice_set(&old_k.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                vb.slice_set(&old_v.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
            }
            self.capacity = self.capacity.max(capacity);
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().expect("the slot was filled above");
        kb.slice_set(&k.contiguous()?, 1, len)?;
        vb.slice_set(&v.contiguous()?, 1, len)?;
        Ok((kb.narrow(1, 0, needed)?, vb.narrow(1, 0, needed)?))
    }
}

impl CacheBuffers for CandleCache {
    fn memory_usage(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    fn try_clone(&self, _len: usize) -> Result<Box<dyn CacheBuffers>, ModelError> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(match layer {
                Some((k, v)) => Some((k.copy()?, v.copy()?)),
                None => None,
            });
        }
        Ok(Box::new(CandleCache {
            layers,
            capacity: self.capacity,
        }))
    }
}
