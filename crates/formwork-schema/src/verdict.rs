//! A small three-valued JSON Schema validator, used where the compiler must decide whether a
//! *given* value is valid: the values of an `enum` beside other keywords, property names under
//! `propertyNames`.
//!
//! It answers [`Verdict::Valid`] or [`Verdict::Invalid`] only when sure, and
//! [`Verdict::Unknown`] for anything it does not evaluate exactly (an untranslatable pattern, a
//! keyword it does not know). The compiler keeps a value only on `Valid`, so `Unknown` can only
//! make the regex accept less, never more.

use serde_json::Value;

use crate::compile::{ANNOTATIONS, Ctx};
use crate::format::format_regex;
use crate::merge::json_eq;
use crate::numeric::Decimal;
use crate::pattern::{full_match_language, matches, pattern_language};

/// The outcome of checking one value against one schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid,
    Invalid,
    Unknown,
}

use Verdict::{Invalid, Unknown, Valid};

impl Verdict {
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Valid, Valid) => Valid,
            _ => Unknown,
        }
    }

    fn or(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Valid, _) | (_, Valid) => Valid,
            (Invalid, Invalid) => Invalid,
            _ => Unknown,
        }
    }

    fn not(self) -> Verdict {
        match self {
            Valid => Invalid,
            Invalid => Valid,
            Unknown => Unknown,
        }
    }

    fn of(b: bool) -> Verdict {
        if b { Valid } else { Invalid }
    }
}

/// Keywords that never affect validity on their own, beyond the annotations: the ones read
/// together with a sibling keyword (`then`/`else` with `if`, ...), and OpenAPI extras.
const READ_WITH_SIBLING: &[&str] = &[
    "then",
    "else",
    "additionalItems",
    "minContains",
    "maxContains",
    "discriminator",
    "xml",
    "externalDocs",
    "nullable",
];

fn number(v: &Value) -> Option<Decimal> {
    v.as_number().and_then(Decimal::from_json)
}

fn pattern_matches(pattern: &str, s: &str) -> Verdict {
    match pattern_language(pattern) {
        Ok(h) => Verdict::of(matches(&h, s)),
        Err(_) => Unknown,
    }
}

/// Whether `value` is a multiple of `step`, exactly, when both fit 38 digits once scaled.
fn multiple_of(value: &Decimal, step: &Decimal) -> Verdict {
    let scale = value.frac.len().max(step.frac.len());
    let scaled = |d: &Decimal| -> Option<u128> {
        let digits = format!("{}{}{}", d.int, d.frac, "0".repeat(scale - d.frac.len()));
        digits.parse::<u128>().ok()
    };
    match (scaled(value), scaled(step)) {
        (Some(_), Some(0)) => Unknown,
        (Some(v), Some(s)) => Verdict::of(v % s == 0),
        _ => Unknown,
    }
}

impl Ctx<'_> {
    /// Checks `value` against `schema`.
    pub(crate) fn verdict(&self, schema: &Value, value: &Value, depth: usize) -> Verdict {
        if depth > 48 {
            return Unknown;
        }
        let m = match schema {
            Value::Bool(b) => return Verdict::of(*b),
            Value::Object(m) => m,
            _ => return Unknown,
        };
        let sub = |s: &Value, v: &Value| self.verdict(s, v, depth + 1);
        let mut out = Valid;
        for (key, kv) in m {
            let r = match key.as_str() {
                k if ANNOTATIONS.contains(&k) || READ_WITH_SIBLING.contains(&k) => Valid,
                "type" => {
                    let types: Vec<&str> = match kv {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        _ => return Unknown,
                    };
                    Verdict::of(types.iter().any(|t| match (*t, value) {
                        ("null", Value::Null) | ("boolean", Value::Bool(_)) => true,
                        ("number", Value::Number(_)) | ("string", Value::String(_)) => true,
                        ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
                        ("integer", Value::Number(n)) => {
                            Decimal::from_json(n).is_some_and(|d| d.frac.is_empty())
                        }
                        _ => false,
                    }))
                }
                "enum" => match kv.as_array() {
                    Some(e) => Verdict::of(e.iter().any(|x| json_eq(x, value))),
                    None => Unknown,
                },
                "const" => Verdict::of(json_eq(kv, value)),
                "not" => sub(kv, value).not(),
                "allOf" => match kv.as_array() {
                    Some(a) => a.iter().fold(Valid, |acc, s| acc.and(sub(s, value))),
                    None => Unknown,
                },
                "anyOf" => match kv.as_array() {
                    Some(a) => a.iter().fold(Invalid, |acc, s| acc.or(sub(s, value))),
                    None => Unknown,
                },
                "oneOf" => match kv.as_array() {
                    Some(a) => {
                        let vs: Vec<Verdict> = a.iter().map(|s| sub(s, value)).collect();
                        let valid = vs.iter().filter(|v| **v == Valid).count();
                        let unknown = vs.iter().filter(|v| **v == Unknown).count();
                        if valid >= 2 {
                            Invalid
                        } else if unknown > 0 {
                            Unknown
                        } else {
                            Verdict::of(valid == 1)
                        }
                    }
                    None => Unknown,
                },
                "if" => match sub(kv, value) {
                    Valid => m.get("then").map_or(Valid, |t| sub(t, value)),
                    Invalid => m.get("else").map_or(Valid, |e| sub(e, value)),
                    Unknown => {
                        let t = m.get("then").map_or(Valid, |t| sub(t, value));
                        let e = m.get("else").map_or(Valid, |e| sub(e, value));
                        if t == Valid && e == Valid {
                            Valid
                        } else {
                            Unknown
                        }
                    }
                },
                "$ref" | "$recursiveRef" => match kv.as_str().map(|r| self.resolve_ref(r)) {
                    Some(Some(target)) => sub(target, value),
                    _ => Unknown,
                },
                _ => self.keyword_verdict(key, kv, m, value, depth),
            };
            out = out.and(r);
            if out == Invalid {
                return Invalid;
            }
        }
        out
    }

    fn keyword_verdict(
        &self,
        key: &str,
        kv: &Value,
        m: &serde_json::Map<String, Value>,
        value: &Value,
        depth: usize,
    ) -> Verdict {
        let sub = |s: &Value, v: &Value| self.verdict(s, v, depth + 1);
        let count = |k: &Value| k.as_u64().map(|n| n as usize);
        match (key, value) {
            // strings
            ("minLength", Value::String(s)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(s.chars().count() >= n))
            }
            ("maxLength", Value::String(s)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(s.chars().count() <= n))
            }
            ("pattern", Value::String(s)) => kv.as_str().map_or(Unknown, |p| pattern_matches(p, s)),
            ("format", Value::String(s)) => match kv.as_str().and_then(format_regex) {
                Some(re) => match full_match_language(&re) {
                    Ok(h) if matches(&h, s) => Valid,
                    _ => Unknown,
                },
                None => Valid,
            },
            // numbers
            ("minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum", Value::Number(_)) => {
                let (Some(x), Some(b)) = (number(value), number(kv)) else {
                    // draft-04 boolean exclusivity is applied with its bound
                    return if kv.is_boolean() { Valid } else { Unknown };
                };
                let excl_flag = |flag: &str| m.get(flag) == Some(&Value::Bool(true));
                Verdict::of(match key {
                    "minimum" if excl_flag("exclusiveMinimum") => x > b,
                    "maximum" if excl_flag("exclusiveMaximum") => x < b,
                    "minimum" => x >= b,
                    "maximum" => x <= b,
                    "exclusiveMinimum" => x > b,
                    _ => x < b,
                })
            }
            ("multipleOf", Value::Number(_)) => match (number(value), number(kv)) {
                (Some(x), Some(k)) => multiple_of(&x, &k),
                _ => Unknown,
            },
            // arrays
            ("minItems", Value::Array(a)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(a.len() >= n))
            }
            ("maxItems", Value::Array(a)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(a.len() <= n))
            }
            ("uniqueItems", Value::Array(a)) => {
                if kv != &Value::Bool(true) {
                    return Valid;
                }
                let dup = a
                    .iter()
                    .enumerate()
                    .any(|(i, x)| a[i + 1..].iter().any(|y| json_eq(x, y)));
                Verdict::of(!dup)
            }
            ("prefixItems", Value::Array(a)) => match kv.as_array() {
                Some(ps) => ps
                    .iter()
                    .zip(a)
                    .fold(Valid, |acc, (s, v)| acc.and(sub(s, v))),
                None => Unknown,
            },
            ("items", Value::Array(a)) => match kv {
                Value::Array(ps) => {
                    let head = ps
                        .iter()
                        .zip(a)
                        .fold(Valid, |acc, (s, v)| acc.and(sub(s, v)));
                    let rest = match m.get("additionalItems") {
                        Some(extra) => a
                            .iter()
                            .skip(ps.len())
                            .fold(Valid, |acc, v| acc.and(sub(extra, v))),
                        None => Valid,
                    };
                    head.and(rest)
                }
                s => {
                    let skip = m
                        .get("prefixItems")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    a.iter().skip(skip).fold(Valid, |acc, v| acc.and(sub(s, v)))
                }
            },
            ("contains", Value::Array(a)) => {
                let hits: Vec<Verdict> = a.iter().map(|v| sub(kv, v)).collect();
                let valid = hits.iter().filter(|v| **v == Valid).count();
                let unknown = hits.iter().filter(|v| **v == Unknown).count();
                let min = m.get("minContains").and_then(Value::as_u64).unwrap_or(1) as usize;
                let max = m
                    .get("maxContains")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize);
                let low_ok = valid >= min;
                let high_ok = max.is_none_or(|mx| valid + unknown <= mx);
                if low_ok && high_ok {
                    Valid
                } else if valid + unknown < min || max.is_some_and(|mx| valid > mx) {
                    Invalid
                } else {
                    Unknown
                }
            }
            // objects
            ("required", Value::Object(o)) => match kv.as_array() {
                Some(r) => Verdict::of(
                    r.iter()
                        .all(|k| k.as_str().is_some_and(|k| o.contains_key(k))),
                ),
                None => Unknown,
            },
            ("properties", Value::Object(o)) => match kv.as_object() {
                Some(ps) => ps.iter().fold(Valid, |acc, (k, s)| match o.get(k) {
                    Some(v) => acc.and(sub(s, v)),
                    None => acc,
                }),
                None => Unknown,
            },
            ("patternProperties", Value::Object(o)) => match kv.as_object() {
                Some(ps) => ps.iter().fold(Valid, |acc, (p, s)| {
                    o.iter()
                        .fold(acc, |acc, (k, v)| match pattern_matches(p, k) {
                            Valid => acc.and(sub(s, v)),
                            Invalid => acc,
                            Unknown => acc.and(Unknown),
                        })
                }),
                None => Unknown,
            },
            ("additionalProperties", Value::Object(o)) => {
                let props = m.get("properties").and_then(Value::as_object);
                let patterns = m.get("patternProperties").and_then(Value::as_object);
                o.iter().fold(Valid, |acc, (k, v)| {
                    if props.is_some_and(|p| p.contains_key(k)) {
                        return acc;
                    }
                    let by_pattern = patterns.map_or(Invalid, |ps| {
                        ps.keys().fold(Invalid, |a, p| a.or(pattern_matches(p, k)))
                    });
                    match by_pattern {
                        Valid => acc,
                        Invalid => acc.and(sub(kv, v)),
                        Unknown => acc.and(Unknown),
                    }
                })
            }
            ("propertyNames", Value::Object(o)) => o
                .keys()
                .fold(Valid, |acc, k| acc.and(sub(kv, &Value::String(k.clone())))),
            ("minProperties", Value::Object(o)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(o.len() >= n))
            }
            ("maxProperties", Value::Object(o)) => {
                count(kv).map_or(Unknown, |n| Verdict::of(o.len() <= n))
            }
            ("dependentRequired" | "dependentSchemas" | "dependencies", Value::Object(o)) => {
                match kv.as_object() {
                    Some(deps) => deps.iter().fold(Valid, |acc, (k, d)| {
                        if !o.contains_key(k) {
                            return acc;
                        }
                        match d {
                            Value::Array(req) => acc.and(Verdict::of(
                                req.iter()
                                    .all(|r| r.as_str().is_some_and(|r| o.contains_key(r))),
                            )),
                            s => acc.and(sub(s, value)),
                        }
                    }),
                    None => Unknown,
                }
            }
            // keywords of another instance type do not apply
            (
                "minLength"
                | "maxLength"
                | "pattern"
                | "format"
                | "minimum"
                | "maximum"
                | "exclusiveMinimum"
                | "exclusiveMaximum"
                | "multipleOf"
                | "minItems"
                | "maxItems"
                | "uniqueItems"
                | "prefixItems"
                | "items"
                | "contains"
                | "required"
                | "properties"
                | "patternProperties"
                | "additionalProperties"
                | "propertyNames"
                | "minProperties"
                | "maxProperties"
                | "dependentRequired"
                | "dependentSchemas"
                | "dependencies",
                _,
            ) => Valid,
            _ => Unknown,
        }
    }
}
