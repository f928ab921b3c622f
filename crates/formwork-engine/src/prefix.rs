//! Prefix reuse (automatic prefix caching): the key/value blocks of earlier sequences, kept
//! and found again by any request whose prompt starts with the same tokens.
//!
//! A model whose caches hold their keys and values in blocks ([`KvCache::block_tokens`])
//! hands out its full blocks as [`KvBlock`]s. When a sequence ends, its full blocks go into the
//! [`PrefixCache`], each under a hash of everything that made it: the hash of the block before
//! it, its tokens, and the *kernel class* of each of its positions ([`Model::kernel_class`]).
//! The classes are part of the key because the same tokens computed with another attention
//! kernel are other bits: a prefix stands in for a new request's own prefill only where it
//! would have computed exactly the same keys and values, so greedy outputs are the same with
//! and without reuse. An entry also keeps its tokens, classes and parent, and a lookup compares
//! them, so a hash collision is a miss, never a wrong block.
//!
//! A new request walks its prompt block by block from the start and takes the blocks found
//! (never the block holding the prompt's last token: its logits have to be computed). The
//! blocks held are charged to the engine's KV budget like any sequence's tokens; when room is
//! needed, blocks no cache holds any more go first, least recently used first and, among
//! those used last together, the later ones of a chain first.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use formwork_model::{KvBlock, KvCache, Model};

/// One cached block.
struct Entry {
    parent: u64,
    tokens: Box<[u32]>,
    classes: Box<[u8]>,
    block: KvBlock,
    /// When a lookup or an insert last touched it.
    used: u64,
    /// Its index in its chain (0 for a prompt's first block).
    depth: usize,
}

/// Blocks of earlier sequences by the prefix that made them. See the module docs.
pub(crate) struct PrefixCache {
    block_tokens: usize,
    entries: HashMap<u64, Entry>,
    clock: u64,
}

/// The hash of a block given its parent's.
fn chain(parent: u64, tokens: &[u32], classes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    classes.hash(&mut h);
    h.finish()
}

/// The kernel classes of `positions` in a sequence whose prompt is `prompt_len` tokens.
fn classes(model: &dyn Model, prompt_len: usize, positions: std::ops::Range<usize>) -> Vec<u8> {
    positions
        .map(|p| model.kernel_class(prompt_len, p))
        .collect()
}

impl PrefixCache {
    /// An empty cache of blocks of `block_tokens` positions.
    pub(crate) fn new(block_tokens: usize) -> PrefixCache {
        PrefixCache {
            block_tokens: block_tokens.max(1),
            entries: HashMap::new(),
            clock: 0,
        }
    }

    /// Tokens held (every block counted once).
    pub(crate) fn tokens(&self) -> usize {
        self.entries.len() * self.block_tokens
    }

    /// The cached blocks that start `prompt` (of a sequence whose cache is told its prompt is
    /// `prompt.len()` tokens), leaving at least the prompt's last token to compute.
    pub(crate) fn lookup(&mut self, model: &dyn Model, prompt: &[u32]) -> Vec<KvBlock> {
        self.clock += 1;
        let b = self.block_tokens;
        let usable = prompt.len().saturating_sub(1) / b;
        let mut found = Vec::new();
        let mut parent = 0;
        for i in 0..usable {
            let tokens = &prompt[i * b..(i + 1) * b];
            let classes = classes(model, prompt.len(), i * b..(i + 1) * b);
            let key = chain(parent, tokens, &classes);
            match self.entries.get_mut(&key) {
                Some(e) if e.parent == parent && *e.tokens == *tokens && *e.classes == *classes => {
                    e.used = self.clock;
                    found.push(e.block.clone());
                }
                _ => break,
            }
            parent = key;
        }
        found
    }

    /// Keeps the full blocks of a sequence's `cache`, whose tokens are `tokens` (at least
    /// `cache.len()` of them: its prompt of `prompt_len` tokens, then what it generated).
    /// Blocks already held (the same content) are kept as they are.
    pub(crate) fn insert(
        &mut self,
        model: &dyn Model,
        cache: &KvCache,
        prompt_len: usize,
        tokens: &[u32],
    ) {
        self.clock += 1;
        let b = self.block_tokens;
        let mut parent = 0;
        for (i, block) in cache.blocks().into_iter().enumerate() {
            let Some(tokens) = tokens.get(i * b..(i + 1) * b) else {
                break;
            };
            let classes = classes(model, prompt_len, i * b..(i + 1) * b);
            let key = chain(parent, tokens, &classes);
            match self.entries.get_mut(&key) {
                Some(e) => {
                    if e.parent != parent || *e.tokens != *tokens || *e.classes != *classes {
                        // A collision: the rest of this chain cannot be found anyway.
                        return;
                    }
                    e.used = self.clock;
                }
                None => {
                    self.entries.insert(
                        key,
                        Entry {
                            parent,
                            tokens: tokens.into(),
                            classes: classes.into(),
                            block,
                            used: self.clock,
                            depth: i,
                        },
                    );
                }
            }
            parent = key;
        }
    }

    /// Drops blocks no cache holds, least recently used first, until at most `tokens` tokens
    /// are held or none is left to drop. Returns the tokens held after.
    pub(crate) fn shrink_to(&mut self, tokens: usize) -> usize {
        if self.tokens() <= tokens {
            return self.tokens();
        }
        let mut idle: Vec<(u64, std::cmp::Reverse<usize>, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.block.is_shared())
            .map(|(&k, e)| (e.used, std::cmp::Reverse(e.depth), k))
            .collect();
        idle.sort_unstable();
        for (_, _, key) in idle {
            if self.tokens() <= tokens {
                break;
            }
            self.entries.remove(&key);
        }
        self.tokens()
    }

    /// Drops every block.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formwork_model::testing::{TinySpec, write_tiny_gguf};
    use std::sync::Arc;

    /// A tiny random-weight model on the CPU backend.
    fn tiny_model() -> Arc<dyn Model> {
        tiny_model_with(formwork_model::PromptAttention::default())
    }

    /// The tiny model, its prompt rows computed as `prompt_attention` says.
    fn tiny_model_with(prompt_attention: formwork_model::PromptAttention) -> Arc<dyn Model> {
        let dir = std::env::temp_dir().join(format!("formwork-prefix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:?}.gguf", std::thread::current().id()));
        write_tiny_gguf(&path, &TinySpec::default()).unwrap();
        let options =
            formwork_model::LoadOptions::default().with_prompt_attention(prompt_attention);
        formwork_model::load_with(&path, &options).unwrap().model
    }

    /// A tiny model's cache after running `tokens` as a prompt.
    fn prefilled(model: &dyn Model, tokens: &[u32]) -> KvCache {
        let mut cache = model.new_cache();
        cache.set_prompt_len(tokens.len());
        model
            .forward(&mut [formwork_model::BatchItem {
                tokens,
                cache: &mut cache,
            }])
            .unwrap();
        cache
    }

    #[test]
    fn a_prompt_finds_the_blocks_of_an_earlier_one_with_the_same_start() {
        let model = tiny_model();
        let model: &dyn Model = model.as_ref();
        let b = model.new_cache().block_tokens().unwrap();
        let first: Vec<u32> = (0..(3 * b + 5) as u32).map(|t| t % 50 + 3).collect();
        let cache = prefilled(model, &first);
        let mut prefixes = PrefixCache::new(b);
        prefixes.insert(model, &cache, first.len(), &first);
        assert_eq!(prefixes.tokens(), 3 * b);
        // Same first two blocks, then another token.
        let mut second = first[..2 * b + 1].to_vec();
        second[2 * b] = 1;
        second.extend_from_slice(&first[..b]);
        let found = prefixes.lookup(model, &second);
        assert_eq!(found.len(), 2);
        assert!(found[0].same(&cache.blocks()[0]));
        // A prompt that is exactly the cached blocks leaves its last block to compute.
        assert_eq!(prefixes.lookup(model, &first[..3 * b]).len(), 2);
        assert_eq!(prefixes.lookup(model, &first[..3 * b + 1]).len(), 3);
        // Another first token: nothing.
        let mut third = first.clone();
        third[0] = 2;
        assert!(prefixes.lookup(model, &third).is_empty());
    }

    #[test]
    fn the_same_tokens_computed_by_another_kernel_are_not_reused() {
        let model = tiny_model_with(formwork_model::PromptAttention::LlamaCpp);
        let model: &dyn Model = model.as_ref();
        let b = model.new_cache().block_tokens().unwrap();
        // A prompt shorter than a tile runs the row-by-row kernel throughout; one of 100
        // tokens runs the tiled kernel over the same first block.
        let short: Vec<u32> = (0..(b + 8) as u32).map(|t| t % 50 + 3).collect();
        let long: Vec<u32> = (0..100u32).map(|t| t % 50 + 3).collect();
        assert_ne!(
            model.kernel_class(short.len(), 0),
            model.kernel_class(long.len(), 0)
        );
        let mut prefixes = PrefixCache::new(b);
        prefixes.insert(model, &prefilled(model, &short), short.len(), &short);
        assert!(prefixes.lookup(model, &long).is_empty());
        let mut same_kernel = short.clone();
        same_kernel.push(9);
        assert_eq!(prefixes.lookup(model, &same_kernel).len(), 1);
    }

    #[test]
    fn blocks_in_use_are_never_dropped_and_idle_ones_go_least_recent_first() {
        let model = tiny_model();
        let model: &dyn Model = model.as_ref();
        let b = model.new_cache().block_tokens().unwrap();
        let a: Vec<u32> = (0..(2 * b + 1) as u32).map(|t| t % 40 + 3).collect();
        let c: Vec<u32> = (0..(2 * b + 1) as u32).map(|t| t % 30 + 5).collect();
        let mut prefixes = PrefixCache::new(b);
        let cache_a = prefilled(model, &a);
        prefixes.insert(model, &cache_a, a.len(), &a);
        drop(cache_a);
        let cache_c = prefilled(model, &c);
        prefixes.insert(model, &cache_c, c.len(), &c);
        assert_eq!(prefixes.tokens(), 4 * b);
        // `c`'s blocks are still held by its cache: only `a`'s may go, the later one first.
        assert_eq!(prefixes.shrink_to(3 * b), 3 * b);
        assert_eq!(prefixes.lookup(model, &a).len(), 1);
        assert_eq!(prefixes.shrink_to(0), 2 * b);
        assert!(prefixes.lookup(model, &a).is_empty());
        drop(cache_c);
        assert_eq!(prefixes.shrink_to(0), 0);
    }
}
