//! Constraints to regexes, regexes to token indexes, and the LRU cache of those indexes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formwork_index::{Index, IndexConfig, Vocabulary};
use serde_json::{Value, json};

use crate::{Constraint, EngineError};

/// The regex a constraint compiles to.
pub fn constraint_regex(constraint: &Constraint) -> Result<String, EngineError> {
    let compiler = formwork_schema::Compiler::new();
    match constraint {
        Constraint::Regex(r) => Ok(r.clone()),
        Constraint::Choice(choices) => {
            if choices.is_empty() {
                return Err(EngineError::Constraint("the choice list is empty".into()));
            }
            let alternatives: Vec<String> =
                choices.iter().map(|c| regex_syntax::escape(c)).collect();
            Ok(alternatives.join("|"))
        }
        Constraint::JsonObject => Ok(compiler.compile(&json!({"type": "object"}))?),
        Constraint::JsonSchema(schema) => Ok(compiler.compile(schema)?),
        Constraint::ToolCall {
            functions,
            parallel,
        } => Ok(compiler.compile(&tool_call_schema(functions, *parallel)?)?),
    }
}

/// The JSON Schema of a tool call: `{"name": NAME, "arguments": ARGS}` for one of the
/// functions, or an array of one or more of those when `parallel`.
pub fn tool_call_schema(
    functions: &[crate::ToolFunction],
    parallel: bool,
) -> Result<Value, EngineError> {
    if functions.is_empty() {
        return Err(EngineError::Constraint(
            "a tool call needs at least one function".into(),
        ));
    }
    let calls: Vec<Value> = functions
        .iter()
        .map(|f| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    let call = if calls.len() == 1 {
        calls.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({"anyOf": calls})
    };
    Ok(if parallel {
        json!({"type": "array", "items": call, "minItems": 1})
    } else {
        call
    })
}

/// Compiled indexes by regex, least recently used evicted first.
#[derive(Debug)]
pub(crate) struct IndexCache {
    vocabulary: Vocabulary,
    config: IndexConfig,
    capacity: usize,
    entries: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<String, Arc<Index>>,
    order: VecDeque<String>,
}

/// A cache lookup's outcome.
pub(crate) struct Compiled {
    pub(crate) index: Arc<Index>,
    pub(crate) hit: bool,
    pub(crate) compile_time: Duration,
}

impl IndexCache {
    pub(crate) fn new(vocabulary: Vocabulary, config: IndexConfig, capacity: usize) -> IndexCache {
        IndexCache {
            vocabulary,
            config,
            capacity: capacity.max(1),
            entries: Mutex::new(Lru::default()),
        }
    }

    pub(crate) fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// The lazy index of `regex`, from the cache or compiled now (on the caller's thread).
    pub(crate) fn get(&self, regex: &str) -> Result<Compiled, EngineError> {
        if let Some(index) = self.lookup(regex) {
            return Ok(Compiled {
                index,
                hit: true,
                compile_time: Duration::ZERO,
            });
        }
        let start = Instant::now();
        let index = Arc::new(Index::with_config(
            regex,
            &self.vocabulary,
            IndexConfig {
                lazy: true,
                ..self.config
            },
        )?);
        let compile_time = start.elapsed();
        let mut lru = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !lru.map.contains_key(regex) {
            lru.map.insert(regex.to_string(), index.clone());
            lru.order.push_back(regex.to_string());
            while lru.order.len() > self.capacity {
                if let Some(old) = lru.order.pop_front() {
                    lru.map.remove(&old);
                }
            }
        }
        Ok(Compiled {
            index,
            hit: false,
            compile_time,
        })
    }

    fn lookup(&self, regex: &str) -> Option<Arc<Index>> {
        let mut lru = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let index = lru.map.get(regex)?.clone();
        if let Some(pos) = lru.order.iter().position(|r| r == regex) {
            let key = lru.order.remove(pos)?;
            lru.order.push_back(key);
        }
        Some(index)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|l| l.map.len()).unwrap_or(0)
    }
}
