//! Context-free grammars whose terminals are small regexes (lexemes), and token masks for
//! them.
//!
//! Every structure Formwork constrains to that is not one small regex goes through this
//! crate: JSON Schema (recursion included), llama.cpp's GBNF and a Lark subset. They all read
//! into one input form, a [`RuleSet`] of named rules whose bodies are [`Expr`]s (regular
//! expressions with references to rules), which [`RuleSet::compile`] lowers to a
//! [`Grammar`]: productions over nonterminals and lexemes, where each lexeme is a regular
//! part small enough for one lazily built DFA.
//!
//! A [`GrammarIndex`] is a grammar over a vocabulary, shared by requests; a [`GrammarGuide`]
//! is one request's cursor over it, with the shape of `formwork_index::Guide`: the mask of
//! allowed tokens, `advance`, `rollback`, `accepts_eos`. Tokens that stay inside one lexeme
//! are found by that lexeme's `formwork_index::Index` (cached per DFA state, shared by every
//! grammar holding the lexeme); only tokens that end a lexeme and go on ask the Earley
//! parser, which follows them byte by byte from the lexeme's accept points.

mod complete;
mod error;
mod expr;
mod gbnf;
mod grammar;
mod guide;
mod json;
mod lark;
mod parser;
mod sample;

pub use complete::MAX_COMPLETION_BYTES;
pub use error::GrammarError;
pub use expr::{Expr, RuleId, RuleSet};
pub use gbnf::{MAX_NESTING, MAX_REPETITION, gbnf};
pub use grammar::{Grammar, GrammarConfig, Lexeme, Production, Symbol, hir_size, hir_size_within};
pub use guide::{DEFAULT_MAX_ITEMS, GrammarGuide, GrammarIndex};
pub use json::{JsonGrammar, json_rules, json_schema};
pub use lark::{COMMON, MAX_LARK_REPETITION, lark};
