//! Structural tags, in SGLang's and vLLM's shape: free text in which each trigger opens a
//! tagged segment whose content must follow its schema.
//!
//! ```json
//! {"type": "structural_tag",
//!  "structures": [{"begin": "<function=get_weather>", "schema": {...}, "end": "</function>"}],
//!  "triggers": ["<function="]}
//! ```
//!
//! Each structure is a segment of an engine [`Segments`] constraint with free text outside:
//! once the reply writes a trigger, it must go on with the rest of the begin string of a
//! structure starting with that trigger, a document valid under that structure's schema, and
//! its end string. `triggers` may be left out: each structure's begin is then its trigger.

use formwork_engine::{Constraint, JsonSchema, Outside, Segment, Segments};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Reads the members of a structural tag (`structures`, `triggers`) of `obj`, the field at
/// `param` (`response_format`, `metadata.structure`, `structured_outputs.structural_tag`).
pub(super) fn structural_tag(
    obj: &Map<String, Value>,
    param: &str,
) -> Result<Constraint, ApiError> {
    let bad = |at: String, what: String| ApiError::invalid_request(what).param(at);
    if obj.contains_key("format") && !obj.contains_key("structures") {
        return Err(bad(
            format!("{param}.format"),
            format!(
                "`{param}.format` (XGrammar's newer structural tag) is not supported; send `structures` and `triggers`"
            ),
        ));
    }
    let structures = match obj.get("structures") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(bad(
                format!("{param}.structures"),
                format!(
                    "`{param}.structures` is empty; a structural tag needs at least one structure"
                ),
            ));
        }
        Some(other) => {
            return Err(bad(
                format!("{param}.structures"),
                format!(
                    "`{param}.structures` must be an array of {{begin, schema, end}} objects, got {other}"
                ),
            ));
        }
        None => {
            return Err(bad(
                format!("{param}.structures"),
                format!("a structural tag needs `{param}.structures`"),
            ));
        }
    };
    let mut segments = Vec::with_capacity(structures.len());
    for (i, s) in structures.iter().enumerate() {
        let at = format!("{param}.structures[{i}]");
        let Some(s) = s.as_object() else {
            return Err(bad(
                at.clone(),
                format!("`{at}` must be an object with begin, schema and end"),
            ));
        };
        let text = |key: &str, required_nonempty: bool| -> Result<String, ApiError> {
            match s.get(key) {
                Some(Value::String(t)) if !(required_nonempty && t.is_empty()) => Ok(t.clone()),
                Some(Value::String(_)) => Err(bad(
                    format!("{at}.{key}"),
                    format!("`{at}.{key}` must not be empty"),
                )),
                None if !required_nonempty => Ok(String::new()),
                Some(other) => Err(bad(
                    format!("{at}.{key}"),
                    format!("`{at}.{key}` must be a string, got {other}"),
                )),
                None => Err(bad(format!("{at}.{key}"), format!("`{at}` needs `{key}`"))),
            }
        };
        let begin = text("begin", true)?;
        let end = text("end", false)?;
        let schema = super::schema(s.get("schema"), &format!("{at}.schema"))?;
        segments.push(Segment {
            begin,
            body: Constraint::JsonSchema(JsonSchema::new(schema)),
            end,
        });
    }
    let triggers = match obj.get("triggers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut triggers = Vec::with_capacity(items.len());
            for (i, t) in items.iter().enumerate() {
                let at = format!("{param}.triggers[{i}]");
                match t {
                    Value::String(t) if !t.is_empty() => {
                        if !segments.iter().any(|s| s.begin.starts_with(t.as_str())) {
                            return Err(bad(
                                at.clone(),
                                format!(
                                    "trigger {t:?} (`{at}`) begins no structure: a trigger must be a prefix of a structure's `begin`"
                                ),
                            ));
                        }
                        triggers.push(t.clone());
                    }
                    other => {
                        return Err(bad(
                            at.clone(),
                            format!("`{at}` must be a non-empty string, got {other}"),
                        ));
                    }
                }
            }
            // A structure no trigger opens could never appear: as SGLang, that is an error.
            if let Some((i, _)) = segments
                .iter()
                .enumerate()
                .find(|(_, s)| !triggers.iter().any(|t| s.begin.starts_with(t.as_str())))
            {
                return Err(bad(
                    format!("{param}.structures[{i}].begin"),
                    format!(
                        "no trigger begins `{param}.structures[{i}].begin`; add a trigger that is a prefix of it"
                    ),
                ));
            }
            triggers
        }
        Some(other) => {
            return Err(bad(
                format!("{param}.triggers"),
                format!("`{param}.triggers` must be an array of strings, got {other}"),
            ));
        }
    };
    Ok(Constraint::Segments(Segments {
        prelude: None,
        segments,
        triggers,
        outside: Outside::Free,
        max_segments: None,
    }))
}

/// A structural tag sent as an object or as a string holding one (vLLM's
/// `structured_outputs.structural_tag`).
pub(super) fn structural_tag_value(
    value: &Value,
    param: &str,
) -> Result<Option<Constraint>, ApiError> {
    let Some(obj) = super::object_member(value, param)? else {
        return Ok(None);
    };
    structural_tag(&obj, param).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(v: Value) -> Result<Constraint, String> {
        structural_tag(v.as_object().unwrap(), "response_format")
            .map_err(|e| format!("{} @ {}", e.message(), e.param_name().unwrap_or_default()))
    }

    #[test]
    fn structures_become_segments_with_their_triggers() {
        let c = read(json!({
            "structures": [
                {"begin": "<function=a>", "schema": {"type": "object"}, "end": "</function>"},
                {"begin": "<function=b>", "schema": {"type": "integer"}, "end": "</function>"}
            ],
            "triggers": ["<function="]
        }))
        .unwrap();
        let Constraint::Segments(s) = c else {
            panic!("{c:?}")
        };
        assert_eq!(s.triggers, vec!["<function=".to_owned()]);
        assert_eq!(s.segments[1].begin, "<function=b>");
        assert_eq!(
            s.segments[1].body,
            Constraint::JsonSchema(JsonSchema::new(json!({"type": "integer"})))
        );
        assert_eq!(s.outside, Outside::Free);
    }

    #[test]
    fn malformed_tags_name_the_field() {
        let cases = [
            (json!({}), "response_format.structures"),
            (json!({"structures": []}), "response_format.structures"),
            (
                json!({"structures": [{"schema": {}}]}),
                "response_format.structures[0].begin",
            ),
            (
                json!({"structures": [{"begin": "<a>", "schema": 3}]}),
                "response_format.structures[0].schema",
            ),
            (
                json!({"structures": [{"begin": "<a>", "schema": {}}], "triggers": ["<b"]}),
                "response_format.triggers[0]",
            ),
            (
                json!({"structures": [{"begin": "<a>", "schema": {}}, {"begin": "[b]", "schema": {}}], "triggers": ["<"]}),
                "response_format.structures[1].begin",
            ),
            (
                json!({"format": {"type": "triggered_tags"}}),
                "response_format.format",
            ),
        ];
        for (body, param) in cases {
            let e = read(body.clone()).unwrap_err();
            assert!(e.ends_with(&format!("@ {param}")), "{body}: {e}");
        }
    }
}
