//! Regexes for the `format` keyword.
//!
//! Each regex accepts only values the format's RFC allows, and usually a strict subset of them
//! (no leap seconds, no February 29th, hostnames of at most three labels, `http(s)`/`ftp` URIs
//! without percent-escapes...): a model constrained by it can only produce values that any
//! validator accepts. Formats the JSON Schema specification does not define are annotations
//! and are reported as not enforced.

const DATE: &str = r"[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))";
const TIME: &str = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
// RFC 3339 Appendix A: each unit may only be followed by the next smaller one (`P1Y2M3D`,
// `PT1H2M3S`), never skip one (`P1Y3D` is not a duration).
const DURATION: &str = r"P(?:[0-9]{1,4}W|(?:[0-9]{1,4}Y(?:[0-9]{1,4}M(?:[0-9]{1,4}D)?)?|[0-9]{1,4}M(?:[0-9]{1,4}D)?|[0-9]{1,4}D)(?:T(?:[0-9]{1,4}H(?:[0-9]{1,4}M(?:[0-9]{1,4}S)?)?|[0-9]{1,4}M(?:[0-9]{1,4}S)?|[0-9]{1,4}S))?|T(?:[0-9]{1,4}H(?:[0-9]{1,4}M(?:[0-9]{1,4}S)?)?|[0-9]{1,4}M(?:[0-9]{1,4}S)?|[0-9]{1,4}S))";
// No two hyphens in a row: IDNA reserves `--` in the third and fourth positions (`xn--`), and
// validators that check IDNA reject such labels.
const LABEL: &str = r"[a-zA-Z0-9](?:-?[a-zA-Z0-9]){0,30}";
const IPV4: &str = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const H16: &str = r"[0-9a-fA-F]{1,4}";
const UUID: &str = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
const PATH_CHARS: &str = r"[A-Za-z0-9._~!$&'()*+,;=:@-]";

/// A decoded-string regex (full match) for a known `format`, or `None` for a format the
/// specification does not define.
pub(crate) fn format_regex(name: &str) -> Option<String> {
    let hostname = format!(r"{LABEL}(?:\.{LABEL}){{0,2}}");
    // Local parts of letters and digits joined by single `.`, `_`, `+` or `-`; domain labels
    // without double hyphens; an alphabetic top-level domain.
    let email = r"[A-Za-z0-9]{1,16}(?:[._+-][A-Za-z0-9]{1,16}){0,2}@(?:[a-zA-Z0-9](?:-?[a-zA-Z0-9]){0,20}\.){1,3}[a-zA-Z]{2,12}".to_string();
    let path = format!(r"(?:/{PATH_CHARS}{{1,64}}){{0,8}}/?");
    let uri = format!(
        r"(?:https?|ftp)://{hostname}(?::[1-9][0-9]{{0,3}})?{path}(?:\?{PATH_CHARS}{{0,64}})?(?:#{PATH_CHARS}{{0,64}})?"
    );
    let ipv6 = format!(
        "(?:{H16}:){{7}}{H16}|(?:{H16}:){{1,7}}:|(?:{H16}:){{1,6}}:{H16}|(?:{H16}:){{1,5}}(?::{H16}){{1,2}}|(?:{H16}:){{1,4}}(?::{H16}){{1,3}}|(?:{H16}:){{1,3}}(?::{H16}){{1,4}}|(?:{H16}:){{1,2}}(?::{H16}){{1,5}}|{H16}:(?::{H16}){{1,6}}|:(?:(?::{H16}){{1,7}}|:)"
    );
    let pointer = r"(?:/(?:[A-Za-z0-9_ .-]|~[01]){0,32}){0,8}".to_string();
    Some(match name {
        "date" => DATE.into(),
        "time" => TIME.into(),
        "date-time" => format!("{DATE}T{TIME}"),
        "duration" => DURATION.into(),
        "email" | "idn-email" => email,
        "hostname" | "idn-hostname" => hostname,
        "ipv4" => IPV4.into(),
        "ipv6" => ipv6,
        "uri" | "iri" => uri,
        "uri-reference" | "iri-reference" => format!("{uri}|{path}"),
        // A URI without braces is a template with no expressions.
        "uri-template" => uri,
        "uuid" => UUID.into(),
        "json-pointer" => pointer,
        "relative-json-pointer" => format!("(?:0|[1-9][0-9]{{0,3}})(?:#|{pointer})"),
        // Letters, digits and spaces only: a regex in every dialect.
        "regex" => "[A-Za-z0-9 ]{0,64}".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    fn full(name: &str) -> Regex {
        Regex::new(&format!("^(?:{})$", format_regex(name).expect("known"))).expect("valid")
    }

    #[test]
    fn formats_accept_typical_values_and_reject_invalid_ones() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "date",
                &["2024-02-28", "1999-12-31"],
                &["2024-13-01", "2024-02-30", "24-01-01"],
            ),
            (
                "date-time",
                &["2024-07-26T00:00:00Z", "2024-07-26T23:59:59.5+02:00"],
                &["2024-07-26 00:00:00Z", "2024-07-26T24:00:00Z"],
            ),
            ("time", &["12:30:00Z"], &["12:30:00", "12:60:00Z"]),
            (
                "duration",
                &["P3D", "PT1H30M", "P1Y2M", "P2W"],
                &["P", "PT", "P1H", "P1Y3D", "PT1H30S"],
            ),
            ("email", &["a.b@example.com"], &["a@b", "@example.com"]),
            (
                "hostname",
                &["example.com", "localhost"],
                &["-bad.com", "a..b"],
            ),
            ("ipv4", &["192.168.0.1"], &["256.1.1.1", "01.1.1.1"]),
            (
                "ipv6",
                &["::1", "fe80::1:2", "2001:db8:0:0:0:0:2:1"],
                &["1:2:3", "::g"],
            ),
            (
                "uri",
                &["https://example.com/a/b?x=1#f"],
                &["example.com", "http://"],
            ),
            (
                "uuid",
                &["123e4567-e89b-12d3-a456-426614174000"],
                &["123e4567e89b12d3a456426614174000"],
            ),
        ];
        for (name, good, bad) in cases {
            let r = full(name);
            for g in *good {
                assert!(r.is_match(g), "{name} should accept {g}");
            }
            for b in *bad {
                assert!(!r.is_match(b), "{name} should reject {b}");
            }
        }
        assert!(format_regex("int64").is_none());
    }
}
