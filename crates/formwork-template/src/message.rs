//! The conversation a chat template renders, as OpenAI-style clients send it.
//!
//! These serde types read the `messages` and `tools` of a chat-completions
//! request: roles `system`, `developer`, `user`, `assistant` and `tool`;
//! `content` as a string or a list of parts; assistant `tool_calls` whose
//! `arguments` are a JSON string (OpenAI) or an object (Hugging Face); tool
//! results with their `tool_call_id`. Fields a request adds that are not
//! modelled here (`reasoning_content`, ...) are kept in `extra` and reach the
//! template unchanged.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// Instructions from the application developer (OpenAI's newer name for system).
    Developer,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
    /// Any other role a template knows (`ipython`, `function`, `document`...).
    Other(String),
}

impl Role {
    /// The role's name as templates see it.
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Other(s) => s,
        }
    }
}

impl From<&str> for Role {
    fn from(s: &str) -> Role {
        match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => Role::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Role::from(s.as_str()))
    }
}

/// A message's content: a string, or a list of typed parts.
///
/// Anything else is an error that says what was expected ("a string or an array of
/// content parts"), where serde's untagged enums only say that nothing matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`{"type": "text", "text": ...}`, images...).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content: the string itself, or the text parts joined
    /// with `"\n"` (other parts are left out).
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Content, E> {
                Ok(Content::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Content {
        Content::Text(s.to_owned())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Content {
        Content::Text(s)
    }
}

/// One part of a multi-part content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part's type: `text`, `image_url`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The part's other fields (`image_url`...).
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> ContentPart {
        ContentPart {
            kind: "text".into(),
            text: Some(text.into()),
            extra: Map::new(),
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it says; `None` (JSON `null`) for an assistant turn made only of tool calls.
    #[serde(default)]
    pub content: Option<Content>,
    /// The author's name, or for a tool result the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tool calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a tool result, the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Any other fields (`reasoning_content`, `thinking`...), passed to the template as they are.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Message {
    /// A message with text content.
    pub fn new(role: Role, content: impl Into<Content>) -> Message {
        Message {
            role,
            content: Some(content.into()),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<Content>) -> Message {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<Content>) -> Message {
        Message::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<Content>) -> Message {
        Message::new(Role::Assistant, content)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Message {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which the tool result refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call's type; always `function` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function called.
    pub function: FunctionCall,
    /// Other fields, passed on as they are.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl ToolCall {
    /// A function call with the given id, name and arguments (an object or a JSON string).
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: Json) -> ToolCall {
        ToolCall {
            id: Some(id.into()),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
            extra: Map::new(),
        }
    }
}

fn function_type() -> String {
    "function".to_owned()
}

/// The function of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON string as OpenAI sends them, or an object.
    #[serde(default)]
    pub arguments: Json,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The tool's type; `function` for OpenAI-style tools.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
    /// Other fields, passed on as they are.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Tool {
    /// A function tool.
    pub fn function(
        name: impl Into<String>,
        description: Option<String>,
        parameters: Option<Json>,
    ) -> Tool {
        Tool {
            kind: function_type(),
            function: FunctionDefinition {
                name: name.into(),
                description,
                parameters,
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }
}

/// The declaration of a function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters, as a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Json>,
    /// Other fields (`strict`...), passed on as they are.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_openai_messages() {
        let json = serde_json::json!([
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok", "reasoning": "r"},
            {"role": "ipython", "content": "x"}
        ]);
        let msgs: Vec<Message> = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(msgs[0].role, Role::Developer);
        assert_eq!(msgs[0].content.as_ref().unwrap().text(), "a\nb");
        assert_eq!(msgs[2].extra["reasoning"], "r");
        assert_eq!(msgs[3].role, Role::Other("ipython".into()));
        assert_eq!(serde_json::to_value(&msgs).unwrap(), json);
    }

    #[test]
    fn wrong_content_says_what_was_expected() {
        for content in [serde_json::json!(5), serde_json::json!({"text": "x"})] {
            let e = serde_json::from_value::<Content>(content).unwrap_err();
            assert!(
                e.to_string()
                    .contains("expected a string or an array of content parts"),
                "{e}"
            );
        }
        let e = serde_json::from_value::<Content>(serde_json::json!([{"text": "x"}])).unwrap_err();
        assert!(e.to_string().contains("missing field `type`"), "{e}");
    }
}
