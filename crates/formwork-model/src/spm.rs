//! SentencePiece BPE encoding of GGUF `llama` vocabularies (Llama 2, Mistral, Gemma), step for
//! step as llama.cpp does it (`llm_tokenizer_spm` and `tokenizer_st_partition` in
//! `src/llama-vocab.cpp`), so a prompt becomes the ids the model saw in training:
//!
//! 1. **Special tokens first.** Control, unknown and user-defined tokens are cut out of the
//!    text before any merge, one token at a time, longest text first, each at its leftmost
//!    non-overlapping matches. Gemma's runs of spaces, newlines and tabs are user-defined
//!    tokens, so `"a  b"` holds the two-space token. Control and unknown tokens are only cut
//!    out when special tokens are parsed; user-defined ones always are.
//! 2. **Merges by score.** In each remaining piece of text a space becomes `▁` (U+2581), a
//!    `▁` is prepended when `tokenizer.ggml.add_space_prefix` says so (llama.cpp's default
//!    for these vocabularies) and the piece starts the text or follows a special token, and
//!    the piece is split into characters. The adjacent pair whose concatenation is the
//!    highest-scoring token is merged, leftmost first among equal scores, until no pair
//!    spells a token.
//! 3. **Byte fallback.** A character that is no token becomes the `<0xNN>` tokens of its
//!    UTF-8 bytes.
//!
//! The vocabulary itself (token text to id) is the [`crate::Tokenizer`]'s; this module keeps
//! only what the merges add: the scores, the byte tokens and the special tokens in cut order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::ModelError;
use crate::tokenizer::{GgufVocab, TYPE_CONTROL, TYPE_USER_DEFINED};

/// GGUF token type of the unknown token.
const TYPE_UNKNOWN: u32 = 2;

/// SentencePiece's space, U+2581 LOWER ONE EIGHTH BLOCK.
const SPACE: &str = "\u{2581}";

/// What llama.cpp's SPM tokenizer needs besides the token-to-id map.
#[derive(Debug, Clone)]
pub(crate) struct SentencePiece {
    /// `tokenizer.ggml.scores`, by id (a missing score is 0, as llama.cpp reads it).
    scores: Vec<f32>,
    /// The `<0xNN>` token of each byte (or the token spelled as that one byte).
    byte_tokens: Vec<Option<u32>>,
    /// Control, unknown and user-defined tokens, longest text first (then by id).
    specials: Vec<Special>,
    /// The texts of `specials`, to their index there.
    special_index: HashMap<Box<[u8]>, usize>,
    /// The distinct lengths of the special texts, longest first.
    special_lengths: Vec<usize>,
    /// One bit per byte pair (65,536 bits) that starts a special text of two bytes or more,
    /// and one per byte that is a whole special text: most positions of a text start none,
    /// and these let the search skip them with one lookup.
    starts: Vec<u64>,
    add_space_prefix: bool,
    unk_id: Option<u32>,
}

#[derive(Debug, Clone)]
struct Special {
    id: u32,
    text: Box<[u8]>,
    /// Control or unknown: cut out only when special tokens are parsed.
    control: bool,
}

/// A piece of the text being cut: raw text (a byte range) or a special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl SentencePiece {
    /// The encoder of a GGUF `llama` vocabulary.
    pub(crate) fn new(vocab: &GgufVocab) -> Result<SentencePiece, ModelError> {
        let n = vocab.tokens.len();
        let scores = (0..n)
            .map(|i| vocab.scores.get(i).copied().unwrap_or(0.0) as f32)
            .collect();
        let mut byte_tokens = vec![None; 256];
        let mut by_text: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, t) in vocab.tokens.iter().enumerate() {
            // The last id wins when a vocabulary repeats a token, as in llama.cpp.
            by_text.insert(t.as_str(), i as u32);
        }
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = by_text.get(hex.as_str()).copied().or_else(|| {
                let c = char::from_u32(b as u32).filter(char::is_ascii)?;
                by_text.get(c.to_string().as_str()).copied()
            });
        }
        let mut specials: Vec<Special> = vocab
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = vocab.token_types.get(i).copied()?;
                let special = matches!(ty, TYPE_CONTROL | TYPE_UNKNOWN | TYPE_USER_DEFINED);
                (special && !t.is_empty()).then(|| Special {
                    id: i as u32,
                    text: t.as_bytes().into(),
                    control: ty != TYPE_USER_DEFINED,
                })
            })
            .collect();
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let special_index = specials
            .iter()
            .enumerate()
            .map(|(i, s)| (s.text.clone(), i))
            .collect();
        let mut special_lengths: Vec<usize> = specials.iter().map(|s| s.text.len()).collect();
        special_lengths.dedup();
        let mut starts = vec![0u64; (1 << 16) / 64 + 256 / 64];
        for s in &specials {
            let bit = match s.text[..] {
                [a] => (1 << 16) + usize::from(a),
                [a, b, ..] => usize::from(a) << 8 | usize::from(b),
                [] => continue,
            };
            starts[bit / 64] |= 1 << (bit % 64);
        }
        Ok(SentencePiece {
            scores,
            byte_tokens,
            specials,
            special_index,
            special_lengths,
            starts,
            // llama.cpp's default for SentencePiece vocabularies.
            add_space_prefix: vocab.add_space_prefix.unwrap_or(true),
            unk_id: vocab.unk_id,
        })
    }

    /// The ids of `text`, special-token text parsed as such when `parse_special`, without BOS.
    /// `token_to_id` is the vocabulary: the id of a token spelled exactly so.
    pub(crate) fn encode(
        &self,
        text: &str,
        parse_special: bool,
        token_to_id: impl Fn(&str) -> Option<u32>,
    ) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut prev_special = true;
        let mut piece = String::new();
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(a, b) => {
                    piece.clear();
                    if self.add_space_prefix && prev_special {
                        piece.push_str(SPACE);
                    }
                    // Both ends are at special-token boundaries, which are whole UTF-8
                    // characters (special texts are valid UTF-8 strings).
                    let raw = text.get(a..b).ok_or_else(|| {
                        ModelError::Tokenizer(format!("bytes {a}..{b} are not a text boundary"))
                    })?;
                    for c in raw.chars() {
                        if c == ' ' {
                            piece.push_str(SPACE);
                        } else {
                            piece.push(c);
                        }
                    }
                    self.merge(&piece, &token_to_id, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Cuts the special tokens out of `text` (llama.cpp's `tokenizer_st_partition`): for each
    /// special token, longest first, every leftmost non-overlapping match in the raw text
    /// left so far becomes that token.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let mut fragments = vec![Fragment::Text(0, bytes.len())];
        if bytes.is_empty() {
            return Vec::new();
        }
        // Only the special tokens that occur in the text can cut it; finding those first
        // keeps the work proportional to the text, not to the thousands of specials.
        let mut present: Vec<usize> = Vec::new();
        let has = |bit: usize| self.starts[bit / 64] & (1 << (bit % 64)) != 0;
        for start in 0..bytes.len() {
            let a = usize::from(bytes[start]);
            let pair = bytes
                .get(start + 1)
                .is_some_and(|&b| has(a << 8 | usize::from(b)));
            if !pair && !has((1 << 16) + a) {
                continue;
            }
            for &len in &self.special_lengths {
                if len >= 2 && !pair {
                    continue;
                }
                if let Some(&k) = bytes
                    .get(start..start + len)
                    .and_then(|s| self.special_index.get(s))
                {
                    present.push(k);
                }
            }
        }
        present.sort_unstable();
        present.dedup();
        for k in present {
            let special = &self.specials[k];
            if special.control && !parse_special {
                continue;
            }
            let needle = &special.text[..];
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut a, b) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = find(&bytes[a..b], needle) {
                    if at > 0 {
                        next.push(Fragment::Text(a, a + at));
                    }
                    next.push(Fragment::Token(special.id));
                    a += at + needle.len();
                }
                if a < b {
                    next.push(Fragment::Text(a, b));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize` over one piece of text whose spaces
    /// are already `▁`.
    fn merge(
        &self,
        text: &str,
        token_to_id: &impl Fn(&str) -> Option<u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), ModelError> {
        // Symbols: byte ranges of `text`, linked as a list; a merged-away symbol has len 0.
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if let Some(p) = i.checked_sub(1) {
                symbols[p].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            let (l, r) = (&symbols[left], &symbols[right]);
            let piece = text.get(l.start..r.start + r.len)?;
            let id = token_to_id(piece)?;
            Some(Bigram {
                score: self.scores.get(id as usize).copied()?,
                left,
                right,
                len: piece.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(bigram(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Skip pairs whose symbols have changed since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                queue.extend(bigram(&symbols, p, b.left));
            }
            if let Some(n) = r.next {
                queue.extend(bigram(&symbols, b.left, n));
            }
        }
        let mut i = (!symbols.is_empty()).then_some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = text.get(s.start..s.start + s.len).unwrap_or_default();
            match token_to_id(piece) {
                Some(id) => out.push(id),
                // A merged symbol is always a token, so this is one character the
                // vocabulary lacks: its bytes.
                None => {
                    for &byte in piece.as_bytes() {
                        let id = self.byte_tokens[usize::from(byte)]
                            .or(self.unk_id)
                            .ok_or_else(|| {
                                ModelError::Tokenizer(format!(
                                    "the vocabulary has no token for the byte 0x{byte:02X} \
                                     (no <0x{byte:02X}> token and no unknown token)"
                                ))
                            })?;
                        out.push(id);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Bigram {
    /// The best merge is the greatest: the highest score, then the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// The offset of the first occurrence of `needle` (not empty) in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small SentencePiece vocabulary: 3 controls, 256 byte tokens, then `pieces` with
    /// scores falling in order, then `user` user-defined tokens.
    fn vocab(pieces: &[&str], user: &[&str], add_space_prefix: Option<bool>) -> GgufVocab {
        let mut tokens: Vec<(String, u32)> = vec![
            ("<unk>".into(), TYPE_UNKNOWN),
            ("<s>".into(), TYPE_CONTROL),
            ("</s>".into(), TYPE_CONTROL),
        ];
        for b in 0..=255u8 {
            tokens.push((format!("<0x{b:02X}>"), 6));
        }
        tokens.extend(pieces.iter().map(|p| (p.to_string(), 1)));
        tokens.extend(user.iter().map(|p| (p.to_string(), TYPE_USER_DEFINED)));
        GgufVocab {
            model: "llama".into(),
            scores: (0..tokens.len()).map(|i| -(i as f64)).collect(),
            token_types: tokens.iter().map(|t| t.1).collect(),
            tokens: tokens.into_iter().map(|t| t.0).collect(),
            add_space_prefix,
            unk_id: Some(0),
            ..GgufVocab::default()
        }
    }

    fn encode(v: &GgufVocab, text: &str, parse_special: bool) -> Vec<String> {
        let spm = SentencePiece::new(v).unwrap();
        let id = |t: &str| v.tokens.iter().position(|x| x == t).map(|i| i as u32);
        spm.encode(text, parse_special, id)
            .unwrap()
            .into_iter()
            .map(|i| v.tokens[i as usize].clone())
            .collect()
    }

    #[test]
    fn merges_follow_scores_then_position() {
        // "ab" scores above "bc": "abc" is ab + c. Among equal candidates the leftmost wins.
        let v = vocab(&["a", "b", "c", "ab", "bc", "▁", "▁a"], &[], Some(false));
        assert_eq!(encode(&v, "abc", true), ["ab", "c"]);
        assert_eq!(encode(&v, "bcab", true), ["bc", "ab"]);
        // Spaces are ▁, and no prefix is added when the metadata says so.
        assert_eq!(encode(&v, "a a", true), ["a", "▁a"]);
        let v = vocab(&["a", "b", "c", "bc", "ab", "▁", "▁a"], &[], None);
        assert_eq!(encode(&v, "abc", true), ["▁a", "bc"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let v = vocab(&["a"], &[], Some(false));
        // é is C3 A9.
        assert_eq!(encode(&v, "aé", true), ["a", "<0xC3>", "<0xA9>"]);
    }

    #[test]
    fn specials_are_cut_first_user_defined_ones_always() {
        let v = vocab(
            &["a", "b", "▁", "<", ">", "s"],
            &["\n\n", "\n", "  "],
            Some(false),
        );
        assert_eq!(
            encode(&v, "a\n\n\nb<s>a", true),
            ["a", "\n\n", "\n", "b", "<s>", "a"]
        );
        assert_eq!(
            encode(&v, "a\n\n\nb<s>a", false),
            ["a", "\n\n", "\n", "b", "<", "s", ">", "a"]
        );
        assert_eq!(encode(&v, "a   b", true), ["a", "  ", "▁", "b"]);
        // A one-byte special at the very end, and a two-byte one at the start.
        assert_eq!(encode(&v, "  a\n", true), ["  ", "a", "\n"]);
        assert_eq!(encode(&v, "", true), Vec::<String>::new());
        // With a space prefix, text after a special token gets one too.
        let v = vocab(&["a", "▁a", "▁"], &[], None);
        assert_eq!(encode(&v, "a</s>a", true), ["▁a", "</s>", "▁a"]);
    }
}
