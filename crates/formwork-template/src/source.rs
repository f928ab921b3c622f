//! Where chat templates come from.
//!
//! A model carries its chat template(s) and its special tokens in one of
//! three places, and [`TemplateSource`] reads each:
//!
//! - GGUF metadata: `tokenizer.chat_template` and named variants
//!   `tokenizer.chat_template.NAME`; bos/eos through
//!   `tokenizer.ggml.bos_token_id`/`eos_token_id` indexing `tokenizer.ggml.tokens`;
//! - `tokenizer_config.json`: `chat_template` as a string or as a list of
//!   `{"name", "template"}`; `bos_token`/`eos_token` (and the other special
//!   tokens) as strings or as objects with a `content` field;
//! - a `chat_template.jinja` file, which holds the template alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use formwork_gguf::Metadata;
use serde_json::Value as Json;

use crate::error::Error;
use crate::template::{ChatTemplate, TemplateOptions};

/// The name under which a source's unnamed template is listed.
pub const DEFAULT_TEMPLATE_NAME: &str = "default";

/// The special tokens that templates see as variables (`bos_token`, `eos_token`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Variable name to token text: `bos_token`, `eos_token`, `unk_token`,
    /// `pad_token`, `sep_token`, `cls_token`, `mask_token`.
    pub tokens: BTreeMap<String, String>,
}

impl SpecialTokens {
    /// Special tokens with the given bos and eos.
    pub fn new(bos_token: Option<&str>, eos_token: Option<&str>) -> SpecialTokens {
        let mut tokens = SpecialTokens::default();
        if let Some(bos) = bos_token {
            tokens.set("bos_token", bos);
        }
        if let Some(eos) = eos_token {
            tokens.set("eos_token", eos);
        }
        tokens
    }

    /// Sets the token of variable `name` (e.g. `"pad_token"`).
    pub fn set(&mut self, name: &str, token: &str) {
        self.tokens.insert(name.to_owned(), token.to_owned());
    }

    /// The beginning-of-sequence token.
    pub fn bos_token(&self) -> Option<&str> {
        self.tokens.get("bos_token").map(String::as_str)
    }

    /// The end-of-sequence token.
    pub fn eos_token(&self) -> Option<&str> {
        self.tokens.get("eos_token").map(String::as_str)
    }
}

/// The special-token variables transformers passes to templates.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The chat templates and special tokens of one model, before compilation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateSource {
    /// Where they were read from, for messages: a path or "GGUF metadata".
    pub origin: String,
    /// The templates in the order the source lists them; the unnamed one is
    /// listed as [`DEFAULT_TEMPLATE_NAME`].
    pub templates: Vec<(String, String)>,
    /// The special tokens.
    pub special_tokens: SpecialTokens,
}

impl TemplateSource {
    /// Reads the string-valued GGUF metadata pairs (`key`, `value`):
    /// `tokenizer.chat_template` and `tokenizer.chat_template.NAME`. GGUF
    /// stores bos/eos as ids, so pass their text, if known, as `bos_token`
    /// and `eos_token` (see [`TemplateSource::from_gguf`] for a reader that
    /// resolves them).
    pub fn from_gguf_metadata<'a, I>(
        pairs: I,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> TemplateSource
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut templates = Vec::new();
        let mut named = Vec::new();
        for (key, value) in pairs {
            if key == "tokenizer.chat_template" {
                templates.push((DEFAULT_TEMPLATE_NAME.to_owned(), value.to_owned()));
            } else if let Some(name) = key.strip_prefix("tokenizer.chat_template.") {
                named.push((name.to_owned(), value.to_owned()));
            }
        }
        templates.extend(named);
        TemplateSource {
            origin: "GGUF metadata".into(),
            templates,
            special_tokens: SpecialTokens::new(bos_token, eos_token),
        }
    }

    /// Reads templates and special tokens from parsed GGUF metadata.
    pub fn from_gguf(meta: &Metadata) -> TemplateSource {
        let bos = token_by_id_key(meta, "tokenizer.ggml.bos_token_id");
        let eos = token_by_id_key(meta, "tokenizer.ggml.eos_token_id");
        let mut source = TemplateSource::from_gguf_metadata(
            meta.entries()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s))),
            bos.as_deref(),
            eos.as_deref(),
        );
        for (key, var) in [
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
            ("tokenizer.ggml.seperator_token_id", "sep_token"),
            ("tokenizer.ggml.separator_token_id", "sep_token"),
            ("tokenizer.ggml.cls_token_id", "cls_token"),
            ("tokenizer.ggml.mask_token_id", "mask_token"),
        ] {
            if let Some(tok) = token_by_id_key(meta, key) {
                source.special_tokens.set(var, &tok);
            }
        }
        source
    }

    /// Reads the metadata of the GGUF file at `path`.
    pub fn from_gguf_file(path: &Path) -> Result<TemplateSource, Error> {
        let meta =
            Metadata::read(path).map_err(|e| Error::bad_source(Some(path), e.to_string()))?;
        let mut source = TemplateSource::from_gguf(&meta);
        source.origin = path.display().to_string();
        Ok(source)
    }

    /// Reads the text of a `tokenizer_config.json`.
    pub fn from_tokenizer_config(json: &str) -> Result<TemplateSource, Error> {
        TemplateSource::tokenizer_config(json, None)
    }

    /// Reads a `tokenizer_config.json` file.
    ///
    /// Recent transformers versions save the template beside the config
    /// instead of inside it: when the config has no `chat_template`, a
    /// `chat_template.jinja` in the same folder is the default template and
    /// `additional_chat_templates/NAME.jinja` the named ones.
    pub fn from_tokenizer_config_file(path: &Path) -> Result<TemplateSource, Error> {
        let text = read_text(path)?;
        let mut source = TemplateSource::tokenizer_config(&text, Some(path))?;
        source.origin = path.display().to_string();
        if source.templates.is_empty() {
            let jinja = path.with_file_name("chat_template.jinja");
            if jinja.is_file() {
                source
                    .templates
                    .push((DEFAULT_TEMPLATE_NAME.to_owned(), read_text(&jinja)?));
            }
            let extra_dir = path.with_file_name("additional_chat_templates");
            if let Ok(entries) = std::fs::read_dir(&extra_dir) {
                let mut named: Vec<(String, PathBuf)> = entries
                    .filter_map(|e| {
                        let p = e.ok()?.path();
                        let name = p.file_name()?.to_str()?.strip_suffix(".jinja")?.to_owned();
                        Some((name, p))
                    })
                    .collect();
                named.sort();
                for (name, p) in named {
                    source.templates.push((name, read_text(&p)?));
                }
            }
        }
        Ok(source)
    }

    fn tokenizer_config(json: &str, path: Option<&Path>) -> Result<TemplateSource, Error> {
        let config: Json = serde_json::from_str(json)
            .map_err(|e| Error::bad_source(path, format!("invalid JSON: {e}")))?;
        let Json::Object(config) = config else {
            return Err(Error::bad_source(
                path,
                "tokenizer config is not a JSON object",
            ));
        };
        let mut templates = Vec::new();
        match config.get("chat_template") {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => templates.push((DEFAULT_TEMPLATE_NAME.to_owned(), s.clone())),
            Some(Json::Array(items)) => {
                for item in items {
                    let name = item.get("name").and_then(Json::as_str);
                    let template = item.get("template").and_then(Json::as_str);
                    match (name, template) {
                        (Some(name), Some(template)) => {
                            templates.push((name.to_owned(), template.to_owned()));
                        }
                        _ => {
                            return Err(Error::bad_source(
                                path,
                                "`chat_template` list items must be {\"name\": string, \"template\": string}",
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Error::bad_source(
                    path,
                    "`chat_template` must be a string or a list of {name, template}",
                ));
            }
        }
        let mut special_tokens = SpecialTokens::default();
        for key in SPECIAL_TOKEN_KEYS {
            match config.get(key) {
                Some(Json::String(s)) => special_tokens.set(key, s),
                Some(Json::Object(obj)) => {
                    if let Some(s) = obj.get("content").and_then(Json::as_str) {
                        special_tokens.set(key, s);
                    }
                }
                _ => {}
            }
        }
        Ok(TemplateSource {
            origin: path.map_or_else(
                || "tokenizer config".to_owned(),
                |p| p.display().to_string(),
            ),
            templates,
            special_tokens,
        })
    }

    /// Reads a `.jinja` file holding one template. Such a file carries no
    /// special tokens: set them with [`TemplateSource::with_special_tokens`]
    /// (or use [`TemplateSource::from_path`], which looks for a
    /// `tokenizer_config.json` beside it).
    pub fn from_jinja_file(path: &Path) -> Result<TemplateSource, Error> {
        let text = read_text(path)?;
        Ok(TemplateSource {
            origin: path.display().to_string(),
            templates: vec![(DEFAULT_TEMPLATE_NAME.to_owned(), text)],
            special_tokens: SpecialTokens::default(),
        })
    }

    /// Reads whatever `path` is: a GGUF file (by its magic or a `.gguf`
    /// extension), a JSON tokenizer config (`.json`), a model folder (its
    /// `tokenizer_config.json`, else its `chat_template.jinja`), or else a
    /// jinja template. A `.jinja` file takes its special tokens from a
    /// `tokenizer_config.json` in the same folder, if there is one.
    pub fn from_path(path: &Path) -> Result<TemplateSource, Error> {
        if path.is_dir() {
            let config = path.join("tokenizer_config.json");
            if config.is_file() {
                return TemplateSource::from_tokenizer_config_file(&config);
            }
            let jinja = path.join("chat_template.jinja");
            if jinja.is_file() {
                return TemplateSource::from_jinja_file(&jinja);
            }
            return Err(Error::bad_source(
                Some(path),
                "folder has neither tokenizer_config.json nor chat_template.jinja",
            ));
        }
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == formwork_gguf::MAGIC;
        if is_gguf
            || path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return TemplateSource::from_gguf_file(path);
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            return TemplateSource::from_tokenizer_config_file(path);
        }
        let mut source = TemplateSource::from_jinja_file(path)?;
        let sibling: PathBuf = path.with_file_name("tokenizer_config.json");
        if sibling.is_file()
            && let Ok(config) = TemplateSource::from_tokenizer_config_file(&sibling)
        {
            source.special_tokens = config.special_tokens;
        }
        Ok(source)
    }

    /// A single template with the given special tokens.
    pub fn from_template(
        template: impl Into<String>,
        special_tokens: SpecialTokens,
    ) -> TemplateSource {
        TemplateSource {
            origin: "template string".into(),
            templates: vec![(DEFAULT_TEMPLATE_NAME.to_owned(), template.into())],
            special_tokens,
        }
    }

    /// Replaces the special tokens.
    pub fn with_special_tokens(mut self, special_tokens: SpecialTokens) -> TemplateSource {
        self.special_tokens = special_tokens;
        self
    }

    /// The names of the templates, in source order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(n, _)| n.as_str())
    }

    /// The text of the template `name`, or of the default template when
    /// `name` is `None` (the unnamed one, else one named `default`).
    pub fn get(&self, name: Option<&str>) -> Result<(&str, &str), Error> {
        let wanted = name.unwrap_or(DEFAULT_TEMPLATE_NAME);
        self.templates
            .iter()
            .find(|(n, _)| n == wanted)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .ok_or_else(|| Error::MissingTemplate {
                source_name: self.origin.clone(),
                requested: name.map(str::to_owned),
                available: self.names().map(str::to_owned).collect(),
            })
    }

    /// Compiles the template `name` (or the default one) with these special tokens.
    pub fn compile(
        &self,
        name: Option<&str>,
        options: TemplateOptions,
    ) -> Result<ChatTemplate, Error> {
        let (name, text) = self.get(name)?;
        ChatTemplate::with_options(name, text, self.special_tokens.clone(), options)
    }

    /// Like [`compile`](Self::compile), but a source without the template
    /// falls back to ChatML ([`ChatTemplate::chatml`]) instead of failing.
    pub fn compile_or_chatml(
        &self,
        name: Option<&str>,
        options: TemplateOptions,
    ) -> Result<ChatTemplate, Error> {
        match self.get(name) {
            Ok((name, text)) => {
                ChatTemplate::with_options(name, text, self.special_tokens.clone(), options)
            }
            Err(Error::MissingTemplate { .. }) => {
                ChatTemplate::chatml_with_options(self.special_tokens.clone(), options)
            }
            Err(e) => Err(e),
        }
    }
}

fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::bad_source(Some(path), format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Error::bad_source(Some(path), "not valid UTF-8"))
}

/// The text of the token whose id is stored under `key` (`tokenizer.ggml.bos_token_id`),
/// looked up in `tokenizer.ggml.tokens` (invalid UTF-8 replaced).
fn token_by_id_key(meta: &Metadata, key: &str) -> Option<String> {
    let id = usize::try_from(meta.get(key)?.as_u64()?).ok()?;
    let tokens = meta.get("tokenizer.ggml.tokens")?.as_array()?;
    let bytes = tokens.get(id)?.as_bytes()?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_config_with_template_list_and_token_objects() {
        let json = r#"{
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "chat_template": [
                {"name": "default", "template": "A"},
                {"name": "tool_use", "template": "B"}
            ]
        }"#;
        let src = TemplateSource::from_tokenizer_config(json).unwrap();
        assert_eq!(src.special_tokens.bos_token(), Some("<s>"));
        assert_eq!(src.special_tokens.eos_token(), Some("</s>"));
        assert_eq!(src.get(None).unwrap(), ("default", "A"));
        assert_eq!(src.get(Some("tool_use")).unwrap(), ("tool_use", "B"));
        let err = src.get(Some("rag")).unwrap_err();
        assert!(matches!(err, Error::MissingTemplate { .. }), "{err}");
        assert!(err.to_string().contains("default, tool_use"), "{err}");
    }

    #[test]
    fn tokenizer_config_without_template() {
        let src = TemplateSource::from_tokenizer_config(r#"{"eos_token": "x"}"#).unwrap();
        assert!(matches!(src.get(None), Err(Error::MissingTemplate { .. })));
        assert!(matches!(
            TemplateSource::from_tokenizer_config("[1]"),
            Err(Error::BadSource { .. })
        ));
        assert!(matches!(
            TemplateSource::from_tokenizer_config("{"),
            Err(Error::BadSource { .. })
        ));
        assert!(matches!(
            TemplateSource::from_tokenizer_config(r#"{"chat_template": 3}"#),
            Err(Error::BadSource { .. })
        ));
    }

    #[test]
    fn gguf_metadata_names() {
        let src = TemplateSource::from_gguf_metadata(
            [
                ("general.name", "m"),
                ("tokenizer.chat_template.tool_use", "T"),
                ("tokenizer.chat_template", "D"),
            ],
            Some("<s>"),
            None,
        );
        assert_eq!(src.names().collect::<Vec<_>>(), ["default", "tool_use"]);
        assert_eq!(src.get(Some("tool_use")).unwrap().1, "T");
        assert_eq!(src.special_tokens.bos_token(), Some("<s>"));
        assert_eq!(src.special_tokens.eos_token(), None);
    }
}
