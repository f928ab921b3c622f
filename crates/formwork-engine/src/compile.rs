//! Constraints compiled once: a cache of token indexes by constraint, bounded in bytes, where
//! a constraint is compiled by one request at a time and at most a few compile at once.
//!
//! A [`Constraint`] is lowered ([`lower`]) to a regex (the JSON-Schema compiler, for schemas
//! and tool calls) and the regex to a lazy [`Index`], or to a grammar and the grammar to a
//! [`GrammarIndex`]. Both steps are keyed by the constraint itself, so a request whose
//! schema or grammar was seen before skips its compiler as well as the index build.
//!
//! - **Bounded by memory.** Every entry is charged what its index really holds
//!   ([`Index::memory_usage`], which grows as requests visit a lazy index's states, or
//!   [`GrammarIndex::memory_usage`]) plus its key and regex. After each insertion the least recently used entries are dropped until
//!   the total is within the budget again; an index bigger than the whole budget is used by
//!   its request and not kept. An evicted index lives on while requests still walk it.
//! - **Single flight.** The first request with a new constraint compiles it; others with the
//!   same constraint wait for that result (or its error) instead of compiling it again.
//! - **Bounded concurrency.** At most `max_compiles` constraints compile at once; the others
//!   wait their turn. Waiters are bounded by the engine's queue, whose slot a request takes
//!   before it gets here.
//! - **Contained.** A compiler that panics fails its request (and its waiters) with an error;
//!   the cache stays usable.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use formwork_grammar::{GrammarConfig, GrammarIndex};
use formwork_index::{Index, IndexConfig, Vocabulary};

use crate::budget::Budget;
use crate::constraint::{Lowered, lower};
use crate::guide::ConstraintIndex;
use crate::{Constraint, EngineError};

/// What a cache lookup gave.
pub(crate) struct Compiled {
    /// The constraint's index.
    pub(crate) index: ConstraintIndex,
    /// Whether it was cached (or compiled by a request this one waited for).
    pub(crate) hit: bool,
    /// How long compiling took, when this request compiled it.
    pub(crate) compile_time: Duration,
    /// What a lenient constraint's compiler dropped (see [`lower`]), kept with the index so
    /// every request for it hears them.
    pub(crate) warnings: Arc<[String]>,
}

/// A compile's result as its waiters see it.
type Outcome = Result<(ConstraintIndex, Arc<[String]>), String>;

/// One constraint being compiled: its waiters block on the cell until the compile sets it.
type Flight = OnceLock<Outcome>;

enum Slot {
    Ready {
        index: ConstraintIndex,
        warnings: Arc<[String]>,
        /// Bytes of the key and the regex, charged with the index.
        extra: usize,
        last_used: u64,
    },
    Building(Arc<Flight>),
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Slot>,
    clock: u64,
}

/// Token indexes by constraint; see the [module docs](self).
pub(crate) struct IndexCache {
    vocabulary: Vocabulary,
    config: IndexConfig,
    grammar: GrammarConfig,
    budget: usize,
    entries: Mutex<Entries>,
    /// One unit per compile running.
    compiles: Budget,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache")
            .field("budget", &self.budget)
            .field("compiles", &self.compiles)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache key of a constraint: its kind and its exact content.
pub(crate) fn constraint_key(constraint: &Constraint) -> String {
    match constraint {
        Constraint::JsonSchema(schema) => format!(
            "schema:{}:{}:{}",
            schema.strict,
            serde_json::json!(schema.whitespace),
            schema.schema
        ),
        Constraint::Regex(regex) => format!("regex:{regex}"),
        Constraint::Choice(choices) => {
            format!("choice:{}", serde_json::json!(choices))
        }
        Constraint::JsonObject => "json_object".to_owned(),
        Constraint::Grammar { syntax, text } => format!("grammar:{syntax}:{text}"),
        Constraint::Segments(segments) => format!("segments:{segments:?}"),
        Constraint::ToolCall {
            functions,
            parallel,
        } => {
            let functions: Vec<serde_json::Value> = functions
                .iter()
                .map(|f| serde_json::json!([f.name, f.parameters, f.strict]))
                .collect();
            format!("tools:{parallel}:{}", serde_json::Value::Array(functions))
        }
    }
}

impl IndexCache {
    /// A cache over `vocabulary` holding at most `budget` bytes of indexes, each built with
    /// `config` (made lazy) or, for grammars, `grammar`, at most `max_compiles` at once.
    pub(crate) fn new(
        vocabulary: Vocabulary,
        config: IndexConfig,
        grammar: GrammarConfig,
        budget: usize,
        max_compiles: usize,
    ) -> IndexCache {
        // The vocabulary's byte trie (~16 ms for 49k tokens) is built now, with the engine,
        // not by the first constrained request.
        vocabulary.trie();
        IndexCache {
            vocabulary,
            config: IndexConfig {
                lazy: true,
                ..config
            },
            grammar,
            budget,
            entries: Mutex::default(),
            compiles: Budget::new(max_compiles.max(1)),
        }
    }

    pub(crate) fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Indexes kept.
    pub(crate) fn len(&self) -> usize {
        lock(&self.entries)
            .map
            .values()
            .filter(|s| matches!(s, Slot::Ready { .. }))
            .count()
    }

    /// Bytes the kept indexes hold now.
    pub(crate) fn memory_usage(&self) -> usize {
        lock(&self.entries)
            .map
            .values()
            .map(|s| match s {
                Slot::Ready { index, extra, .. } => index.memory_usage() + extra,
                Slot::Building(_) => 0,
            })
            .sum()
    }

    /// The index of `constraint`: cached, compiled by another request now (waited for), or
    /// compiled here on the caller's thread once a compile slot is free.
    pub(crate) fn get(&self, constraint: &Constraint) -> Result<Compiled, EngineError> {
        let key = constraint_key(constraint);
        let flight = {
            let mut entries = lock(&self.entries);
            entries.clock += 1;
            let now = entries.clock;
            match entries.map.get_mut(&key) {
                Some(Slot::Ready {
                    index,
                    warnings,
                    last_used,
                    ..
                }) => {
                    *last_used = now;
                    return Ok(Compiled {
                        index: index.clone(),
                        hit: true,
                        compile_time: Duration::ZERO,
                        warnings: warnings.clone(),
                    });
                }
                Some(Slot::Building(flight)) => {
                    let flight = flight.clone();
                    drop(entries);
                    return flight
                        .wait()
                        .clone()
                        .map(|(index, warnings)| Compiled {
                            index,
                            hit: true,
                            compile_time: Duration::ZERO,
                            warnings,
                        })
                        .map_err(EngineError::Constraint);
                }
                None => {
                    let flight = Arc::new(Flight::default());
                    entries
                        .map
                        .insert(key.clone(), Slot::Building(flight.clone()));
                    flight
                }
            }
        };
        // From here on the flight must be finished whatever happens, or its waiters hang.
        let start = Instant::now();
        let result = {
            let _turn = self.compiles.take(1);
            catch_unwind(AssertUnwindSafe(|| self.compile(constraint))).unwrap_or_else(|p| {
                Err(EngineError::Constraint(format!(
                    "the constraint compiler failed: {}",
                    crate::panic_message(p.as_ref())
                )))
            })
        };
        let compile_time = start.elapsed();
        let mut entries = lock(&self.entries);
        match &result {
            Ok((index, lowered, warnings)) => {
                entries.clock += 1;
                let extra = key.len() + lowered;
                let last_used = entries.clock;
                entries.map.insert(
                    key.clone(),
                    Slot::Ready {
                        index: index.clone(),
                        warnings: warnings.clone(),
                        extra,
                        last_used,
                    },
                );
                self.evict(&mut entries);
                drop(entries);
                let _ = flight.set(Ok((index.clone(), warnings.clone())));
            }
            Err(e) => {
                entries.map.remove(&key);
                drop(entries);
                let _ = flight.set(Err(e.to_string()));
            }
        }
        result.map(|(index, _, warnings)| Compiled {
            index,
            hit: false,
            compile_time,
            warnings,
        })
    }

    /// Compiles a constraint to its index: a lazy token index of its regex, or the index of
    /// its grammar. Also says how many bytes the regex holds (charged with the index), and
    /// the warnings of a lenient schema.
    fn compile(
        &self,
        constraint: &Constraint,
    ) -> Result<(ConstraintIndex, usize, Arc<[String]>), EngineError> {
        let mut warnings = Vec::new();
        let (index, bytes) = match lower(constraint, &self.grammar, &mut warnings)? {
            Lowered::Regex(regex) => {
                let index = Index::with_config(&regex, &self.vocabulary, self.config)?;
                (ConstraintIndex::Regular(Arc::new(index)), regex.len())
            }
            Lowered::Grammar(grammar) => {
                let index = GrammarIndex::with_config(grammar, &self.vocabulary, self.config)
                    .map_err(|e| EngineError::Constraint(e.to_string()))?;
                (ConstraintIndex::Grammar(Arc::new(index)), 0)
            }
            Lowered::Segments(segments) => {
                let index = crate::segments::compile(
                    &segments,
                    &self.vocabulary,
                    self.config,
                    &self.grammar,
                    &mut warnings,
                )?;
                (ConstraintIndex::Segments(Arc::new(index)), 0)
            }
        };
        Ok((index, bytes, warnings.into()))
    }

    /// Drops least recently used indexes until the rest fit the budget.
    fn evict(&self, entries: &mut Entries) {
        let mut sizes: Vec<(u64, usize, &String)> = entries
            .map
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready {
                    index,
                    extra,
                    last_used,
                    ..
                } => Some((*last_used, index.memory_usage() + extra, k)),
                Slot::Building(_) => None,
            })
            .collect();
        let mut total: usize = sizes.iter().map(|s| s.1).sum();
        if total <= self.budget {
            return;
        }
        sizes.sort_unstable_by_key(|s| s.0);
        let mut drop_keys = Vec::new();
        for (_, size, key) in sizes {
            if total <= self.budget {
                break;
            }
            total -= size;
            drop_keys.push(key.clone());
        }
        for key in drop_keys {
            entries.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GrammarSyntax, JsonSchema};

    fn vocab() -> Vocabulary {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"<eos>".to_vec());
        Vocabulary::new(tokens, vec![256], [256]).unwrap()
    }

    fn regex(r: &str) -> Constraint {
        Constraint::Regex(r.into())
    }

    #[test]
    fn keys_tell_constraint_kinds_apart() {
        assert_ne!(
            constraint_key(&regex("a")),
            constraint_key(&Constraint::Choice(vec!["a".into()]))
        );
        assert_ne!(
            constraint_key(&Constraint::Choice(vec!["a|b".into()])),
            constraint_key(&Constraint::Choice(vec!["a".into(), "b".into()]))
        );
        let grammar = |syntax, text: &str| Constraint::Grammar {
            syntax,
            text: text.into(),
        };
        assert_ne!(
            constraint_key(&grammar(GrammarSyntax::Gbnf, "a")),
            constraint_key(&grammar(GrammarSyntax::Lark, "a"))
        );
        assert_ne!(
            constraint_key(&grammar(GrammarSyntax::Gbnf, "a")),
            constraint_key(&regex("a"))
        );
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let one = cache.get(&regex("[a-z]{0,200}")).unwrap().index;
        let size = one.memory_usage() + 64;
        drop(one);
        // Room for about three such indexes.
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            3 * size,
            2,
        );
        for i in 0..20 {
            let c = cache.get(&regex(&format!("[a-z]{{0,200}}{i}"))).unwrap();
            assert!(!c.hit);
            assert!(
                cache.memory_usage() <= 3 * size,
                "{} > {}",
                cache.memory_usage(),
                3 * size
            );
        }
        assert!((1..=3).contains(&cache.len()), "{}", cache.len());
        // The most recent one is kept; the first one is long gone.
        assert!(cache.get(&regex("[a-z]{0,200}19")).unwrap().hit);
        assert!(!cache.get(&regex("[a-z]{0,200}0")).unwrap().hit);
    }

    #[test]
    fn an_index_bigger_than_the_budget_is_served_but_not_kept() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1,
            2,
        );
        let c = cache.get(&regex("abc")).unwrap();
        assert!(!c.hit);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.memory_usage(), 0);
    }

    #[test]
    fn a_schema_seen_before_skips_the_schema_compiler() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let schema =
            Constraint::JsonSchema(JsonSchema::new(serde_json::json!({"type": "integer"})));
        assert!(!cache.get(&schema).unwrap().hit);
        let again = cache.get(&schema).unwrap();
        assert!(again.hit);
        assert_eq!(again.compile_time, Duration::ZERO);
    }

    fn gbnf(text: &str) -> Constraint {
        Constraint::Grammar {
            syntax: GrammarSyntax::Gbnf,
            text: text.into(),
        }
    }

    #[test]
    fn grammars_compile_to_cached_grammar_indexes() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let g = gbnf(r#"root ::= "(" root ")" | "x""#);
        let c = cache.get(&g).unwrap();
        assert!(!c.hit);
        assert!(matches!(c.index, ConstraintIndex::Grammar(_)));
        assert!(cache.get(&g).unwrap().hit);
        assert_eq!(cache.len(), 1);
        assert!(cache.memory_usage() > 0);
        // Lark's spelling of the same language is another constraint.
        let lark = Constraint::Grammar {
            syntax: GrammarSyntax::Lark,
            text: r#"start: "(" start ")" | "x""#.into(),
        };
        assert!(!cache.get(&lark).unwrap().hit);
    }

    #[test]
    fn schemas_json_objects_and_tool_calls_go_through_grammars_regexes_do_not() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        // Recursion no regex can hold: a tree of any depth.
        let tree = serde_json::json!({
            "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "$ref": "#/$defs/node"
        });
        let tool = crate::ToolFunction {
            name: "f".into(),
            parameters: serde_json::json!({"type": "object"}),
            strict: true,
        };
        for c in [
            Constraint::JsonSchema(JsonSchema::new(tree)),
            Constraint::JsonObject,
            Constraint::ToolCall {
                functions: vec![tool],
                parallel: true,
            },
        ] {
            let index = cache.get(&c).unwrap().index;
            assert!(matches!(index, ConstraintIndex::Grammar(_)), "{c:?}");
        }
        for c in [regex("a+"), Constraint::Choice(vec!["a".into()])] {
            let index = cache.get(&c).unwrap().index;
            assert!(matches!(index, ConstraintIndex::Regular(_)), "{c:?}");
        }
        // A schema the compiler refuses is still a schema error (keyword and pointer).
        let bad =
            Constraint::JsonSchema(JsonSchema::new(serde_json::json!({"minProperties": "x"})));
        assert!(matches!(cache.get(&bad), Err(EngineError::Schema(_))));
    }

    #[test]
    fn bad_grammars_are_constraint_errors_naming_the_cause() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        for (grammar, cause) in [
            (gbnf(r#"root ::= "a"#), "gbnf grammar, line 1, column"),
            (
                gbnf(r#"root ::= "a" b"#),
                "rule `b` is used but never defined",
            ),
            (gbnf(r#"root ::= "a" root"#), "language is empty"),
            (
                Constraint::Grammar {
                    syntax: GrammarSyntax::Lark,
                    text: "start: \"a\"\n  | )".into(),
                },
                "lark grammar, line 2",
            ),
        ] {
            match cache.get(&grammar) {
                Err(EngineError::Constraint(m)) => assert!(m.contains(cause), "{m}"),
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{grammar:?} compiled"),
            }
        }
        assert_eq!(cache.len(), 0);
        let small = GrammarConfig {
            max_productions: 2,
            ..GrammarConfig::default()
        };
        let cache = IndexCache::new(vocab(), IndexConfig::default(), small, 1 << 30, 2);
        match cache.get(&gbnf(r#"root ::= "(" root ")" | "[" root "]" | "x""#)) {
            Err(EngineError::Constraint(m)) => assert!(m.contains("limit"), "{m}"),
            other => panic!("{:?}", other.map(|c| c.hit)),
        }
    }

    #[test]
    fn concurrent_requests_for_one_constraint_compile_it_once() {
        let cache = Arc::new(IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            4,
        ));
        let c = regex("[a-z]{0,3000}x");
        let results: Vec<Compiled> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| cache.get(&c).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| !r.hit).count(), 1);
        let index = |c: &Compiled| match &c.index {
            ConstraintIndex::Regular(index) => index.clone(),
            _ => unreachable!("a regex has a token index"),
        };
        for r in &results[1..] {
            assert!(Arc::ptr_eq(&index(r), &index(&results[0])));
        }
    }

    fn tool(name: &str, parameters: serde_json::Value, strict: bool) -> crate::ToolFunction {
        crate::ToolFunction {
            name: name.into(),
            parameters,
            strict,
        }
    }

    #[test]
    fn a_strict_schema_with_an_unenforced_keyword_is_refused_naming_it() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"tags": {"type": "array", "uniqueItems": true}}
        });
        match cache.get(&Constraint::JsonSchema(JsonSchema::new(schema.clone()))) {
            Err(EngineError::Unenforced {
                keyword,
                pointer,
                function: None,
            }) => assert_eq!((&*keyword, &*pointer), ("uniqueItems", "/properties/tags")),
            other => panic!("{:?}", other.map(|c| c.warnings)),
        }
        // Lenient: compiled, the keyword reported, on a hit as well.
        let lenient = Constraint::JsonSchema(JsonSchema::new(schema).strict(false));
        for hit in [false, true] {
            let c = cache.get(&lenient).unwrap();
            assert_eq!(c.hit, hit);
            assert_eq!(c.warnings.len(), 1);
            assert!(c.warnings[0].contains("`uniqueItems` at /properties/tags"));
        }
    }

    #[test]
    fn a_tool_call_refuses_only_for_strict_functions_naming_the_function() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let unique = serde_json::json!({
            "type": "object",
            "properties": {"ids": {"type": "array", "uniqueItems": true}}
        });
        let plain = serde_json::json!({"type": "object"});
        for parallel in [false, true] {
            let functions = vec![
                tool("a", plain.clone(), true),
                tool("b", unique.clone(), true),
            ];
            match cache.get(&Constraint::ToolCall {
                functions,
                parallel,
            }) {
                Err(EngineError::Unenforced {
                    keyword,
                    pointer,
                    function,
                }) => {
                    assert_eq!(keyword, "uniqueItems");
                    assert_eq!(pointer, "/properties/ids");
                    assert_eq!(function.as_deref(), Some("b"));
                }
                other => panic!("{:?}", other.map(|c| c.warnings)),
            }
            let functions = vec![
                tool("a", plain.clone(), true),
                tool("b", unique.clone(), false),
            ];
            let c = cache
                .get(&Constraint::ToolCall {
                    functions,
                    parallel,
                })
                .unwrap();
            assert_eq!(
                &*c.warnings,
                ["function `b`: `uniqueItems` at /properties/ids is not enforced"]
            );
        }
        // Parameters with `$ref`s are moved under `$defs`: still found.
        let with_ref = serde_json::json!({
            "$defs": {"ids": {"type": "array", "uniqueItems": true}},
            "type": "object",
            "properties": {"ids": {"$ref": "#/$defs/ids"}}
        });
        match cache.get(&Constraint::ToolCall {
            functions: vec![tool("a", plain, true), tool("r", with_ref, true)],
            parallel: false,
        }) {
            Err(EngineError::Unenforced { function, .. }) => {
                assert_eq!(function.as_deref(), Some("r"));
            }
            other => panic!("{:?}", other.map(|c| c.warnings)),
        }
    }

    #[test]
    fn a_whitespace_pattern_is_part_of_the_key_and_checked() {
        let schema = JsonSchema::new(serde_json::json!({"type": "array"}));
        let spaced = schema.clone().whitespace(Some("[ ]?".into()));
        assert_ne!(
            constraint_key(&Constraint::JsonSchema(schema.clone())),
            constraint_key(&Constraint::JsonSchema(spaced))
        );
        assert_ne!(
            constraint_key(&Constraint::JsonSchema(schema.clone())),
            constraint_key(&Constraint::JsonSchema(schema.strict(false)))
        );
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let bad = JsonSchema::new(serde_json::json!({})).whitespace(Some("[".into()));
        assert!(matches!(
            cache.get(&Constraint::JsonSchema(bad)),
            Err(EngineError::Schema(
                formwork_schema::SchemaError::Whitespace { .. }
            ))
        ));
    }

    #[test]
    fn errors_reach_every_waiter_and_are_not_cached() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            2,
        );
        let bad = regex("a(");
        assert!(cache.get(&bad).is_err());
        assert!(cache.get(&bad).is_err());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn compiles_beyond_the_limit_wait_their_turn() {
        let cache = IndexCache::new(
            vocab(),
            IndexConfig::default(),
            GrammarConfig::default(),
            1 << 30,
            1,
        );
        let first = cache.compiles.take(1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let r = cache.get(&regex("abc")).map(|c| c.hit);
                tx.send(r.is_ok()).unwrap();
            });
            // The compile cannot start while the only slot is taken.
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(first);
            assert!(rx.recv_timeout(Duration::from_secs(30)).unwrap());
        });
    }
}
