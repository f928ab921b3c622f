//! Vocabularies: what bytes each token adds to the text, and which tokens are special.
//!
//! A [`Vocabulary`] is bytes, not strings: a byte-level BPE token may hold half of a UTF-8
//! character, and a SentencePiece byte-fallback token `<0xE6>` is that one raw byte. It also
//! holds the byte trie of its tokens ([`Vocabulary::trie`]) that every [`crate::Index`] over
//! it walks, built once on first use and shared by all clones.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::IndexError;
use formwork_gguf::{Metadata, Value};

/// A token vocabulary. Cloning is cheap: clones share the token table and the trie.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The bytes of all tokens, concatenated; token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    eos: Vec<u32>,
    /// One bit per token: set for tokens that never appear inside constrained text.
    special: Vec<u64>,
    trie: OnceLock<Trie>,
}

/// How the token strings of a GGUF vocabulary encode bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEncoding {
    /// GPT-2 byte-level BPE: every byte is one printable character (`Ġ` is a space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xNN>` byte-fallback tokens are one raw byte.
    SentencePiece,
    /// The token strings are the bytes themselves.
    Raw,
}

impl Vocabulary {
    /// Builds a vocabulary from explicit parts.
    ///
    /// `tokens[i]` is what token `i` adds to the text; `eos` are the end-of-sequence token ids
    /// (allowed only where the constraint accepts); `special` are the ids of tokens that never
    /// appear inside constrained text (control tokens). EOS tokens and empty tokens are never
    /// allowed inside the text either. Ids out of range are an error.
    pub fn new(
        tokens: Vec<Vec<u8>>,
        eos: Vec<u32>,
        special: impl IntoIterator<Item = u32>,
    ) -> Result<Self, IndexError> {
        let n = tokens.len();
        if n >= u32::MAX as usize {
            return Err(IndexError::Vocabulary(format!("{n} tokens is too many")));
        }
        let total: usize = tokens.iter().map(Vec::len).sum();
        if total >= u32::MAX as usize {
            return Err(IndexError::Vocabulary(
                "the tokens hold too many bytes".into(),
            ));
        }
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for t in &tokens {
            bytes.extend_from_slice(t);
            offsets.push(bytes.len() as u32);
        }
        let mut mask = vec![0u64; n.div_ceil(64)];
        let check = |id: u32, what: &str| {
            if (id as usize) < n {
                Ok(())
            } else {
                Err(IndexError::Vocabulary(format!(
                    "{what} token id {id} is out of range ({n} tokens)"
                )))
            }
        };
        for &e in &eos {
            check(e, "EOS")?;
            mask[e as usize / 64] |= 1 << (e % 64);
        }
        for s in special {
            check(s, "special")?;
            mask[s as usize / 64] |= 1 << (s % 64);
        }
        let mut eos = eos;
        eos.sort_unstable();
        eos.dedup();
        Ok(Vocabulary {
            inner: Arc::new(Inner {
                bytes,
                offsets,
                eos,
                special: mask,
                trie: OnceLock::new(),
            }),
        })
    }

    /// Reads the vocabulary of the GGUF model at `path` (metadata only).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self, IndexError> {
        let meta = Metadata::read(path)?;
        Self::from_gguf_metadata(&meta)
    }

    /// Builds the vocabulary from GGUF metadata: `tokenizer.ggml.model`, `.tokens` and
    /// `.token_type`; the EOS tokens are the end-of-generation tokens of
    /// [`formwork_gguf::end_token_ids`] (llama.cpp's rule: the eos/eot/eom ids, and control
    /// tokens such as Gemma's `<end_of_turn>`).
    ///
    /// Token types: 1 normal (decoded per the model), 2 unknown, 3 control and 5 unused are
    /// special; 4 user-defined is taken literally; 6 byte is `<0xNN>`, one raw byte.
    pub fn from_gguf_metadata(meta: &Metadata) -> Result<Self, IndexError> {
        let missing =
            |key: &str| IndexError::Vocabulary(format!("GGUF metadata has no valid {key}"));
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("tokenizer.ggml.model"))?;
        let encoding = match model {
            "gpt2" => TokenEncoding::ByteLevel,
            "llama" => TokenEncoding::SentencePiece,
            other => {
                return Err(IndexError::Vocabulary(format!(
                    "unsupported tokenizer model {other:?} (gpt2 and llama are supported)"
                )));
            }
        };
        let strings = meta
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let types = match meta.get("tokenizer.ggml.token_type") {
            None => None,
            Some(v) => {
                let a = v
                    .as_array()
                    .ok_or_else(|| missing("tokenizer.ggml.token_type"))?;
                if a.len() != strings.len() {
                    return Err(IndexError::Vocabulary(format!(
                        "{} token types for {} tokens",
                        a.len(),
                        strings.len()
                    )));
                }
                Some(a)
            }
        };
        let mut tokens = Vec::with_capacity(strings.len());
        let mut special = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            let text = s
                .as_bytes()
                .ok_or_else(|| IndexError::Vocabulary(format!("token {i} is not a string")))?;
            let ty = match types {
                Some(t) => t[i]
                    .as_i64()
                    .ok_or_else(|| missing("tokenizer.ggml.token_type"))?,
                None => 1,
            };
            let bytes = match ty {
                2 | 3 | 5 => {
                    special.push(i as u32);
                    text.to_vec()
                }
                4 => text.to_vec(),
                6 => match parse_byte_token(text) {
                    Some(b) => vec![b],
                    None => decode(text, encoding),
                },
                // Files without token types still mark SentencePiece byte tokens as `<0xNN>`.
                _ if types.is_none() && encoding == TokenEncoding::SentencePiece => {
                    match parse_byte_token(text) {
                        Some(b) => vec![b],
                        None => decode(text, encoding),
                    }
                }
                _ => decode(text, encoding),
            };
            tokens.push(bytes);
        }
        // llama.cpp's end-of-generation rule, shared with formwork-model.
        let eos = formwork_gguf::end_token_ids(meta);
        if eos.is_empty() {
            return Err(missing("tokenizer.ggml.eos_token_id"));
        }
        Self::new(tokens, eos, special)
    }

    /// Number of tokens (the vocabulary size the model's logits have).
    pub fn len(&self) -> usize {
        self.inner.offsets.len() - 1
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes token `id` adds to the text, or `None` for an id out of range.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (&a, &b) = (self.inner.offsets.get(i)?, self.inner.offsets.get(i + 1)?);
        Some(&self.inner.bytes[a as usize..b as usize])
    }

    /// The end-of-sequence token ids, sorted.
    pub fn eos(&self) -> &[u32] {
        &self.inner.eos
    }

    /// Whether token `id` is an EOS token.
    pub fn is_eos(&self, id: u32) -> bool {
        self.inner.eos.binary_search(&id).is_ok()
    }

    /// Whether token `id` never appears inside constrained text (control, unknown, unused or
    /// EOS tokens). Ids out of range count as special.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .special
            .get(id as usize / 64)
            .is_none_or(|w| w & (1 << (id % 64)) != 0)
            || id as usize >= self.len()
    }

    /// Number of `u64` words in a token mask over this vocabulary.
    pub fn mask_words(&self) -> usize {
        self.len().div_ceil(64)
    }

    /// The byte trie of the text tokens, built on first call and shared by all clones.
    pub fn trie(&self) -> &Trie {
        self.inner.trie.get_or_init(|| Trie::build(self))
    }

    /// Approximate heap memory, in bytes (the trie counted once built).
    pub fn memory_usage(&self) -> usize {
        let i = &self.inner;
        i.bytes.len()
            + i.offsets.len() * 4
            + i.special.len() * 8
            + i.eos.len() * 4
            + i.trie.get().map_or(0, Trie::memory_usage)
    }

    /// Splits `text` into tokens greedily, longest token first, using text tokens only.
    /// `None` when some position starts no token. Handy for tests and for seeding a prompt.
    pub fn tokenize_greedy(&self, text: &[u8]) -> Option<Vec<u32>> {
        let trie = self.trie();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let (id, len) = trie.longest_prefix(&text[pos..])?;
            out.push(id);
            pos += len;
        }
        Some(out)
    }
}

/// `<0xNN>` to the byte `NN`.
pub(crate) fn parse_byte_token(text: &[u8]) -> Option<u8> {
    let hex = text.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Decodes a token string of a normal token into the bytes it adds to the text.
pub(crate) fn decode(text: &[u8], encoding: TokenEncoding) -> Vec<u8> {
    match encoding {
        TokenEncoding::Raw => text.to_vec(),
        TokenEncoding::SentencePiece => {
            let mut out = Vec::with_capacity(text.len());
            let mut rest = text;
            // U+2581 LOWER ONE EIGHTH BLOCK is E2 96 81 in UTF-8.
            while let Some((&b, tail)) = rest.split_first() {
                if rest.starts_with("\u{2581}".as_bytes()) {
                    out.push(b' ');
                    rest = &rest[3..];
                } else {
                    out.push(b);
                    rest = tail;
                }
            }
            out
        }
        TokenEncoding::ByteLevel => match std::str::from_utf8(text) {
            Ok(s) => {
                let mut out = Vec::with_capacity(s.len());
                for c in s.chars() {
                    match unicode_to_byte(c) {
                        Some(b) => out.push(b),
                        // Not a byte-level character: keep its UTF-8 as is.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
            Err(_) => text.to_vec(),
        },
    }
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the other
/// 68 bytes were mapped, in order, to U+0100 and up.
fn unicode_to_byte(c: char) -> Option<u8> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let cp = c as u32;
    if cp < 256 {
        return printable(cp).then_some(cp as u8);
    }
    // 0..=32, then 127..=160, then 173.
    match cp - 256 {
        k @ 0..=32 => Some(k as u8),
        k @ 33..=66 => Some((k - 33 + 127) as u8),
        67 => Some(173),
        _ => None,
    }
}

/// The byte trie of a vocabulary's text tokens, laid out flat in preorder.
///
/// Node 0 is the root; the subtree of node `i` is the node range `i..end(i)`, and its first
/// child (if any) is `i + 1`, so a walker skips a dead subtree with one jump. Children are
/// sorted by byte. Special, EOS and empty tokens are left out.
#[derive(Debug)]
pub struct Trie {
    label: Vec<u8>,
    end: Vec<u32>,
    /// Depth of each node (the root is 0).
    depth: Vec<u16>,
    /// The first token ending at each node, or the vocabulary size (a dummy slot) if none.
    first: Vec<u32>,
    max_depth: usize,
    /// Tokens ending at node `i` are `tokens[tok_start[i]..tok_start[i + 1]]`.
    tok_start: Vec<u32>,
    tokens: Vec<u32>,
    /// The content tokens (`crate::content`), one bit per token id.
    content: Box<[u64]>,
    /// Per node: whether its subtree holds a token that is not a content token.
    rest: Box<[bool]>,
}

impl Trie {
    fn build(vocab: &Vocabulary) -> Trie {
        let mut ids: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| {
                !vocab.is_special(id)
                    && vocab
                        .token(id)
                        .is_some_and(|t| !t.is_empty() && t.len() <= usize::from(u16::MAX))
            })
            .collect();
        let tok = |id: u32| vocab.token(id).unwrap_or_default();
        ids.sort_by(|&a, &b| tok(a).cmp(tok(b)).then(a.cmp(&b)));

        let mut label = vec![0u8];
        let mut end = vec![0u32];
        let mut depth = vec![0u16];
        // node_of[k]: the node where the k-th token (in sorted order) ends.
        let mut node_of = Vec::with_capacity(ids.len());
        // The node path of the previous token: path[d] is the node at depth d (path[0] root).
        let mut path: Vec<u32> = vec![0];
        let mut prev: &[u8] = &[];
        for &id in &ids {
            let t = tok(id);
            let lcp = prev.iter().zip(t).take_while(|(a, b)| a == b).count();
            while path.len() > lcp + 1 {
                if let Some(node) = path.pop() {
                    end[node as usize] = label.len() as u32;
                }
            }
            for &b in &t[lcp..] {
                depth.push(path.len() as u16);
                path.push(label.len() as u32);
                label.push(b);
                end.push(0);
            }
            node_of.push(path[path.len() - 1]);
            prev = t;
        }
        while let Some(node) = path.pop() {
            end[node as usize] = label.len() as u32;
        }
        // Sorted order is preorder, so node_of is non-decreasing: count tokens per node.
        let n = label.len();
        let mut starts = vec![0u32; n + 1];
        for &node in &node_of {
            starts[node as usize + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let dummy = vocab.len() as u32;
        let first = (0..n)
            .map(|i| {
                if starts[i + 1] > starts[i] {
                    ids[starts[i] as usize]
                } else {
                    dummy
                }
            })
            .collect();
        let max_depth = depth.iter().copied().max().unwrap_or(0) as usize;
        // Content tokens, and per node the count of other tokens up to it in preorder, so
        // a subtree `i..end(i)` holds one exactly when the counts at its ends differ.
        let mut content = vec![0u64; vocab.mask_words()].into_boxed_slice();
        let mut others = vec![0u32; n + 1];
        for i in 0..n {
            let own = &ids[starts[i] as usize..starts[i + 1] as usize];
            let mut other = 0;
            for &id in own {
                if crate::content::is_content(tok(id)) {
                    content[id as usize / 64] |= 1 << (id % 64);
                } else {
                    other += 1;
                }
            }
            others[i + 1] = others[i] + other;
        }
        let rest = (0..n)
            .map(|i| others[end[i] as usize] > others[i])
            .collect();
        Trie {
            label,
            end,
            depth,
            first,
            max_depth,
            tok_start: starts,
            tokens: ids,
            content,
            rest,
        }
    }

    /// Number of nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.label.len()
    }

    /// Number of tokens in the trie (the vocabulary's text tokens).
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The label, subtree-end, token-start and token arrays, for the index's inner loop.
    pub(crate) fn raw(&self) -> TrieArrays<'_> {
        TrieArrays {
            label: &self.label,
            end: &self.end,
            depth: &self.depth,
            first: &self.first,
            tok_start: &self.tok_start,
            tokens: &self.tokens,
            rest: &self.rest,
        }
    }

    /// The content tokens (`crate::content`) as a mask over the vocabulary.
    pub(crate) fn content_mask(&self) -> &[u64] {
        &self.content
    }

    /// The depth of the deepest node (the longest token's length).
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// One past the last node of the subtree of node `i` (nodes are in preorder: the
    /// subtree of `i` is `i..end(i)`, its first child, if any, `i + 1`).
    #[inline]
    pub fn end(&self, i: usize) -> usize {
        self.end[i] as usize
    }

    /// The byte on the edge into node `i` (0 for the root).
    #[inline]
    pub fn label(&self, i: usize) -> u8 {
        self.label[i]
    }

    /// The depth of node `i`: the length of its path from the root.
    #[inline]
    pub fn depth(&self, i: usize) -> usize {
        usize::from(self.depth[i])
    }

    /// The tokens whose bytes spell the path to node `i`.
    #[inline]
    pub fn tokens_at(&self, i: usize) -> &[u32] {
        &self.tokens[self.tok_start[i] as usize..self.tok_start[i + 1] as usize]
    }

    /// The longest token that is a prefix of `text`: (token id, its length).
    pub fn longest_prefix(&self, text: &[u8]) -> Option<(u32, usize)> {
        let mut best = None;
        let mut node = 0usize;
        for (depth, &b) in text.iter().enumerate() {
            // Find the child of `node` labelled `b` (children are sorted by byte).
            let mut child = node + 1;
            let stop = self.end(node);
            let mut found = None;
            while child < stop {
                let l = self.label[child];
                if l == b {
                    found = Some(child);
                    break;
                }
                if l > b {
                    break;
                }
                child = self.end(child);
            }
            let Some(c) = found else { break };
            node = c;
            if let Some(&id) = self.tokens_at(node).first() {
                best = Some((id, depth + 1));
            }
        }
        best
    }

    /// Approximate heap memory, in bytes.
    pub fn memory_usage(&self) -> usize {
        self.label.len()
            + self.end.len() * 4
            + self.depth.len() * 2
            + self.first.len() * 4
            + self.tok_start.len() * 4
            + self.tokens.len() * 4
            + self.content.len() * 8
            + self.rest.len()
    }
}

/// The arrays of a [`Trie`], borrowed for the index's inner loop.
pub(crate) struct TrieArrays<'a> {
    pub(crate) label: &'a [u8],
    pub(crate) end: &'a [u32],
    pub(crate) depth: &'a [u16],
    pub(crate) first: &'a [u32],
    pub(crate) tok_start: &'a [u32],
    pub(crate) tokens: &'a [u32],
    pub(crate) rest: &'a [bool],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_mapping_inverts_gpt2() {
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('ĉ'), Some(b'\t'));
        assert_eq!(unicode_to_byte('A'), Some(b'A'));
        assert_eq!(unicode_to_byte('Ā'), Some(0));
        assert_eq!(unicode_to_byte('ł'), Some(0xA0));
        assert_eq!(unicode_to_byte('Ń'), Some(0xAD));
        assert_eq!(unicode_to_byte('ń'), None);
        assert_eq!(unicode_to_byte(' '), None);
        // All 256 bytes are reachable.
        let mut seen = [false; 256];
        for cp in 0..400u32 {
            if let Some(b) = char::from_u32(cp).and_then(unicode_to_byte) {
                assert!(!seen[b as usize]);
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(
            decode("ĠhelloĊ".as_bytes(), TokenEncoding::ByteLevel),
            b" hello\n"
        );
        // Half of 日 (E6 97 A5): the byte-level string of E6 97.
        assert_eq!(
            decode("æĹ".as_bytes(), TokenEncoding::ByteLevel),
            vec![0xE6, 0x97]
        );
    }

    #[test]
    fn sentencepiece_decoding() {
        assert_eq!(
            decode("▁hello▁▁x".as_bytes(), TokenEncoding::SentencePiece),
            b" hello  x"
        );
        assert_eq!(parse_byte_token(b"<0xE6>"), Some(0xE6));
        assert_eq!(parse_byte_token(b"<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token(b"<0xE>"), None);
        assert_eq!(parse_byte_token(b"<s>"), None);
    }

    #[test]
    fn trie_layout() {
        let toks: Vec<Vec<u8>> = ["ab", "a", "b", "abc", "", "ab", "<eos>", "ba"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let v = Vocabulary::new(toks, vec![6], []).unwrap();
        let t = v.trie();
        // root, a, ab, abc, b, ba
        assert_eq!(t.node_count(), 6);
        assert_eq!(t.token_count(), 6);
        assert_eq!(t.end(0), 6);
        assert_eq!(t.tokens_at(1), &[1]);
        assert_eq!(t.tokens_at(2), &[0, 5]);
        assert_eq!(t.tokens_at(3), &[3]);
        assert_eq!(t.end(1), 4);
        assert_eq!(t.tokens_at(5), &[7]);
        assert_eq!(v.tokenize_greedy(b"abcab"), Some(vec![3, 0]));
        assert_eq!(v.tokenize_greedy(b"abx"), None);
        assert!(v.is_special(6) && v.is_eos(6) && !v.is_special(0) && v.is_special(99));
        assert!(Vocabulary::new(vec![b"a".to_vec()], vec![1], []).is_err());
    }
}
