//! Incremental detokenization and stop strings.
//!
//! Tokens arrive as bytes; a token may end in the middle of a UTF-8 character (byte-level
//! vocabularies split CJK and emoji). [`TextStream`] releases only whole characters, and holds
//! back any tail of the text that could still grow into a stop string, so a stop string is
//! never sent to the client, not even its first characters.

/// What pushing a token's bytes produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Text safe to release now (may be empty).
    Text(String),
    /// A stop string was completed: the text before it, and generation ends.
    Stopped(String),
}

/// Bytes in, whole characters out, stop strings held back and cut.
#[derive(Debug, Clone, Default)]
pub(crate) struct TextStream {
    bytes: Vec<u8>,
    held: String,
    stops: Vec<String>,
    longest_stop: usize,
}

impl TextStream {
    /// A stream that ends at the first of `stops` (empty strings are ignored).
    pub(crate) fn new(stops: &[String]) -> TextStream {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest_stop = stops.iter().map(String::len).max().unwrap_or(0);
        TextStream {
            stops,
            longest_stop,
            ..TextStream::default()
        }
    }

    /// Adds a token's bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.bytes.extend_from_slice(bytes);
        self.decode_complete();
        if let Some(at) = self.find_stop() {
            let before = self.held[..at].to_string();
            self.held.clear();
            self.bytes.clear();
            return Pushed::Stopped(before);
        }
        let keep = self.stop_prefix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        Pushed::Text(out)
    }

    /// Everything still held back, at the end of generation. An incomplete character at the
    /// very end becomes U+FFFD when `complete` (the model ended the text there), and is left
    /// out otherwise (the text was cut, by `max_tokens`, before the character's last bytes).
    pub(crate) fn finish(&mut self, complete: bool) -> String {
        let mut out = std::mem::take(&mut self.held);
        if !self.bytes.is_empty() && complete {
            out.push_str(&String::from_utf8_lossy(&self.bytes));
        }
        self.bytes.clear();
        out
    }

    /// Moves the complete characters of `bytes` to `held`; invalid bytes become U+FFFD.
    fn decode_complete(&mut self) {
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.bytes[start..]) {
                Ok(s) => {
                    self.held.push_str(s);
                    start = self.bytes.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix is valid UTF-8: from_utf8 just said so.
                    self.held
                        .push_str(std::str::from_utf8(&self.bytes[start..valid]).unwrap_or(""));
                    match e.error_len() {
                        Some(n) => {
                            self.held.push('\u{FFFD}');
                            start = valid + n;
                        }
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.bytes.drain(..start);
    }

    fn find_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// The length of the longest tail of `held` that is a proper prefix of a stop string.
    fn stop_prefix_len(&self) -> usize {
        if self.stops.is_empty() {
            return 0;
        }
        let from = self.held.len().saturating_sub(self.longest_stop);
        for (i, _) in self.held.char_indices().filter(|(i, _)| *i >= from) {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                return tail.len();
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, Option<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            match s.push(p) {
                Pushed::Text(t) => out.push(t),
                Pushed::Stopped(t) => return (out, Some(t), String::new()),
            }
        }
        let rest = s.finish(true);
        (out, None, rest)
    }

    #[test]
    fn split_characters_are_released_whole() {
        let euro = "€".as_bytes();
        let (out, stop, rest) = run(&[], &[&euro[..1], &euro[1..2], &euro[2..], b"x"]);
        assert_eq!(out, vec!["", "", "€", "x"]);
        assert_eq!(stop, None);
        assert_eq!(rest, "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (out, _, rest) = run(&[], &[b"a\xffb", b"\xe2\x82"]);
        assert_eq!(out, vec!["a\u{FFFD}b", ""]);
        assert_eq!(rest, "\u{FFFD}");
    }

    #[test]
    fn a_cut_reply_never_ends_in_a_replacement_character() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.push(b"caf\xc3"), Pushed::Text("caf".into()));
        assert_eq!(s.finish(false), "");
        // Held stop-string prefixes are still released.
        let mut s = TextStream::new(&["END".into()]);
        assert_eq!(s.push(b"ok E\xe2\x82"), Pushed::Text("ok ".into()));
        assert_eq!(s.finish(false), "E");
    }

    #[test]
    fn stop_strings_are_never_leaked() {
        let (out, stop, _) = run(&["END"], &[b"hello E", b"N", b"D tail"]);
        assert_eq!(out.concat(), "hello ");
        assert_eq!(stop.as_deref(), Some(""));
        let (out, stop, _) = run(&["END"], &[b"hello EN", b"DX"]);
        assert_eq!(format!("{}{}", out.concat(), stop.unwrap()), "hello ");
    }

    #[test]
    fn a_false_start_is_released() {
        let (out, stop, rest) = run(&["END"], &[b"E", b"N", b"d", b"!"]);
        assert_eq!(stop, None);
        assert_eq!(format!("{}{rest}", out.concat()), "ENd!");
        assert_eq!(out[0], "");
    }

    #[test]
    fn the_earliest_stop_wins() {
        let (out, stop, _) = run(&["bc", "abcd"], &[b"xabcd"]);
        assert_eq!(out.concat(), "");
        assert_eq!(stop.as_deref(), Some("x"));
    }

    #[test]
    fn held_text_is_flushed_at_the_end() {
        let (out, stop, rest) = run(&["\n\n"], &[b"line\n"]);
        assert_eq!(stop, None);
        assert_eq!(out.concat(), "line");
        assert_eq!(rest, "\n");
    }
}
