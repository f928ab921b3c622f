//! Jump-forward decoding: where a constraint admits only one continuation (a fixed key,
//! punctuation, the rest of an enum value once it is unambiguous, a structural tag's end),
//! its tokens are appended without sampling, and fed to the model in the next forward pass
//! as one chunk with the token sampled last, instead of one step per token.
//!
//! The forced *bytes* come from the constraint ([`crate::guide::ConstraintGuide::forced_bytes`]:
//! the bytes every accepted continuation starts with, up to where the constraint allows a
//! choice or may end). Turning them into *tokens* is where the care goes: the model must
//! never see a token sequence its tokenizer could not produce. The boundary rule, as SGLang
//! applies it:
//!
//! 1. Re-tokenize the text of the token sampled last followed by the forced text, with the
//!    model's tokenizer (no special tokens added), cut back to whole UTF-8 characters.
//! 2. Use it only when it starts with that same last token and spells exactly that text;
//!    else nothing is jumped this step (the sampled token would have merged with the forced
//!    text, so the tokenizer would never have produced it followed by these tokens).
//! 3. Drop the last token of the re-tokenization: it could merge with the text sampled next,
//!    so the jump backs off to the last token boundary that is safe whatever comes next. A
//!    special token ends the forced tokens there too (it is the model's to choose).
//! 4. Fewer than one token left: no jump.
//!
//! Forced tokens are streamed as text, count as completion tokens, advance the guide, are
//! capped by `max_tokens`, and stop strings apply to them. A request asking for logprobs
//! gets no jump (there are no logits for forced tokens). Sampling draws no random number for
//! a forced token, so a seeded request at temperature > 0 gives another (equally valid)
//! reply with and without jumps; greedy replies are the same wherever the model, decoding
//! step by step, would have picked the tokenizer's tokens.

use formwork_index::Vocabulary;

/// The most forced bytes taken after one sampled token.
pub(crate) const MAX_FORCED_BYTES: usize = 256;

/// The tokens to feed after `last` (the token sampled last) when the constraint forces
/// `forced` next, by the boundary rule of this module; empty when nothing can be jumped.
/// `encode` is the model's tokenizer (no special tokens added; `None` when it fails).
pub(crate) fn forced_tokens(
    last: u32,
    forced: &[u8],
    vocab: &Vocabulary,
    encode: impl FnOnce(&str) -> Option<Vec<u32>>,
) -> Vec<u32> {
    if forced.is_empty() || vocab.is_special(last) {
        return Vec::new();
    }
    let Some(last_bytes) = vocab.token(last) else {
        return Vec::new();
    };
    let mut text = Vec::with_capacity(last_bytes.len() + forced.len());
    text.extend_from_slice(last_bytes);
    text.extend_from_slice(forced);
    let text = match std::str::from_utf8(&text) {
        Ok(t) => t,
        Err(e) => match std::str::from_utf8(&text[..e.valid_up_to()]) {
            Ok(t) => t,
            Err(_) => return Vec::new(),
        },
    };
    if text.len() <= last_bytes.len() {
        return Vec::new();
    }
    let Some(tokens) = encode(text) else {
        return Vec::new();
    };
    let Some((&first, rest)) = tokens.split_first() else {
        return Vec::new();
    };
    if first != last {
        return Vec::new();
    }
    // The tokens must spell the forced text exactly (a normalizer could have changed it).
    let mut spelled = last_bytes.len();
    for &t in rest {
        let Some(bytes) = vocab.token(t) else {
            return Vec::new();
        };
        if text.as_bytes().get(spelled..spelled + bytes.len()) != Some(bytes) {
            return Vec::new();
        }
        spelled += bytes.len();
    }
    if spelled != text.len() {
        return Vec::new();
    }
    let safe = rest.len().saturating_sub(1);
    let rest = &rest[..safe];
    let end = rest
        .iter()
        .position(|&t| vocab.is_special(t))
        .unwrap_or(rest.len());
    rest[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Single bytes, and merges: `ab`, `"a`, `",`, `bc`, `<s>` (special, 260), EOS (261).
    fn vocab() -> Vocabulary {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for t in ["ab", "\"a", "\",", "bc"] {
            tokens.push(t.as_bytes().to_vec());
        }
        tokens.push(b"<s>".to_vec());
        tokens.push(b"</s>".to_vec());
        Vocabulary::new(tokens, vec![261], [260]).unwrap()
    }

    const AB: u32 = 256;
    const QUOTE_A: u32 = 257;
    const QUOTE_COMMA: u32 = 258;
    const BC: u32 = 259;
    const SPECIAL: u32 = 260;

    /// A longest-match tokenizer over [`vocab`], as a BPE with these merges would split
    /// these texts; `<s>` written in the text is the special token.
    fn encode(text: &str) -> Option<Vec<u32>> {
        let v = vocab();
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let (id, len) = (0..v.len() as u32)
                .filter_map(|t| Some((t, v.token(t)?)))
                .filter(|(_, b)| bytes[i..].starts_with(b))
                .map(|(t, b)| (t, b.len()))
                .max_by_key(|&(_, len)| len)?;
            out.push(id);
            i += len;
        }
        Some(out)
    }

    fn jump(last: u32, forced: &[u8]) -> Vec<u32> {
        forced_tokens(last, forced, &vocab(), encode)
    }

    #[test]
    fn the_boundary_rule() {
        // `x` + `"a",z`: x | "a | ", | z. The last token (`z`) is dropped: it could merge with
        // what comes next.
        assert_eq!(
            jump(u32::from(b'x'), b"\"a\",z"),
            vec![QUOTE_A, QUOTE_COMMA]
        );
        // `a` + `bc`: the tokenizer writes `ab` + `c`, never `a` then anything: no jump.
        assert_eq!(jump(u32::from(b'a'), b"bc"), Vec::<u32>::new());
        // `x` + `bc`: x | bc; the one forced token is dropped, so nothing is left.
        assert_eq!(jump(u32::from(b'x'), b"bc"), Vec::<u32>::new());
        // `x` + `bcbc`: x | bc | bc; the first is kept.
        assert_eq!(jump(u32::from(b'x'), b"bcbc"), vec![BC]);
        // `x` + `ab` + `ab` + `y`.
        assert_eq!(jump(u32::from(b'x'), b"ababy"), vec![AB, AB]);
        // Nothing forced, or after a special token or EOS: no jump.
        assert_eq!(jump(u32::from(b'x'), b""), Vec::<u32>::new());
        assert_eq!(jump(SPECIAL, b"abab"), Vec::<u32>::new());
        assert_eq!(jump(261, b"abab"), Vec::<u32>::new());
    }

    #[test]
    fn special_tokens_and_split_characters_end_the_jump() {
        // A special token spelled by the forced text is the model's to choose.
        assert_eq!(jump(u32::from(b'x'), b"ab<s>ab"), vec![AB]);
        // The forced text ends inside a character: cut back to whole characters.
        let e_acute = "é".as_bytes();
        let forced = [b"abab".as_slice(), &e_acute[..1]].concat();
        assert_eq!(jump(u32::from(b'x'), &forced), vec![AB]);
        let forced = [b"abab".as_slice(), e_acute, b"z"].concat();
        assert_eq!(
            jump(u32::from(b'x'), &forced),
            vec![AB, AB, u32::from(e_acute[0]), u32::from(e_acute[1])]
        );
    }

    #[test]
    fn a_tokenizer_that_changes_the_text_gets_no_jump() {
        // Say a normalizer prefixed a space: the tokens no longer spell the text.
        let v = vocab();
        let spaced = |text: &str| encode(&format!(" {text}"));
        assert_eq!(
            forced_tokens(u32::from(b' '), b"abab", &v, spaced),
            Vec::<u32>::new()
        );
        assert_eq!(
            forced_tokens(u32::from(b'x'), b"abab", &v, |_| None),
            Vec::<u32>::new()
        );
    }
}
