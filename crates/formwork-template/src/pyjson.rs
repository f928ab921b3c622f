//! Python-compatible serialisation of template values.
//!
//! Hugging Face renders chat templates with Python's jinja2, so two pieces of
//! output come from Python rather than from the template engine:
//!
//! - the `tojson` filter, which transformers replaces with
//!   `json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)`;
//! - printing a non-string value (`{{ flag }}`, `{{ message.content }}` when it
//!   is a list), which shows Python's `str()`/`repr()` of it: `True`, `None`,
//!   `{'a': 1}`, `['x', 'y']`.
//!
//! This module reproduces both on minijinja [`Value`]s.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error as MjError, ErrorKind, Value};

/// Options of Python's `json.dumps` that chat templates use.
#[derive(Debug, Clone)]
pub(crate) struct JsonOptions {
    /// Escape every non-ASCII character as `\uXXXX`.
    pub ensure_ascii: bool,
    /// Indentation string; `None` renders on one line.
    pub indent: Option<String>,
    /// Separator between items.
    pub item_sep: String,
    /// Separator between a key and its value.
    pub key_sep: String,
    /// Sort object keys.
    pub sort_keys: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            ensure_ascii: false,
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
        }
    }
}

/// The `tojson` filter as transformers defines it:
/// `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
pub(crate) fn tojson_filter(
    value: Value,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, MjError> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(MjError::new(
            ErrorKind::TooManyArguments,
            "tojson() takes at most 4 arguments",
        ));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (slot, arg) in given.iter_mut().zip(args.iter()) {
        *slot = Some(arg.clone());
    }
    for (i, name) in names.iter().enumerate() {
        if let Some(v) = kwargs.get::<Option<Value>>(name)? {
            if given[i].is_some() {
                return Err(MjError::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson() got multiple values for argument '{name}'"),
                ));
            }
            given[i] = Some(v);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = given;
    let mut opts = JsonOptions::default();
    if let Some(v) = ensure_ascii {
        opts.ensure_ascii = v.is_true();
    }
    match indent {
        None => {}
        Some(v) if v.is_none() || v.is_undefined() => {}
        Some(v) => {
            if let Some(s) = v.as_str() {
                opts.indent = Some(s.to_owned());
            } else if let Some(n) = v.as_i64() {
                opts.indent = Some(" ".repeat(n.max(0) as usize));
            } else {
                return Err(MjError::new(
                    ErrorKind::InvalidOperation,
                    "tojson(): indent must be an integer or a string",
                ));
            }
            // Python's default separators once an indent is given.
            opts.item_sep = ",".into();
        }
    }
    if let Some(sep) = separators.filter(|v| !v.is_none() && !v.is_undefined()) {
        let parts: Vec<Value> = sep.try_iter()?.collect();
        match (
            parts.first().and_then(|v| v.as_str()),
            parts.get(1).and_then(|v| v.as_str()),
        ) {
            (Some(item), Some(key)) if parts.len() == 2 => {
                opts.item_sep = item.to_owned();
                opts.key_sep = key.to_owned();
            }
            _ => {
                return Err(MjError::new(
                    ErrorKind::InvalidOperation,
                    "tojson(): separators must be a pair of strings",
                ));
            }
        }
    }
    if let Some(v) = sort_keys {
        opts.sort_keys = v.is_true();
    }
    let mut out = String::new();
    dump(&mut out, &value, &opts, 0)?;
    Ok(Value::from(out))
}

/// Serialises `value` like Python's `json.dumps` with the given options.
pub(crate) fn dump(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
) -> Result<(), MjError> {
    if depth > 256 {
        return Err(MjError::new(
            ErrorKind::InvalidOperation,
            "tojson(): value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::Undefined => Err(MjError::new(
            ErrorKind::BadSerialization,
            "Object of type Undefined is not JSON serializable",
        )),
        ValueKind::None => {
            out.push_str("null");
            Ok(())
        }
        ValueKind::Bool => {
            out.push_str(if value.is_true() { "true" } else { "false" });
            Ok(())
        }
        ValueKind::Number => {
            write_number(out, value, true);
            Ok(())
        }
        ValueKind::String => {
            write_json_string(out, value.as_str().unwrap_or_default(), opts.ensure_ascii);
            Ok(())
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(out, opts, depth + 1);
                write_json_string(out, &json_key(key)?, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                let item = value.get_item(key)?;
                dump(out, &item, opts, depth + 1)?;
            }
            newline_indent(out, opts, depth);
            out.push('}');
            Ok(())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(out, opts, depth + 1);
                dump(out, item, opts, depth + 1)?;
            }
            newline_indent(out, opts, depth);
            out.push(']');
            Ok(())
        }
        _ => Err(MjError::new(
            ErrorKind::BadSerialization,
            format!("Object of type {} is not JSON serializable", value.kind()),
        )),
    }
}

fn newline_indent(out: &mut String, opts: &JsonOptions, depth: usize) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}

/// Converts a map key the way `json.dumps` does (str, int, float, bool, None).
fn json_key(key: &Value) -> Result<String, MjError> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key, true);
            Ok(s)
        }
        other => Err(MjError::new(
            ErrorKind::BadSerialization,
            format!("keys must be str, int, float, bool or None, not {other}"),
        )),
    }
}

/// Writes a JSON string literal as Python's json module does.
pub(crate) fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a number: integers as they are, floats as Python's `repr(float)`.
/// `json` selects JSON's spelling of non-finite floats (`NaN`, `Infinity`).
fn write_number(out: &mut String, value: &Value, json: bool) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    match f64::try_from(value.clone()) {
        Ok(f) => write_float(out, f, json),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation
/// below 1e-4 and from 1e16 on.
pub(crate) fn write_float(out: &mut String, f: f64, json: bool) {
    if f.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if f.is_infinite() {
        let s = match (json, f > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        };
        out.push_str(s);
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e16" or "-2e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within digits
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..(-point) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            for _ in 0..(point as usize - digits.len()) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// Python's `str(value)`: what jinja2 prints for `{{ value }}`.
pub(crate) fn py_str(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        _ => py_repr(out, value, 0),
    }
}

/// Python's `repr(value)` for the types templates see.
pub(crate) fn py_repr(out: &mut String, value: &Value, depth: usize) {
    if depth > 256 {
        out.push_str("...");
        return;
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => write_number(out, value, false),
        ValueKind::String => py_repr_str(out, value.as_str().unwrap_or_default()),
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &key, depth + 1);
                    out.push_str(": ");
                    let item = value.get_item(&key).unwrap_or_default();
                    py_repr(out, &item, depth + 1);
                }
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let (open, close) = if value.is_tuple() {
                ('(', ')')
            } else {
                ('[', ']')
            };
            out.push(open);
            let mut n = 0;
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &item, depth + 1);
                    n += 1;
                }
            }
            if open == '(' && n == 1 {
                out.push(',');
            }
            out.push(close);
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text holds a single quote
/// and no double quote.
fn py_repr_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, f, true);
        s
    }

    #[test]
    fn floats_match_python_repr() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(-2.25), "-2.25");
        assert_eq!(float(1e16), "1e+16");
        assert_eq!(float(1.5e16), "1.5e+16");
        assert_eq!(float(123456789012345.6), "123456789012345.6");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float(100.0), "100.0");
    }

    #[test]
    fn strings_match_python_json() {
        let mut s = String::new();
        write_json_string(&mut s, "née \"x\"\n\u{1}✓😀", false);
        assert_eq!(s, "\"née \\\"x\\\"\\n\\u0001✓😀\"");
        let mut s = String::new();
        write_json_string(&mut s, "née😀\u{7f}", true);
        assert_eq!(s, "\"n\\u00e9e\\ud83d\\ude00\\u007f\"");
    }

    #[test]
    fn repr_matches_python() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"a": [1, "it's", true, null, 2.5]}),
        ));
        let mut s = String::new();
        py_str(&mut s, &v);
        assert_eq!(s, "{'a': [1, \"it's\", True, None, 2.5]}");
    }
}
