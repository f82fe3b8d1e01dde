//! The chat context: what the LLM is shown of the conversation so far.
//!
//! A [`ChatContext`] is an ordered list of [`ChatItem`]s: messages (instructions, user turns,
//! agent replies, possibly with images), function calls the LLM made and their outputs. The
//! session appends to it as the conversation goes; provider encoders read it. It can be
//! truncated to bound the prompt size on a small device, filtered for a provider that must not
//! see some items, and saved to / restored from JSON (the wire shape of the Python framework's
//! `to_dict`, plus the fields that framework forgot; see [`ChatContext::to_json`]).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Tool;

/// Who a message is from. Serialized in lowercase (`"system"`, `"developer"`, ...), the value
/// the providers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions to the LLM (the agent's system prompt).
    System,
    /// Instructions in OpenAI's newer naming; treated like [`ChatRole::System`] everywhere here.
    Developer,
    /// What the person said.
    User,
    /// What the agent said.
    Assistant,
}

impl ChatRole {
    /// Whether messages of this role are instructions (system or developer), which truncation
    /// keeps and [`CopyOptions::exclude_instructions`] removes.
    pub fn is_instructions(self) -> bool {
        matches!(self, ChatRole::System | ChatRole::Developer)
    }
}

/// How closely a vision model should look at an image (OpenAI's `detail`); `auto` lets it
/// choose, `low` is cheaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceDetail {
    /// Let the model choose.
    #[default]
    Auto,
    /// Full resolution, more tokens.
    High,
    /// Low resolution, fewer tokens.
    Low,
}

/// Where an image's pixels are: a URL the provider fetches, or encoded bytes sent inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An `http(s)` URL (or any URL that is not a base64 `data:` URL).
    Url(String),
    /// Encoded image bytes (JPEG, PNG...) and their MIME type, e.g. a camera frame.
    Inline {
        /// The encoded image; shared so copying a context does not copy pixels.
        data: Arc<[u8]>,
        /// The MIME type of `data`, e.g. `image/jpeg`.
        mime_type: String,
    },
}

/// An image in a message, for vision-capable LLMs.
///
/// Built with [`ImageContent::url`] or [`ImageContent::inline`]; a base64 `data:` URL is always
/// held as inline bytes, so a context saved to JSON reads back identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ImageWire", into = "ImageWire")]
pub struct ImageContent {
    /// Unique id of this image (`img_...`).
    pub id: String,
    source: ImageSource,
    /// How closely the model should look.
    pub inference_detail: InferenceDetail,
}

impl ImageContent {
    /// An image at a URL. A base64 `data:` URL is decoded and held as inline bytes.
    pub fn url(url: impl Into<String>) -> Self {
        let url = url.into();
        let source = match parse_data_url(&url) {
            Some((data, mime_type)) => ImageSource::Inline {
                data: data.into(),
                mime_type,
            },
            None => ImageSource::Url(url),
        };
        Self::with_source(source)
    }

    /// An image from encoded bytes (e.g. a JPEG camera frame) of the given MIME type.
    pub fn inline(data: impl Into<Arc<[u8]>>, mime_type: impl Into<String>) -> Self {
        Self::with_source(ImageSource::Inline {
            data: data.into(),
            mime_type: mime_type.into(),
        })
    }

    fn with_source(source: ImageSource) -> Self {
        ImageContent {
            id: new_id("img"),
            source,
            inference_detail: InferenceDetail::Auto,
        }
    }

    /// Sets how closely the model should look at this image.
    pub fn with_detail(mut self, detail: InferenceDetail) -> Self {
        self.inference_detail = detail;
        self
    }

    /// Where the pixels are.
    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    /// The image as a URL the providers accept: the URL itself, or a
    /// `data:<mime>;base64,<bytes>` URL for inline bytes.
    pub fn to_data_url(&self) -> String {
        match &self.source {
            ImageSource::Url(url) => url.clone(),
            ImageSource::Inline { data, mime_type } => format!(
                "data:{mime_type};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(data)
            ),
        }
    }
}

/// Decodes `data:<mime>;base64,<payload>`; `None` for anything else (kept as a plain URL).
fn parse_data_url(url: &str) -> Option<(Vec<u8>, String)> {
    let rest = url.strip_prefix("data:")?;
    // base64 has no commas, so the last one ends the header whatever the MIME type holds.
    let (header, payload) = rest.rsplit_once(',')?;
    let mime = header.strip_suffix(";base64")?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    Some((data, mime.to_owned()))
}

/// The JSON shape of an image: `{"type":"image","id","image":<url>,"inference_detail"}`.
#[derive(Serialize, Deserialize)]
struct ImageWire {
    #[serde(rename = "type")]
    kind: ImageTag,
    id: String,
    image: String,
    #[serde(default)]
    inference_detail: InferenceDetail,
}

#[derive(Serialize, Deserialize)]
enum ImageTag {
    #[serde(rename = "image")]
    Image,
}

impl From<ImageContent> for ImageWire {
    fn from(img: ImageContent) -> Self {
        ImageWire {
            kind: ImageTag::Image,
            image: img.to_data_url(),
            id: img.id,
            inference_detail: img.inference_detail,
        }
    }
}

impl From<ImageWire> for ImageContent {
    fn from(w: ImageWire) -> Self {
        ImageContent {
            id: w.id,
            inference_detail: w.inference_detail,
            ..ImageContent::url(w.image)
        }
    }
}

/// One part of a message: text or an image. Serialized as a bare string or an image object,
/// as in the Python framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    /// Text.
    Text(String),
    /// An image.
    Image(ImageContent),
}

impl From<&str> for ChatContent {
    fn from(s: &str) -> Self {
        ChatContent::Text(s.to_owned())
    }
}

impl From<String> for ChatContent {
    fn from(s: String) -> Self {
        ChatContent::Text(s)
    }
}

impl From<ImageContent> for ChatContent {
    fn from(img: ImageContent) -> Self {
        ChatContent::Image(img)
    }
}

/// What may be given as a message's content: a string, one part, or a list of parts. Content
/// is always stored as a list, so code reading it has one shape to handle.
pub trait IntoContent {
    /// The content as a list of parts.
    fn into_content(self) -> Vec<ChatContent>;
}

impl IntoContent for &str {
    fn into_content(self) -> Vec<ChatContent> {
        vec![self.into()]
    }
}

impl IntoContent for String {
    fn into_content(self) -> Vec<ChatContent> {
        vec![self.into()]
    }
}

impl IntoContent for ChatContent {
    fn into_content(self) -> Vec<ChatContent> {
        vec![self]
    }
}

impl IntoContent for ImageContent {
    fn into_content(self) -> Vec<ChatContent> {
        vec![self.into()]
    }
}

impl IntoContent for Vec<ChatContent> {
    fn into_content(self) -> Vec<ChatContent> {
        self
    }
}

/// A message in the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Unique id (`msg_...`).
    pub id: String,
    /// Who it is from.
    pub role: ChatRole,
    /// Text and images, in order. A bare string in JSON reads as one text part.
    #[serde(deserialize_with = "content_list")]
    pub content: Vec<ChatContent>,
    /// When it was added, in seconds since the Unix epoch (the Python `time.time()`).
    #[serde(default = "now")]
    pub created_at: f64,
    /// Whether the person cut the agent off while it spoke this (the text is then what was
    /// actually heard).
    #[serde(default)]
    pub interrupted: bool,
}

impl ChatMessage {
    /// A new message with a fresh id, created now.
    pub fn new(role: ChatRole, content: impl IntoContent) -> Self {
        ChatMessage {
            id: new_id("msg"),
            role,
            content: content.into_content(),
            created_at: now(),
            interrupted: false,
        }
    }

    /// The text parts joined by newlines (images left out): what a text-only consumer sees.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|c| match c {
                ChatContent::Text(t) => Some(t.as_str()),
                ChatContent::Image(_) => None,
            })
            .collect();
        parts.join("\n")
    }
}

fn content_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChatContent>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(ChatContent),
        Many(Vec<ChatContent>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(c) => vec![c],
        OneOrMany::Many(v) => v,
    })
}

/// A function call the LLM made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Unique id of this item (`call_...`).
    pub id: String,
    /// The provider's id of the call, which its output refers to.
    pub call_id: String,
    /// The tool called.
    pub name: String,
    /// The arguments as the LLM wrote them: a JSON string, kept verbatim for the provider.
    pub arguments: String,
    /// Provider extras to send back with the call (e.g. Gemini's `thought_signature`).
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// What a function call returned, given back to the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutput {
    /// Unique id of this item (`output_...`).
    pub id: String,
    /// The id of the call this answers.
    pub call_id: String,
    /// The tool that ran.
    pub name: String,
    /// The result (or the error message) as text.
    pub output: String,
    /// Whether the tool failed, so the provider can flag the output as an error.
    #[serde(default)]
    pub is_error: bool,
}

/// One entry of the context. Serialized with a `"type"` tag: `message`, `function_call` or
/// `function_call_output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatItem {
    /// A message.
    #[serde(rename = "message")]
    Message(ChatMessage),
    /// A call the LLM made.
    #[serde(rename = "function_call")]
    FunctionCall(FunctionCall),
    /// A call's result.
    #[serde(rename = "function_call_output")]
    FunctionCallOutput(FunctionCallOutput),
}

impl ChatItem {
    /// The item's unique id.
    pub fn id(&self) -> &str {
        match self {
            ChatItem::Message(m) => &m.id,
            ChatItem::FunctionCall(c) => &c.id,
            ChatItem::FunctionCallOutput(o) => &o.id,
        }
    }

    /// The call id of a function call or output; `None` for a message.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            ChatItem::Message(_) => None,
            ChatItem::FunctionCall(c) => Some(&c.call_id),
            ChatItem::FunctionCallOutput(o) => Some(&o.call_id),
        }
    }

    /// The tool name of a function call or output; `None` for a message.
    pub fn tool_name(&self) -> Option<&str> {
        match self {
            ChatItem::Message(_) => None,
            ChatItem::FunctionCall(c) => Some(&c.name),
            ChatItem::FunctionCallOutput(o) => Some(&o.name),
        }
    }

    /// Whether this is an instructions message (system or developer).
    pub fn is_instructions(&self) -> bool {
        matches!(self, ChatItem::Message(m) if m.role.is_instructions())
    }

    /// The message, if this is one.
    pub fn as_message(&self) -> Option<&ChatMessage> {
        match self {
            ChatItem::Message(m) => Some(m),
            _ => None,
        }
    }
}

impl From<ChatMessage> for ChatItem {
    fn from(m: ChatMessage) -> Self {
        ChatItem::Message(m)
    }
}

impl From<FunctionCall> for ChatItem {
    fn from(c: FunctionCall) -> Self {
        ChatItem::FunctionCall(c)
    }
}

impl From<FunctionCallOutput> for ChatItem {
    fn from(o: FunctionCallOutput) -> Self {
        ChatItem::FunctionCallOutput(o)
    }
}

/// Why a saved context could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The JSON is not a context (`{"items": [...]}` with known item types); the message says
    /// where.
    #[error("invalid chat context JSON: {0}")]
    Json(String),
}

/// Which items [`ChatContext::copy`] leaves out.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Leave out function calls and outputs (for an LLM that is given no tools).
    pub exclude_function_calls: bool,
    /// Leave out system and developer messages (when instructions go elsewhere, e.g. a
    /// realtime session's config).
    pub exclude_instructions: bool,
    /// Keep only calls and outputs of these tools (the ones the provider will be told about,
    /// which reject calls to unknown tools). `None` keeps all; an empty list keeps none.
    pub tool_names: Option<Vec<String>>,
}

impl CopyOptions {
    /// Options keeping only calls and outputs of `tools`.
    pub fn for_tools(tools: &[Arc<dyn Tool>]) -> Self {
        CopyOptions {
            tool_names: Some(tools.iter().map(|t| t.spec().name.clone()).collect()),
            ..CopyOptions::default()
        }
    }
}

/// The conversation as the LLM sees it: an ordered list of items, optionally bounded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatContext {
    items: Vec<ChatItem>,
    /// Auto-truncation bound; a setting of this process, not part of the saved conversation.
    #[serde(skip)]
    max_items: Option<usize>,
}

impl ChatContext {
    /// An empty, unbounded context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding `items`, unbounded.
    pub fn from_items(items: Vec<ChatItem>) -> Self {
        ChatContext {
            items,
            max_items: None,
        }
    }

    /// Bounds the context: whenever an add makes it longer than `max_items`, it is
    /// [truncated](Self::truncate) to `max_items` (the pipeline's `max_context_items`, which
    /// keeps prompts, latency and memory bounded on a small device). `None` removes the bound.
    /// Takes effect at the next add.
    pub fn set_max_items(&mut self, max_items: Option<usize>) {
        self.max_items = max_items;
    }

    /// Builder form of [`set_max_items`](Self::set_max_items).
    pub fn with_max_items(mut self, max_items: Option<usize>) -> Self {
        self.max_items = max_items;
        self
    }

    /// The auto-truncation bound, if any.
    pub fn max_items(&self) -> Option<usize> {
        self.max_items
    }

    /// The items, oldest first.
    pub fn items(&self) -> &[ChatItem] {
        &self.items
    }

    /// The items for in-place edits (e.g. marking a reply interrupted); the count cannot change
    /// here, so the bound and the pairing of calls and outputs hold.
    pub fn items_mut(&mut self) -> &mut [ChatItem] {
        &mut self.items
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes every item (the Python `cleanup`: a finished session frees its history).
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Appends an item built elsewhere (e.g. with a chosen id or timestamp), then applies the
    /// bound. With a bound set, a function output whose call is not in the context (already
    /// truncated away) is dropped instead, so a bounded context always stays acceptable to
    /// providers.
    pub fn push(&mut self, item: impl Into<ChatItem>) {
        let item = item.into();
        if let (Some(_), ChatItem::FunctionCallOutput(o)) = (self.max_items, &item) {
            let has_call = self
                .items
                .iter()
                .any(|i| matches!(i, ChatItem::FunctionCall(c) if c.call_id == o.call_id));
            if !has_call {
                return;
            }
        }
        self.items.push(item);
        self.apply_bound();
    }

    /// Appends a message with a fresh id, created now, and returns a copy of it (with a bound
    /// set, the context itself may already have moved on).
    pub fn add_message(&mut self, role: ChatRole, content: impl IntoContent) -> ChatMessage {
        let msg = ChatMessage::new(role, content);
        self.push(msg.clone());
        msg
    }

    /// Replaces the instructions: removes every system and developer message and puts one
    /// system message first. (The Python `add_message(replace=True)` appended it at the end
    /// instead; instructions belong first.)
    pub fn set_instructions(&mut self, content: impl IntoContent) -> ChatMessage {
        let msg = ChatMessage::new(ChatRole::System, content);
        self.items.retain(|i| !i.is_instructions());
        self.items.insert(0, msg.clone().into());
        self.apply_bound();
        msg
    }

    /// Appends a function call; `call_id` defaults to a fresh unique id. Returns a copy.
    pub fn add_function_call(
        &mut self,
        name: impl Into<String>,
        arguments: impl Into<String>,
        call_id: Option<String>,
    ) -> FunctionCall {
        let call = FunctionCall {
            id: new_id("call"),
            call_id: call_id.unwrap_or_else(|| new_id("call")),
            name: name.into(),
            arguments: arguments.into(),
            metadata: None,
        };
        self.push(call.clone());
        call
    }

    /// Appends the output of the call `call_id`. Returns a copy. With a bound set, an output
    /// whose call has already been truncated away is dropped at once (see [`push`](Self::push)).
    pub fn add_function_output(
        &mut self,
        name: impl Into<String>,
        output: impl Into<String>,
        call_id: impl Into<String>,
        is_error: bool,
    ) -> FunctionCallOutput {
        let out = FunctionCallOutput {
            id: new_id("output"),
            call_id: call_id.into(),
            name: name.into(),
            output: output.into(),
            is_error,
        };
        self.push(out.clone());
        out
    }

    /// The first item with this id.
    pub fn get_by_id(&self, id: &str) -> Option<&ChatItem> {
        self.items.iter().find(|i| i.id() == id)
    }

    /// The first item with this id, for editing.
    pub fn get_by_id_mut(&mut self, id: &str) -> Option<&mut ChatItem> {
        self.items.iter_mut().find(|i| i.id() == id)
    }

    /// Takes the item with this id out (a message added for a guess that turned out wrong,
    /// such as a preemptive transcript the final one contradicted).
    pub fn remove(&mut self, id: &str) -> Option<ChatItem> {
        let at = self.items.iter().position(|i| i.id() == id)?;
        Some(self.items.remove(at))
    }

    /// The first instructions (system or developer) message: the one truncation keeps.
    pub fn instructions(&self) -> Option<&ChatMessage> {
        self.items
            .iter()
            .find(|i| i.is_instructions())
            .and_then(ChatItem::as_message)
    }

    /// A copy without the items `opts` excludes, for a provider that must not see them. The
    /// copy keeps this context's bound.
    ///
    /// Unlike the Python `copy(tools=[])`, which filtered nothing because an empty list is
    /// falsy, an empty `tool_names` list removes every call and output.
    pub fn copy(&self, opts: &CopyOptions) -> ChatContext {
        let items = self
            .items
            .iter()
            .filter(|item| {
                if opts.exclude_instructions && item.is_instructions() {
                    return false;
                }
                match item.tool_name() {
                    None => true,
                    Some(_) if opts.exclude_function_calls => false,
                    Some(name) => opts
                        .tool_names
                        .as_ref()
                        .is_none_or(|names| names.iter().any(|n| n == name)),
                }
            })
            .cloned()
            .collect();
        ChatContext {
            items,
            max_items: self.max_items,
        }
    }

    /// Keeps the newest `max_items` items, plus the first instructions message if it was older
    /// (so the result may hold `max_items + 1`). Then, so every provider accepts the result:
    /// - function calls and outputs at the front of what is kept are dropped (Gemini wants a
    ///   call right after a user turn, Anthropic wants a user turn first);
    /// - a function item is dropped unless every item of its exchange (same `call_id`) is
    ///   kept and the exchange has a call: no output without its call, no call without its
    ///   output. A call still waiting for its output is kept.
    ///
    /// Fixes two bugs of the Python version: `truncate(0)` kept everything (`items[-0:]`), and
    /// an exchange cut in the middle (a call kept while its output was dropped, or an output
    /// kept after a message whose call was dropped) was left orphaned.
    pub fn truncate(&mut self, max_items: usize) -> &mut Self {
        let items = std::mem::take(&mut self.items);
        let start = items.len().saturating_sub(max_items);
        // The window without its leading function items.
        let lead = start
            + items[start..]
                .iter()
                .take_while(|i| i.call_id().is_some())
                .count();
        let with_call: HashSet<&str> = items
            .iter()
            .filter_map(|i| match i {
                ChatItem::FunctionCall(c) => Some(c.call_id.as_str()),
                _ => None,
            })
            .collect();
        let cut: HashSet<&str> = items[..lead].iter().filter_map(ChatItem::call_id).collect();
        let keep: Vec<bool> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                i >= lead
                    && item
                        .call_id()
                        .is_none_or(|c| with_call.contains(c) && !cut.contains(c))
            })
            .collect();
        let system = items
            .iter()
            .position(ChatItem::is_instructions)
            .filter(|&i| i < lead);
        let mut kept = Vec::with_capacity(max_items + 1);
        for (i, (item, keep)) in items.into_iter().zip(keep).enumerate() {
            if keep || Some(i) == system {
                kept.push(item);
            }
        }
        self.items = kept;
        self
    }

    fn apply_bound(&mut self) {
        if let Some(max) = self.max_items {
            if self.items.len() > max {
                self.truncate(max);
            }
        }
    }

    /// The context as JSON: `{"items": [...]}`, each item with `"type"` and `"id"`; messages
    /// add `role`, `content` (a list of strings and image objects), `created_at` and
    /// `interrupted`; calls add `call_id`, `name`, `arguments`, `metadata`; outputs add
    /// `call_id`, `name`, `output`, `is_error`. The Python `to_dict` left out `created_at` and
    /// `interrupted`, so a restored context lost them; here a round trip is exact.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a chat context always serializes")
    }

    /// Reads a context written by [`to_json`](Self::to_json) (or by the Python `to_dict`:
    /// a missing `created_at` reads as now, a missing `interrupted` as false, a string content
    /// as one text part). Unknown item types are an error, not silently skipped as in Python.
    /// The result is unbounded.
    pub fn from_json(value: &Value) -> Result<Self, ContextError> {
        serde_path_to_error::deserialize(value).map_err(|e| ContextError::Json(e.to_string()))
    }
}

/// Seconds since the Unix epoch, as a float (the Python `time.time()`).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A unique id: `<prefix>_<unix seconds>_<process salt>_<counter>`. The Python ids had only the
/// seconds, so two messages in the same second collided; the counter makes ids unique within
/// the process and the random salt across restarts.
fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: OnceLock<u32> = OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        // RandomState is seeded from the OS; that is all the randomness an id needs.
        std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{prefix}_{secs}_{salt:08x}_{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roles(ctx: &ChatContext) -> Vec<String> {
        ctx.items()
            .iter()
            .map(|i| match i {
                ChatItem::Message(m) => m.text(),
                ChatItem::FunctionCall(c) => format!("call:{}", c.call_id),
                ChatItem::FunctionCallOutput(o) => format!("out:{}", o.call_id),
            })
            .collect()
    }

    fn call(ctx: &mut ChatContext, id: &str) {
        ctx.add_function_call("lookup", "{}", Some(id.to_owned()));
    }

    fn output(ctx: &mut ChatContext, id: &str) {
        ctx.add_function_output("lookup", "ok", id, false);
    }

    #[test]
    fn string_content_is_stored_as_a_one_part_list() {
        let mut ctx = ChatContext::new();
        let m = ctx.add_message(ChatRole::User, "hello");
        assert_eq!(m.content, vec![ChatContent::Text("hello".into())]);
        assert!(!m.interrupted);
        assert!(m.created_at > 1.6e9);
        assert_eq!(ctx.items(), &[ChatItem::Message(m)]);
    }

    #[test]
    fn ids_are_unique_within_one_second_unlike_python() {
        let mut ctx = ChatContext::new();
        let ids: HashSet<String> = (0..100)
            .map(|_| ctx.add_message(ChatRole::User, "x").id)
            .collect();
        assert_eq!(ids.len(), 100);
        let a = ctx.add_function_call("f", "{}", None);
        let b = ctx.add_function_call("f", "{}", None);
        assert_ne!(a.call_id, b.call_id);
        assert_ne!(a.id, a.call_id);
    }

    #[test]
    fn get_by_id_finds_the_item() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "a");
        let b = ctx.add_message(ChatRole::Assistant, "b");
        assert_eq!(ctx.get_by_id(&b.id), Some(&ChatItem::Message(b.clone())));
        assert_eq!(ctx.get_by_id("nope"), None);
        if let Some(ChatItem::Message(m)) = ctx.get_by_id_mut(&b.id) {
            m.interrupted = true;
        }
        assert!(ctx.items()[1].as_message().unwrap().interrupted);
    }

    #[test]
    fn set_instructions_replaces_every_instruction_message_and_goes_first() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u");
        ctx.add_message(ChatRole::System, "old");
        ctx.add_message(ChatRole::Developer, "older");
        ctx.set_instructions("new");
        assert_eq!(roles(&ctx), ["new", "u"]);
        assert_eq!(ctx.instructions().unwrap().role, ChatRole::System);
    }

    fn mixed() -> ChatContext {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::System, "sys");
        ctx.add_message(ChatRole::Developer, "dev");
        ctx.add_message(ChatRole::User, "u");
        ctx.add_function_call("weather", "{}", Some("w".into()));
        ctx.add_function_output("weather", "sunny", "w", false);
        ctx.add_function_call("hangup", "{}", Some("h".into()));
        ctx.add_function_output("hangup", "bye", "h", false);
        ctx
    }

    #[test]
    fn copy_excludes_function_items() {
        let opts = CopyOptions {
            exclude_function_calls: true,
            ..Default::default()
        };
        assert_eq!(roles(&mixed().copy(&opts)), ["sys", "dev", "u"]);
    }

    #[test]
    fn copy_excludes_system_and_developer_messages() {
        let opts = CopyOptions {
            exclude_instructions: true,
            ..Default::default()
        };
        assert_eq!(
            roles(&mixed().copy(&opts)),
            ["u", "call:w", "out:w", "call:h", "out:h"]
        );
    }

    #[test]
    fn copy_keeps_only_calls_of_the_given_tools() {
        let opts = CopyOptions {
            tool_names: Some(vec!["weather".into()]),
            ..Default::default()
        };
        assert_eq!(
            roles(&mixed().copy(&opts)),
            ["sys", "dev", "u", "call:w", "out:w"]
        );
    }

    #[test]
    fn copy_with_empty_tool_list_drops_all_tool_items_unlike_python() {
        let opts = CopyOptions {
            tool_names: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(roles(&mixed().copy(&opts)), ["sys", "dev", "u"]);
    }

    #[test]
    fn copy_with_default_options_is_identical_and_keeps_the_bound() {
        let ctx = mixed().with_max_items(Some(50));
        assert_eq!(ctx.copy(&CopyOptions::default()), ctx);
        assert_eq!(ctx.copy(&CopyOptions::default()).max_items(), Some(50));
    }

    #[test]
    fn truncate_reinserts_the_system_message_so_the_result_may_be_max_plus_one() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::System, "sys");
        for t in ["u1", "a1", "u2", "a2"] {
            ctx.add_message(ChatRole::User, t);
        }
        ctx.truncate(2);
        assert_eq!(roles(&ctx), ["sys", "u2", "a2"]);
    }

    #[test]
    fn truncate_keeps_the_system_message_in_place_when_inside_the_window() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u1");
        ctx.add_message(ChatRole::System, "sys");
        ctx.add_message(ChatRole::User, "u2");
        ctx.truncate(2);
        assert_eq!(roles(&ctx), ["sys", "u2"]);
    }

    #[test]
    fn truncate_keeps_only_the_first_system_message() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::System, "sys1");
        ctx.add_message(ChatRole::System, "sys2");
        ctx.add_message(ChatRole::User, "u1");
        ctx.add_message(ChatRole::User, "u2");
        ctx.truncate(1);
        assert_eq!(roles(&ctx), ["sys1", "u2"]);
    }

    #[test]
    fn truncate_drops_leading_tool_items_as_python_does() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::System, "sys");
        ctx.add_message(ChatRole::User, "u1");
        call(&mut ctx, "a");
        output(&mut ctx, "a");
        ctx.add_message(ChatRole::Assistant, "a1");
        ctx.truncate(3);
        assert_eq!(roles(&ctx), ["sys", "a1"]);
    }

    #[test]
    fn truncate_zero_keeps_only_the_system_message_unlike_python_which_kept_all() {
        let mut ctx = mixed();
        ctx.truncate(0);
        assert_eq!(roles(&ctx), ["sys"]);
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u");
        ctx.truncate(0);
        assert!(ctx.is_empty());
    }

    #[test]
    fn truncate_drops_an_output_whose_call_was_cut_behind_a_message_unlike_python() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u1");
        call(&mut ctx, "a");
        ctx.add_message(ChatRole::Assistant, "a1");
        output(&mut ctx, "a");
        ctx.add_message(ChatRole::User, "u2");
        ctx.truncate(3);
        assert_eq!(roles(&ctx), ["a1", "u2"]);
    }

    #[test]
    fn truncate_drops_a_call_whose_output_was_cut_unlike_python() {
        // The output came first (as a provider may stream it); the window keeps the call only.
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u1");
        output(&mut ctx, "a");
        ctx.add_message(ChatRole::Assistant, "a1");
        call(&mut ctx, "a");
        ctx.add_message(ChatRole::User, "u2");
        ctx.truncate(3);
        assert_eq!(roles(&ctx), ["a1", "u2"]);
    }

    #[test]
    fn truncate_keeps_complete_exchanges_and_pending_calls() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u1");
        ctx.add_message(ChatRole::User, "u2");
        call(&mut ctx, "a");
        call(&mut ctx, "b");
        output(&mut ctx, "a");
        output(&mut ctx, "b");
        call(&mut ctx, "c");
        ctx.truncate(6);
        assert_eq!(
            roles(&ctx),
            ["u2", "call:a", "call:b", "out:a", "out:b", "call:c"]
        );
    }

    #[test]
    fn truncate_drops_an_output_that_never_had_a_call() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "u1");
        output(&mut ctx, "ghost");
        ctx.truncate(10);
        assert_eq!(roles(&ctx), ["u1"]);
    }

    #[test]
    fn max_items_truncates_on_every_add() {
        let mut ctx = ChatContext::new().with_max_items(Some(2));
        ctx.add_message(ChatRole::System, "sys");
        for t in ["u1", "a1", "u2"] {
            ctx.add_message(ChatRole::User, t);
        }
        assert_eq!(roles(&ctx), ["sys", "a1", "u2"]);
        ctx.add_message(ChatRole::Assistant, "a2");
        assert_eq!(roles(&ctx), ["sys", "u2", "a2"]);
    }

    #[test]
    fn max_items_drops_an_output_whose_call_was_already_truncated() {
        let mut ctx = ChatContext::new().with_max_items(Some(2));
        ctx.add_message(ChatRole::User, "u1");
        call(&mut ctx, "a");
        ctx.add_message(ChatRole::Assistant, "a1");
        ctx.add_message(ChatRole::User, "u2");
        assert_eq!(roles(&ctx), ["a1", "u2"]);
        output(&mut ctx, "a");
        assert_eq!(roles(&ctx), ["a1", "u2"]);
        // Even when the bound is not reached.
        let mut ctx = ChatContext::new().with_max_items(Some(5));
        output(&mut ctx, "never_called");
        assert!(ctx.is_empty());
    }

    #[test]
    fn no_bound_means_no_truncation() {
        let mut ctx = ChatContext::new();
        for _ in 0..500 {
            ctx.add_message(ChatRole::User, "x");
        }
        assert_eq!(ctx.len(), 500);
        ctx.set_max_items(Some(10));
        ctx.add_message(ChatRole::User, "y");
        assert_eq!(ctx.len(), 10);
    }

    #[test]
    fn to_json_has_the_python_shape_plus_created_at_and_interrupted() {
        let mut ctx = ChatContext::new();
        ctx.push(ChatMessage {
            id: "msg_1".into(),
            role: ChatRole::User,
            content: vec!["hi".into()],
            created_at: 12.5,
            interrupted: false,
        });
        ctx.push(FunctionCall {
            id: "call_1".into(),
            call_id: "c1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
            metadata: None,
        });
        ctx.push(FunctionCallOutput {
            id: "output_1".into(),
            call_id: "c1".into(),
            name: "weather".into(),
            output: "rain".into(),
            is_error: true,
        });
        assert_eq!(
            ctx.to_json(),
            json!({"items": [
                {"type": "message", "id": "msg_1", "role": "user", "content": ["hi"],
                 "created_at": 12.5, "interrupted": false},
                {"type": "function_call", "id": "call_1", "call_id": "c1", "name": "weather",
                 "arguments": "{\"city\":\"Oslo\"}", "metadata": null},
                {"type": "function_call_output", "id": "output_1", "call_id": "c1",
                 "name": "weather", "output": "rain", "is_error": true},
            ]})
        );
        assert_eq!(ChatContext::from_json(&ctx.to_json()).unwrap(), ctx);
    }

    #[test]
    fn from_json_reads_python_to_dict_output() {
        let ctx = ChatContext::from_json(&json!({"items": [
            {"type": "message", "id": "msg_1", "role": "system", "content": ["be brief"]},
            {"type": "message", "id": "msg_2", "role": "developer", "content": "bare string"},
            {"type": "function_call", "id": "call_1", "name": "f", "arguments": "{}",
             "call_id": "c", "metadata": {"thought_signature": "AAAA"}},
            {"type": "function_call_output", "id": "output_1", "name": "f", "output": "x",
             "call_id": "c"},
        ]}))
        .unwrap();
        let m = ctx.items()[0].as_message().unwrap();
        assert_eq!(
            (m.role, m.text(), m.interrupted),
            (ChatRole::System, "be brief".into(), false)
        );
        assert!(m.created_at > 1.6e9, "missing created_at reads as now");
        assert_eq!(ctx.items()[1].as_message().unwrap().text(), "bare string");
        match &ctx.items()[2] {
            ChatItem::FunctionCall(c) => {
                assert_eq!(c.metadata, Some(json!({"thought_signature": "AAAA"})))
            }
            other => panic!("{other:?}"),
        }
        match &ctx.items()[3] {
            ChatItem::FunctionCallOutput(o) => assert!(!o.is_error),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn from_json_rejects_unknown_item_types_and_says_where() {
        let err = ChatContext::from_json(&json!({"items": [
            {"type": "message", "id": "m", "role": "user", "content": []},
            {"type": "telepathy", "id": "t"},
        ]}))
        .unwrap_err();
        assert!(err.to_string().contains("items[1]"), "{err}");
        assert!(ChatContext::from_json(&json!({"items": [
            {"type": "message", "id": "m", "role": "robot", "content": []}
        ]}))
        .is_err());
    }

    #[test]
    fn images_serialize_as_url_or_data_url() {
        let url = ImageContent::url("https://x/cat.jpg").with_detail(InferenceDetail::Low);
        let inline = ImageContent::inline(vec![1u8, 2, 3], "image/png");
        let v = serde_json::to_value(ChatMessage {
            id: "m".into(),
            role: ChatRole::User,
            content: vec!["look".into(), url.clone().into(), inline.clone().into()],
            created_at: 1.0,
            interrupted: true,
        })
        .unwrap();
        assert_eq!(
            v["content"],
            json!(["look",
                {"type": "image", "id": url.id, "image": "https://x/cat.jpg", "inference_detail": "low"},
                {"type": "image", "id": inline.id, "image": "data:image/png;base64,AQID", "inference_detail": "auto"}])
        );
        let back: ChatMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back.content[1], ChatContent::Image(url));
        assert_eq!(back.content[2], ChatContent::Image(inline));
        assert!(back.interrupted);
        assert_eq!(back.text(), "look");
    }

    #[test]
    fn a_base64_data_url_is_held_as_inline_bytes() {
        let img = ImageContent::url("data:image/jpeg;base64,/9j/");
        assert_eq!(
            img.source(),
            &ImageSource::Inline {
                data: vec![0xff, 0xd8, 0xff].into(),
                mime_type: "image/jpeg".into()
            }
        );
        assert_eq!(img.to_data_url(), "data:image/jpeg;base64,/9j/");
        // Not base64: stays a URL, verbatim.
        let odd = ImageContent::url("data:text/plain,hello");
        assert_eq!(
            odd.source(),
            &ImageSource::Url("data:text/plain,hello".into())
        );
    }
}
