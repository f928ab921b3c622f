//! Reasoning models: the `<think>…</think>` part of a reply, told apart from the answer.
//!
//! A reasoning model writes its reasoning between a start and an end tag before it
//! answers. A [`ReasoningFormat`] names those tags; the families Formwork knows are
//! [`ReasoningFormat::QWEN3`] and [`ReasoningFormat::DEEPSEEK_R1`] (both `<think>` and
//! `</think>`: DeepSeek-R1's templates, and QwQ's, end the generation prompt with `<think>\n`,
//! so the reply starts inside the block, which [`ReasoningFormat::starts_inside`] reads off
//! the rendered prompt). [`detect`] finds the format from a chat template's source.
//!
//! A [`ReasoningSplitter`] cuts a reply into reasoning and content as it streams: text it
//! cannot place yet (a tag split across deltas) is held back until the next push or
//! [`ReasoningSplitter::finish`], so any chunking of a reply gives the same split as the
//! whole reply at once. The rules:
//!
//! - a reply that starts inside the block (or opens it with the start tag, after optional
//!   whitespace) is reasoning up to the end tag, content after it; whitespace right after
//!   the end tag is dropped (as the templates drop it when the turn comes back);
//! - a start tag the reply opens with when it already starts inside is dropped (models
//!   sometimes repeat the tag their template wrote);
//! - a reply that does not open the block is all content; a block never closed is all
//!   reasoning (the reply was cut inside it).
//!
//! ```
//! use formwork_engine::reasoning::{ReasoningFormat, ReasoningSplitter};
//!
//! let format = ReasoningFormat::DEEPSEEK_R1;
//! let prompt = "<｜User｜>Hi<｜Assistant｜><think>\n";
//! let mut split = ReasoningSplitter::new(format.clone(), format.starts_inside(prompt));
//! let (r1, c1) = split.push("The user greets me.</thi");
//! let (r2, c2) = split.push("nk>\n\nHello!");
//! let (r3, c3) = split.finish();
//! assert_eq!(r1 + &r2 + &r3, "The user greets me.");
//! assert_eq!(c1 + &c2 + &c3, "Hello!");
//! ```

/// The tags around a reasoning model's reasoning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReasoningFormat {
    /// The family's name (`qwen3`, `deepseek_r1`).
    pub name: &'static str,
    /// The tag opening the reasoning (`<think>`).
    pub start: &'static str,
    /// The tag closing it (`</think>`).
    pub end: &'static str,
}

impl ReasoningFormat {
    /// Qwen3 and QwQ: `<think>…</think>`, opened by the model (Qwen3) or by the template's
    /// generation prompt (QwQ).
    pub const QWEN3: ReasoningFormat = ReasoningFormat {
        name: "qwen3",
        start: "<think>",
        end: "</think>",
    };

    /// DeepSeek-R1 and its distills: `<think>…</think>`, opened by the template's
    /// generation prompt (`<｜Assistant｜><think>\n`), so the reply starts inside it.
    pub const DEEPSEEK_R1: ReasoningFormat = ReasoningFormat {
        name: "deepseek_r1",
        start: "<think>",
        end: "</think>",
    };

    /// The families, by name.
    pub const ALL: [ReasoningFormat; 2] = [ReasoningFormat::QWEN3, ReasoningFormat::DEEPSEEK_R1];

    /// The family called `name` (`qwen3`, `deepseek_r1`; `-` for `_` and ASCII case
    /// ignored).
    pub fn from_name(name: &str) -> Option<ReasoningFormat> {
        let name = name.replace('-', "_");
        ReasoningFormat::ALL
            .into_iter()
            .find(|f| f.name.eq_ignore_ascii_case(&name))
    }

    /// The free prelude a reply to `prompt` starts with, for the constraint that follows it
    /// ([`crate::Prelude`]): inside an open block, the rest of it; after a block the prompt
    /// closed (thinking switched off, as Qwen3's `enable_thinking: false` renders an empty
    /// one), none; else the reply may open one itself. `max_tokens` bounds it.
    pub fn prelude(&self, prompt: &str, max_tokens: Option<usize>) -> Option<crate::Prelude> {
        let (start, optional) = if self.starts_inside(prompt) {
            (String::new(), false)
        } else if prompt.trim_end().ends_with(self.end) {
            return None;
        } else {
            (self.start.to_owned(), true)
        };
        Some(crate::Prelude {
            start,
            optional,
            end: self.end.to_owned(),
            max_tokens,
        })
    }

    /// Whether a rendered prompt leaves the reply inside an open block: its last start tag
    /// comes after its last end tag.
    pub fn starts_inside(&self, prompt: &str) -> bool {
        match (prompt.rfind(self.start), prompt.rfind(self.end)) {
            (Some(start), Some(end)) => start > end,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The reasoning format a chat template's source implies: one that writes `<think>` or
/// `</think>` (QwQ, the DeepSeek-R1 distills, Granite 3.3 with `thinking`) is a reasoning
/// model's. DeepSeek's templates (`<｜Assistant｜>`) are [`ReasoningFormat::DEEPSEEK_R1`],
/// the others [`ReasoningFormat::QWEN3`]; both split alike, the prompt deciding where the
/// reply starts ([`ReasoningFormat::starts_inside`]).
pub fn detect(template_source: &str) -> Option<ReasoningFormat> {
    let format = if template_source.contains("<｜Assistant｜>") {
        ReasoningFormat::DEEPSEEK_R1
    } else {
        ReasoningFormat::QWEN3
    };
    (template_source.contains(format.start) || template_source.contains(format.end))
        .then_some(format)
}

/// How an engine picks its reasoning format ([`crate::EngineConfig::reasoning`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reasoning {
    /// From the model's chat template ([`detect`]); the default.
    #[default]
    Detect,
    /// None: replies are all content.
    Off,
    /// This format.
    Format(ReasoningFormat),
}

impl Reasoning {
    /// The setting a flag names: `detect`, `none`, or a family ([`ReasoningFormat::from_name`]).
    pub fn from_name(name: &str) -> Option<Reasoning> {
        match name {
            "detect" | "auto" => Some(Reasoning::Detect),
            "none" | "off" => Some(Reasoning::Off),
            name => ReasoningFormat::from_name(name).map(Reasoning::Format),
        }
    }

    /// The format for a model whose chat template is `template` (its source).
    pub fn resolve(&self, template: Option<&str>) -> Option<ReasoningFormat> {
        match self {
            Reasoning::Detect => template.and_then(detect),
            Reasoning::Off => None,
            Reasoning::Format(f) => Some(f.clone()),
        }
    }
}

/// Where a [`ReasoningSplitter`] is in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start, outside: the reply may open the block (after whitespace).
    Opening,
    /// At the start, inside (the prompt opened the block): a repeated start tag is dropped.
    InsideFresh,
    /// Inside the block.
    Inside,
    /// Just after the end tag: whitespace is dropped.
    Closed,
    /// The answer.
    Content,
}

/// Cuts a streamed reply into reasoning and content; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    format: ReasoningFormat,
    state: State,
    /// Text not placed yet (a possible tag's beginning).
    held: String,
}

impl ReasoningSplitter {
    /// A splitter for a reply in `format` that starts inside the block or not (see
    /// [`ReasoningFormat::starts_inside`]).
    pub fn new(format: ReasoningFormat, starts_inside: bool) -> ReasoningSplitter {
        ReasoningSplitter {
            format,
            state: if starts_inside {
                State::InsideFresh
            } else {
                State::Opening
            },
            held: String::new(),
        }
    }

    /// The reasoning and the content `text` adds (either may be empty).
    pub fn push(&mut self, text: &str) -> (String, String) {
        let mut reasoning = String::new();
        let mut content = String::new();
        self.held.push_str(text);
        loop {
            let held = std::mem::take(&mut self.held);
            match self.state {
                State::Opening | State::InsideFresh => {
                    let rest = held.trim_start();
                    if let Some(after) = rest.strip_prefix(self.format.start) {
                        self.state = State::Inside;
                        self.held = after.to_owned();
                    } else if self.format.start.starts_with(rest) {
                        // Whitespace, or the start tag's beginning: wait for more.
                        self.held = held;
                        break;
                    } else {
                        self.state = if self.state == State::Opening {
                            State::Content
                        } else {
                            State::Inside
                        };
                        self.held = held;
                    }
                }
                State::Inside => {
                    if let Some(at) = held.find(self.format.end) {
                        reasoning.push_str(&held[..at]);
                        self.state = State::Closed;
                        self.held = held[at + self.format.end.len()..].to_owned();
                    } else {
                        let keep = partial_suffix(&held, self.format.end);
                        reasoning.push_str(&held[..held.len() - keep]);
                        self.held = held[held.len() - keep..].to_owned();
                        break;
                    }
                }
                State::Closed => {
                    let rest = held.trim_start();
                    if rest.is_empty() {
                        break;
                    }
                    self.state = State::Content;
                    self.held = rest.to_owned();
                }
                State::Content => {
                    content.push_str(&held);
                    break;
                }
            }
        }
        (reasoning, content)
    }

    /// The end of the reply: what was held back, placed (an unclosed block's partial end
    /// tag is reasoning; text that might have opened the block is content).
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Inside | State::InsideFresh => (held, String::new()),
            State::Opening | State::Content => (String::new(), held),
            State::Closed => (String::new(), String::new()),
        }
    }

    /// Splits a whole reply at once: the same as pushing it in any pieces and finishing.
    pub fn split(mut self, text: &str) -> (String, String) {
        let (mut reasoning, mut content) = self.push(text);
        let (r, c) = self.finish();
        reasoning.push_str(&r);
        content.push_str(&c);
        (reasoning, content)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag` (on a
/// character boundary).
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(text: &str, inside: bool) -> (String, String) {
        ReasoningSplitter::new(ReasoningFormat::QWEN3, inside).split(text)
    }

    fn pair(r: &str, c: &str) -> (String, String) {
        (r.to_owned(), c.to_owned())
    }

    #[test]
    fn replies_split_at_the_end_tag() {
        assert_eq!(
            split("<think>a b</think>\n\nanswer", false),
            pair("a b", "answer")
        );
        assert_eq!(split("\n<think>a</think>x", false), pair("a", "x"));
        assert_eq!(split("a b</think>  answer ", true), pair("a b", "answer "));
        // A repeated start tag after the template's is dropped.
        assert_eq!(split("<think>\na</think>b", true), pair("\na", "b"));
        // Not opened: all content, tags and all.
        assert_eq!(
            split("just text </think> x", false),
            pair("", "just text </think> x")
        );
        assert_eq!(split("<thin", false), pair("", "<thin"));
        // Never closed: all reasoning, a partial end tag too.
        assert_eq!(split("thinking </thi", true), pair("thinking </thi", ""));
        assert_eq!(split("<think>x", false), pair("x", ""));
        assert_eq!(split("", true), pair("", ""));
        assert_eq!(split("a</think>", true), pair("a", ""));
        // Non-ASCII right before a partial tag.
        assert_eq!(split("é</", true), pair("é</", ""));
    }

    #[test]
    fn the_prompt_says_whether_the_reply_starts_inside() {
        let f = ReasoningFormat::DEEPSEEK_R1;
        assert!(f.starts_inside("<｜Assistant｜><think>\n"));
        assert!(!f.starts_inside("<think>a</think><｜Assistant｜>"));
        assert!(f.starts_inside("<think>a</think>b<think>"));
        assert!(!f.starts_inside("<|im_start|>assistant\n"));
        // Qwen3 with enable_thinking false: an empty block, closed.
        assert!(!ReasoningFormat::QWEN3.starts_inside("assistant\n<think>\n\n</think>\n\n"));
    }

    #[test]
    fn names_and_detection_from_the_shared_templates() {
        assert_eq!(
            ReasoningFormat::from_name("deepseek-r1"),
            Some(ReasoningFormat::DEEPSEEK_R1)
        );
        assert_eq!(
            ReasoningFormat::from_name("QWEN3"),
            Some(ReasoningFormat::QWEN3)
        );
        assert_eq!(ReasoningFormat::from_name("none"), None);
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/chat_templates"
        );
        let read = |name: &str| {
            std::fs::read_to_string(format!("{dir}/{name}.jinja")).unwrap_or_else(|e| {
                panic!("{dir}/{name}.jinja: {e} (shared/ must sit beside the workspace)")
            })
        };
        assert_eq!(detect(&read("Qwen-QwQ-32B")), Some(ReasoningFormat::QWEN3));
        for name in [
            "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
            "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
        ] {
            assert_eq!(
                detect(&read(name)),
                Some(ReasoningFormat::DEEPSEEK_R1),
                "{name}"
            );
        }
        for name in [
            "Qwen-Qwen2.5-7B-Instruct",
            "meta-llama-Llama-3.2-3B-Instruct",
        ] {
            assert_eq!(detect(&read(name)), None, "{name}");
        }
    }

    proptest! {
        /// Any chunking of a reply splits as the whole reply does.
        #[test]
        fn streaming_in_any_chunks_equals_the_whole(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("<think>".to_owned()), Just("</think>".to_owned()),
                    Just("<th".to_owned()), Just("</".to_owned()), Just(" \n".to_owned()),
                    "[a-zé <>/]{0,6}",
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..64, 0..8),
            inside in any::<bool>(),
        ) {
            let text: String = parts.concat();
            let whole = split(&text, inside);
            let mut at: Vec<usize> = cuts
                .into_iter()
                .map(|c| c % (text.len() + 1))
                .filter(|&c| text.is_char_boundary(c))
                .collect();
            at.sort_unstable();
            at.dedup();
            let mut s = ReasoningSplitter::new(ReasoningFormat::QWEN3, inside);
            let (mut r, mut c) = (String::new(), String::new());
            let mut from = 0;
            for cut in at.into_iter().chain([text.len()]) {
                let (a, b) = s.push(&text[from..cut]);
                r += &a;
                c += &b;
                from = cut;
            }
            let (a, b) = s.finish();
            r += &a;
            c += &b;
            prop_assert_eq!((r, c), whole);
        }
    }
}
