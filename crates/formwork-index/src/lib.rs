//! Token-level automata for constrained decoding.
//!
//! This crate turns a regex (from `formwork-schema`, or written by hand) into automata that a
//! decoder can follow. The first layer, [`ByteDfa`], is the byte-level deterministic automaton
//! every later layer is built on: a dense table over byte classes, restricted to the states
//! from which a full match is still reachable, with [`ByteDfa::sample`] to draw random matches
//! from it (what `formwork schema sample` prints).
//!
//! ```
//! use formwork_index::ByteDfa;
//!
//! let dfa = ByteDfa::new(r#"\{"n":(?:0|[1-9][0-9]{0,2})\}"#)?;
//! assert!(dfa.matches(br#"{"n":42}"#));
//! assert!(!dfa.matches(br#"{"n":042}"#));
//! let doc = dfa.sample(7, 256);
//! assert!(dfa.matches(&doc));
//! # Ok::<(), formwork_index::IndexError>(())
//! ```

mod automaton;
mod error;

pub use automaton::{ByteDfa, DfaConfig, StateId};
pub use error::IndexError;
