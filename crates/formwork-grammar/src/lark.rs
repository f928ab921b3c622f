//! The subset of Lark's grammar syntax that llguidance accepts, read into a [`RuleSet`].
//!
//! Rules (lowercase names) `name: a b | c`; terminals (uppercase names) `NAME: "lit" |
//! /regex/flags`, built from literals, regexes and other terminals (never recursive, never
//! from rules); string literals with escapes and the `i` flag, literal ranges `"a".."z"`;
//! groups `( )`, `[x]` (optional), the operators `*`, `+`, `?`, `x ~ n`, `x ~ n..m` and
//! llguidance's `x{n}`, `x{n,}`, `x{n,m}`; aliases `-> name` (ignored); the rule prefixes
//! `?`, `!` and `_`, which shape Lark's trees, not its language; priorities `name.2:`
//! (ignored: they pick among parses, the language is the same); comments `//` and `#`.
//! Regexes are in Rust's `regex` syntax (close to Python's `re`; no lookaround); flags `i`,
//! `s`, `m`, `x` and `u`.
//!
//! `%ignore X` (a terminal, literal or regex; several accumulate) lets `X` appear between
//! any two terminals and at both ends of the text: lowering has no lexer to drop it, so the
//! reader puts `X*` before every terminal of every rule body and at the end of the start
//! rule's (never inside terminals): one place between two terminals, so a run of ignored
//! text has one parse. `X*` is a kept nonterminal (`%ignore#n → ε | X+`, [`RuleSet::keep`]), `X+`
//! one lexeme: merged into the lexemes around it, an ignore with comments (`/* ... */`)
//! would make their DFAs explode (each copy of it may be inside a comment at once), while
//! as a nonterminal the lexemes stay the terminals themselves, as with Lark's own lexer. `%import common.NAME [-> ALIAS]` and `%import common (A, B)` bring in the
//! terminals of Lark's `common.lark` ([`COMMON`]).
//!
//! The start rule is `start`. The parser behind the grammar lets a terminal end wherever its
//! regex matches (like Lark's Earley parser with `lexer='dynamic_complete'`), so the language
//! is the context-free one the text describes.
//!
//! Refused with a [`GrammarError::Syntax`] naming the feature: templates (`name{a, b}:`),
//! lexeme options (`name[lazy]:`), `%declare`, `%override`, `%extend`, imports from anything
//! but `common`, llguidance's `%json`, `%regex`, `%llguidance`, special tokens `<...>` and
//! `@grammar` references, and the regex flag `l`.
//!
//! ```
//! use formwork_grammar::{GrammarConfig, lark};
//!
//! let (rules, start) = lark(r#"
//! start: pair ("," pair)*
//! pair: CNAME "=" SIGNED_NUMBER
//! %import common (CNAME, SIGNED_NUMBER, WS)
//! %ignore WS
//! "#).unwrap();
//! let grammar = rules.compile(start, &GrammarConfig::default()).unwrap();
//! assert!(grammar.matches(b"x = -1.5, y=2").unwrap());
//! assert!(!grammar.matches(b"x = 1 y = 2").unwrap());
//! ```

use std::collections::{HashMap, HashSet};

use regex_syntax::hir::{self, ClassUnicode, ClassUnicodeRange};

use crate::GrammarError;
use crate::expr::{Expr, RuleId, RuleSet};
use crate::gbnf::{Cursor, MAX_NESTING};

/// Largest count of a `~ n..m` or `{n,m}` repetition.
pub const MAX_LARK_REPETITION: u64 = 1 << 16;

/// The terminals of Lark's `common.lark`, each as one regex (Rust syntax) whose language is
/// that of Lark's definition (`ESCAPED_STRING`'s lookbehind spelled out: the text between
/// the quotes has no newline and does not end in an odd number of backslashes).
pub const COMMON: &[(&str, &str)] = &[
    ("DIGIT", "[0-9]"),
    ("HEXDIGIT", "[a-fA-F0-9]"),
    ("INT", "[0-9]+"),
    ("SIGNED_INT", "[+-]?[0-9]+"),
    ("DECIMAL", r"[0-9]+\.[0-9]*|\.[0-9]+"),
    (
        "FLOAT",
        r"[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
    ),
    (
        "SIGNED_FLOAT",
        r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
    ),
    (
        "NUMBER",
        r"[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+",
    ),
    (
        "SIGNED_NUMBER",
        r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)",
    ),
    ("ESCAPED_STRING", r#""(?:[^\n]*[^\n\\])?(?:\\\\)*""#),
    ("LCASE_LETTER", "[a-z]"),
    ("UCASE_LETTER", "[A-Z]"),
    ("LETTER", "[A-Za-z]"),
    ("WORD", "[A-Za-z]+"),
    ("CNAME", "[_A-Za-z][_A-Za-z0-9]*"),
    ("WS_INLINE", "[ \\t]+"),
    ("WS", "[ \\t\\f\\r\\n]+"),
    ("CR", "\\r"),
    ("LF", "\\n"),
    ("NEWLINE", "(?:\\r?\\n)+"),
    ("SH_COMMENT", "#[^\\n]*"),
    ("CPP_COMMENT", "//[^\\n]*"),
    ("C_COMMENT", r"/\*(?s:.)*\*/"),
    ("SQL_COMMENT", "--[^\\n]*"),
];

/// Reads a Lark grammar: the rules (terminals are rules too, regular ones) and the start
/// rule `start`, with `%ignore` applied (see the module docs).
///
/// Errors: [`GrammarError::Syntax`] with the line and column of the first problem (an
/// unsupported feature, a terminal that refers to a rule or to itself, a missing `start`),
/// [`GrammarError::Undefined`], [`GrammarError::Duplicate`], [`GrammarError::Regex`] for a
/// regex that does not parse, [`GrammarError::TooLarge`] for a repetition count above
/// [`MAX_LARK_REPETITION`].
pub fn lark(text: &str) -> Result<(RuleSet, RuleId), GrammarError> {
    let mut p = Parser {
        c: Cursor::new(text, "lark"),
        set: RuleSet::new(),
        rules: Vec::new(),
        def_pos: HashMap::new(),
        defined: HashSet::new(),
        ignores: Vec::new(),
        open: 0,
    };
    loop {
        p.space(true);
        if p.c.at_end() {
            break;
        }
        if p.c.peek() == Some('%') {
            p.directive()?;
        } else {
            p.definition()?;
        }
        p.end_of_line()?;
    }
    p.finish()
}

/// Whether a Lark name is a terminal's (uppercase after any leading `_`).
fn is_terminal(name: &str) -> bool {
    name.trim_start_matches('_')
        .starts_with(|c: char| c.is_ascii_uppercase())
}

struct Parser<'a> {
    c: Cursor<'a>,
    set: RuleSet,
    /// Rule (not terminal) bodies, given to the set once `%ignore` is known.
    rules: Vec<(RuleId, Expr)>,
    /// Where each rule or terminal is defined (byte offset).
    def_pos: HashMap<RuleId, usize>,
    /// Rules and terminals defined so far.
    defined: HashSet<RuleId>,
    /// What `%ignore` named.
    ignores: Vec<Expr>,
    /// Parentheses and brackets open around the current position.
    open: usize,
}

impl Parser<'_> {
    /// Skips spaces, tabs and comments (`//`, `#`), and newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        loop {
            match self.c.peek() {
                Some(' ' | '\t') => {
                    self.c.bump();
                }
                Some('\r' | '\n') if newlines => {
                    self.c.bump();
                }
                Some('#') => {
                    self.c.take_while(|c| c != '\n');
                }
                Some('/') if self.c.peek_at(1) == Some('/') => {
                    self.c.take_while(|c| c != '\n');
                }
                _ => return,
            }
        }
    }

    /// After a definition or directive: a newline or the end.
    fn end_of_line(&mut self) -> Result<(), GrammarError> {
        self.space(false);
        match self.c.peek() {
            None | Some('\n' | '\r') => Ok(()),
            Some(_) => Err(self.c.error(format!(
                "expected a newline or the end of the grammar, found {}",
                self.c.found()
            ))),
        }
    }

    fn name(&mut self) -> &str {
        let rest = self.c.rest();
        let mut end = 0;
        let mut chars = rest.char_indices().peekable();
        while let Some((i, ch)) = chars.next() {
            let ok = if i == 0 {
                ch.is_ascii_alphabetic() || ch == '_'
            } else {
                // `-` is llguidance's, but `a->b` is an alias.
                ch.is_ascii_alphanumeric()
                    || ch == '_'
                    || (ch == '-' && chars.peek().is_some_and(|&(_, n)| n != '>'))
            };
            if !ok {
                break;
            }
            end = i + ch.len_utf8();
        }
        let name = &rest[..end];
        self.c.eat(name);
        name
    }

    /// `%ignore ...` or `%import ...`.
    fn directive(&mut self) -> Result<(), GrammarError> {
        let start = self.c.pos();
        self.c.bump();
        let word = self.name().to_owned();
        self.space(false);
        match word.as_str() {
            "ignore" => {
                let (e, _) = self.expansions(true)?;
                self.ignores.push(e);
                Ok(())
            }
            "import" => self.import(),
            _ => Err(self
                .c
                .error_at(start, format!("`%{word}` is not supported"))),
        }
    }

    /// `%import common.NAME [-> ALIAS]` or `%import common (A, B)`.
    fn import(&mut self) -> Result<(), GrammarError> {
        let at = self.c.pos();
        let module = self.name().to_owned();
        if module != "common" {
            return Err(self.c.error_at(
                at,
                format!("only `%import common` is supported, not `{module}`"),
            ));
        }
        if self.c.eat(".") {
            let at = self.c.pos();
            let name = self.name().to_owned();
            self.space(false);
            let alias = if self.c.eat("->") {
                self.space(false);
                self.name().to_owned()
            } else {
                name.clone()
            };
            return self.import_one(at, &name, &alias);
        }
        self.space(false);
        if !self.c.eat("(") {
            return Err(self.c.error(format!(
                "expected `.NAME` or `(A, B)` after `%import common`, found {}",
                self.c.found()
            )));
        }
        loop {
            self.space(true);
            let at = self.c.pos();
            let name = self.name().to_owned();
            self.import_one(at, &name, &name)?;
            self.space(true);
            if self.c.eat(")") {
                return Ok(());
            }
            if !self.c.eat(",") {
                return Err(self
                    .c
                    .error(format!("expected `,` or `)`, found {}", self.c.found())));
            }
        }
    }

    fn import_one(&mut self, at: usize, name: &str, alias: &str) -> Result<(), GrammarError> {
        let Some(&(_, regex)) = COMMON.iter().find(|(n, _)| *n == name) else {
            return Err(self.c.error_at(
                at,
                if name.is_empty() {
                    format!("expected a terminal name, found {}", self.c.found())
                } else {
                    format!("common.lark has no terminal `{name}`")
                },
            ));
        };
        let id = self.set.rule(alias);
        if !self.defined.insert(id) {
            return Err(GrammarError::Duplicate(alias.to_owned()));
        }
        self.set.define(id, Expr::regex(regex, name)?)
    }

    /// `name: expansions` (with `?`/`!` prefixes and a priority).
    fn definition(&mut self) -> Result<(), GrammarError> {
        let start = self.c.pos();
        self.c.eat("!");
        self.c.eat("?");
        let name = self.name().to_owned();
        if name.is_empty() {
            return Err(match self.c.peek() {
                Some('<') => self.c.error("special tokens (`<...>`) are not supported"),
                _ => self.c.error(format!(
                    "expected a rule or terminal name, found {}",
                    self.c.found()
                )),
            });
        }
        let terminal = is_terminal(&name);
        match self.c.peek() {
            Some('{') => {
                return Err(self
                    .c
                    .error(format!("`{name}{{...}}`: templates are not supported")));
            }
            Some('[') => {
                return Err(self.c.error(format!(
                    "`{name}[...]`: lexeme options (`lazy`, `capture`, `stop`, ...) are not supported"
                )));
            }
            Some('.') => {
                // A priority: ignored (it picks among parses; the language is the same).
                self.c.bump();
                self.c.eat("-");
                if self.c.take_while(|c| c.is_ascii_digit()).is_empty() {
                    return Err(self.c.error("expected a priority number after `.`"));
                }
            }
            _ => {}
        }
        self.space(false);
        if !self.c.eat(":") {
            return Err(self.c.error(format!(
                "expected `:` after `{name}`, found {}",
                self.c.found()
            )));
        }
        self.space(false);
        let id = self.set.rule(&name);
        if !self.defined.insert(id) {
            return Err(GrammarError::Duplicate(name));
        }
        let (body, _) = self.expansions(terminal)?;
        self.def_pos.insert(id, start);
        if terminal {
            self.set.define(id, body)
        } else {
            self.rules.push((id, body));
            Ok(())
        }
    }

    /// Alternatives (`|`; at the top level of a definition a `|` may start the next line).
    fn expansions(&mut self, terminal: bool) -> Result<(Expr, usize), GrammarError> {
        let (first, mut depth) = self.expansion(terminal)?;
        let mut alts = vec![first];
        loop {
            let before = self.c.pos();
            self.space(true);
            if !self.c.eat("|") {
                // Leave the newline to the caller.
                self.c.set_pos(before);
                break;
            }
            self.space(self.open > 0);
            let (e, d) = self.expansion(terminal)?;
            depth = depth.max(d);
            alts.push(e);
        }
        Ok(Expr::alternation(alts, depth))
    }

    /// Items one after the other (and an alias, ignored).
    fn expansion(&mut self, terminal: bool) -> Result<(Expr, usize), GrammarError> {
        let mut items: Vec<(Expr, usize)> = Vec::new();
        loop {
            self.space(self.open > 0);
            let start = self.c.pos();
            let Some(ch) = self.c.peek() else { break };
            let item = match ch {
                '"' => self.string()?,
                '/' => self.regex()?,
                '(' | '[' => {
                    self.c.bump();
                    if self.open >= MAX_NESTING {
                        return Err(self
                            .c
                            .error(format!("groups nested deeper than {MAX_NESTING} levels")));
                    }
                    self.open += 1;
                    let (inner, depth) = self.expansions(terminal)?;
                    self.space(true);
                    self.open -= 1;
                    let close = if ch == '(' { ")" } else { "]" };
                    if !self.c.eat(close) {
                        return Err(self.c.error(format!(
                            "expected `{close}` closing the group opened at {}, found {}",
                            self.c.position(start),
                            self.c.found()
                        )));
                    }
                    if ch == '[' {
                        (inner.optional(), depth + 2)
                    } else {
                        (inner, depth + 1)
                    }
                }
                '-' if self.c.peek_at(1) == Some('>') => {
                    // An alias: it names the tree node, the language is the same.
                    self.c.eat("->");
                    self.space(false);
                    if self.name().is_empty() {
                        return Err(self.c.error("expected a name after `->`"));
                    }
                    continue;
                }
                '%' => {
                    let word: String = std::iter::once('%')
                        .chain(
                            self.c
                                .rest()
                                .chars()
                                .skip(1)
                                .take_while(char::is_ascii_alphanumeric),
                        )
                        .collect();
                    return Err(self.c.error(format!("`{word}` is not supported")));
                }
                '<' => return Err(self.c.error("special tokens (`<...>`) are not supported")),
                '@' => {
                    return Err(self
                        .c
                        .error("grammar references (`@name`) are not supported"));
                }
                '&' => {
                    return Err(self
                        .c
                        .error("llguidance's `&` and `~` (negation) operators are not supported"));
                }
                '*' | '+' | '~' | '{' => self.postfix(&mut items, start)?,
                '?' if !self.c.peek_at(1).is_some_and(|c| c.is_ascii_lowercase()) => {
                    self.postfix(&mut items, start)?
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let name = self.name().to_owned();
                    if terminal && !is_terminal(&name) {
                        return Err(self
                            .c
                            .error_at(start, format!("a terminal cannot use the rule `{name}`")));
                    }
                    (Expr::Rule(self.set.rule(&name)), 1)
                }
                _ => break,
            };
            items.push(item);
        }
        let depth = items.iter().map(|&(_, d)| d).max().unwrap_or(0);
        Ok(if items.len() == 1 {
            items.pop().unwrap_or((Expr::empty(), 0))
        } else {
            (
                Expr::Concat(items.into_iter().map(|(e, _)| e).collect()),
                depth + 1,
            )
        })
    }

    /// `*`, `+`, `?`, `~ n`, `~ n..m`, `{n}`, `{n,}`, `{n,m}` on the last item.
    fn postfix(
        &mut self,
        items: &mut Vec<(Expr, usize)>,
        start: usize,
    ) -> Result<(Expr, usize), GrammarError> {
        let op = self.c.bump().unwrap_or('*');
        let (min, max) = match op {
            '*' => (0, None),
            '+' => (1, None),
            '?' => (0, Some(1)),
            '~' => {
                self.space(false);
                let min = self.count("`~`")?;
                self.space(false);
                let max = if self.c.eat("..") {
                    self.space(false);
                    self.count("`..`")?
                } else {
                    min
                };
                (min, Some(max))
            }
            _ => {
                self.space(false);
                let min = self.count("`{` (templates are not supported)")?;
                self.space(false);
                let max = if self.c.eat(",") {
                    self.space(false);
                    if self.c.peek().is_some_and(|c| c.is_ascii_digit()) {
                        Some(self.count("`,`")?)
                    } else {
                        None
                    }
                } else {
                    Some(min)
                };
                self.space(false);
                if !self.c.eat("}") {
                    return Err(self
                        .c
                        .error(format!("expected `}}`, found {}", self.c.found())));
                }
                (min, max)
            }
        };
        let Some((last, depth)) = items.pop() else {
            return Err(self
                .c
                .error_at(start, format!("expected an item before `{op}`")));
        };
        if min.max(max.unwrap_or(0)) > MAX_LARK_REPETITION {
            return Err(GrammarError::TooLarge {
                limit: "repetition",
                max: MAX_LARK_REPETITION as usize,
            });
        }
        if max.is_some_and(|m| m < min) {
            return Err(self
                .c
                .error_at(start, "the maximum repetition is below the minimum"));
        }
        if depth >= MAX_NESTING {
            return Err(self.c.error_at(
                start,
                format!("operators nested deeper than {MAX_NESTING} levels"),
            ));
        }
        // Both within MAX_LARK_REPETITION.
        Ok((last.repeat(min as u32, max.map(|m| m as u32)), depth + 1))
    }

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

    /// A string literal (`"..."`, `"..."i`), or a range `"a".."z"`.
    fn string(&mut self) -> Result<(Expr, usize), GrammarError> {
        let start = self.c.pos();
        let text = self.string_text()?;
        if self.c.rest().starts_with("..\"") {
            self.c.eat("..");
            let at = self.c.pos();
            let hi = self.string_text()?;
            let (Some(lo_c), Some(hi_c)) = (single(&text), single(&hi)) else {
                return Err(self
                    .c
                    .error_at(start, "a literal range needs one character on each side"));
            };
            if hi_c < lo_c {
                return Err(self.c.error_at(at, "the range ends before it starts"));
            }
            let class = ClassUnicode::new([ClassUnicodeRange::new(lo_c, hi_c)]);
            return Ok((
                Expr::Regular(hir::Hir::class(hir::Class::Unicode(class))),
                1,
            ));
        }
        if self.c.peek() == Some('i')
            && !self
                .c
                .peek_at(1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.c.bump();
            let pattern = format!("(?i:{})", regex_syntax::escape(&text));
            return Ok((Expr::regex(&pattern, "string literal")?, 1));
        }
        Ok((Expr::literal(&text), 1))
    }

    /// The decoded text of a `"..."` literal, as Lark decodes it: `\\`, `\"`, `\n`, `\t`,
    /// `\r`, `\f`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`; any other `\c` stays `\c`.
    fn string_text(&mut self) -> Result<String, GrammarError> {
        let start = self.c.pos();
        self.c.bump();
        let mut out = String::new();
        loop {
            let at = self.c.pos();
            match self.c.bump() {
                None | Some('\n') => {
                    return Err(self
                        .c
                        .error_at(start, "unterminated string (strings cannot hold newlines)"));
                }
                Some('"') => return Ok(out),
                Some('\\') => {
                    let digits = match self.c.bump() {
                        Some('\\') => {
                            out.push('\\');
                            continue;
                        }
                        Some('"') => {
                            out.push('"');
                            continue;
                        }
                        Some('n') => {
                            out.push('\n');
                            continue;
                        }
                        Some('t') => {
                            out.push('\t');
                            continue;
                        }
                        Some('r') => {
                            out.push('\r');
                            continue;
                        }
                        Some('f') => {
                            out.push('\u{c}');
                            continue;
                        }
                        Some('x') => 2,
                        Some('u') => 4,
                        Some('U') => 8,
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                            continue;
                        }
                        None => return Err(self.c.error_at(start, "unterminated string")),
                    };
                    let rest = self.c.rest();
                    let hex = rest
                        .get(..digits)
                        .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
                    let value = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
                    let Some(c) = value.and_then(char::from_u32) else {
                        return Err(self.c.error_at(
                            at,
                            format!("expected {digits} hex digits of a Unicode scalar value"),
                        ));
                    };
                    self.c.eat(hex.unwrap_or(""));
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// `/regex/flags`.
    fn regex(&mut self) -> Result<(Expr, usize), GrammarError> {
        let start = self.c.pos();
        self.c.bump();
        let mut pattern = String::new();
        loop {
            match self.c.bump() {
                None => return Err(self.c.error_at(start, "unterminated regex")),
                Some('/') => break,
                Some('\\') => match self.c.bump() {
                    Some('/') => pattern.push('/'),
                    Some(c) => {
                        pattern.push('\\');
                        pattern.push(c);
                    }
                    None => return Err(self.c.error_at(start, "unterminated regex")),
                },
                Some(c) => pattern.push(c),
            }
        }
        let flags = self.c.take_while(|c| "imslux".contains(c));
        if flags.contains('l') {
            return Err(self.c.error("the regex flag `l` is not supported"));
        }
        let flags: String = flags.chars().filter(|&c| c != 'u').collect();
        let full = if flags.is_empty() {
            pattern
        } else if flags.contains('x') {
            // A newline ends an `x`-mode comment before the group closes.
            format!("(?{flags}:{pattern}\n)")
        } else {
            format!("(?{flags}:{pattern})")
        };
        let at = self.c.position(start);
        let e = Expr::regex(&full, &format!("regex at {at}"))?;
        Ok((e, 1))
    }

    /// Checks the rules and terminals, applies `%ignore` and defines the rules.
    fn finish(mut self) -> Result<(RuleSet, RuleId), GrammarError> {
        let Some(start) = self.set.get("start").filter(|r| self.defined.contains(r)) else {
            return Err(self
                .c
                .error("the grammar defines no `start` rule (its start rule)"));
        };
        if let Some(r) = self.set.rules().find(|r| !self.defined.contains(r)) {
            return Err(GrammarError::Undefined(self.set.name(r).to_owned()));
        }
        self.check_terminals_regular()?;
        let ignore = match self.ignores.len() {
            0 => None,
            1 => self.ignores.pop(),
            _ => Some(Expr::Alt(std::mem::take(&mut self.ignores))),
        }
        .map(|x| {
            // `I → ε | x+`: a kept nonterminal, so that lowering never merges the ignored
            // text with the terminals around it, and one lexeme for a whole run of it (as
            // `I → I x`, a run of blanks could be cut in every way, each cut a parse).
            let rule = self.set.fresh("%ignore");
            self.set.keep(rule);
            let body = Expr::Alt(vec![Expr::empty(), x.repeat(1, None)]);
            self.set.define(rule, body).map(|()| Expr::Rule(rule))
        })
        .transpose()?;
        for (id, body) in std::mem::take(&mut self.rules) {
            let body = match &ignore {
                None => body,
                Some(ign) => {
                    let body = before_terminals(body, ign, &self.set);
                    if id == start {
                        Expr::Concat(vec![body, ign.clone()])
                    } else {
                        body
                    }
                }
            };
            self.set.define(id, body)?;
        }
        Ok((self.set, start))
    }

    /// No terminal refers to itself, directly or through others.
    fn check_terminals_regular(&self) -> Result<(), GrammarError> {
        // 0: not seen, 1: on the path, 2: done.
        let mut color = vec![0u8; self.set.len()];
        let mut refs = Vec::new();
        for t in self.set.rules().filter(|&r| is_terminal(self.set.name(r))) {
            if color[t.index()] != 0 {
                continue;
            }
            let mut stack = vec![(t, false)];
            while let Some((r, leaving)) = stack.pop() {
                if leaving {
                    color[r.index()] = 2;
                    continue;
                }
                match color[r.index()] {
                    2 => continue,
                    1 => return Err(self.recursive_terminal(r)),
                    _ => {}
                }
                color[r.index()] = 1;
                stack.push((r, true));
                refs.clear();
                if let Some(body) = self.set.body(r) {
                    rule_refs(body, &mut refs);
                }
                for &x in &refs {
                    if color[x.index()] == 1 {
                        return Err(self.recursive_terminal(x));
                    }
                    if color[x.index()] == 0 {
                        stack.push((x, false));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Parser<'_> {
    fn recursive_terminal(&self, t: RuleId) -> GrammarError {
        self.c.error_at(
            self.def_pos.get(&t).copied().unwrap_or(0),
            format!(
                "terminal `{}` refers to itself (terminals are regular)",
                self.set.name(t)
            ),
        )
    }
}

/// The one character of `s`, if it has exactly one.
fn single(s: &str) -> Option<char> {
    let mut it = s.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// The rules `e` refers to.
fn rule_refs(e: &Expr, out: &mut Vec<RuleId>) {
    match e {
        Expr::Regular(_) => {}
        Expr::Rule(r) => out.push(*r),
        Expr::Concat(v) | Expr::Alt(v) => v.iter().for_each(|x| rule_refs(x, out)),
        Expr::Repeat { expr, .. } => rule_refs(expr, out),
    }
}

/// `e` with `ign` (optional ignored text) before every terminal: between two terminals
/// there is then exactly one place for ignored text, so a run of it is one lexeme, never
/// cut between two optional ones in every possible way.
fn before_terminals(e: Expr, ign: &Expr, set: &RuleSet) -> Expr {
    match e {
        Expr::Concat(items) => Expr::Concat(
            items
                .into_iter()
                .map(|i| before_terminals(i, ign, set))
                .collect(),
        ),
        Expr::Alt(alts) => Expr::Alt(
            alts.into_iter()
                .map(|a| before_terminals(a, ign, set))
                .collect(),
        ),
        Expr::Repeat { expr, min, max } => Expr::Repeat {
            expr: Box::new(before_terminals(*expr, ign, set)),
            min,
            max,
        },
        Expr::Rule(r) if !is_terminal(set.name(r)) => Expr::Rule(r),
        terminal => Expr::Concat(vec![ign.clone(), terminal]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GrammarConfig;

    fn syntax(text: &str) -> (usize, usize, String) {
        match lark(text) {
            Err(GrammarError::Syntax {
                line,
                column,
                reason,
                ..
            }) => (line, column, reason),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    fn compiles(text: &str) -> crate::Grammar {
        let (set, start) = lark(text).unwrap();
        set.compile(start, &GrammarConfig::default()).unwrap()
    }

    #[test]
    fn reads_rules_terminals_and_operators() {
        let (set, start) = lark(
            "start: a+ B* [c] (a | c)? a ~ 2 B ~ 1..3 a{2,} -> alias\n\
             ?a: \"x\"i | \"a\"..\"f\"\n\
             !c: /[0-9]+/ | _d\n\
             _d: NAME\n\
             NAME.2: /q/x\n\
             B: \"b\" NAME\n\
             // comment\n\
             # comment\n",
        )
        .unwrap();
        assert_eq!(set.name(start), "start");
        let Some(Expr::Concat(items)) = set.body(start) else {
            panic!("{:?}", set.body(start))
        };
        assert_eq!(items.len(), 7);
        assert!(matches!(
            items[4],
            Expr::Repeat {
                min: 2,
                max: Some(2),
                ..
            }
        ));
        assert!(matches!(
            items[5],
            Expr::Repeat {
                min: 1,
                max: Some(3),
                ..
            }
        ));
        assert!(matches!(
            items[6],
            Expr::Repeat {
                min: 2,
                max: None,
                ..
            }
        ));
        compiles("start: a\na: \"x\"\n  | \"y\"\n  | \"z\"");
    }

    #[test]
    fn strings_decode_as_lark_does() {
        let (set, start) = lark(r#"start: "a\\b\"c\d\n\x41\u00e9""#).unwrap();
        assert_eq!(set.body(start), Some(&Expr::literal("a\\b\"c\\d\nAé")));
        let (_, _, reason) = syntax("start: \"abc\nx\"");
        assert!(reason.contains("unterminated"), "{reason}");
    }

    #[test]
    fn ignore_goes_before_terminals_and_at_the_end() {
        let (set, start) = lark("start: \"a\" b*\nb: \"x\" \"y\"\n%ignore \" \"").unwrap();
        let Some(Expr::Concat(outer)) = set.body(start) else {
            panic!()
        };
        assert_eq!(outer.len(), 2, "body, ignore");
        let b = set.get("b").unwrap();
        let Some(Expr::Concat(items)) = set.body(b) else {
            panic!()
        };
        assert_eq!(items.len(), 2, "(ignore x) (ignore y)");
        assert!(
            matches!(&items[0], Expr::Concat(pair) if pair.len() == 2 && matches!(pair[0], Expr::Rule(_)))
        );
        compiles("start: \"a\" b*\nb: \"x\" \"y\"\n%ignore \" \"\n%ignore /#[^\\n]*/");
    }

    #[test]
    fn ignored_text_goes_between_terminals_never_inside() {
        let g = compiles("start: \"a\" b* T\nb: \"x\" \"y\"\nT: \"t\" \"u\"\n%ignore \" \"");
        for ok in ["atu", " a x y x  y tu ", "a xyxy tu", "axytu  "] {
            assert!(g.matches(ok.as_bytes()).unwrap(), "{ok:?}");
        }
        for bad in ["a t u", "ax y tu x", "a  x"] {
            assert!(!g.matches(bad.as_bytes()).unwrap(), "{bad:?}");
        }
        // Without `%ignore`, nothing is ignored.
        let g = compiles("start: \"a\" \"b\"");
        assert!(!g.matches(b"a b").unwrap());
    }

    #[test]
    fn flags_and_case_insensitive_strings() {
        let g = compiles("start: \"ab\"i /c.d/s /e f # comment\n/x");
        assert!(g.matches(b"aBc\ndef").unwrap());
        assert!(!g.matches(b"abc\nde f").unwrap());
    }

    #[test]
    fn imports_common_terminals() {
        let (set, _) = lark(
            "start: INT WS N\n%import common.INT\n%import common.WS_INLINE -> WS\n%import common (NUMBER, ESCAPED_STRING)\nN: NUMBER | ESCAPED_STRING",
        )
        .unwrap();
        assert!(set.get("WS").is_some() && set.get("WS_INLINE").is_none());
        for (name, regex) in COMMON {
            Expr::regex(regex, name).unwrap();
        }
        let (_, _, reason) = syntax("start: X\n%import common.NOPE");
        assert!(reason.contains("no terminal `NOPE`"), "{reason}");
        let (_, _, reason) = syntax("start: X\n%import python.X");
        assert!(reason.contains("only `%import common`"), "{reason}");
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        for (text, what) in [
            ("start: x\n%declare X", "`%declare`"),
            ("start: x\n%override x: \"a\"", "`%override`"),
            ("start{a}: a", "templates"),
            ("start[lazy]: /a/", "lexeme options"),
            ("start: %json {}", "`%json`"),
            ("start: <|eot|>", "special tokens"),
            ("start: @sub", "grammar references"),
            ("start: /a/l", "flag `l`"),
            ("start: A\nA: B\nB: A", "refers to itself"),
            ("start: A\nA: \"x\" a\na: \"y\"", "cannot use the rule `a`"),
            ("begin: \"x\"", "no `start` rule"),
            ("start: \"x\" )", "expected a newline"),
            ("start: * \"x\"", "item before `*`"),
            ("start: \"x\" ~ 3..1", "below the minimum"),
        ] {
            let (_, _, reason) = syntax(text);
            assert!(reason.contains(what), "{text}: {reason}");
        }
        assert_eq!(
            lark("start: x").unwrap_err(),
            GrammarError::Undefined("x".into())
        );
        assert_eq!(
            lark("start: \"a\"\nstart: \"b\"").unwrap_err(),
            GrammarError::Duplicate("start".into())
        );
        assert!(matches!(
            lark("start: /[/"),
            Err(GrammarError::Regex { .. })
        ));
        assert!(matches!(
            lark("start: \"x\" ~ 1000000"),
            Err(GrammarError::TooLarge { .. })
        ));
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let (line, column, _) = syntax("start: a\na: \"x\"\n  b c: \"y\"");
        assert_eq!(line, 3);
        assert!(column >= 3, "{column}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("start: {}\"a\"{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(syntax(&deep).2.contains("nested deeper"));
        let ops = format!("start: \"a\"{}", "?".repeat(100_000));
        assert!(syntax(&ops).2.contains("nested deeper"));
    }

    #[test]
    fn left_recursion_and_empty_languages() {
        compiles("start: start \"+\" t | t\nt: /[0-9]+/");
        let (set, start) = lark("start: start \"a\"").unwrap();
        assert_eq!(
            set.compile(start, &GrammarConfig::default()).unwrap_err(),
            GrammarError::Empty("start".into())
        );
    }
}
