//! The CPU backend's key/value buffers: blocks of [`BLOCK`] positions, each holding the keys
//! and values of every layer as f16 (as llama.cpp's cache holds them), shared between caches
//! by reference count.
//!
//! A block is written only through a cache that holds it alone: writing into a shared block
//! copies it first, so a block another cache (or the engine's prefix store) holds never
//! changes. That is what lets forks share their prompt's blocks and later requests reuse
//! them.

use std::any::Any;
use std::sync::Arc;

use half::f16;

use crate::ModelError;
use crate::cache::{CacheBuffers, SharedBlock};

/// Positions per block.
pub(crate) const BLOCK: usize = 32;

/// The keys and values of [`BLOCK`] positions for every layer:
/// `[layer][keys, values][position][kv_head][head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct Block(Vec<f16>);

/// One sequence's keys and values on the CPU backend.
#[derive(Debug)]
pub(crate) struct NativeCache {
    blocks: Vec<Arc<Block>>,
    layers: usize,
    /// Values per position in one layer (`kv_heads * head_dim`).
    stride: usize,
}

impl NativeCache {
    /// Empty buffers for `layers` layers of `stride` values per position.
    pub(crate) fn new(layers: usize, stride: usize) -> NativeCache {
        NativeCache {
            blocks: Vec::new(),
            layers,
            stride,
        }
    }

    /// Values of one block (every layer's keys and values).
    fn block_len(&self) -> usize {
        self.layers * 2 * BLOCK * self.stride
    }

    /// Where `layer`'s keys start within a block (its values follow them).
    fn keys_at(&self, layer: usize) -> usize {
        layer * 2 * BLOCK * self.stride
    }

    /// Writes new keys and values (f32, `t x stride`) for `layer` at positions `len..len + t`,
    /// rounded to f16. A shared block written into is copied first.
    pub(crate) fn append(&mut self, layer: usize, len: usize, k: &[f32], v: &[f32]) {
        let rows = k.len() / self.stride;
        let needed = (len + rows).div_ceil(BLOCK);
        let block_len = self.block_len();
        while self.blocks.len() < needed {
            self.blocks
                .push(Arc::new(Block(vec![f16::ZERO; block_len])));
        }
        let stride = self.stride;
        let keys_at = self.keys_at(layer);
        let values_at = keys_at + BLOCK * stride;
        let mut row = 0;
        while row < rows {
            let pos = len + row;
            let in_block = (BLOCK - pos % BLOCK).min(rows - row);
            let block = &mut Arc::make_mut(&mut self.blocks[pos / BLOCK]).0;
            let at = (pos % BLOCK) * stride;
            let src = row * stride..(row + in_block) * stride;
            for (d, &x) in block[keys_at + at..].iter_mut().zip(&k[src.clone()]) {
                *d = f16::from_f32(x);
            }
            for (d, &x) in block[values_at + at..].iter_mut().zip(&v[src]) {
                *d = f16::from_f32(x);
            }
            row += in_block;
        }
    }

    /// The keys and values held for `layer`, including rows appended but not committed.
    pub(crate) fn layer(&self, layer: usize) -> LayerView<'_> {
        let keys_at = self.keys_at(layer);
        LayerView {
            blocks: &self.blocks,
            keys_at,
            values_at: keys_at + BLOCK * self.stride,
            stride: self.stride,
        }
    }
}

/// One layer's keys and values across a cache's blocks.
#[derive(Clone, Copy)]
pub(crate) struct LayerView<'a> {
    blocks: &'a [Arc<Block>],
    keys_at: usize,
    values_at: usize,
    stride: usize,
}

impl<'a> LayerView<'a> {
    /// The keys of position `p` (`stride` values).
    pub(crate) fn key(&self, p: usize) -> &'a [f16] {
        let at = self.keys_at + (p % BLOCK) * self.stride;
        &self.blocks[p / BLOCK].0[at..at + self.stride]
    }

    /// The values of position `p` (`stride` values).
    pub(crate) fn value(&self, p: usize) -> &'a [f16] {
        let at = self.values_at + (p % BLOCK) * self.stride;
        &self.blocks[p / BLOCK].0[at..at + self.stride]
    }

    /// Positions `from..n` as runs within one block, in order: each run's keys and values
    /// (`count x stride`, contiguous) and its count.
    pub(crate) fn runs(
        &self,
        from: usize,
        n: usize,
    ) -> impl Iterator<Item = (&'a [f16], &'a [f16], usize)> {
        let (stride, keys_at, values_at) = (self.stride, self.keys_at, self.values_at);
        let first = from / BLOCK;
        self.blocks
            .iter()
            .take(n.div_ceil(BLOCK))
            .enumerate()
            .skip(first)
            .map(move |(b, block)| {
                let lo = from.max(b * BLOCK) - b * BLOCK;
                let count = (n - b * BLOCK).min(BLOCK);
                (
                    &block.0[keys_at + lo * stride..keys_at + count * stride],
                    &block.0[values_at + lo * stride..values_at + count * stride],
                    count - lo,
                )
            })
    }
}

impl CacheBuffers for NativeCache {
    fn memory_usage(&self) -> usize {
        self.blocks.len() * self.block_len() * size_of::<f16>()
    }

    /// Full blocks are shared with the copy; a partly used last block is copied.
    fn try_clone(&self, len: usize) -> Result<Box<dyn CacheBuffers>, ModelError> {
        let used = len.div_ceil(BLOCK).min(self.blocks.len());
        let full = len / BLOCK;
        let blocks = self.blocks[..used]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i < full {
                    b.clone()
                } else {
                    Arc::new(Block::clone(b))
                }
            })
            .collect();
        Ok(Box::new(NativeCache {
            blocks,
            layers: self.layers,
            stride: self.stride,
        }))
    }

    fn block_tokens(&self) -> Option<usize> {
        Some(BLOCK)
    }

    fn full_blocks(&self, len: usize) -> Vec<SharedBlock> {
        self.blocks
            .iter()
            .take(len / BLOCK)
            .map(|b| b.clone() as Arc<dyn Any + Send + Sync>)
            .collect()
    }

    fn attach(&mut self, blocks: &[SharedBlock]) -> Result<(), ModelError> {
        let block_len = self.block_len();
        let blocks = blocks
            .iter()
            .map(|b| {
                b.clone()
                    .downcast::<Block>()
                    .ok()
                    .filter(|b| b.0.len() == block_len)
                    .ok_or_else(|| ModelError::Cache {
                        message: "a shared block of another backend or shape".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.blocks = blocks;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| seed + i as f32).collect()
    }

    #[test]
    fn rows_land_at_their_positions_across_blocks() {
        let mut cache = NativeCache::new(2, 3);
        let k = values(3 * 70, 0.0);
        let v = values(3 * 70, 1000.0);
        cache.append(1, 0, &k[..3 * 40], &v[..3 * 40]);
        cache.append(1, 40, &k[3 * 40..], &v[3 * 40..]);
        let view = cache.layer(1);
        for p in 0..70 {
            assert_eq!(view.key(p)[2].to_f32(), k[3 * p + 2]);
            assert_eq!(view.value(p)[0].to_f32(), v[3 * p]);
        }
        let runs: Vec<usize> = view.runs(0, 70).map(|(_, _, n)| n).collect();
        assert_eq!(runs, [32, 32, 6]);
        let flat: Vec<f16> = view.runs(0, 70).flat_map(|(k, _, _)| k.to_vec()).collect();
        assert_eq!(flat.len(), 70 * 3);
        assert_eq!(flat[3 * 33].to_f32(), k[3 * 33]);
        // A window's runs start mid-block.
        let runs: Vec<usize> = view.runs(40, 70).map(|(_, _, n)| n).collect();
        assert_eq!(runs, [24, 6]);
        let (keys, values, _) = view.runs(40, 70).next().unwrap();
        assert_eq!(keys[0].to_f32(), k[3 * 40]);
        assert_eq!(values[3].to_f32(), v[3 * 41]);
        assert_eq!(
            view.runs(64, 70).map(|(_, _, n)| n).collect::<Vec<_>>(),
            [6]
        );
        // Layer 0 was never written.
        assert_eq!(cache.layer(0).key(5)[0].to_f32(), 0.0);
    }

    #[test]
    fn a_shared_block_is_copied_before_it_changes() {
        let mut a = NativeCache::new(1, 2);
        a.append(0, 0, &values(2 * 40, 0.0), &values(2 * 40, 0.0));
        let b = a.try_clone(40).unwrap();
        let shared = a.full_blocks(40);
        assert_eq!(shared.len(), 1);
        // The full block is shared (a, its copy, `shared`), the partial one is not.
        assert_eq!(Arc::strong_count(&a.blocks[0]), 3);
        assert_eq!(Arc::strong_count(&a.blocks[1]), 1);
        // Overwriting position 3 of `a` leaves the copy and the shared handle alone.
        a.append(0, 3, &[-1.0, -1.0], &[-1.0, -1.0]);
        assert_eq!(a.layer(0).key(3)[0].to_f32(), -1.0);
        let b: &dyn Any = b.as_ref();
        let b = b.downcast_ref::<NativeCache>().unwrap();
        assert_eq!(b.layer(0).key(3)[0].to_f32(), 6.0);
        let mut c = NativeCache::new(1, 2);
        c.attach(&shared).unwrap();
        assert_eq!(c.layer(0).key(3)[0].to_f32(), 6.0);
        assert!(NativeCache::new(2, 2).attach(&shared).is_err());
    }
}
