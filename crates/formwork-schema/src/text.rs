//! Regexes for JSON strings: the characters of a string body, exact literals for `const` and
//! `enum`, and strings that avoid a set of names (object keys other than the declared ones).

use std::collections::BTreeMap;

use serde_json::Value;

/// One character of a JSON string body in any valid spelling: a raw character or an escape.
/// `\u` escapes of surrogates are excluded, so every match decodes to exactly one Unicode
/// scalar value (what `minLength`/`maxLength` count).
pub(crate) const STRING_CHAR: &str = r#"(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u(?:[0-9A-CEFa-cef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2}))"#;

/// Any JSON string.
pub(crate) const ANY_STRING: &str = r#""(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u(?:[0-9A-CEFa-cef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2}))*""#;

/// The canonical escapes (as `serde_json` writes them) of the characters JSON requires escaped.
const CANONICAL_ESCAPE: &str = r#"\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))"#;

/// The canonical JSON spelling of one character inside a string (what `serde_json` writes).
pub(crate) fn canonical_char(c: char, out: &mut String) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

/// A regex matching exactly the compact serialization of `value`, with `ws` (a whitespace
/// regex, possibly empty) allowed where the compiler's other output allows it.
pub(crate) fn value_literal(value: &Value, ws: &str) -> String {
    let mut out = String::new();
    write_literal(value, ws, &mut out);
    out
}

fn write_literal(value: &Value, ws: &str, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push_str(r"\[");
            out.push_str(ws);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(ws);
                    out.push(',');
                    out.push_str(ws);
                }
                write_literal(item, ws, out);
            }
            out.push_str(ws);
            out.push_str(r"\]");
        }
        Value::Object(map) => {
            out.push_str(r"\{");
            out.push_str(ws);
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(ws);
                    out.push(',');
                    out.push_str(ws);
                }
                out.push_str(&string_literal(k));
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                write_literal(v, ws, out);
            }
            out.push_str(ws);
            out.push_str(r"\}");
        }
        other => out.push_str(&regex_syntax::escape(&other.to_string())),
    }
}

/// A regex matching the JSON string literal of `s` (quotes included), canonically escaped.
pub(crate) fn string_literal(s: &str) -> String {
    let mut json = String::with_capacity(s.len() + 2);
    json.push('"');
    for c in s.chars() {
        canonical_char(c, &mut json);
    }
    json.push('"');
    regex_syntax::escape(&json)
}

#[derive(Default)]
struct Trie {
    terminal: bool,
    children: BTreeMap<char, Trie>,
}

/// A regex for JSON string literals (quotes included) whose value is none of `names`.
///
/// Characters are spelled canonically, so two different spellings of an excluded name cannot
/// slip through.
pub(crate) fn string_excluding<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut root = Trie::default();
    for name in names {
        let mut node = &mut root;
        for c in name.chars() {
            node = node.children.entry(c).or_default();
        }
        node.terminal = true;
    }
    format!("\"{}\"", not_in(&root))
}

fn is_special(c: char) -> bool {
    c == '"' || c == '\\' || (c as u32) < 0x20
}

fn not_in(node: &Trie) -> String {
    let canon_char = format!(r#"(?:[^"\\\x00-\x1F]|{CANONICAL_ESCAPE})"#);
    let mut alts = Vec::new();
    for (c, child) in &node.children {
        let mut spelled = String::new();
        canonical_char(*c, &mut spelled);
        alts.push(format!(
            "{}{}",
            regex_syntax::escape(&spelled),
            not_in(child)
        ));
    }
    // A first character that leaves the trie: then anything may follow.
    let mut class = String::from(r#"[^"\\\x00-\x1F"#);
    for c in node.children.keys().filter(|c| !is_special(**c)) {
        class.push_str(&format!("\\x{{{:X}}}", *c as u32));
    }
    class.push(']');
    alts.push(format!("{class}{canon_char}*"));
    if node.children.keys().any(|c| is_special(*c)) {
        for c in ('\0'..='\u{1f}').chain(['"', '\\']) {
            if !node.children.contains_key(&c) {
                let mut spelled = String::new();
                canonical_char(c, &mut spelled);
                alts.push(format!("{}{canon_char}*", regex_syntax::escape(&spelled)));
            }
        }
    } else {
        alts.push(format!("{CANONICAL_ESCAPE}{canon_char}*"));
    }
    let body = format!("(?:{})", alts.join("|"));
    if node.terminal {
        body
    } else {
        format!("{body}?")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    fn full(re: &str) -> Regex {
        Regex::new(&format!("^(?:{re})$")).expect("valid regex")
    }

    #[test]
    fn any_string_accepts_escapes_but_not_lone_surrogates() {
        let r = full(ANY_STRING);
        for ok in [r#""""#, r#""a\"b""#, r#""\u00e9\n""#, "\"日本\""] {
            assert!(r.is_match(ok), "{ok}");
        }
        for bad in [r#""\ud800""#, "\"a\nb\"", r#""\x""#, r#"""#] {
            assert!(!r.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn literals_match_their_serialization() {
        let v: Value = serde_json::json!({"a": [1, "x\"y\n", null], "b": {"c": true}});
        let r = full(&value_literal(&v, ""));
        assert!(r.is_match(&serde_json::to_string(&v).unwrap()));
        assert!(!r.is_match(r#"{"a":[1,"x\"y\n",null],"b":{"c":false}}"#));
    }

    #[test]
    fn excluding_names_rejects_exactly_those() {
        let r = full(&string_excluding(["ab", "a", "b\"c", ""]));
        for bad in [r#""ab""#, r#""a""#, r#""b\"c""#, r#""""#] {
            assert!(!r.is_match(bad), "{bad}");
        }
        for ok in [
            r#""abc""#, r#""b""#, r#""ba""#, r#""x""#, r#""a\n""#, r#""b\"""#,
        ] {
            assert!(r.is_match(ok), "{ok}");
        }
    }
}
