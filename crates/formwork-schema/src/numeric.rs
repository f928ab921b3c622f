//! Regexes for JSON numbers: exact integer ranges and exact decimal ranges.
//!
//! Bounds are handled as decimal digit strings, never as floats, so `minimum: 0.1` means 0.1
//! exactly and `maximum: 1e30` does not overflow. Integer ranges are exact (`-5..=300` matches
//! precisely those integers, written without leading zeros). Bounded numbers are written without
//! an exponent; every value in range is reachable with a plain decimal, so dropping exponents
//! only removes other spellings of the same values.
//!
//! Validators compare numbers as IEEE doubles, though, so an exclusive bound is kept two doubles
//! clear of the bound's double ([`Bound::for_doubles`]): a value just inside it in exact
//! decimals may be the bound's own double.

use std::cmp::Ordering;

/// A decimal number as digit strings: `int` has no leading zeros (`"0"` for zero) and `frac`
/// has no trailing zeros. Zero is never negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub neg: bool,
    pub int: String,
    pub frac: String,
}

/// A bound on a number: the value and whether it is exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bound {
    pub value: Decimal,
    pub exclusive: bool,
}

/// JSON numbers (RFC 8259) with at most 16 integer digits, 16 fraction digits and a two-digit
/// exponent: every such number is finite as an IEEE double, so any JSON parser reads it (a
/// `1e999` is valid JSON that many parsers reject).
pub(crate) const ANY_NUMBER: &str =
    r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,2})?";
/// JSON integers of at most 18 digits (they fit a 64-bit integer), without `-0`.
pub(crate) const ANY_INTEGER: &str = r"(?:0|-?[1-9][0-9]{0,17})";
/// Most digits an integer part gets where the schema sets no upper bound.
const MAX_UNBOUNDED_DIGITS: usize = 18;

impl Decimal {
    /// Parses a JSON number's text (`-12.5e-3`) into its exact decimal digits.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (neg, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (ip, fp) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        if ip.is_empty() && fp.is_empty() {
            return None;
        }
        if !ip.bytes().chain(fp.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Move the decimal point by `exp`, bounded so absurd exponents cannot allocate much.
        if exp.abs() > 400 {
            return None;
        }
        Some(Decimal::from_digits(
            neg,
            &format!("{ip}{fp}"),
            ip.len() as i64 + exp,
        ))
    }

    /// The number `digits` with the decimal point `point` digits from their left (negative:
    /// zeros before them; past their end: zeros after them), normalized.
    fn from_digits(neg: bool, digits: &str, point: i64) -> Decimal {
        let (int, frac) = if point <= 0 {
            (
                String::new(),
                format!("{}{}", "0".repeat((-point) as usize), digits),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{}{}", digits, "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            (
                digits[..point as usize].to_string(),
                digits[point as usize..].to_string(),
            )
        };
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let neg = neg && !(int == "0" && frac.is_empty());
        Decimal {
            neg,
            int: int.to_string(),
            frac: frac.to_string(),
        }
    }

    /// The decimal value of a JSON number.
    pub fn from_json(n: &serde_json::Number) -> Option<Decimal> {
        Decimal::parse(&n.to_string())
    }

    fn zero() -> Decimal {
        Decimal {
            neg: false,
            int: "0".into(),
            frac: String::new(),
        }
    }

    fn is_integer(&self) -> bool {
        self.frac.is_empty()
    }

    fn abs(&self) -> Decimal {
        Decimal {
            neg: false,
            ..self.clone()
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.int == "0" && self.frac.is_empty()
    }

    /// The smallest integer >= self.
    fn ceil(&self) -> Decimal {
        if self.is_integer() {
            self.clone()
        } else if self.neg {
            signed(true, self.int.clone())
        } else {
            signed(false, inc(&self.int))
        }
    }

    /// The largest integer <= self.
    fn floor(&self) -> Decimal {
        if self.is_integer() {
            self.clone()
        } else if self.neg {
            signed(true, inc(&self.int))
        } else {
            signed(false, self.int.clone())
        }
    }

    /// self + 1 for an integer.
    fn succ(&self) -> Decimal {
        if self.neg {
            signed(true, dec(&self.int))
        } else {
            signed(false, inc(&self.int))
        }
    }

    /// self - 1 for an integer.
    fn pred(&self) -> Decimal {
        if self.neg || self.is_zero() {
            signed(true, inc(&self.int))
        } else {
            signed(false, dec(&self.int))
        }
    }

    /// The double nearest to this value (correctly rounded; infinite past the largest double).
    fn to_f64(&self) -> f64 {
        let sign = if self.neg { "-" } else { "" };
        format!("{sign}{}.{}0", self.int, self.frac)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// This value rounded to at most `places` fraction digits, toward +∞ when `up`, else toward
    /// −∞.
    fn round_to(&self, places: usize, up: bool) -> Decimal {
        let Some(kept) = self.frac.get(..places).filter(|_| self.frac.len() > places) else {
            return self.clone();
        };
        let digits = format!("{}{kept}", self.int);
        // Dropping digits moves toward zero; rounding away from zero adds one unit in the last
        // place kept.
        let digits = if up != self.neg { inc(&digits) } else { digits };
        let point = digits.len() as i64 - places as i64;
        Decimal::from_digits(self.neg, &digits, point)
    }
}

impl Bound {
    /// This bound as validators that read numbers as IEEE doubles apply it, with a margin for
    /// parsers that round a long number to a neighbour of the nearest double (serde_json's
    /// default parser does).
    ///
    /// Validators compare the document's double with the bound's double `b`, so a value on the
    /// right side of an exclusive bound in exact decimals can still round onto `b` and fail
    /// (`-1.0999999999999999096…` against `exclusiveMaximum: -1.0999999999999999`). An
    /// exclusive bound therefore becomes the inclusive bound two doubles inside `b`, written
    /// as the shortest decimal that rounds to that double: rounding is monotonic, so every value
    /// on its side rounds at most to it, and a parser one double off still stays strictly
    /// inside `b`. Its fraction is capped at 17 digits more than the bound's own (rounded
    /// inward, so still sound); the cap only bites next to zero, where `exclusiveMinimum: 0`
    /// would otherwise need a 323-digit fraction (it becomes `minimum: 1e-17`).
    ///
    /// Inclusive bounds stay as they are: a value on the inside rounds at most onto `b`, which
    /// satisfies the bound, and a margin would exclude the bound itself (`maximum: 100` could
    /// not produce `100`). Only a parser that is off by a double for a value rounding exactly
    /// onto `b` could reject it.
    ///
    /// `lower` says whether this is a minimum. A bound beyond the doubles' range (never the
    /// case for serde_json's numbers) is returned unchanged where stepping inside it leaves no
    /// finite double.
    pub(crate) fn for_doubles(&self, lower: bool) -> Bound {
        if !self.exclusive {
            return self.clone();
        }
        let b = self.value.to_f64();
        let inside = if lower {
            b.next_up().next_up()
        } else {
            b.next_down().next_down()
        };
        let Some(value) = inside
            .is_finite()
            .then(|| Decimal::parse(&format!("{inside:e}")))
            .flatten()
        else {
            return self.clone();
        };
        let value = value.round_to(self.value.frac.len() + 17, lower);
        let tighter = if lower {
            value > self.value
        } else {
            value < self.value
        };
        if tighter {
            Bound {
                value,
                exclusive: false,
            }
        } else {
            self.clone()
        }
    }
}

fn signed(neg: bool, int: String) -> Decimal {
    let neg = neg && int != "0";
    Decimal {
        neg,
        int,
        frac: String::new(),
    }
}

fn cmp_magnitude(a: &Decimal, b: &Decimal) -> Ordering {
    a.int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(&b.int))
        .then_with(|| a.frac.cmp(&b.frac))
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_magnitude(self, other),
            (true, true) => cmp_magnitude(other, self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Increments a non-negative digit string.
fn inc(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 1);
    out.push('1');
    out.push_str(&String::from_utf8(bytes).unwrap_or_default());
    out
}

/// Decrements a positive digit string.
fn dec(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'0' {
            *b = b'9';
        } else {
            *b -= 1;
            break;
        }
    }
    let s = String::from_utf8(bytes).unwrap_or_default();
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

fn alternation(alts: Vec<String>) -> Option<String> {
    match alts.len() {
        0 => None,
        1 => alts.into_iter().next(),
        _ => Some(format!("(?:{})", alts.join("|"))),
    }
}

fn digit_class(lo: u8, hi: u8) -> String {
    match hi - lo {
        0 => (lo as char).to_string(),
        1 => format!("[{}{}]", lo as char, hi as char),
        _ if lo == b'0' && hi == b'9' => "[0-9]".into(),
        _ => format!("[{}-{}]", lo as char, hi as char),
    }
}

fn repeat_any_digit(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => "[0-9]".into(),
        _ => format!("[0-9]{{{n}}}"),
    }
}

/// Digit strings of the same length as `lo` and `hi`, between them inclusive.
fn same_len(lo: &[u8], hi: &[u8]) -> String {
    if lo.is_empty() {
        return String::new();
    }
    if lo == hi {
        return String::from_utf8_lossy(lo).into_owned();
    }
    let n = lo.len();
    if lo[0] == hi[0] {
        return format!("{}{}", lo[0] as char, same_len(&lo[1..], &hi[1..]));
    }
    let lo_rest_min = lo[1..].iter().all(|&d| d == b'0');
    let hi_rest_max = hi[1..].iter().all(|&d| d == b'9');
    let mut alts = Vec::new();
    let first = if lo_rest_min {
        lo[0]
    } else {
        let nines = vec![b'9'; n - 1];
        alts.push(format!("{}{}", lo[0] as char, same_len(&lo[1..], &nines)));
        lo[0] + 1
    };
    let last = if hi_rest_max { hi[0] } else { hi[0] - 1 };
    if first <= last {
        alts.push(format!(
            "{}{}",
            digit_class(first, last),
            repeat_any_digit(n - 1)
        ));
    }
    if !hi_rest_max {
        let zeros = vec![b'0'; n - 1];
        alts.push(format!("{}{}", hi[0] as char, same_len(&zeros, &hi[1..])));
    }
    alternation(alts).unwrap_or_default()
}

/// Non-negative integers in `[lo, hi]` (digit strings without leading zeros), `hi = None`
/// meaning unbounded. Returns `None` when the range is empty.
fn nonneg_range(lo: &str, hi: Option<&str>) -> Option<String> {
    let (lo, hi) = (lo.as_bytes(), hi.map(str::as_bytes));
    if let Some(hi) = hi {
        if (lo.len(), lo) > (hi.len(), hi) {
            return None;
        }
        if lo.len() == hi.len() {
            return Some(same_len(lo, hi));
        }
    }
    let la = lo.len();
    let mut alts = vec![same_len(lo, &vec![b'9'; la])];
    match hi {
        Some(hi) => {
            let lb = hi.len();
            if lb >= la + 2 {
                let (a, b) = (la, lb - 2);
                alts.push(if a == b {
                    format!("[1-9]{}", repeat_any_digit(a))
                } else {
                    format!("[1-9][0-9]{{{a},{b}}}")
                });
            }
            let mut low = vec![b'0'; lb];
            low[0] = b'1';
            alts.push(same_len(&low, hi));
        }
        None => {
            // Unbounded above: capped at a length every parser reads exactly (a subset).
            let top = MAX_UNBOUNDED_DIGITS.max(la + 1) - 1;
            if top >= la {
                alts.push(format!("[1-9][0-9]{{{la},{top}}}"));
            }
        }
    }
    alternation(alts)
}

/// A regex for the integers within the bounds (exact).
pub(crate) fn integer_regex(lo: Option<&Bound>, hi: Option<&Bound>) -> Option<String> {
    if lo.is_none() && hi.is_none() {
        return Some(ANY_INTEGER.into());
    }
    // Integers up to 2^53 are doubles, so a validator compares them with the bound exactly;
    // past it a document's integer may be read as a rounded double (serde_json reads those
    // past 64 bits so), and the margin `Bound::for_doubles` explains applies.
    let exact = |b: &Bound| b.value.abs().to_f64() < 9007199254740992.0;
    let lo = lo.map(|b| {
        if exact(b) {
            b.clone()
        } else {
            b.for_doubles(true)
        }
    });
    let hi = hi.map(|b| {
        if exact(b) {
            b.clone()
        } else {
            b.for_doubles(false)
        }
    });
    let lo = lo.map(|b| {
        if b.value.is_integer() && b.exclusive {
            b.value.succ()
        } else {
            b.value.ceil()
        }
    });
    let hi = hi.map(|b| {
        if b.value.is_integer() && b.exclusive {
            b.value.pred()
        } else {
            b.value.floor()
        }
    });
    if let (Some(l), Some(h)) = (&lo, &hi)
        && l > h
    {
        return None;
    }
    let mut alts = Vec::new();
    // Negative integers: magnitudes in [max(1, -hi), -lo].
    if lo.as_ref().is_none_or(|l| l.neg) {
        let min_mag = match &hi {
            Some(h) if h.neg => h.int.clone(),
            _ => "1".into(),
        };
        let max_mag = lo.as_ref().map(|l| l.int.clone());
        if let Some(r) = nonneg_range(&min_mag, max_mag.as_deref()) {
            alts.push(format!("-{r}"));
        }
    }
    // Non-negative integers: [max(0, lo), hi].
    if hi.as_ref().is_none_or(|h| !h.neg) {
        let min = match &lo {
            Some(l) if !l.neg => l.int.clone(),
            _ => "0".into(),
        };
        if let Some(r) = nonneg_range(&min, hi.as_ref().map(|h| h.int.as_str())) {
            alts.push(r);
        }
    }
    alternation(alts)
}

/// A regex for the numbers within the bounds, with at most `max_frac` fraction digits.
///
/// Unbounded numbers use the full JSON grammar with exponents; bounded ones are exact over plain
/// decimals (no exponent).
pub(crate) fn number_regex(
    lo: Option<&Bound>,
    hi: Option<&Bound>,
    max_frac: Option<usize>,
) -> Option<String> {
    if lo.is_none() && hi.is_none() && max_frac.is_none() {
        return Some(ANY_NUMBER.into());
    }
    let lo = lo.map(|b| b.for_doubles(true));
    let hi = hi.map(|b| b.for_doubles(false));
    let (lo, hi) = (lo.as_ref(), hi.as_ref());
    if let (Some(l), Some(h)) = (lo, hi) {
        match l.value.cmp(&h.value) {
            Ordering::Greater => return None,
            Ordering::Equal if l.exclusive || h.exclusive => return None,
            _ => {}
        }
    }
    let zero = Decimal::zero();
    let mut alts = Vec::new();
    // Negative numbers: magnitudes in (|hi| or 0 exclusive, |lo|].
    if lo.is_none_or(|l| l.value.neg) {
        let low = match hi {
            Some(h) if h.value.neg => Bound {
                value: h.value.abs(),
                exclusive: h.exclusive,
            },
            _ => Bound {
                value: zero.clone(),
                exclusive: true,
            },
        };
        let high = lo.map(|l| Bound {
            value: l.value.abs(),
            exclusive: l.exclusive,
        });
        if let Some(r) = magnitude_regex(&low, high.as_ref(), max_frac) {
            alts.push(format!("-{r}"));
        }
    }
    // Non-negative numbers: [max(lo, 0), hi].
    if hi.is_none_or(|h| !h.value.neg) {
        let low = match lo {
            Some(l) if !l.value.neg => l.clone(),
            _ => Bound {
                value: zero,
                exclusive: false,
            },
        };
        if let Some(r) = magnitude_regex(&low, hi, max_frac) {
            alts.push(r);
        }
    }
    alternation(alts)
}

/// Non-negative decimals between the bounds (both non-negative), without exponent.
fn magnitude_regex(low: &Bound, high: Option<&Bound>, max_frac: Option<usize>) -> Option<String> {
    if let Some(h) = high {
        match cmp_magnitude(&low.value, &h.value) {
            Ordering::Greater => return None,
            Ordering::Equal if low.exclusive || h.exclusive => return None,
            _ => {}
        }
    }
    let lo_frac = Some((low.value.frac.as_bytes(), low.exclusive));
    let mut alts = Vec::new();
    match high {
        Some(h) if h.value.int == low.value.int => {
            let hi_frac = Some((h.value.frac.as_bytes(), h.exclusive));
            if let Some(f) = frac_regex(lo_frac, hi_frac, max_frac) {
                alts.push(format!("{}{f}", low.value.int));
            }
        }
        _ => {
            if let Some(f) = frac_regex(lo_frac, None, max_frac) {
                alts.push(format!("{}{f}", low.value.int));
            }
            let any_frac = frac_regex(None, None, max_frac).unwrap_or_default();
            let next = inc(&low.value.int);
            match high {
                Some(h) => {
                    if h.value.int != next {
                        let top = dec(&h.value.int);
                        if let Some(r) = nonneg_range(&next, Some(&top)) {
                            alts.push(format!("{r}{any_frac}"));
                        }
                    }
                    let hi_frac = Some((h.value.frac.as_bytes(), h.exclusive));
                    if let Some(f) = frac_regex(None, hi_frac, max_frac) {
                        alts.push(format!("{}{f}", h.value.int));
                    }
                }
                None => {
                    if let Some(r) = nonneg_range(&next, None) {
                        alts.push(format!("{r}{any_frac}"));
                    }
                }
            }
        }
    }
    alternation(alts)
}

type FracBound<'a> = Option<(&'a [u8], bool)>;

/// The optional fraction (`""` or `\.[0-9]+`) of a number whose fractional value `0.D` lies
/// between the bounds (digit strings without trailing zeros, with exclusivity).
fn frac_regex(lo: FracBound, hi: FracBound, max_frac: Option<usize>) -> Option<String> {
    let zero_ok = lo.is_none_or(|(f, ex)| f.is_empty() && !ex)
        && hi.is_none_or(|(f, ex)| !f.is_empty() || !ex);
    let dotted = if max_frac == Some(0) {
        None
    } else {
        FracGen { lo, hi, max_frac }
            .digits(0, lo.is_some(), hi.is_some(), true)
            .map(|d| format!(r"\.{d}"))
    };
    match (zero_ok, dotted) {
        (true, Some(d)) => Some(format!("(?:{d})?")),
        (true, None) => Some(String::new()),
        (false, d) => d,
    }
}

struct FracGen<'a> {
    lo: FracBound<'a>,
    hi: FracBound<'a>,
    max_frac: Option<usize>,
}

impl FracGen<'_> {
    /// Digits from position `i` on, given whether the prefix so far equals the lower bound's
    /// (`tlo`) or the upper bound's (`thi`) prefix.
    fn digits(&self, i: usize, mut tlo: bool, thi: bool, must_digit: bool) -> Option<String> {
        let (lo, lo_ex) = self.lo.unwrap_or((b"", false));
        let (hi, hi_ex) = self.hi.unwrap_or((b"", false));
        let rem = self.max_frac.map(|m| m.saturating_sub(i));
        if tlo && i >= lo.len() && !lo_ex {
            tlo = false;
        }
        if !tlo && !thi {
            return match (rem, must_digit) {
                (None, true) => Some("[0-9]{1,16}".into()),
                (None, false) => Some("[0-9]{0,16}".into()),
                (Some(0), true) => None,
                (Some(0), false) => Some(String::new()),
                (Some(r), true) => Some(format!("[0-9]{{1,{r}}}")),
                (Some(r), false) => Some(format!("[0-9]{{0,{r}}}")),
            };
        }
        if thi && i >= hi.len() {
            // The digits so far equal the upper bound; only zeros keep it that way.
            if hi_ex || tlo {
                return None;
            }
            return match (rem, must_digit) {
                (None, true) => Some("0+".into()),
                (None, false) => Some("0*".into()),
                (Some(0), true) => None,
                (Some(0), false) => Some(String::new()),
                (Some(r), true) => Some(format!("0{{1,{r}}}")),
                (Some(r), false) => Some(format!("0{{0,{r}}}")),
            };
        }
        if tlo && i >= lo.len() && !thi && rem.is_none() {
            // Equal to an exclusive lower bound so far: some later digit must be non-zero.
            return Some("0*[1-9][0-9]*".into());
        }
        let end_ok = !must_digit && !tlo && (!thi || i < hi.len() || !hi_ex);
        let mut alts = Vec::new();
        if rem != Some(0) {
            let lo_d = if tlo && i < lo.len() { lo[i] } else { b'0' };
            let hi_d = if thi {
                if i < hi.len() { hi[i] } else { b'0' }
            } else {
                b'9'
            };
            if lo_d <= hi_d {
                let mut groups: Vec<(u8, u8, bool, bool)> = Vec::new();
                for d in lo_d..=hi_d {
                    let key = (tlo && d == lo_d, thi && d == hi_d);
                    match groups.last_mut() {
                        Some(g) if (g.2, g.3) == key => g.1 = d,
                        _ => groups.push((d, d, key.0, key.1)),
                    }
                }
                for (a, b, nlo, nhi) in groups {
                    if let Some(rest) = self.digits(i + 1, nlo, nhi, false) {
                        alts.push(format!("{}{rest}", digit_class(a, b)));
                    }
                }
            }
        }
        let body = alternation(alts);
        match (body, end_ok) {
            (Some(b), true) => Some(format!("(?:{b})?")),
            (Some(b), false) => Some(b),
            (None, true) => Some(String::new()),
            (None, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    fn full(re: &str) -> Regex {
        Regex::new(&format!("^(?:{re})$")).expect("valid regex")
    }

    fn bound(s: &str, exclusive: bool) -> Bound {
        Bound {
            value: Decimal::parse(s).expect("number"),
            exclusive,
        }
    }

    #[test]
    fn parses_decimals_exactly() {
        let d = Decimal::parse("-12.50e1").unwrap();
        assert_eq!((d.neg, d.int.as_str(), d.frac.as_str()), (true, "125", ""));
        let d = Decimal::parse("1e-7").unwrap();
        assert_eq!((d.int.as_str(), d.frac.as_str()), ("0", "0000001"));
        assert!(!Decimal::parse("-0.0").unwrap().neg);
        assert!(Decimal::parse("1.5").unwrap() < Decimal::parse("2").unwrap());
        assert!(Decimal::parse("-1.5").unwrap() < Decimal::parse("-1.25").unwrap());
    }

    #[test]
    fn integer_ranges_are_exact() {
        for (lo, hi) in [
            (-5i64, 300i64),
            (1, 10),
            (0, 0),
            (-300, -5),
            (17, 4321),
            (-1, 1),
            (99, 100),
        ] {
            let re = integer_regex(
                Some(&bound(&lo.to_string(), false)),
                Some(&bound(&hi.to_string(), false)),
            )
            .expect("non-empty");
            let r = full(&re);
            for x in -600..6000i64 {
                assert_eq!(
                    r.is_match(&x.to_string()),
                    (lo..=hi).contains(&x),
                    "{x} in {re}"
                );
            }
            assert!(!r.is_match("-0") && !r.is_match("007"));
        }
    }

    #[test]
    fn one_sided_and_fractional_integer_bounds() {
        let r = full(&integer_regex(Some(&bound("2.5", false)), None).unwrap());
        assert!(r.is_match("3") && r.is_match("123456789") && !r.is_match("2"));
        let r = full(&integer_regex(None, Some(&bound("-3", true))).unwrap());
        assert!(r.is_match("-4") && r.is_match("-1000") && !r.is_match("-3") && !r.is_match("0"));
        assert!(integer_regex(Some(&bound("1.2", false)), Some(&bound("1.8", false))).is_none());
    }

    fn check_number(lo: Option<Bound>, hi: Option<Bound>, max_frac: Option<usize>) {
        let re = number_regex(lo.as_ref(), hi.as_ref(), max_frac).expect("non-empty");
        let r = full(&re);
        let mut matched = 0;
        for i in -2500..=2500i64 {
            for scale in [1i64, 10, 100, 1000] {
                let text = format!("{}", i as f64 / scale as f64);
                let value = Decimal::parse(&text).unwrap();
                let inside = lo.as_ref().is_none_or(|b| {
                    if b.exclusive {
                        value > b.value
                    } else {
                        value >= b.value
                    }
                }) && hi.as_ref().is_none_or(|b| {
                    if b.exclusive {
                        value < b.value
                    } else {
                        value <= b.value
                    }
                }) && max_frac.is_none_or(|m| value.frac.len() <= m);
                assert_eq!(r.is_match(&text), inside, "{text} against {re}");
                matched += inside as usize;
            }
        }
        assert!(matched > 0);
    }

    /// The shortest decimal of the double `steps` doubles up (positive) or down from `x`.
    fn stepped(x: f64, steps: i32) -> String {
        let mut y = x;
        for _ in 0..steps.abs() {
            y = if steps > 0 {
                y.next_up()
            } else {
                y.next_down()
            };
        }
        format!("{y}")
    }

    #[test]
    fn exclusive_bounds_keep_two_doubles_clear_of_the_bound() {
        // Found by `samples_of_random_schemas_validate`: below the bound in exact decimals, but
        // the same double as the bound, so `exclusiveMaximum` fails.
        let hi = -1.0999999999999999f64;
        let re = number_regex(
            Some(&bound("-1.7", true)),
            Some(&bound(&format!("{hi:e}"), true)),
            None,
        )
        .expect("non-empty");
        let r = full(&re);
        assert!(!r.is_match("-1.09999999999999990960081055001789997980371817020"));
        assert!(!r.is_match(&stepped(hi, 0)) && !r.is_match(&stepped(hi, -1)));
        assert!(r.is_match(&stepped(hi, -2)) && r.is_match("-1.5"));
        assert!(!r.is_match(&stepped(-1.7, 1)) && r.is_match(&stepped(-1.7, 2)));
        // An exclusive 10: 9.9999999999999999 is the double 10.
        let r = full(&number_regex(None, Some(&bound("10", true)), None).unwrap());
        assert!(!r.is_match("9.9999999999999999") && !r.is_match(&stepped(10.0, -1)));
        assert!(r.is_match(&stepped(10.0, -2)) && r.is_match("9.99"));
    }

    #[test]
    fn double_margins_round_inward_next_to_zero() {
        // Two doubles above 0 is 1e-323: the fraction is capped at 17 digits, rounded up.
        let b = bound("0", true).for_doubles(true);
        assert_eq!(b, bound("1e-17", false));
        let b = bound("0", true).for_doubles(false);
        assert_eq!(b, bound("-1e-17", false));
        let r = full(&number_regex(Some(&bound("0", true)), None, None).unwrap());
        assert!(r.is_match("0.00000000000000001") && !r.is_match("0.000000000000000009"));
        // Elsewhere the margin is the shortest decimal of the double two steps inside.
        assert_eq!(
            bound("0.1", true).for_doubles(true),
            bound("0.10000000000000003", false)
        );
        assert_eq!(
            bound("-2.5", true).for_doubles(false),
            bound("-2.500000000000001", false)
        );
        // Inclusive bounds are kept.
        assert_eq!(bound("0.1", false).for_doubles(true), bound("0.1", false));
    }

    #[test]
    fn rounding_to_places_goes_the_asked_way() {
        let d = Decimal::parse("-1.23456").unwrap();
        assert_eq!(d.round_to(2, true), Decimal::parse("-1.23").unwrap());
        assert_eq!(d.round_to(2, false), Decimal::parse("-1.24").unwrap());
        let d = Decimal::parse("9.999").unwrap();
        assert_eq!(d.round_to(1, true), Decimal::parse("10").unwrap());
        assert_eq!(d.round_to(1, false), Decimal::parse("9.9").unwrap());
        assert_eq!(d.round_to(3, true), d);
    }

    #[test]
    fn integer_bounds_past_two_to_the_53_keep_clear_of_rounding() {
        // serde_json reads integers past 64 bits as doubles: 99999999999999999999 is 1e20.
        let r = full(&integer_regex(None, Some(&bound("1e20", true))).unwrap());
        assert!(!r.is_match("99999999999999999999") && !r.is_match("99999999999999990000"));
        assert!(r.is_match("99999999999999960000") && r.is_match("5"));
        // Below 2^53 every integer is a double: bounds are exact as before.
        let r = full(&integer_regex(None, Some(&bound("4503599627370497", true))).unwrap());
        assert!(r.is_match("4503599627370496"));
    }

    #[test]
    fn number_ranges_are_exact_on_decimals() {
        check_number(Some(bound("0", false)), Some(bound("1", false)), None);
        check_number(Some(bound("0", true)), None, None);
        check_number(Some(bound("-1.5", false)), Some(bound("2.25", true)), None);
        check_number(Some(bound("0.5", false)), Some(bound("0.75", false)), None);
        check_number(Some(bound("-0.75", true)), Some(bound("-0.5", false)), None);
        check_number(None, Some(bound("-0.01", false)), None);
        check_number(Some(bound("-10", false)), Some(bound("10", false)), Some(2));
        check_number(
            Some(bound("0.001", true)),
            Some(bound("1.999", false)),
            Some(3),
        );
    }
}
