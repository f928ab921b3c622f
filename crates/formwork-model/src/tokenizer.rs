//! Text to token ids and back, from a `tokenizer.json` or rebuilt from GGUF metadata.
//!
//! A GGUF file carries its vocabulary but no `tokenizer.json`. We rebuild the Hugging Face
//! tokenizer it came from:
//! - `gpt2` vocabularies (byte-level BPE: SmolLM, Llama 3, Qwen) get the tokens, the merges
//!   and the pre-tokenizer split the model was trained with, named by `tokenizer.ggml.pre`
//!   (llama.cpp's list of pre-tokenizers);
//! - `llama` vocabularies (SentencePiece BPE: Llama 2, Mistral, Gemma) are encoded by
//!   llama.cpp's own algorithm (the `spm` module: special tokens cut out first, merges by
//!   token score, byte fallback, `▁` for a space); the Hugging Face tokenizer built beside it
//!   holds their vocabulary and decoder (`▁` to a space, `<0xNN>` to its byte).
//!
//! Control and user-defined tokens become special tokens, so `<|im_start|>` in a rendered
//! chat prompt is one token, as the model saw it in training.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::ModelError;
use crate::spm::SentencePiece;

/// GPT-2's pre-tokenizer split (also the regex of `ByteLevel` with `use_regex`).
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split (llama.cpp `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
pub(crate) const TYPE_CONTROL: u32 = 3;
pub(crate) const TYPE_USER_DEFINED: u32 = 4;
const TYPE_BYTE: u32 = 6;

/// The vocabulary part of a GGUF file's metadata.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (`smollm`, `llama-bpe`, `qwen2`...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (empty when absent).
    pub token_types: Vec<u32>,
    /// `tokenizer.ggml.merges` (`"a b"` strings; byte-level BPE only).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece only).
    pub scores: Vec<f64>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
}

/// A tokenizer: encoding with the model's own rules, plus its BOS convention.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    add_bos_token: bool,
    /// Whether `inner` adds BOS itself (a `tokenizer.json` post-processor).
    post_processor_adds_bos: bool,
    /// llama.cpp's SentencePiece encoder, for GGUF `llama` vocabularies: it encodes, `inner`
    /// holds the vocabulary and decodes.
    spm: Option<Arc<SentencePiece>>,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. `add_bos_token` comes from `tokenizer_config.json` when the
    /// tokenizer's post-processor does not add it already.
    pub fn from_file(
        path: &Path,
        bos_token_id: Option<u32>,
        add_bos_token: bool,
    ) -> Result<Tokenizer, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let post_processor_adds_bos = match (bos_token_id, inner.get_post_processor()) {
            (Some(bos), Some(_)) => inner
                .encode("a", true)
                .map(|e| e.get_ids().first() == Some(&bos))
                .unwrap_or(false),
            _ => false,
        };
        Ok(Tokenizer {
            inner,
            bos_token_id,
            add_bos_token: add_bos_token || post_processor_adds_bos,
            post_processor_adds_bos,
            spm: None,
        })
    }

    /// Rebuilds the tokenizer from GGUF metadata.
    pub fn from_gguf_vocab(
        vocab: &GgufVocab,
        bos_token_id: Option<u32>,
        add_bos_token: bool,
    ) -> Result<Tokenizer, ModelError> {
        let (mut inner, spm) = match vocab.model.as_str() {
            "gpt2" => (byte_level_bpe(vocab)?, None),
            "llama" => (
                sentencepiece_vocab(vocab)?,
                Some(Arc::new(SentencePiece::new(vocab)?)),
            ),
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "unsupported GGUF tokenizer model `{other}` (supported: gpt2, llama)"
                )));
            }
        };
        let specials: Vec<AddedToken> = vocab
            .tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(
                    vocab.token_types.get(*i),
                    Some(&TYPE_CONTROL) | Some(&TYPE_USER_DEFINED)
                )
            })
            .map(|(i, t)| {
                let control = vocab.token_types.get(i) == Some(&TYPE_CONTROL);
                AddedToken::from(t.clone(), control)
            })
            .collect();
        inner.add_special_tokens(specials).map_err(tok_err)?;
        Ok(Tokenizer {
            inner,
            bos_token_id,
            add_bos_token,
            post_processor_adds_bos: false,
            spm,
        })
    }

    /// The tokenizer of the GGUF model at `path`, read from its metadata alone (the weights
    /// are not read): what [`crate::load`] gives with the model.
    pub fn from_gguf(path: &Path) -> Result<Tokenizer, ModelError> {
        crate::gguf::load_tokenizer(path)
    }

    /// Encodes text. Special tokens written in the text (`<|im_start|>`) are parsed as such.
    /// With `add_bos`, BOS is prepended when the model expects it (`add_bos_token`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, ModelError> {
        if let Some(spm) = &self.spm {
            let mut out = Vec::new();
            if add_bos && self.adds_bos() {
                out.extend(self.bos_token_id);
            }
            out.extend(spm.encode(text, true, |t| self.inner.token_to_id(t))?);
            return Ok(out);
        }
        let encoding = self
            .inner
            .encode_fast(text, add_bos && self.post_processor_adds_bos)
            .map_err(tok_err)?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_bos
            && self.add_bos_token
            && !self.post_processor_adds_bos
            && let Some(bos) = self.bos_token_id
        {
            out.push(bos);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Decodes ids to text, optionally leaving out special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// The id of a token spelled exactly `token` (special tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The number of tokens, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether encoding with `add_bos` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos_token && self.bos_token_id.is_some()
    }

    /// The underlying Hugging Face tokenizer: the vocabulary, the special tokens and the
    /// decoder. For GGUF SentencePiece (`llama`) vocabularies it has no merges, since
    /// [`Tokenizer::encode`] runs llama.cpp's algorithm instead: encode with that.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn vocab_map(tokens: &[String]) -> HashMap<String, u32> {
    let mut map = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // The first id wins, as in llama.cpp, when a vocabulary repeats a token.
        map.entry(t.clone()).or_insert(i as u32);
    }
    map
}

fn byte_level_bpe(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer, ModelError> {
    let merges = vocab
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| ModelError::Tokenizer(format!("merge `{m}` is not `a b`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = vocab.pre.as_deref().unwrap_or("default");
    let (split, digits, ignore_merges) = match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (LLAMA3_SPLIT, false, true),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => (QWEN2_SPLIT, false, false),
        // SmolLM, StarCoder and their kin: single digits, then GPT-2's split.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            (GPT2_SPLIT, true, false)
        }
        _ => (GPT2_SPLIT, false, false),
    };
    let model = BPE::builder()
        .vocab_and_merges(
            vocab_map(&vocab.tokens).into_iter().collect::<Vocab>(),
            merges,
        )
        .ignore_merges(ignore_merges)
        .build()
        .map_err(tok_err)?;
    let mut tok = tokenizers::Tokenizer::new(model);
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    if digits {
        steps.push(tokenizers::pre_tokenizers::digits::Digits::new(true).into());
    }
    steps.push(
        Split::new(
            SplitPattern::Regex(split.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?
        .into(),
    );
    steps.push(ByteLevel::new(false, false, false).into());
    tok.with_pre_tokenizer(Some(PreSequence::new(steps)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// The vocabulary and decoder of a SentencePiece vocabulary as a Hugging Face tokenizer
/// (no merges: [`SentencePiece`] encodes).
fn sentencepiece_vocab(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer, ModelError> {
    let map = vocab_map(&vocab.tokens);
    let has_byte_tokens = vocab.token_types.contains(&TYPE_BYTE);
    let mut builder = BPE::builder()
        .vocab_and_merges(map.into_iter().collect::<Vocab>(), Vec::new())
        .byte_fallback(has_byte_tokens)
        .fuse_unk(true);
    if let Some(unk) = vocab.unk_id.and_then(|i| vocab.tokens.get(i as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    let model = builder.build().map_err(tok_err)?;
    let mut tok = tokenizers::Tokenizer::new(model);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    let prefix = vocab.add_space_prefix.unwrap_or(true);
    if prefix {
        normalizers.push(Prepend::new("▁".to_string()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(tok_err)?.into());
    tok.with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(tok_err)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(tok_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}
