//! Vocabularies from Hugging Face `tokenizer.json` files (cargo feature `tokenizers`, on by
//! default): [`Vocabulary::from_tokenizer`] and friends.
//!
//! A `tokenizer.json` stores token *strings*; what bytes a token adds to the text follows
//! from the tokenizer's pipeline (byte-level pre-tokenizer or decoder, `Metaspace`, byte
//! fallback), which this module reads from the serialized pre-tokenizer, decoder and model.

use std::collections::HashMap;
use std::path::Path;

use formwork_gguf::END_TOKEN_NAMES;
use serde_json::Value;
use tokenizers::Tokenizer;
use tokenizers::models::ModelWrapper;

use crate::vocabulary::{TokenEncoding, decode, parse_byte_token};
use crate::{IndexError, Vocabulary};

/// How the token strings of a tokenizer encode bytes, read from its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pipeline {
    encoding: TokenEncoding,
    /// The character SentencePiece uses for a space (`▁` unless configured otherwise).
    space: char,
    /// Whether `<0xNN>` tokens are one raw byte.
    byte_fallback: bool,
}

impl Vocabulary {
    /// Reads the vocabulary of the Hugging Face `tokenizer.json` at `path` (see
    /// [`Vocabulary::from_tokenizer`]). Errors name the file ([`IndexError::Tokenizer`]).
    pub fn from_tokenizer_file(path: impl AsRef<Path>) -> Result<Self, IndexError> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_file(path).map_err(|e| IndexError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_tokenizer(&tokenizer).map_err(|e| match e {
            IndexError::Vocabulary(reason) => IndexError::Tokenizer {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// The vocabulary of a Hugging Face tokenizer, each token decoded to the exact bytes it
    /// adds to the text:
    ///
    /// - **byte-level BPE** (GPT-2, Llama 3, Qwen, SmolLM2: a `ByteLevel` pre-tokenizer or
    ///   decoder): every character of a token string stands for one byte (`Ġ` is a space, `Ċ`
    ///   a newline), the inverse of GPT-2's `bytes_to_unicode`;
    /// - **SentencePiece style** (Llama 2, Mistral, Gemma: a `Metaspace` pre-tokenizer or
    ///   decoder, or a `Replace` decoder from `▁` to a space): `▁` is a space, and with byte
    ///   fallback (`"byte_fallback": true` on the model, or a `ByteFallback` decoder) a token
    ///   `<0x0A>` is that one raw byte;
    /// - otherwise the token strings are the bytes.
    ///
    /// Tokenizers whose tokens depend on their place in a word (`WordPiece`, BPE with a
    /// subword prefix or end-of-word suffix, `CTC`) are refused with
    /// [`IndexError::Vocabulary`].
    ///
    /// Added tokens are taken literally; those marked `special`, the model's unknown token
    /// and tokens named in [`END_TOKEN_NAMES`] (the end-of-text and end-of-turn names
    /// `formwork-gguf` lists) are special (never allowed inside constrained text). Every
    /// token named in [`END_TOKEN_NAMES`] is an EOS token; when there is none this is an
    /// error: give the ids with [`Vocabulary::from_tokenizer_with_eos`].
    ///
    /// ```no_run
    /// use formwork_index::Vocabulary;
    ///
    /// let tokenizer = tokenizers::Tokenizer::from_file("tokenizer.json").unwrap();
    /// let vocab = Vocabulary::from_tokenizer(&tokenizer)?;
    /// println!("{} tokens, EOS {:?}", vocab.len(), vocab.eos());
    /// # Ok::<(), formwork_index::IndexError>(())
    /// ```
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, IndexError> {
        let (tokens, special, names) = decode_tokenizer(tokenizer)?;
        let eos: Vec<u32> = END_TOKEN_NAMES
            .iter()
            .filter_map(|name| names.get(*name).copied())
            .collect();
        if eos.is_empty() {
            return Err(IndexError::Vocabulary(format!(
                "no end-of-sequence token found (looked for {}); give the ids with \
                 Vocabulary::from_tokenizer_with_eos",
                END_TOKEN_NAMES.join(", ")
            )));
        }
        Self::new(tokens, eos, special)
    }

    /// The vocabulary of a Hugging Face tokenizer with explicit end-of-sequence ids (for
    /// tokenizers whose EOS has an unusual name, or to choose among several). Ids out of
    /// range are an error.
    pub fn from_tokenizer_with_eos(
        tokenizer: &Tokenizer,
        eos: Vec<u32>,
    ) -> Result<Self, IndexError> {
        let (tokens, special, _) = decode_tokenizer(tokenizer)?;
        Self::new(tokens, eos, special)
    }
}

/// A token table from a tokenizer: the bytes of every id, the special ids, and the ids of
/// the token strings that are candidate EOS names.
type Decoded = (Vec<Vec<u8>>, Vec<u32>, HashMap<String, u32>);

fn decode_tokenizer(tokenizer: &Tokenizer) -> Result<Decoded, IndexError> {
    let pipeline = pipeline(tokenizer)?;
    let model_vocab = tokenizer.get_vocab(false);
    let added = tokenizer.get_added_tokens_decoder();
    let n = model_vocab
        .values()
        .chain(added.keys())
        .map(|&id| id as usize + 1)
        .max()
        .unwrap_or(0);
    if n >= u32::MAX as usize {
        return Err(IndexError::Vocabulary(format!("{n} tokens is too many")));
    }
    let mut strings: Vec<Option<&str>> = vec![None; n];
    for (s, &id) in &model_vocab {
        strings[id as usize] = Some(s);
    }
    let unk = match tokenizer.get_model() {
        ModelWrapper::BPE(bpe) => bpe.unk_token.clone(),
        _ => None,
    };
    let mut tokens = Vec::with_capacity(n);
    let mut special = Vec::new();
    let mut names = HashMap::new();
    for (id, s) in strings.iter().enumerate() {
        let id = id as u32;
        if let Some(t) = added.get(&id) {
            if t.special {
                special.push(id);
            }
            if END_TOKEN_NAMES.contains(&t.content.as_str()) {
                names.insert(t.content.clone(), id);
            }
            tokens.push(t.content.as_bytes().to_vec());
            continue;
        }
        let Some(s) = s else {
            // A hole in the id range: an empty token, never allowed.
            tokens.push(Vec::new());
            continue;
        };
        if unk.as_deref() == Some(*s) {
            special.push(id);
        }
        if END_TOKEN_NAMES.contains(s) {
            // Model tokens named like EOS are control tokens even when not marked added.
            special.push(id);
            names.entry(s.to_string()).or_insert(id);
        }
        tokens.push(decode_token(s, pipeline));
    }
    Ok((tokens, special, names))
}

/// The bytes a model token string adds to the text.
fn decode_token(s: &str, p: Pipeline) -> Vec<u8> {
    if p.byte_fallback
        && let Some(b) = parse_byte_token(s.as_bytes())
    {
        return vec![b];
    }
    match p.encoding {
        TokenEncoding::SentencePiece if p.space != '\u{2581}' => {
            s.replace(p.space, " ").into_bytes()
        }
        e => decode(s.as_bytes(), e),
    }
}

/// Reads the byte encoding of the token strings from the tokenizer's pre-tokenizer, decoder
/// and model.
fn pipeline(tokenizer: &Tokenizer) -> Result<Pipeline, IndexError> {
    let to_value = |v: Result<Value, serde_json::Error>| {
        v.map_err(|e| IndexError::Vocabulary(format!("reading the tokenizer pipeline: {e}")))
    };
    let decoder = match tokenizer.get_decoder() {
        Some(d) => to_value(serde_json::to_value(d))?,
        None => Value::Null,
    };
    let pre = match tokenizer.get_pre_tokenizer() {
        Some(p) => to_value(serde_json::to_value(p))?,
        None => Value::Null,
    };
    let mut parts = Vec::new();
    collect_parts(&decoder, &mut parts);
    collect_parts(&pre, &mut parts);
    let has = |ty: &str| {
        parts
            .iter()
            .any(|p| p.get("type").and_then(Value::as_str) == Some(ty))
    };

    let mut byte_fallback = has("ByteFallback");
    match tokenizer.get_model() {
        ModelWrapper::BPE(bpe) => {
            byte_fallback |= bpe.byte_fallback;
            if bpe.continuing_subword_prefix.is_some() || bpe.end_of_word_suffix.is_some() {
                return Err(IndexError::Vocabulary(
                    "BPE models with a subword prefix or end-of-word suffix are not supported \
                     (their tokens depend on their place in a word)"
                        .into(),
                ));
            }
        }
        ModelWrapper::Unigram(u) => byte_fallback |= u.byte_fallback(),
        ModelWrapper::WordPiece(_) => {
            return Err(IndexError::Vocabulary(
                "WordPiece tokenizers are not supported (their tokens depend on their place \
                 in a word)"
                    .into(),
            ));
        }
        ModelWrapper::WordLevel(_) => {}
    }
    for ty in ["WordPiece", "BPEDecoder", "CTC"] {
        if has(ty) {
            return Err(IndexError::Vocabulary(format!(
                "tokenizers with a {ty} decoder are not supported"
            )));
        }
    }

    if has("ByteLevel") {
        return Ok(Pipeline {
            encoding: TokenEncoding::ByteLevel,
            space: ' ',
            byte_fallback: false,
        });
    }
    let metaspace = parts.iter().find_map(|p| {
        match p.get("type").and_then(Value::as_str) {
            Some("Metaspace") => p
                .get("replacement")
                .and_then(Value::as_str)
                .and_then(|r| r.chars().next()),
            // A decoder replacing `X` by a space, as Llama 2 and Mistral write it.
            Some("Replace") if p.get("content").and_then(Value::as_str) == Some(" ") => p
                .get("pattern")
                .and_then(|pat| pat.get("String"))
                .and_then(Value::as_str)
                .and_then(|r| {
                    let mut chars = r.chars();
                    chars.next().filter(|_| chars.next().is_none())
                }),
            _ => None,
        }
    });
    Ok(match metaspace {
        Some(space) => Pipeline {
            encoding: TokenEncoding::SentencePiece,
            space,
            byte_fallback,
        },
        None => Pipeline {
            encoding: TokenEncoding::Raw,
            space: ' ',
            byte_fallback,
        },
    })
}

/// Every component of a serialized pre-tokenizer or decoder, `Sequence`s flattened.
fn collect_parts<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            out.push(v);
            for key in ["decoders", "pretokenizers"] {
                if let Some(Value::Array(items)) = map.get(key) {
                    for item in items {
                        collect_parts(item, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_parts(item, out);
            }
        }
        _ => {}
    }
}
