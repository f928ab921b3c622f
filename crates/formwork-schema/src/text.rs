//! Regexes for JSON strings: the characters of a string body, exact literals for `const` and
//! `enum`, and strings that avoid a set of names (object keys other than the declared ones).

use std::collections::BTreeMap;

use serde_json::Value;

/// One character of a JSON string body in any valid spelling: a raw character or an escape.
/// `\u` escapes of surrogates are excluded, so every match decodes to exactly one Unicode
/// scalar value (what `minLength`/`maxLength` count). Every string the compiler writes spells
/// its characters with exactly this text (a reader may parse it once and put it in place).
pub const STRING_CHAR: &str = r#"(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u(?:[0-9A-CEFa-cef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2}))"#;

/// Any JSON string.
pub(crate) const ANY_STRING: &str = r#""(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u(?:[0-9A-CEFa-cef][0-9A-Fa-f]{3}|[Dd][0-7][0-9A-Fa-f]{2}))*""#;

/// The canonical escapes (as `serde_json` writes them) of the characters JSON requires escaped.
pub(crate) const CANONICAL_ESCAPE: &str = r#"\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))"#;

/// One character of a JSON string body spelled canonically (as `serde_json` writes it): a
/// character JSON allows raw, or [`CANONICAL_ESCAPE`]. Written with exactly this text in the
/// keys an object's other properties may take.
pub(crate) const CANONICAL_CHAR: &str =
    r#"(?:[^"\\\x00-\x1F]|\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f])))"#;

/// Regex fragments the compiler writes verbatim, and many times over in a large schema:
/// [`STRING_CHAR`], the canonical character and escape, any number, any integer. Each is a
/// regex of its own; `true` marks those that are one group (an atom a quantifier after it
/// applies to whole). A reader of the compiler's regexes may parse each once and put it in
/// place of its occurrences (where the occurrence is a part of the regex, not the escaped or
/// bracketed text of a pattern that happens to spell it).
pub const FRAGMENTS: &[(&str, bool)] = &[
    (STRING_CHAR, true),
    (CANONICAL_CHAR, true),
    (CANONICAL_ESCAPE, false),
    (crate::numeric::ANY_NUMBER, false),
    (crate::numeric::ANY_INTEGER, true),
];

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

/// Branching points a [`literal_alternation`] nests before writing the rest of a subtree as a
/// flat alternation. Each one costs the regex parser up to four levels of its nest limit (250
/// in regex-syntax, as regex-automata and formwork-index use it), so this keeps an enum at most
/// about 40 levels deep whatever its values.
const MAX_TRIE_NESTING: usize = 10;

/// A regex matching exactly the given literals (each a regex from [`value_literal`],
/// [`string_literal`] or plain digits), written as a trie: common prefixes once, `"ab(?:c|d)"`
/// rather than `"abc"|"abd"`. Duplicates are fine; `None` when there are no literals.
///
/// `ws` is the whitespace regex the literals were written with: it counts as one atom.
pub(crate) fn literal_alternation(mut literals: Vec<String>, ws: &str) -> Option<String> {
    literals.sort_unstable();
    literals.dedup();
    let refs: Vec<&str> = literals.iter().map(String::as_str).collect();
    match refs.len() {
        0 => None,
        1 => literals.pop(),
        _ => {
            let mut out = String::new();
            write_trie(&refs, 0, ws, MAX_TRIE_NESTING, &mut out);
            Some(out)
        }
    }
}

/// The length of the regex atom at the start of `rest`: the whitespace regex, an escaped
/// character, or one character. The atoms of a literal form a prefix-free code (a literal `[`
/// is always escaped), so sorted literals that share an atom are adjacent.
fn atom_len(rest: &str, ws: &str) -> usize {
    if !ws.is_empty() && rest.starts_with(ws) {
        return ws.len();
    }
    let mut chars = rest.chars();
    match chars.next() {
        Some('\\') => 1 + chars.next().map_or(0, char::len_utf8),
        Some(c) => c.len_utf8(),
        None => 0,
    }
}

/// Writes the alternation of the sorted, distinct `literals`, which all share their first
/// `at` bytes (a whole number of atoms), minus that prefix.
fn write_trie(literals: &[&str], mut at: usize, ws: &str, nesting: usize, out: &mut String) {
    // A chain of one shared atom after another is a plain concatenation.
    loop {
        let (Some(first), Some(last)) = (literals.first(), literals.last()) else {
            return;
        };
        let len = atom_len(&first[at..], ws);
        if len == 0 || !last[at..].starts_with(&first[at..at + len]) {
            break;
        }
        out.push_str(&first[at..at + len]);
        at += len;
    }
    // Sorted, so a literal that ends here comes first.
    let (terminal, rest) = match literals.split_first() {
        Some((first, rest)) if first.len() == at => (true, rest),
        _ => (false, literals),
    };
    let mut groups: Vec<&[&str]> = Vec::new();
    let mut start = 0;
    while let Some(first) = rest.get(start) {
        let atom = &first[at..at + atom_len(&first[at..], ws)];
        let end = start
            + rest[start..]
                .iter()
                .position(|l| !l[at..].starts_with(atom))
                .unwrap_or(rest.len() - start);
        groups.push(&rest[start..end]);
        start = end;
    }
    if groups.is_empty() {
        return;
    }
    out.push_str("(?:");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        if nesting == 0 {
            // Past the nesting budget: the suffixes side by side (never longer than the
            // literals themselves).
            for (j, l) in group.iter().enumerate() {
                if j > 0 {
                    out.push('|');
                }
                out.push_str(&l[at..]);
            }
        } else {
            write_trie(group, at, ws, nesting - 1, out);
        }
    }
    out.push(')');
    if terminal {
        out.push('?');
    }
}

#[derive(Default)]
struct Trie {
    terminal: bool,
    children: BTreeMap<char, Trie>,
}

/// A regex for JSON string literals (quotes included) whose value is none of `names`.
///
/// Characters are spelled canonically, so two different spellings of an excluded name cannot
/// slip through. A value that is none of the names either stops inside their trie at a node
/// that ends no name, or leaves the trie at some node and then goes on with anything, so
/// the regex is `"(?:NT|D C*)"`: `NT` the paths to nodes ending no name, `D` the paths
/// followed by one character that leaves the trie there, and `C*` (any characters) written
/// once rather than at every node. `D` takes a node's escapes apart where no name goes on
/// with one there (`P E`: the paths to such nodes, then any escape).
pub(crate) fn string_excluding<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut root = Trie::default();
    for name in names {
        let mut node = &mut root;
        for c in name.chars() {
            node = node.children.entry(c).or_default();
        }
        node.terminal = true;
    }
    let mut leave = vec![leaving(&root)];
    leave.extend(escape_free(&root).map(|p| format!("{p}{CANONICAL_ESCAPE}")));
    let diverge = format!("(?:{}){CANONICAL_CHAR}*", leave.join("|"));
    match inside(&root) {
        Some(nt) => format!("\"(?:{nt}|{diverge})\""),
        None => format!("\"{diverge}\""),
    }
}

fn is_special(c: char) -> bool {
    c == '"' || c == '\\' || (c as u32) < 0x20
}

/// `c` spelled canonically, as a regex.
fn spelled(c: char) -> String {
    let mut out = String::new();
    canonical_char(c, &mut out);
    regex_syntax::escape(&out)
}

/// The paths from `node` to the nodes that end no name (`None`: there are none).
fn inside(node: &Trie) -> Option<String> {
    paths(node, &|n| !n.terminal)
}

/// The paths from `node` to the nodes `stop` holds at, as a regex (`None`: there are none).
fn paths(node: &Trie, stop: &impl Fn(&Trie) -> bool) -> Option<String> {
    let alts: Vec<String> = node
        .children
        .iter()
        .filter_map(|(c, child)| Some(format!("{}{}", spelled(*c), paths(child, stop)?)))
        .collect();
    match (alts.is_empty(), stop(node)) {
        (true, false) => None,
        (true, true) => Some(String::new()),
        (false, false) => Some(format!("(?:{})", alts.join("|"))),
        (false, true) => Some(format!("(?:{})?", alts.join("|"))),
    }
}

/// The paths from `node` followed by one character that leaves the trie there, escapes
/// left out at nodes where no name goes on with an escape ([`escape_free`] has those).
fn leaving(node: &Trie) -> String {
    let mut alts: Vec<String> = node
        .children
        .iter()
        .map(|(c, child)| format!("{}{}", spelled(*c), leaving(child)))
        .collect();
    // A character other than the children's.
    let mut class = String::from(r#"[^"\\\x00-\x1F"#);
    for c in node.children.keys().filter(|c| !is_special(**c)) {
        class.push_str(&format!("\\x{{{:X}}}", *c as u32));
    }
    class.push(']');
    alts.push(class);
    if node.children.keys().any(|c| is_special(*c)) {
        for c in ('\0'..='\u{1f}').chain(['"', '\\']) {
            if !node.children.contains_key(&c) {
                alts.push(spelled(c));
            }
        }
    }
    format!("(?:{})", alts.join("|"))
}

/// The paths from `node` to the nodes where no name goes on with an escaped character
/// (`None`: there are none).
fn escape_free(node: &Trie) -> Option<String> {
    paths(node, &|n| !n.children.keys().any(|c| is_special(*c)))
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
    fn literal_alternations_factor_whole_atoms() {
        let lits = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            literal_alternation(lits(&[r#""abd""#, r#""abc""#, r#""abc""#]), ""),
            Some(r#""ab(?:c"|d")"#.to_string())
        );
        // An escape is one atom: `a\.` and `a\[` share `a`, not the backslash.
        assert_eq!(
            literal_alternation(lits(&[r"a\.", r"a\[", "a"]), ""),
            Some(r"a(?:\.|\[)?".to_string())
        );
        let ws = r"[ \t\n\r]{0,2}";
        let a = value_literal(&serde_json::json!([1, 2]), ws);
        let b = value_literal(&serde_json::json!([1]), ws);
        let r = full(&literal_alternation(vec![a, b], ws).unwrap());
        assert!(r.is_match("[1, 2]") && r.is_match("[ 1 ]") && !r.is_match("[1,]"));
        assert_eq!(literal_alternation(Vec::new(), ""), None);
    }

    #[test]
    fn excluding_names_matches_every_other_string() {
        // Every string of up to three characters over a small alphabet (plain, escaped,
        // control, non-ASCII), against several name sets: matched exactly when not a name.
        let alphabet = ['a', 'b', '"', '\n', '\u{1}', 'é'];
        let mut strings = vec![String::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for s in strings.iter().filter(|s| s.chars().count() == len - 1) {
                for c in alphabet {
                    next.push(format!("{s}{c}"));
                }
            }
            strings.extend(next);
        }
        let sets: [&[&str]; 5] = [
            &["ab", "a", "b\"c", ""],
            &["a"],
            &["é", "a\nb", "\u{1}"],
            &["ab", "abb", "b\"", "\"\""],
            &["", "a", "b", "é"],
        ];
        for names in sets {
            let r = full(&string_excluding(names.iter().copied()));
            for s in &strings {
                let json = serde_json::to_string(s).unwrap();
                assert_eq!(
                    r.is_match(&json),
                    !names.contains(&s.as_str()),
                    "{names:?}: {json}"
                );
            }
        }
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

    /// The canonical character is the canonical escape's character class, spelled as the
    /// fragment list names it, and every fragment parses on its own.
    #[test]
    fn fragments_are_regexes_and_the_canonical_character_is_its_escape() {
        assert_eq!(
            CANONICAL_CHAR,
            format!(r#"(?:[^"\\\x00-\x1F]|{CANONICAL_ESCAPE})"#)
        );
        for &(fragment, group) in FRAGMENTS {
            let hir = regex_syntax::parse(fragment).unwrap();
            assert_eq!(
                group,
                fragment.starts_with("(?:") && fragment.ends_with(')') && {
                    // One group: the parenthesis opened first closes last.
                    let mut depth = 0i32;
                    let mut escaped = false;
                    let mut closes_early = false;
                    for (i, c) in fragment.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '(') => depth += 1,
                            (false, ')') => {
                                depth -= 1;
                                closes_early |= depth == 0 && i + 1 < fragment.len();
                            }
                            _ => {}
                        }
                    }
                    !closes_early
                },
                "{fragment}"
            );
            assert!(hir.properties().minimum_len().is_some(), "{fragment}");
        }
    }
}
