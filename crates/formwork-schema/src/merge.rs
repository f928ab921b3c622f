//! Conjunction of schemas: what `allOf`, `$ref` beside other keywords, `then`/`else` and
//! `dependentSchemas` compile to.
//!
//! [`merge`] takes two schema objects without composition keywords and returns one object that
//! accepts the documents both accept (or fewer, never more). Keywords that combine exactly
//! (`type`, `required`, `enum`, bounds, nested `properties` as a nested `allOf`) are combined;
//! a combination with no regular equivalent (two different `pattern`s) is an error, and an
//! empty intersection (`type: string` with `type: number`) is `Ok(None)`.

use serde_json::{Map, Value, json};

use crate::error::SchemaError;
use crate::numeric::Decimal;

fn all_of(a: &Value, b: &Value) -> Value {
    if a == b {
        return a.clone();
    }
    json!({ "allOf": [a, b] })
}

fn type_set(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn intersect_types(a: &Value, b: &Value) -> Vec<String> {
    let (ta, tb) = (type_set(a), type_set(b));
    let mut out = Vec::new();
    for t in &ta {
        for u in &tb {
            let common = match (t.as_str(), u.as_str()) {
                (x, y) if x == y => Some(x),
                ("integer", "number") | ("number", "integer") => Some("integer"),
                _ => None,
            };
            if let Some(c) = common
                && !out.iter().any(|o| o == c)
            {
                out.push(c.to_string());
            }
        }
    }
    out
}

fn number_of(v: &Value) -> Option<Decimal> {
    v.as_number().and_then(Decimal::from_json)
}

fn tighter(a: &Value, b: &Value, larger: bool) -> Value {
    match (number_of(a), number_of(b)) {
        (Some(x), Some(y)) => {
            if (x >= y) == larger {
                a.clone()
            } else {
                b.clone()
            }
        }
        (Some(_), None) => a.clone(),
        _ => b.clone(),
    }
}

fn unsupported(keyword: &str, pointer: &str, reason: &str) -> SchemaError {
    SchemaError::Unsupported {
        keyword: keyword.into(),
        pointer: pointer.into(),
        reason: reason.into(),
    }
}

/// Rewrites draft-04 boolean `exclusiveMinimum`/`exclusiveMaximum` and `const` into the forms
/// [`merge`] and the compiler work with (numeric exclusive bounds, `enum`).
pub(crate) fn normalize(map: &mut Map<String, Value>) {
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(b)) = map.get(flag) {
            let b = *b;
            map.remove(flag);
            if b && let Some(v) = map.remove(bound) {
                map.insert(flag.into(), v);
            }
        }
    }
    if let Some(c) = map.remove("const") {
        let values = match map.remove("enum") {
            Some(Value::Array(e)) => e.into_iter().filter(|v| json_eq(v, &c)).collect(),
            _ => vec![c],
        };
        map.insert("enum".into(), Value::Array(values));
    }
}

/// JSON Schema equality: numbers compare by value (`1` equals `1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            Decimal::from_json(x).is_some() && Decimal::from_json(x) == Decimal::from_json(y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The conjunction of two normalized schema objects without composition keywords.
pub(crate) fn merge(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    pointer: &str,
) -> Result<Option<Map<String, Value>>, SchemaError> {
    let mut out = a.clone();
    // Properties one side declares and the other does not fall under the other's
    // additionalProperties.
    let restrict = |props: &Value, other: &Map<String, Value>| -> Value {
        let (Some(p), Some(add)) = (props.as_object(), other.get("additionalProperties")) else {
            return props.clone();
        };
        let other_props = other.get("properties").and_then(Value::as_object);
        let mut p = p.clone();
        for (k, v) in p.iter_mut() {
            if other_props.is_none_or(|o| !o.contains_key(k)) {
                *v = all_of(v, add);
            }
        }
        Value::Object(p)
    };
    if let Some(p) = a.get("properties") {
        out.insert("properties".into(), restrict(p, b));
    }
    for (key, bv) in b {
        let bv = if key == "properties" {
            &restrict(bv, a)
        } else {
            bv
        };
        let Some(av) = out.get(key).cloned() else {
            out.insert(key.clone(), bv.clone());
            continue;
        };
        let merged = match key.as_str() {
            "type" => {
                let t = intersect_types(&av, bv);
                if t.is_empty() {
                    return Ok(None);
                }
                Value::Array(t.into_iter().map(Value::String).collect())
            }
            "properties" | "patternProperties" | "dependentSchemas" => {
                let (Some(x), Some(y)) = (av.as_object(), bv.as_object()) else {
                    return Err(SchemaError::Invalid {
                        pointer: pointer.into(),
                        reason: format!("`{key}` must be an object"),
                    });
                };
                let mut m = x.clone();
                for (k, v) in y {
                    let nv = match m.get(k) {
                        Some(old) => all_of(old, v),
                        None => v.clone(),
                    };
                    m.insert(k.clone(), nv);
                }
                Value::Object(m)
            }
            "required" => {
                let mut r: Vec<Value> = av.as_array().cloned().unwrap_or_default();
                for v in bv.as_array().into_iter().flatten() {
                    if !r.contains(v) {
                        r.push(v.clone());
                    }
                }
                Value::Array(r)
            }
            "enum" => {
                let x = av.as_array().cloned().unwrap_or_default();
                let y = bv.as_array().cloned().unwrap_or_default();
                let common: Vec<Value> = x
                    .into_iter()
                    .filter(|v| y.iter().any(|w| json_eq(v, w)))
                    .collect();
                if common.is_empty() {
                    return Ok(None);
                }
                Value::Array(common)
            }
            "additionalProperties"
            | "items"
            | "additionalItems"
            | "contains"
            | "propertyNames"
            | "unevaluatedProperties"
            | "unevaluatedItems" => {
                if key == "items" && (av.is_array() != bv.is_array()) {
                    // A draft-07 tuple and a schema for every item: the schema also governs
                    // the items after the tuple.
                    let single = if av.is_array() {
                        bv.clone()
                    } else {
                        av.clone()
                    };
                    let extra = match out.get("additionalItems") {
                        Some(old) => all_of(old, &single),
                        None => single,
                    };
                    out.insert("additionalItems".into(), extra);
                    merge_tuple(&av, bv)
                } else if key == "items" && av.is_array() {
                    merge_tuple(&av, bv)
                } else {
                    all_of(&av, bv)
                }
            }
            "prefixItems" => merge_tuple(&av, bv),
            // not A and not B = not (A or B)
            "not" => json!({ "anyOf": [av, bv] }),
            "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties"
            | "minContains" => tighter(&av, bv, true),
            "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties"
            | "maxContains" => tighter(&av, bv, false),
            "uniqueItems" => Value::Bool(av == Value::Bool(true) || bv == &Value::Bool(true)),
            "nullable" => Value::Bool(av == Value::Bool(true) && bv == &Value::Bool(true)),
            "multipleOf" => {
                let (x, y) = (av.as_f64().unwrap_or(0.0), bv.as_f64().unwrap_or(0.0));
                if av == *bv || x == y || (x > 0.0 && y > 0.0 && (x / y).fract() == 0.0) {
                    av
                } else if x > 0.0 && y > 0.0 && ((y / x).fract() == 0.0) {
                    bv.clone()
                } else if let (Some(p), Some(q)) = (av.as_u64(), bv.as_u64()) {
                    // Both integers: multiples of both are the multiples of their lcm.
                    let gcd = |mut a: u64, mut b: u64| {
                        while b != 0 {
                            (a, b) = (b, a % b);
                        }
                        a
                    };
                    match (p / gcd(p, q).max(1)).checked_mul(q) {
                        Some(l) => Value::from(l),
                        None => {
                            return Err(unsupported("multipleOf", pointer, "multipleOf too large"));
                        }
                    }
                } else {
                    return Err(unsupported(
                        "multipleOf",
                        pointer,
                        "two multipleOf values where neither divides the other",
                    ));
                }
            }
            "pattern" | "format" => {
                if av != *bv {
                    return Err(unsupported(
                        key,
                        pointer,
                        &format!("two different `{key}` values must both hold"),
                    ));
                }
                av
            }
            "dependentRequired" | "dependencies" => {
                let mut m = av.as_object().cloned().unwrap_or_default();
                for (k, v) in bv.as_object().into_iter().flatten() {
                    let mut list = m
                        .get(k)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for d in v.as_array().into_iter().flatten() {
                        if !list.contains(d) {
                            list.push(d.clone());
                        }
                    }
                    m.insert(k.clone(), Value::Array(list));
                }
                Value::Object(m)
            }
            _ => av,
        };
        out.insert(key.clone(), merged);
    }
    Ok(Some(out))
}

fn merge_tuple(a: &Value, b: &Value) -> Value {
    let (Some(x), Some(y)) = (a.as_array(), b.as_array()) else {
        // One side is a single schema for every item: apply it to each tuple position.
        let (tuple, single) = if a.is_array() { (a, b) } else { (b, a) };
        let items: Vec<Value> = tuple
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| all_of(t, single))
            .collect();
        return Value::Array(items);
    };
    let n = x.len().max(y.len());
    let items = (0..n)
        .map(|i| match (x.get(i), y.get(i)) {
            (Some(p), Some(q)) => all_of(p, q),
            (Some(p), None) | (None, Some(p)) => p.clone(),
            (None, None) => Value::Bool(true),
        })
        .collect();
    Value::Array(items)
}
