//! ECMA-262 `pattern`s and string formats as regexes over JSON string bodies.
//!
//! A schema `pattern` is an ECMA-262 regex matched (unanchored) against the *decoded* string.
//! The compiler translates it to `regex-syntax`, anchors it (an unanchored side becomes "any
//! characters"), optionally intersects it with `minLength`/`maxLength` where the pattern's shape
//! allows, and finally re-spells every character as it appears inside a JSON string literal
//! (`"` becomes `\"`, a newline `\n`, ...). Features with no regular equivalent (lookaround,
//! backreferences, word boundaries) are errors, never silently dropped.

use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look, Repetition};

use crate::text::canonical_char;

/// ECMA-262 `\s`: WhiteSpace and LineTerminator code points, as class items.
const ECMA_SPACE: &str =
    r"\t\n\x0B\x0C\r \xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// An ECMA-262 pattern in `regex-syntax` syntax, and for each byte of it the range of the
/// pattern's characters it was translated from (to point errors at what the user wrote).
struct Translation {
    regex: String,
    origin: Vec<(usize, usize)>,
}

/// Translates an ECMA-262 pattern into `regex-syntax` syntax with the same meaning; an error
/// names the character where the offending construct starts.
fn translate(pattern: &str) -> Result<Translation, String> {
    let mut origin = Vec::with_capacity(pattern.len() + 16);
    let mut at = 0;
    translate_items(pattern, &mut origin, &mut at)
        .map(|regex| Translation { regex, origin })
        .map_err(|e| format!("{e}, at character {at}"))
}

/// The translation loop: one item (a character, an escape, a group opening, a quantifier...) per
/// turn, `at` the first character of the current one.
fn translate_items(
    pattern: &str,
    origin: &mut Vec<(usize, usize)>,
    at: &mut usize,
) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    let mut in_class = false;
    let mut class_last_dash = false;
    let mut class_start = 0;
    while i < chars.len() {
        // What the previous item wrote came from `at..i`.
        origin.resize(out.len(), (*at, i));
        *at = i;
        let c = chars[i];
        if in_class {
            match c {
                ']' => {
                    out.push(']');
                    in_class = false;
                }
                '\\' => {
                    i += 1;
                    let e = *chars.get(i).ok_or("pattern ends with a backslash")?;
                    match e {
                        'd' => out.push_str("0-9"),
                        'w' => out.push_str("A-Za-z0-9_"),
                        's' => out.push_str(ECMA_SPACE),
                        'D' => out.push_str("[^0-9]"),
                        'W' => out.push_str("[^A-Za-z0-9_]"),
                        'S' => out.push_str(&format!("[^{ECMA_SPACE}]")),
                        'b' => out.push_str(r"\x08"),
                        'p' | 'P' => i = copy_property(&chars, i, &mut out)?,
                        _ => {
                            let (ch, next) = escape_char(&chars, i)?;
                            i = next;
                            push_char_escape(ch, &mut out);
                        }
                    }
                }
                '[' | '&' | '~' => out.push_str(&format!("\\{c}")),
                '-' if class_last_dash => out.push_str(r"\-"),
                c => out.push(c),
            }
            class_last_dash = c == '-';
            i += 1;
            continue;
        }
        match c {
            '\\' => {
                i += 1;
                let e = *chars.get(i).ok_or("pattern ends with a backslash")?;
                match e {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[A-Za-z0-9_]"),
                    'W' => out.push_str("[^A-Za-z0-9_]"),
                    's' => out.push_str(&format!("[{ECMA_SPACE}]")),
                    'S' => out.push_str(&format!("[^{ECMA_SPACE}]")),
                    'b' | 'B' => return Err("word boundary assertions are not supported".into()),
                    '1'..='9' => return Err("backreferences are not supported".into()),
                    'k' if chars.get(i + 1) == Some(&'<') => {
                        return Err("backreferences are not supported".into());
                    }
                    'p' | 'P' => i = copy_property(&chars, i, &mut out)?,
                    _ => {
                        let (ch, next) = escape_char(&chars, i)?;
                        i = next;
                        push_char_escape(ch, &mut out);
                    }
                }
            }
            '.' => out.push_str(r"[^\n\r\x{2028}\x{2029}]"),
            '(' => {
                let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
                if rest.starts_with("(?=")
                    || rest.starts_with("(?!")
                    || rest.starts_with("(?<=")
                    || rest.starts_with("(?<!")
                {
                    return Err("lookaround assertions are not supported".into());
                }
                if rest.starts_with("(?<") {
                    out.push_str("(?P<");
                    i += 2;
                } else {
                    out.push('(');
                }
            }
            '{' => {
                // A quantifier `{n}`, `{n,}`, `{n,m}` passes through; any other brace is a
                // literal (ECMA-262 Annex B).
                let end = chars[i..].iter().position(|&c| c == '}').map(|p| i + p);
                let quant = end.and_then(|e| {
                    let body: String = chars[i + 1..e].iter().collect();
                    let mut parts = body.splitn(2, ',');
                    let a = parts.next()?;
                    let ok = !a.is_empty()
                        && a.bytes().all(|b| b.is_ascii_digit())
                        && parts
                            .next()
                            .is_none_or(|b| b.bytes().all(|b| b.is_ascii_digit()));
                    ok.then_some((e, body))
                });
                match quant {
                    Some((e, body)) => {
                        out.push_str(&format!("{{{body}}}"));
                        i = e;
                    }
                    None => out.push_str(r"\{"),
                }
            }
            '}' => out.push_str(r"\}"),
            '[' => {
                match (chars.get(i + 1), chars.get(i + 2)) {
                    (Some(']'), _) => {
                        out.push_str(r"[^\x00-\x{10FFFF}]");
                        i += 2;
                        continue;
                    }
                    (Some('^'), Some(']')) => {
                        out.push_str(r"[\x00-\x{10FFFF}]");
                        i += 3;
                        continue;
                    }
                    (Some('^'), _) => {
                        out.push_str("[^");
                        i += 1;
                    }
                    _ => out.push('['),
                }
                in_class = true;
                class_last_dash = false;
                class_start = *at;
            }
            ' ' | '#' => out.push_str(&regex_syntax::escape(&c.to_string())),
            c => out.push(c),
        }
        i += 1;
    }
    origin.resize(out.len(), (*at, i));
    if in_class {
        *at = class_start;
        return Err("unterminated character class".into());
    }
    Ok(out)
}

/// Copies a `\p{..}`/`\P{..}` property escape starting at `chars[i]` (the `p`); returns the
/// index of its last character.
fn copy_property(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    if chars.get(i + 1) != Some(&'{') {
        return Err("malformed \\p escape".into());
    }
    let end = chars[i..]
        .iter()
        .position(|&c| c == '}')
        .ok_or("unterminated \\p escape")?;
    out.push('\\');
    out.extend(&chars[i..=i + end]);
    Ok(i + end)
}

/// Decodes the escape whose letter is at `chars[i]`; returns the character and the index of the
/// escape's last character.
fn escape_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let hex = |from: usize, len: usize| -> Option<u32> {
        let s: String = chars.get(from..from + len)?.iter().collect();
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(&s, 16).ok()
    };
    let simple = |c: char| Ok((c, i));
    match chars[i] {
        'n' => simple('\n'),
        'r' => simple('\r'),
        't' => simple('\t'),
        'f' => simple('\u{c}'),
        'v' => simple('\u{b}'),
        '0' => simple('\0'),
        'c' => match chars.get(i + 1) {
            Some(l) if l.is_ascii_alphabetic() => Ok((char::from(*l as u8 % 32), i + 1)),
            _ => simple('c'),
        },
        'x' => match hex(i + 1, 2) {
            Some(v) => Ok((char::from(v as u8), i + 2)),
            None => simple('x'),
        },
        'u' if chars.get(i + 1) == Some(&'{') => {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("unterminated \\u{..}")?;
            let s: String = chars[i + 2..i + end].iter().collect();
            let v = u32::from_str_radix(&s, 16).map_err(|_| "malformed \\u{..}")?;
            Ok((char::from_u32(v).ok_or("invalid code point")?, i + end))
        }
        'u' => match hex(i + 1, 4) {
            Some(hi @ 0xD800..=0xDBFF) => {
                let lo = (chars.get(i + 5) == Some(&'\\') && chars.get(i + 6) == Some(&'u'))
                    .then(|| hex(i + 7, 4))
                    .flatten()
                    .filter(|lo| (0xDC00..=0xDFFF).contains(lo))
                    .ok_or("lone surrogate escape")?;
                let v = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                Ok((char::from_u32(v).ok_or("invalid code point")?, i + 10))
            }
            Some(0xDC00..=0xDFFF) => Err("lone surrogate escape".into()),
            Some(v) => Ok((char::from_u32(v).ok_or("invalid code point")?, i + 4)),
            None => simple('u'),
        },
        c => simple(c),
    }
}

/// Writes `c` as a hex escape, valid both inside and outside a class.
fn push_char_escape(c: char, out: &mut String) {
    out.push_str(&format!("\\x{{{:X}}}", c as u32));
}

/// Parses a translated pattern; the error is regex-syntax's reason and the byte range of the
/// regex it points at.
fn parse(regex: &str) -> Result<Hir, (String, usize, usize)> {
    regex_syntax::ParserBuilder::new()
        .utf8(true)
        .unicode(true)
        .nest_limit(100)
        .build()
        .parse(regex)
        .map_err(|e| syntax_error(&e))
}

/// regex-syntax's reason for refusing a regex, and the byte range of the regex it points at.
fn syntax_error(e: &regex_syntax::Error) -> (String, usize, usize) {
    let (kind, span) = match e {
        regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span()),
        regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span()),
        other => return (other.to_string(), 0, 0),
    };
    (kind, span.start.offset, span.end.offset)
}

/// How deep regex-syntax's parser lets groups, alternations, concatenations, repetitions and
/// classes nest by default: regex-automata (and so `formwork-index`, which builds the compiler's
/// regexes with regex-automata's defaults) parses with this limit.
pub(crate) const PARSER_NEST_LIMIT: u32 = 250;

/// Checks that a regex the compiler generated parses the way regex-automata parses a pattern by
/// default, and so the way `formwork-index` builds it. The error is regex-syntax's reason.
///
/// Parsing a large regex takes a while (about 0.3 s per megabyte), so a regex that
/// [`nesting_bound`] shows to be shallow enough is not parsed: the compiler writes its regexes
/// from valid pieces, and nesting is the one limit their composition can break.
pub(crate) fn check_generated(regex: &str) -> Result<(), String> {
    if nesting_bound(regex) <= PARSER_NEST_LIMIT as usize {
        return Ok(());
    }
    regex_syntax::ParserBuilder::new()
        .nest_limit(PARSER_NEST_LIMIT)
        .build()
        .parse(regex)
        .map(drop)
        .map_err(|e| syntax_error(&e).0)
}

/// An upper bound, from one pass over the bytes, on the nesting regex-syntax's parser counts
/// against its limit. Inside one group there are at most four levels (an alternation, a
/// concatenation, a repetition and the next group), inside a class at most two (the class and
/// a union); the top level adds an alternation, a concatenation and a repetition.
fn nesting_bound(regex: &str) -> usize {
    let bytes = regex.as_bytes();
    let (mut groups, mut classes, mut deepest) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 1,
            b'[' => {
                classes += 1;
                // A `]` right after `[` or `[^` is a literal.
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if classes > 0 => classes -= 1,
            b'(' if classes == 0 => groups += 1,
            b')' if classes == 0 => groups = groups.saturating_sub(1),
            _ => {}
        }
        deepest = deepest.max(4 * groups + 2 * classes);
        i += 1;
    }
    deepest + 3
}

/// Any single Unicode scalar value.
fn any_char() -> Hir {
    Hir::class(Class::Unicode(ClassUnicode::new([ClassUnicodeRange::new(
        '\0',
        char::MAX,
    )])))
}

fn any_chars() -> Hir {
    Hir::repetition(Repetition {
        min: 0,
        max: None,
        greedy: true,
        sub: Box::new(any_char()),
    })
}

/// The decoded-string language of an ECMA-262 `pattern` (search semantics), as a full-match
/// HIR without anchors.
///
/// A pattern regex-syntax refuses is reported with its reason and the characters of the
/// pattern it points at.
pub(crate) fn pattern_language(pattern: &str) -> Result<Hir, String> {
    let t = translate(pattern)?;
    let hir = parse(&t.regex).map_err(|(reason, start, end)| {
        let chars = pattern.chars().count();
        let from = t.origin.get(start).map_or(chars, |o| o.0);
        let to = match end.checked_sub(1) {
            Some(last) if end > start => t.origin.get(last).map_or(chars, |o| o.1),
            _ => from,
        };
        let snippet: String = pattern
            .chars()
            .skip(from)
            .take(to.saturating_sub(from).min(40))
            .collect();
        format!("{reason}, at characters {from}..{to} (`{snippet}`)")
    })?;
    anchor(hir)
}

/// The decoded-string language of a regex that is already meant as a full match (formats).
pub(crate) fn full_match_language(regex: &str) -> Result<Hir, String> {
    parse(regex).map_err(|e| e.0)
}

/// Branches of a HIR as flat sequences, with alternations containing anchors expanded so that
/// every `^` and `$` ends up at the edge of a branch (or is reported).
fn branches(hir: &Hir, out: &mut Vec<Vec<Hir>>) -> Result<(), String> {
    if hir.properties().look_set().is_empty() {
        out.push(vec![hir.clone()]);
        return Ok(());
    }
    match hir.kind() {
        HirKind::Capture(c) => branches(&c.sub, out),
        HirKind::Alternation(subs) => subs.iter().try_for_each(|h| branches(h, out)),
        HirKind::Concat(subs) => {
            let mut acc: Vec<Vec<Hir>> = vec![Vec::new()];
            for h in subs {
                let mut parts = Vec::new();
                branches(h, &mut parts)?;
                let mut next = Vec::with_capacity(acc.len() * parts.len());
                for a in &acc {
                    for p in &parts {
                        let mut seq = a.clone();
                        seq.extend(p.iter().cloned());
                        next.push(seq);
                    }
                }
                if next.len() > 256 {
                    return Err("too many alternatives around anchors".into());
                }
                acc = next;
            }
            out.extend(acc);
            Ok(())
        }
        _ => {
            out.push(vec![hir.clone()]);
            Ok(())
        }
    }
}

fn anchor(hir: Hir) -> Result<Hir, String> {
    let mut all = Vec::new();
    branches(&hir, &mut all)?;
    let mut alts = Vec::with_capacity(all.len());
    for mut items in all {
        items.retain(|h| !matches!(h.kind(), HirKind::Empty));
        let mut start = false;
        while matches!(
            items.first().map(Hir::kind),
            Some(HirKind::Look(Look::Start))
        ) {
            items.remove(0);
            start = true;
        }
        let mut end = false;
        while matches!(items.last().map(Hir::kind), Some(HirKind::Look(Look::End))) {
            items.pop();
            end = true;
        }
        if items.is_empty() && (start || end) && !(start && end) {
            // `^` alone or `$` alone: any string.
            alts.push(any_chars());
            continue;
        }
        alts.push(wrap(items, start, end)?);
    }
    Ok(Hir::alternation(alts))
}

fn wrap(items: Vec<Hir>, start: bool, end: bool) -> Result<Hir, String> {
    if items.iter().any(|h| !h.properties().look_set().is_empty()) {
        return Err("anchors or assertions in the middle of a pattern are not supported".into());
    }
    let mut all = Vec::with_capacity(items.len() + 2);
    if !start {
        all.push(any_chars());
    }
    all.extend(items);
    if !end {
        all.push(any_chars());
    }
    Ok(Hir::concat(all))
}

/// Bounds on the number of characters a HIR matches.
fn char_len(hir: &Hir) -> (usize, Option<usize>) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => (0, Some(0)),
        HirKind::Literal(l) => {
            let n = String::from_utf8_lossy(&l.0).chars().count();
            (n, Some(n))
        }
        HirKind::Class(_) => (1, Some(1)),
        HirKind::Repetition(r) => {
            let (lo, hi) = char_len(&r.sub);
            let max = match (r.max, hi) {
                (Some(m), Some(h)) => Some((m as usize).saturating_mul(h)),
                (_, Some(0)) => Some(0),
                _ => None,
            };
            ((r.min as usize).saturating_mul(lo), max)
        }
        HirKind::Capture(c) => char_len(&c.sub),
        HirKind::Concat(subs) => subs.iter().fold((0, Some(0)), |(lo, hi), h| {
            let (l, m) = char_len(h);
            (
                lo.saturating_add(l),
                hi.zip(m).map(|(a, b)| a.saturating_add(b)),
            )
        }),
        HirKind::Alternation(subs) => {
            let lens: Vec<_> = subs.iter().map(char_len).collect();
            let lo = lens.iter().map(|l| l.0).min().unwrap_or(0);
            let hi = lens
                .iter()
                .try_fold(0usize, |acc, l| l.1.map(|m| acc.max(m)));
            (lo, hi)
        }
    }
}

fn flatten_concat(hir: &Hir, out: &mut Vec<Hir>) {
    match hir.kind() {
        HirKind::Concat(subs) => subs.iter().for_each(|h| flatten_concat(h, out)),
        HirKind::Capture(c) => flatten_concat(&c.sub, out),
        _ => out.push(hir.clone()),
    }
}

/// Restricts a decoded-string language to strings of `min..=max` characters.
///
/// Exact when the language already fits. Otherwise the pattern must be a sequence of fixed-length
/// pieces and repetitions of single characters: every repetition but the last is pinned to its
/// minimum and the last absorbs the length bounds. That accepts a subset of the valid strings
/// (never an invalid one); patterns of any other shape are refused.
pub(crate) fn restrict_length(hir: Hir, min: usize, max: Option<usize>) -> Result<Hir, String> {
    let (lo, hi) = char_len(&hir);
    let fits_hi = match (hi, max) {
        (_, None) => true,
        (Some(h), Some(m)) => h <= m,
        (None, Some(_)) => false,
    };
    if lo >= min && fits_hi {
        return Ok(hir);
    }
    if let HirKind::Alternation(subs) = hir.kind() {
        let kept: Vec<Hir> = subs
            .iter()
            .filter_map(|h| restrict_length(h.clone(), min, max).ok())
            .collect();
        if kept.is_empty() {
            return Err("no alternative of the pattern fits minLength/maxLength".into());
        }
        return Ok(Hir::alternation(kept));
    }
    let mut items = Vec::new();
    flatten_concat(&hir, &mut items);
    let adjustable = |h: &Hir| match h.kind() {
        HirKind::Repetition(r) => char_len(&r.sub) == (1, Some(1)),
        _ => false,
    };
    let mut absorber = None;
    for (i, h) in items.iter_mut().enumerate() {
        let (l, m) = char_len(h);
        if Some(l) == m {
            continue;
        }
        if !adjustable(h) {
            // Any other variable piece is pinned to its shortest strings (a subset).
            *h = pin_shortest(h).ok_or(
                "pattern combined with minLength/maxLength has a shape the compiler cannot bound",
            )?;
            continue;
        }
        absorber = Some(i);
    }
    if absorber.is_none() {
        let (lo, hi) = char_len(&Hir::concat(items.clone()));
        if lo >= min && hi.is_some_and(|h| max.is_none_or(|m| h <= m)) {
            return Ok(Hir::concat(items));
        }
    }
    let Some(absorber) = absorber else {
        return Err("pattern's fixed length is outside minLength/maxLength".into());
    };
    let mut fixed = 0usize;
    for (i, h) in items.iter_mut().enumerate() {
        if i == absorber {
            continue;
        }
        if let HirKind::Repetition(r) = h.kind()
            && adjustable(h)
        {
            let r = Repetition {
                max: Some(r.min),
                ..r.clone()
            };
            *h = Hir::repetition(r);
        }
        fixed = fixed.saturating_add(char_len(h).0);
    }
    let HirKind::Repetition(r) = items[absorber].kind() else {
        return Err("internal: absorber is not a repetition".into());
    };
    let new_min = (r.min as usize).max(min.saturating_sub(fixed));
    let new_max = match (r.max, max) {
        (Some(a), Some(b)) => Some((a as usize).min(b.checked_sub(fixed).ok_or("too long")?)),
        (Some(a), None) => Some(a as usize),
        (None, Some(b)) => Some(
            b.checked_sub(fixed)
                .ok_or("pattern is longer than maxLength")?,
        ),
        (None, None) => None,
    };
    if new_max.is_some_and(|m| m < new_min) {
        return Err("pattern cannot satisfy minLength/maxLength".into());
    }
    let to_u32 = |n: usize| u32::try_from(n).map_err(|_| "length bound too large".to_string());
    items[absorber] = Hir::repetition(Repetition {
        min: to_u32(new_min)?,
        max: new_max.map(to_u32).transpose()?,
        ..r.clone()
    });
    Ok(Hir::concat(items))
}

/// The strings of `hir` of its minimum length, as a fixed-length HIR.
fn pin_shortest(hir: &Hir) -> Option<Hir> {
    let (lo, _) = char_len(hir);
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Literal(_) | HirKind::Class(_) => {
            Some(hir.clone())
        }
        HirKind::Capture(c) => pin_shortest(&c.sub),
        HirKind::Concat(subs) => Some(Hir::concat(
            subs.iter().map(pin_shortest).collect::<Option<_>>()?,
        )),
        HirKind::Alternation(subs) => {
            let kept: Vec<Hir> = subs
                .iter()
                .filter(|h| char_len(h).0 == lo)
                .filter_map(pin_shortest)
                .collect();
            (!kept.is_empty()).then(|| Hir::alternation(kept))
        }
        HirKind::Repetition(r) => {
            if r.min == 0 {
                return Some(Hir::empty());
            }
            let sub = pin_shortest(&r.sub)?;
            Some(Hir::repetition(Repetition {
                min: r.min,
                max: Some(r.min),
                greedy: r.greedy,
                sub: Box::new(sub),
            }))
        }
    }
}

/// Re-spells a decoded-string language as the bodies of JSON string literals (canonical
/// escapes for `"`, `\` and control characters).
pub(crate) fn encode_json(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => hir.clone(),
        HirKind::Literal(l) => {
            let mut s = String::new();
            for c in String::from_utf8_lossy(&l.0).chars() {
                canonical_char(c, &mut s);
            }
            Hir::literal(s.into_bytes())
        }
        HirKind::Class(Class::Unicode(cls)) => encode_class(cls),
        HirKind::Class(Class::Bytes(b)) => match b.to_unicode_class() {
            Some(cls) => encode_class(&cls),
            None => Hir::fail(),
        },
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            sub: Box::new(encode_json(&r.sub)),
            ..r.clone()
        }),
        HirKind::Capture(c) => encode_json(&c.sub),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(encode_json).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(encode_json).collect()),
    }
}

fn encode_class(cls: &ClassUnicode) -> Hir {
    let special = ClassUnicode::new([
        ClassUnicodeRange::new('\0', '\u{1f}'),
        ClassUnicodeRange::new('"', '"'),
        ClassUnicodeRange::new('\\', '\\'),
    ]);
    let mut plain = cls.clone();
    plain.difference(&special);
    let mut escaped = cls.clone();
    escaped.intersect(&special);
    let mut alts = Vec::new();
    if !plain.ranges().is_empty() {
        alts.push(Hir::class(Class::Unicode(plain)));
    }
    for range in escaped.ranges() {
        for c in range.start()..=range.end() {
            let mut s = String::new();
            canonical_char(c, &mut s);
            alts.push(Hir::literal(s.into_bytes()));
        }
    }
    if alts.is_empty() {
        Hir::fail()
    } else {
        Hir::alternation(alts)
    }
}

/// Whether the decoded string `s` is in the language (used to filter `enum` values and
/// property names).
pub(crate) fn matches(hir: &Hir, s: &str) -> bool {
    full_matcher(hir).is_some_and(|re| re.is_match(s))
}

/// A full-match matcher for a decoded-string language, to test many strings against one
/// pattern without rebuilding it (`None` if it exceeds the matcher's limits).
pub(crate) fn full_matcher(hir: &Hir) -> Option<regex_automata::meta::Regex> {
    regex_automata::meta::Builder::new()
        .build_from_hir(&Hir::concat(vec![
            Hir::look(Look::Start),
            hir.clone(),
            Hir::look(Look::End),
        ]))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    fn encoded(pattern: &str) -> Regex {
        let hir = encode_json(&pattern_language(pattern).expect("translates"));
        Regex::new(&format!("^(?:{hir})$")).expect("valid")
    }

    #[test]
    fn search_semantics_and_anchors() {
        let r = encoded("ab");
        assert!(r.is_match("xxabyy") && !r.is_match("a b"));
        let r = encoded("^ab$");
        assert!(r.is_match("ab") && !r.is_match("xab"));
        let r = encoded("^a|b$");
        assert!(r.is_match("axx") && r.is_match("xxb") && !r.is_match("xax"));
        let r = encoded("^(foo|bar)$");
        assert!(r.is_match("foo") && !r.is_match("foox"));
    }

    #[test]
    fn ecma_classes_are_ascii_and_json_escaped() {
        let r = encoded(r"^\d+$");
        assert!(r.is_match("0123") && !r.is_match("٣"));
        let r = encoded(r#"^[^a]$"#);
        assert!(r.is_match(r#"\""#) && r.is_match(r"\n") && r.is_match("b") && !r.is_match("\""));
        let r = encoded(r"^a{$");
        assert!(r.is_match("a{"));
        let r = encoded(r"^\u00e9\/$");
        assert!(r.is_match("é/"));
    }

    #[test]
    fn unsupported_features_are_errors() {
        for p in [r"(?=a)b", r"(a)\1", r"\bword", "a^b", "[abc"] {
            assert!(pattern_language(p).is_err(), "{p}");
        }
    }

    #[test]
    fn the_nesting_bound_never_underestimates_the_parser() {
        let nested =
            |open: &str, n: usize, close: &str| format!("{}x{}", open.repeat(n), close.repeat(n));
        for regex in [
            nested("(?:a|", 30, ")"),
            nested("(?:a(?:b|c)?", 20, ")*"),
            nested("(?:(?:", 25, ")?)+"),
            format!("{}{}", nested("(?:[^a[b-c]]", 10, ")"), r"[]\]]"),
            r#"(?:"a"|[^"\\\x00-\x1F]{2})*|(?:\[[ \t]*\])?"#.to_string(),
        ] {
            let bound = nesting_bound(&regex) as u32;
            let parsed = regex_syntax::ParserBuilder::new()
                .nest_limit(bound)
                .build()
                .parse(&regex);
            assert!(parsed.is_ok(), "{regex}: bound {bound}: {parsed:?}");
        }
    }

    #[test]
    fn generated_regexes_are_checked_against_regex_automata_limits() {
        // The check agrees with regex-automata's default parser around the limit.
        for n in [60, 82, 83, 124, 125, 126, 200] {
            let regex = format!("{}x{}", "(?:a|".repeat(n), ")".repeat(n));
            let automata = regex_automata::meta::Regex::new(&regex).is_ok();
            assert_eq!(check_generated(&regex).is_ok(), automata, "{n}");
        }
        let err = check_generated(&format!("{}x{}", "(?:a|".repeat(200), ")".repeat(200)));
        assert!(err.unwrap_err().contains("nested"));
    }

    #[test]
    fn length_restriction_is_a_subset() {
        let hir = restrict_length(pattern_language(r"^[a-z]+-[0-9]+$").unwrap(), 3, Some(6))
            .expect("restricts");
        let r = Regex::new(&format!("^(?:{})$", encode_json(&hir))).unwrap();
        // The last repetition absorbs the bounds; the others are pinned to their minimum.
        assert!(r.is_match("a-1") && r.is_match("a-1234") && !r.is_match("a-12345"));
        assert!(!r.is_match("ab-1"));
        let hir = restrict_length(pattern_language("x").unwrap(), 0, Some(3)).unwrap();
        let r = Regex::new(&format!("^(?:{})$", encode_json(&hir))).unwrap();
        assert!(r.is_match("x") && r.is_match("xab") && !r.is_match("abcd"));
    }
}
