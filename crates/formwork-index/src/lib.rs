//! Token-level automata for constrained decoding.
//!
//! This crate turns a regex (from `formwork-schema`, or written by hand) into automata that a
//! decoder can follow, in three layers:
//!
//! - [`ByteDfa`]: the byte-level deterministic automaton: a dense table over byte classes,
//!   restricted to the states from which a full match is still reachable, with
//!   [`ByteDfa::sample`] to draw random matches from it (what `formwork schema sample` prints).
//! - [`Vocabulary`]: what bytes each token of a model adds to the text, which tokens are EOS
//!   and which are special, and the byte [`Trie`] of its tokens. Read from a GGUF file's
//!   metadata (through [`gguf`], the `formwork-gguf` reader), from a Hugging Face `tokenizer.json`
//!   (`Vocabulary::from_tokenizer_file`, cargo feature `tokenizers`, on by default), or given
//!   explicitly.
//! - [`Index`]: for each DFA state reachable by tokens, the allowed tokens and where each
//!   leads, found by walking the trie against the DFA; built eagerly (over the whole
//!   [`ByteDfa`]) or lazily (the DFA determinized on demand, and each state's tokens computed
//!   on first use). A [`Guide`] is the cheap per-request cursor over a shared index: allowed
//!   tokens, a bitset mask, `advance`, `rollback`.
//!
//! ```
//! use std::sync::Arc;
//! use formwork_index::{ByteDfa, Guide, Index, Vocabulary};
//!
//! let dfa = ByteDfa::new(r#"\{"n":(?:0|[1-9][0-9]{0,2})\}"#)?;
//! assert!(dfa.matches(br#"{"n":42}"#));
//! assert!(!dfa.matches(br#"{"n":042}"#));
//! let doc = dfa.sample(7, 256);
//! assert!(dfa.matches(&doc));
//!
//! // A toy vocabulary: every byte, a few longer tokens, and EOS (id 260).
//! let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
//! tokens.extend([b"{\"".to_vec(), b"n\":".to_vec(), b"42".to_vec(), b"}".to_vec()]);
//! tokens.push(b"</s>".to_vec());
//! let vocab = Vocabulary::new(tokens, vec![260], [])?;
//! let index = Arc::new(Index::new(r#"\{"n":(?:0|[1-9][0-9]{0,2})\}"#, &vocab)?);
//! let mut guide = Guide::new(index);
//! for t in vocab.tokenize_greedy(br#"{"n":42}"#).unwrap() {
//!     guide.advance(t)?;
//! }
//! assert!(guide.accepts_eos());
//! assert_eq!(guide.allowed_tokens(), &[260]);
//! guide.advance(260)?;
//! assert!(guide.is_finished());
//! # Ok::<(), formwork_index::IndexError>(())
//! ```

mod automaton;
mod complete;
mod content;
mod error;
mod guide;
mod index;
mod lazy;
#[cfg(feature = "tokenizers")]
mod tokenizer;
mod vocabulary;

pub use automaton::{ByteDfa, DfaConfig, NextBytes, StateId};
pub use complete::COMPLETION_SEARCH_STATES;
pub use error::IndexError;
/// The GGUF reader vocabularies are read with ([`Vocabulary::from_gguf_metadata`] takes its
/// [`gguf::Metadata`]).
pub use formwork_gguf as gguf;
pub use formwork_gguf::GgufError;
pub use guide::Guide;
pub use index::{Index, IndexConfig, Stepper};
pub use vocabulary::{TokenEncoding, Trie, Vocabulary};
