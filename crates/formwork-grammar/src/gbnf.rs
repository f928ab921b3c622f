//! llama.cpp's GBNF grammar format, read into a [`RuleSet`].
//!
//! GBNF (see llama.cpp's `grammars/README.md`) is a character-level context-free grammar:
//! rules `name ::= alternatives`, sequences of string literals (`"..."`), character classes
//! (`[a-z]`, `[^"\\]`), `.` (any character), rule references and groups `( ... )`, with the
//! postfix operators `*`, `+`, `?`, `{m}`, `{m,}` and `{m,n}`, and `#` comments. The start
//! rule is `root`. A class is a set of Unicode characters, matched over their UTF-8 bytes.
//!
//! Whitespace follows llama.cpp's parser: spaces, tabs and comments may go between any two
//! symbols; a newline ends a rule, except inside parentheses, right after `::=` and right
//! after `|`. Repetition counts follow it too: a minimum above 2000 is refused
//! ([`GrammarError::TooLarge`]) and a maximum above 2000 means "no maximum".
//!
//! Not supported: llama.cpp's token references (`<think>`, `<[1000]>`, `!<...>`), which need
//! a vocabulary; they are refused with a [`GrammarError::Syntax`]. A rule defined twice is
//! [`GrammarError::Duplicate`] (llama.cpp keeps the last definition).
//!
//! ```
//! use formwork_grammar::{GrammarConfig, gbnf};
//!
//! let (rules, root) = gbnf(r#"
//! root ::= "[" (item ("," item)*)? "]"
//! item ::= [0-9]+ | "\"" [^"\\]* "\""
//! "#).unwrap();
//! let grammar = rules.compile(root, &GrammarConfig::default()).unwrap();
//! assert!(grammar.matches(br#"[12,"a"]"#).unwrap());
//! assert!(!grammar.matches(b"[12,]").unwrap());
//! ```

use regex_syntax::hir::{self, ClassUnicode, ClassUnicodeRange, Hir};

use crate::GrammarError;
use crate::expr::{Expr, RuleId, RuleSet};

/// Largest repetition count llama.cpp accepts as a minimum (a larger maximum means none).
pub const MAX_REPETITION: u64 = 2000;

/// Deepest nesting of groups and postfix operators a grammar text may have (each level
/// costs stack in lowering; deeper text is refused instead of overflowing it).
pub const MAX_NESTING: usize = 256;

/// Reads a GBNF grammar: the rules, and the start rule `root`.
///
/// Errors: [`GrammarError::Syntax`] with the line and column of the first problem (a
/// grammar without `root` is one too), [`GrammarError::Undefined`] for a rule used but not
/// defined, [`GrammarError::Duplicate`], and [`GrammarError::TooLarge`] for a repetition
/// count above [`MAX_REPETITION`].
pub fn gbnf(text: &str) -> Result<(RuleSet, RuleId), GrammarError> {
    let mut p = Parser {
        c: Cursor::new(text, "gbnf"),
        set: RuleSet::new(),
        open: 0,
    };
    p.space(true);
    while !p.c.at_end() {
        p.rule()?;
    }
    let Some(root) = p.set.get("root").filter(|&r| p.set.body(r).is_some()) else {
        return Err(p
            .c
            .error("the grammar defines no `root` rule (its start rule)"));
    };
    if let Some(r) = p.set.rules().find(|&r| p.set.body(r).is_none()) {
        return Err(GrammarError::Undefined(p.set.name(r).to_owned()));
    }
    Ok((p.set, root))
}

/// A position in grammar text, with errors that name the line and column.
pub(crate) struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    syntax: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str, syntax: &'static str) -> Self {
        Cursor {
            text,
            pos: 0,
            syntax,
        }
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(crate) fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    pub(crate) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(crate) fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// The longest prefix whose characters satisfy `f` (consumed).
    pub(crate) fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c: char| !f(c)).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Goes back (or forward) to byte offset `pos`, a character boundary seen before.
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// A syntax error at the current position.
    pub(crate) fn error(&self, reason: impl Into<String>) -> GrammarError {
        self.error_at(self.pos, reason)
    }

    /// The 1-based line and column of byte offset `pos`.
    fn line_column(&self, pos: usize) -> (usize, usize) {
        let before = self.text.get(..pos).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// `line L, column C` of byte offset `pos`, for messages that point elsewhere.
    pub(crate) fn position(&self, pos: usize) -> String {
        let (line, column) = self.line_column(pos);
        format!("line {line}, column {column}")
    }

    /// A syntax error at byte offset `pos`.
    pub(crate) fn error_at(&self, pos: usize, reason: impl Into<String>) -> GrammarError {
        let (line, column) = self.line_column(pos);
        GrammarError::Syntax {
            syntax: self.syntax,
            line,
            column,
            reason: reason.into(),
        }
    }

    /// What is at the current position, for "expected X, found Y" messages.
    pub(crate) fn found(&self) -> String {
        match self.peek() {
            None => "the end of the grammar".to_owned(),
            Some('\n' | '\r') => "a newline".to_owned(),
            Some(c) => format!("`{c}`"),
        }
    }
}

/// Any one Unicode character (GBNF's `.`).
pub(crate) fn any_char() -> Hir {
    Hir::dot(hir::Dot::AnyChar)
}

struct Parser<'a> {
    c: Cursor<'a>,
    set: RuleSet,
    /// Parentheses open around the current position.
    open: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl Parser<'_> {
    /// Skips spaces, tabs and `#` comments, and newlines too when `newline_ok`.
    fn space(&mut self, newline_ok: bool) {
        loop {
            match self.c.peek() {
                Some(' ' | '\t') => {
                    self.c.bump();
                }
                Some('\r' | '\n') if newline_ok => {
                    self.c.bump();
                }
                Some('#') => {
                    self.c.take_while(|c| c != '\r' && c != '\n');
                }
                _ => return,
            }
        }
    }

    /// `name ::= alternatives` and its line end.
    fn rule(&mut self) -> Result<(), GrammarError> {
        let name = self.c.take_while(is_word_char);
        if name.is_empty() {
            return Err(self
                .c
                .error(format!("expected a rule name, found {}", self.c.found())));
        }
        let id = self.set.rule(name);
        self.space(false);
        if !self.c.eat("::=") {
            return Err(self.c.error(format!(
                "expected `::=` after the rule name `{name}`, found {}",
                self.c.found()
            )));
        }
        self.space(true);
        let (body, _) = self.alternates(false)?;
        match self.c.peek() {
            None => {}
            Some('\r') => {
                self.c.bump();
                self.c.eat("\n");
            }
            Some('\n') => {
                self.c.bump();
            }
            Some(_) => {
                return Err(self.c.error(format!(
                    "expected a newline or the end of the grammar after rule `{name}`, found {}",
                    self.c.found()
                )));
            }
        }
        self.space(true);
        self.set.define(id, body)
    }

    /// Sequences separated by `|`, and the depth of the deepest.
    fn alternates(&mut self, nested: bool) -> Result<(Expr, usize), GrammarError> {
        let (first, mut depth) = self.sequence(nested)?;
        let mut alts = vec![first];
        while self.c.eat("|") {
            self.space(true);
            let (seq, d) = self.sequence(nested)?;
            depth = depth.max(d);
            alts.push(seq);
        }
        Ok(Expr::alternation(alts, depth))
    }

    /// Items one after the other, each with its postfix operators.
    fn sequence(&mut self, nested: bool) -> Result<(Expr, usize), GrammarError> {
        // Each item with its nesting depth.
        let mut items: Vec<(Expr, usize)> = Vec::new();
        while let Some(ch) = self.c.peek() {
            let start = self.c.pos();
            let item = match ch {
                '"' => {
                    self.c.bump();
                    let mut text = String::new();
                    loop {
                        match self.c.peek() {
                            None => return Err(self.c.error_at(start, "unterminated string")),
                            Some('"') => break,
                            Some(_) => text.push(self.char()?),
                        }
                    }
                    self.c.bump();
                    (Expr::literal(&text), 1)
                }
                '[' => (Expr::Regular(self.class()?), 1),
                '.' => {
                    self.c.bump();
                    (Expr::Regular(any_char()), 1)
                }
                '(' => {
                    self.c.bump();
                    if self.open >= MAX_NESTING {
                        return Err(self
                            .c
                            .error(format!("groups nested deeper than {MAX_NESTING} levels")));
                    }
                    self.open += 1;
                    self.space(true);
                    let (inner, depth) = self.alternates(true)?;
                    self.open -= 1;
                    if !self.c.eat(")") {
                        return Err(self.c.error(format!(
                            "expected `)` closing the group opened at {}, found {}",
                            self.c.position(start),
                            self.c.found()
                        )));
                    }
                    (inner, depth + 1)
                }
                '<' | '!' => {
                    return Err(self.c.error(
                        "token references (`<...>`, `!<...>`) need a vocabulary and are not supported",
                    ));
                }
                '*' | '+' | '?' | '{' => {
                    let (min, max) = self.repetition()?;
                    let Some((last, depth)) = items.pop() else {
                        return Err(self
                            .c
                            .error_at(start, format!("expected an item before `{ch}`")));
                    };
                    if depth >= MAX_NESTING {
                        return Err(self.c.error_at(
                            start,
                            format!("operators nested deeper than {MAX_NESTING} levels"),
                        ));
                    }
                    (last.repeat(min, max), depth + 1)
                }
                c if is_word_char(c) => {
                    let name = self.c.take_while(is_word_char);
                    (Expr::Rule(self.set.rule(name)), 1)
                }
                _ => break,
            };
            items.push(item);
            self.space(nested);
        }
        let depth = items.iter().map(|&(_, d)| d).max().unwrap_or(0);
        Ok(if items.len() == 1 {
            let (e, d) = items.pop().unwrap_or((Expr::empty(), 0));
            (e, d)
        } else {
            (
                Expr::Concat(items.into_iter().map(|(e, _)| e).collect()),
                depth + 1,
            )
        })
    }

    /// A postfix operator: `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`.
    fn repetition(&mut self) -> Result<(u32, Option<u32>), GrammarError> {
        let nested = self.open > 0;
        match self.c.bump() {
            Some('*') => return Ok((0, None)),
            Some('+') => return Ok((1, None)),
            Some('?') => return Ok((0, Some(1))),
            _ => {}
        }
        let start = self.c.pos().saturating_sub(1);
        self.space(nested);
        let min = self.count("`{`")?;
        self.space(nested);
        let max = if self.c.eat("}") {
            Some(min)
        } else if self.c.eat(",") {
            self.space(nested);
            let max = if self.c.peek().is_some_and(|c| c.is_ascii_digit()) {
                Some(self.count("`,`")?)
            } else {
                None
            };
            self.space(nested);
            if !self.c.eat("}") {
                return Err(self
                    .c
                    .error(format!("expected `}}`, found {}", self.c.found())));
            }
            max
        } else {
            return Err(self
                .c
                .error(format!("expected `,` or `}}`, found {}", self.c.found())));
        };
        if min > MAX_REPETITION {
            return Err(GrammarError::TooLarge {
                limit: "repetition",
                max: MAX_REPETITION as usize,
            });
        }
        // As llama.cpp: a maximum past the threshold is no maximum.
        let max = max.filter(|&m| m <= MAX_REPETITION);
        if max.is_some_and(|m| m < min) {
            return Err(self.c.error_at(
                start,
                format!(
                    "repetition {{{min},{}}}: the maximum is below the minimum",
                    max.unwrap_or(0)
                ),
            ));
        }
        // Both are at most MAX_REPETITION here.
        Ok((min as u32, max.map(|m| m as u32)))
    }

    /// A decimal count (saturating: a huge one is refused by the caller).
    fn count(&mut self, after: &str) -> Result<u64, GrammarError> {
        let digits = self.c.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return Err(self.c.error(format!(
                "expected a number after {after}, found {}",
                self.c.found()
            )));
        }
        Ok(digits.parse().unwrap_or(u64::MAX))
    }

    /// `[...]` or `[^...]`: a set of characters.
    fn class(&mut self) -> Result<Hir, GrammarError> {
        let start = self.c.pos();
        self.c.bump();
        let negated = self.c.eat("^");
        let mut ranges = Vec::new();
        loop {
            match self.c.peek() {
                None => return Err(self.c.error_at(start, "unterminated character class")),
                Some(']') => break,
                Some(_) => {}
            }
            let lo = self.char()?;
            let mut hi = lo;
            if self.c.peek() == Some('-') && !matches!(self.c.peek_at(1), Some(']') | None) {
                self.c.bump();
                let at = self.c.pos();
                hi = self.char()?;
                if hi < lo {
                    return Err(self.c.error_at(
                        at,
                        format!(
                            "range `{}-{}` ends before it starts",
                            lo.escape_debug(),
                            hi.escape_debug()
                        ),
                    ));
                }
            }
            ranges.push(ClassUnicodeRange::new(lo, hi));
        }
        self.c.bump();
        if ranges.is_empty() {
            return Err(self.c.error_at(start, "empty character class"));
        }
        let mut class = ClassUnicode::new(ranges);
        if negated {
            class.negate();
        }
        Ok(Hir::class(hir::Class::Unicode(class)))
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<char, GrammarError> {
        let start = self.c.pos();
        let Some(c) = self.c.bump() else {
            return Err(self.c.error("unexpected end of the grammar"));
        };
        if c != '\\' {
            return Ok(c);
        }
        let digits = match self.c.bump() {
            Some('n') => return Ok('\n'),
            Some('t') => return Ok('\t'),
            Some('r') => return Ok('\r'),
            Some(c @ ('\\' | '"' | '[' | ']' | '-')) => return Ok(c),
            Some('x') => 2,
            Some('u') => 4,
            Some('U') => 8,
            Some(other) => {
                return Err(self.c.error_at(
                    start,
                    format!("unknown escape `\\{}`", other.escape_debug()),
                ));
            }
            None => return Err(self.c.error_at(start, "unexpected end of the grammar")),
        };
        let hex = self.c.take_while(|c| c.is_ascii_hexdigit());
        let hex = hex
            .get(..digits)
            .filter(|h| h.len() == digits)
            .ok_or_else(|| {
                self.c.error_at(
                    start,
                    format!("expected {digits} hex digits after the escape"),
                )
            })?;
        // Give back hex digits past the escape's own (`\x41B` is `A` then `B`).
        self.c.set_pos(start + 2 + digits);
        let value = u32::from_str_radix(hex, 16).unwrap_or(u32::MAX);
        char::from_u32(value).ok_or_else(|| {
            self.c
                .error_at(start, format!("U+{value:X} is not a Unicode scalar value"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GrammarConfig;

    fn compiles(text: &str) -> crate::Grammar {
        let (set, root) = gbnf(text).unwrap();
        set.compile(root, &GrammarConfig::default()).unwrap()
    }

    fn syntax_at(text: &str) -> (usize, usize, String) {
        match gbnf(text) {
            Err(GrammarError::Syntax {
                line,
                column,
                reason,
                ..
            }) => (line, column, reason),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn reads_rules_groups_and_operators() {
        let (set, root) = gbnf(
            "root ::= (\"a\" | b)+ c{2} c{1,} c{0,3} c? c*  # comment\nb ::= [x-z] .\nc-d_1 ::= \"q\"\nc ::= c-d_1\n",
        )
        .unwrap();
        assert_eq!(set.name(root), "root");
        assert!(set.get("c-d_1").is_some());
        let Some(Expr::Concat(items)) = set.body(root) else {
            panic!("{:?}", set.body(root))
        };
        assert_eq!(items.len(), 6);
        assert!(matches!(
            items[1],
            Expr::Repeat {
                min: 2,
                max: Some(2),
                ..
            }
        ));
        assert!(matches!(
            items[2],
            Expr::Repeat {
                min: 1,
                max: None,
                ..
            }
        ));
        assert!(matches!(
            items[3],
            Expr::Repeat {
                min: 0,
                max: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn newlines_end_rules_except_in_groups_and_after_bars() {
        compiles("root ::= (\n  \"a\"\n  \"b\"\n) |\n  \"c\"\n\n\nx ::= \"d\"");
        compiles("root ::=\n  \"a\"\r\n");
        // A newline before `|` at the top level ends the rule: `| "b"` is no rule name.
        let (line, column, reason) = syntax_at("root ::= \"a\"\n  | \"b\"\n");
        assert_eq!((line, column), (2, 3));
        assert!(reason.contains("rule name"), "{reason}");
    }

    #[test]
    fn escapes_decode_as_llama_cpp_does() {
        let (set, root) =
            gbnf(r#"root ::= "\n\t\r\\\"\[\]\-\x41\u00e9\U0001F600" [\x00-\x1F]"#).unwrap();
        let Some(Expr::Concat(items)) = set.body(root) else {
            panic!()
        };
        assert_eq!(items[0], Expr::literal("\n\t\r\\\"[]-Aé😀"));
        let (_, _, reason) = syntax_at(r#"root ::= "\q""#);
        assert!(reason.contains("unknown escape"), "{reason}");
        let (_, _, reason) = syntax_at(r#"root ::= "\x4""#);
        assert!(reason.contains("hex digits"), "{reason}");
        let (_, _, reason) = syntax_at(r#"root ::= "\uD800""#);
        assert!(reason.contains("scalar"), "{reason}");
    }

    #[test]
    fn dot_and_negated_classes_match_any_character() {
        let g = compiles("root ::= . [^a] \"!\"");
        for ok in ["\n\n!", "é😀!", "ab!"] {
            assert!(g.matches(ok.as_bytes()).unwrap(), "{ok:?}");
        }
        for bad in ["xa!", "x!", "\u{e9}"] {
            assert!(!g.matches(bad.as_bytes()).unwrap(), "{bad:?}");
        }
    }

    #[test]
    fn classes_are_unicode_sets() {
        let (set, root) = gbnf(r#"root ::= [^"\\] [a-] [ぁ-ゟ]"#).unwrap();
        let Some(Expr::Concat(items)) = set.body(root) else {
            panic!()
        };
        let Expr::Regular(h) = &items[0] else {
            panic!()
        };
        let hir::HirKind::Class(hir::Class::Unicode(c)) = h.kind() else {
            panic!()
        };
        assert!(
            c.ranges()
                .iter()
                .any(|r| r.start() <= 'é' && 'é' <= r.end())
        );
        assert!(
            !c.ranges()
                .iter()
                .any(|r| r.start() <= '"' && '"' <= r.end())
        );
        let Expr::Regular(h) = &items[1] else {
            panic!()
        };
        let hir::HirKind::Class(hir::Class::Unicode(c)) = h.kind() else {
            panic!()
        };
        assert_eq!(c.ranges().len(), 2, "`[a-]` is `a` and `-`");
        let (_, _, reason) = syntax_at("root ::= [z-a]");
        assert!(reason.contains("ends before"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= []");
        assert!(reason.contains("empty"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= [abc");
        assert!(reason.contains("unterminated"), "{reason}");
    }

    #[test]
    fn errors_name_line_column_and_what_was_expected() {
        assert_eq!(
            syntax_at("root ::= \"a\"\nx = \"b\"").0..=syntax_at("root ::= \"a\"\nx = \"b\"").1,
            2..=3
        );
        let (_, _, reason) = syntax_at("root ::= (\"a\"");
        assert!(reason.contains("expected `)`"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= * \"a\"");
        assert!(reason.contains("item before `*`"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= \"a\"{2,1}");
        assert!(reason.contains("below the minimum"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= \"a\" )");
        assert!(reason.contains("newline or the end"), "{reason}");
        let (_, _, reason) = syntax_at("root ::= <think>");
        assert!(reason.contains("token references"), "{reason}");
        let (_, _, reason) = syntax_at("rot ::= \"a\"");
        assert!(reason.contains("`root`"), "{reason}");
        assert_eq!(
            gbnf("root ::= item\n").unwrap_err(),
            GrammarError::Undefined("item".into())
        );
        assert_eq!(
            gbnf("root ::= \"a\"\nroot ::= \"b\"").unwrap_err(),
            GrammarError::Duplicate("root".into())
        );
    }

    #[test]
    fn huge_repetitions_are_too_large_and_big_maxima_unbounded() {
        assert!(matches!(
            gbnf("root ::= \"x\"{1000000}"),
            Err(GrammarError::TooLarge {
                limit: "repetition",
                ..
            })
        ));
        assert!(matches!(
            gbnf("root ::= \"x\"{99999999999999999999999,}"),
            Err(GrammarError::TooLarge { .. })
        ));
        let (set, root) = gbnf("root ::= \"x\"{2,5000}").unwrap();
        assert!(matches!(
            set.body(root),
            Some(Expr::Repeat {
                min: 2,
                max: None,
                ..
            })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!(
            "root ::= {}\"a\"{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let (_, _, reason) = syntax_at(&deep);
        assert!(reason.contains("nested deeper"), "{reason}");
        let ops = format!("root ::= \"a\"{}", "?".repeat(100_000));
        let (_, _, reason) = syntax_at(&ops);
        assert!(reason.contains("nested deeper"), "{reason}");
        // Just within the limit compiles.
        compiles(&format!(
            "root ::= {}\"a\"{}",
            "(".repeat(100),
            ")".repeat(100)
        ));
    }

    #[test]
    fn empty_language_and_left_recursion() {
        let (set, root) = gbnf("root ::= root \"a\"").unwrap();
        assert_eq!(
            set.compile(root, &GrammarConfig::default()).unwrap_err(),
            GrammarError::Empty("root".into())
        );
        compiles("root ::= root \"a\" | \"b\"");
        compiles("root ::= | \"a\" root");
    }
}
