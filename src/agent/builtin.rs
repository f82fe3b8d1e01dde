//! Built-in call tools: end the call, transfer it, send DTMF.
//!
//! Every phone agent needs these three, and they need the transport rather than an HTTP
//! endpoint, so hark ships them: `builtin_tools = ["end_call", "transfer_call", "send_dtmf"]`
//! in `[agent]` gives them to a config-defined agent, and [`builtin_tool`] to a Rust one. They
//! act through [`ToolContext::call`]; on a session without a call (a kiosk), transfer and DTMF
//! fail with a message the LLM can pass on, and `end_call` ends the conversation.
//!
//! Arguments are checked before anything reaches the transport: a DTMF string the LLM
//! garbled, or an empty transfer target, comes back to it as [`ToolError::InvalidArguments`]
//! so it can correct itself.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::tool::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use crate::telephony::warm_transfer::HOLD_LINE;
use crate::transport::CallControl;

/// The longest DTMF string one call may send.
pub const MAX_DTMF_DIGITS: usize = 32;

/// The hangup reason when the LLM gives none (the Python framework's `Agent.hangup()` reason).
pub const DEFAULT_END_CALL_REASON: &str = "manual_hangup";

/// One of the built-in tools, as named in `builtin_tools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinTool {
    /// `end_call`: hang up once the agent's last words have played.
    EndCall,
    /// `transfer_call`: a cold (blind) transfer to a SIP URI or phone number.
    TransferCall,
    /// `send_dtmf`: send touch-tone digits (IVR menus, extensions).
    SendDtmf,
    /// `warm_transfer`: put the caller on hold, brief a supervisor (`[agent.warm_transfer]`)
    /// and join them if the supervisor agrees.
    WarmTransfer,
}

impl BuiltinTool {
    /// Every built-in tool, in the order they are documented.
    pub const ALL: [BuiltinTool; 4] = [
        BuiltinTool::EndCall,
        BuiltinTool::TransferCall,
        BuiltinTool::SendDtmf,
        BuiltinTool::WarmTransfer,
    ];

    /// The tool's name, as the LLM and the config know it.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTool::EndCall => "end_call",
            BuiltinTool::TransferCall => "transfer_call",
            BuiltinTool::SendDtmf => "send_dtmf",
            BuiltinTool::WarmTransfer => "warm_transfer",
        }
    }

    /// The built-in tool called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<BuiltinTool> {
        BuiltinTool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A new instance of the tool.
    pub fn tool(self) -> Arc<dyn Tool> {
        Arc::new(Builtin {
            kind: self,
            spec: self.spec(),
        })
    }

    fn spec(self) -> ToolSpec {
        let (description, parameters) = match self {
            BuiltinTool::EndCall => (
                "End the call. Say goodbye first: the call ends once your last words have \
                 played. Use it when the caller is done or asks to hang up.",
                json!({
                    "type": "object",
                    "properties": {
                        "reason": {
                            "type": "string",
                            "description": "Why the call ends, in a few words (for the logs)."
                        }
                    }
                }),
            ),
            BuiltinTool::TransferCall => (
                "Transfer the caller to another phone number or SIP address. Tell the caller \
                 you are transferring them before calling this: once it succeeds, they are no \
                 longer on the line with you.",
                json!({
                    "type": "object",
                    "properties": {
                        "target": {
                            "type": "string",
                            "description": "Where to transfer: a phone number such as \
                                            \"+14155550123\" or an extension such as \"201\", \
                                            or a SIP URI such as \"sip:sales@pbx.example.com\"."
                        }
                    },
                    "required": ["target"]
                }),
            ),
            BuiltinTool::SendDtmf => (
                "Send touch-tone (DTMF) digits on the call, e.g. to choose an option in a phone \
                 menu or dial an extension.",
                json!({
                    "type": "object",
                    "properties": {
                        "digits": {
                            "type": "string",
                            "description": "The keys to press, in order: 0-9, *, # and A-D, \
                                            without spaces.",
                            "pattern": "^[0-9*#A-D]+$",
                            "minLength": 1,
                            "maxLength": MAX_DTMF_DIGITS
                        }
                    },
                    "required": ["digits"]
                }),
            ),
            BuiltinTool::WarmTransfer => (
                "Hand the caller to a human supervisor: the caller is put on hold while you \
                 brief the supervisor, and connected once the supervisor agrees. Use it when \
                 the caller asks for a person or you cannot help. Say nothing after calling \
                 it: the caller hears a hold line, and you are told how it ends.",
                json!({"type": "object", "properties": {}}),
            ),
        };
        ToolSpec {
            name: self.name().to_string(),
            description: description.to_string(),
            parameters,
        }
    }
}

impl fmt::Display for BuiltinTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names a config may list, for error messages: `end_call, transfer_call, send_dtmf,
/// warm_transfer`.
pub fn builtin_tool_names() -> [&'static str; 4] {
    BuiltinTool::ALL.map(BuiltinTool::name)
}

/// The built-in tool called `name` (`end_call`, `transfer_call`, `send_dtmf`), if there is one.
pub fn builtin_tool(name: &str) -> Option<Arc<dyn Tool>> {
    BuiltinTool::from_name(name).map(BuiltinTool::tool)
}

// By hand so an unknown name lists the valid ones in the config's words ("built-in tool", not
// serde's "variant"). The check runs inside the visitor, so the parser still knows which
// array element is wrong and can give its line.
impl<'de> Deserialize<'de> for BuiltinTool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = BuiltinTool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "one of {}", builtin_tool_names().join(", "))
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<BuiltinTool, E> {
                BuiltinTool::from_name(name).ok_or_else(|| {
                    E::custom(format!(
                        "unknown built-in tool {name:?}; expected one of {}",
                        builtin_tool_names().join(", ")
                    ))
                })
            }
        }
        d.deserialize_str(Name)
    }
}

struct Builtin {
    kind: BuiltinTool,
    spec: ToolSpec,
}

#[derive(Deserialize)]
struct EndCallArgs {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TransferArgs {
    target: String,
}

#[derive(Deserialize)]
struct DtmfArgs {
    digits: String,
}

/// The LLM's arguments as `T`; `null` (sent by some LLMs for no arguments) reads as `{}`.
fn args<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    let args = if args.is_null() { json!({}) } else { args };
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

/// The session's call, or the error the LLM is given on a session without one.
fn call<'a>(cx: &'a ToolContext, what: &str) -> Result<&'a Arc<dyn CallControl>, ToolError> {
    cx.call.as_ref().ok_or_else(|| {
        ToolError::Failed(format!(
            "this session has no phone call, so {what}; tell the user it is not possible here"
        ))
    })
}

#[async_trait]
impl Tool for Builtin {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, raw: Value, cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        match self.kind {
            BuiltinTool::EndCall => {
                let a: EndCallArgs = args(raw)?;
                let reason = a
                    .reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_END_CALL_REASON.to_string());
                Ok(ToolOutput::EndCall(reason))
            }
            BuiltinTool::TransferCall => {
                let a: TransferArgs = args(raw)?;
                let target = transfer_target(&a.target).map_err(ToolError::InvalidArguments)?;
                let call = call(cx, "it cannot be transferred")?;
                call.transfer(&target)
                    .await
                    .map_err(|e| ToolError::Failed(format!("the transfer failed: {e}")))?;
                Ok(ToolOutput::Text(format!(
                    "The call was transferred to {target}; the caller is no longer on the line."
                )))
            }
            BuiltinTool::SendDtmf => {
                let a: DtmfArgs = args(raw)?;
                check_dtmf(&a.digits).map_err(ToolError::InvalidArguments)?;
                let call = call(cx, "DTMF tones cannot be sent")?;
                call.send_dtmf(&a.digits)
                    .await
                    .map_err(|e| ToolError::Failed(format!("sending DTMF failed: {e}")))?;
                Ok(ToolOutput::Text(format!(
                    "Sent the DTMF digits {}.",
                    a.digits
                )))
            }
            BuiltinTool::WarmTransfer => {
                let call = call(cx, "it cannot be transferred")?;
                let session = cx.session.clone().ok_or_else(|| {
                    ToolError::Failed("this session cannot transfer calls".into())
                })?;
                let go = call.warm_transfer(session.clone()).await.map_err(|e| {
                    ToolError::Failed(format!("a warm transfer is not possible: {e}"))
                })?;
                // Said from the tool, the hold line follows what the agent was saying.
                let hold = session.say(HOLD_LINE, false).await.ok();
                let _ = go.send(hold);
                Ok(ToolOutput::Final(
                    "The caller is on hold while a supervisor is briefed. Say nothing more now; \
                     you will hear how it ends."
                        .into(),
                ))
            }
        }
    }
}

/// Checks a DTMF string: 1 to [`MAX_DTMF_DIGITS`] of `0-9*#A-D`, nothing else.
pub fn check_dtmf(digits: &str) -> Result<(), String> {
    if digits.is_empty() {
        return Err("digits is empty; give the keys to press, e.g. \"1\" or \"123#\"".into());
    }
    if let Some(bad) = digits
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        return Err(format!(
            "digits may only hold 0-9, *, # and A-D (no spaces or other characters); got {bad:?}"
        ));
    }
    let n = digits.chars().count();
    if n > MAX_DTMF_DIGITS {
        return Err(format!(
            "at most {MAX_DTMF_DIGITS} digits per call; got {n}"
        ));
    }
    Ok(())
}

/// Checks a transfer target and returns it as the transport is to get it: a `sip:`/`sips:`/
/// `tel:` URI as given, or a phone number or extension with its visual separators (spaces,
/// `-`, `.`, parentheses) removed.
pub fn transfer_target(target: &str) -> Result<String, String> {
    let t = target.trim();
    if t.is_empty() {
        return Err("target is empty; give a phone number or a SIP URI".into());
    }
    if t.chars().any(char::is_whitespace) && has_uri_scheme(t) {
        return Err(format!("{t:?} is not a valid URI: it contains spaces"));
    }
    let lower = t.to_ascii_lowercase();
    for scheme in ["sip:", "sips:", "tel:"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            if rest.is_empty() || rest.starts_with('@') || rest.ends_with('@') {
                return Err(format!(
                    "{t:?} is not a valid {} URI; expected e.g. sip:user@host",
                    &scheme[..scheme.len() - 1]
                ));
            }
            return Ok(t.to_string());
        }
    }
    let (plus, rest) = match t.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", t),
    };
    let mut number = String::from(plus);
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(format!(
                    "{t:?} is neither a phone number nor a SIP URI; expected e.g. \
                     \"+14155550123\", \"201\" or \"sip:sales@pbx.example.com\""
                ))
            }
        }
    }
    let digits = number.len() - plus.len();
    if digits == 0 {
        return Err(format!(
            "{t:?} has no digits; give a phone number or a SIP URI"
        ));
    }
    if digits > 20 {
        return Err(format!(
            "{t:?} is too long for a phone number ({digits} digits, at most 20)"
        ));
    }
    Ok(number)
}

fn has_uri_scheme(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    ["sip:", "sips:", "tel:"]
        .iter()
        .any(|s| lower.starts_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for t in BuiltinTool::ALL {
            assert_eq!(BuiltinTool::from_name(t.name()), Some(t));
            assert_eq!(builtin_tool(t.name()).unwrap().spec().name, t.name());
        }
        assert!(builtin_tool("hang_up").is_none());
        let e = serde_json::from_value::<BuiltinTool>(json!("hang_up"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"hang_up\"")
                && e.contains("end_call, transfer_call, send_dtmf, warm_transfer"),
            "{e}"
        );
    }

    #[test]
    fn schemas_are_objects_with_descriptions() {
        for t in BuiltinTool::ALL {
            let spec = t.spec();
            assert_eq!(spec.parameters["type"], "object", "{}", t);
            assert!(spec.description.len() > 40, "{t}");
        }
        assert_eq!(
            BuiltinTool::TransferCall.spec().parameters["required"],
            json!(["target"])
        );
        assert_eq!(
            BuiltinTool::SendDtmf.spec().parameters["properties"]["digits"]["maxLength"],
            32
        );
    }

    #[test]
    fn dtmf_accepts_the_sixteen_keys_only() {
        assert!(check_dtmf("0123456789*#ABCD").is_ok());
        assert!(check_dtmf(&"1".repeat(32)).is_ok());
        assert!(check_dtmf(&"1".repeat(33))
            .unwrap_err()
            .contains("at most 32"));
        assert!(check_dtmf("").is_err());
        for bad in ["1 2", "12a", "E", "1-2", "١"] {
            assert!(check_dtmf(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transfer_targets_are_checked_and_numbers_normalised() {
        assert_eq!(
            transfer_target(" +1 (415) 555-0123 ").unwrap(),
            "+14155550123"
        );
        assert_eq!(transfer_target("201").unwrap(), "201");
        assert_eq!(
            transfer_target("sip:sales@pbx.example.com").unwrap(),
            "sip:sales@pbx.example.com"
        );
        assert_eq!(
            transfer_target("SIPS:pbx.example.com").unwrap(),
            "SIPS:pbx.example.com"
        );
        assert_eq!(
            transfer_target("tel:+14155550123").unwrap(),
            "tel:+14155550123"
        );
        for bad in [
            "",
            "   ",
            "sip:",
            "sip:@host",
            "sip:bob @host",
            "the manager",
            "+",
            "12345678901234567890123",
            "555-CALL-NOW",
        ] {
            assert!(transfer_target(bad).is_err(), "accepted {bad:?}");
        }
    }
}
