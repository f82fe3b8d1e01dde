//! `[agent.dtmf]`: what the agent does with the keys a caller presses.
//!
//! A phone menu is configured, not programmed: `[[agent.dtmf.keys]]` maps a key or a sequence
//! (`"0"`, `"*9"`) to an action (say something, transfer, end the call), and every other key is
//! collected until the terminator (`#`) or a pause and handed to the LLM as a user turn, so an
//! agent can ask "enter your account number, then the pound key". [`DtmfConfig::validate`]
//! names the offending key so the config loader can point at its line.

use serde::Deserialize;

/// Keys a phone can send (RFC 4733 events 0–15).
pub const DTMF_KEYS: &str = "0123456789*#ABCD";

/// `[agent.dtmf]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtmfConfig {
    /// The key that ends a collected entry and hands it to the LLM at once (`"#"`); `""`: only
    /// the pause ends it.
    pub terminator: String,
    /// Seconds without a key after which a collected entry is handed to the LLM.
    pub inter_digit_timeout: f64,
    /// Hand collected keys to the LLM (`false`: only mapped keys do anything).
    pub collect: bool,
    /// Keys collected at most; an entry this long is handed over at once.
    pub max_digits: usize,
    /// The user turn the LLM gets; `{digits}` is replaced by the keys.
    pub prompt: String,
    /// `[[agent.dtmf.keys]]`: keys or sequences mapped to actions.
    pub keys: Vec<DtmfKeyConfig>,
}

impl Default for DtmfConfig {
    fn default() -> Self {
        Self {
            terminator: "#".into(),
            inter_digit_timeout: 3.0,
            collect: true,
            max_digits: 32,
            prompt: "The caller typed: {digits}".into(),
            keys: Vec::new(),
        }
    }
}

/// `[[agent.dtmf.keys]]`: one key or sequence and what it does. `say` may come alone or before
/// `transfer` or `end_call`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfKeyConfig {
    /// The key or sequence (`"0"`, `"*9"`, `"123"`).
    pub digits: String,
    /// Said by the agent (and added to the conversation).
    #[serde(default)]
    pub say: Option<String>,
    /// Transfer the caller here (a SIP URI or number), after `say`.
    #[serde(default)]
    pub transfer: Option<String>,
    /// End the call, after `say`.
    #[serde(default)]
    pub end_call: bool,
}

/// A rule `[agent.dtmf]` breaks: the key below `dtmf` and what is wrong.
pub type DtmfIssue = (String, String);

impl DtmfConfig {
    /// Checks the rules spanning values: keys are phone keys, sequences unique and none the
    /// start of another (a sequence fires as soon as it is complete), every mapping does
    /// something, timing is sane.
    pub fn validate(&self) -> Result<(), DtmfIssue> {
        let bad = |key: String, message: String| Err((key, message));
        let t = &self.terminator;
        if t.chars().count() > 1 || t.chars().any(|c| !DTMF_KEYS.contains(c)) {
            return bad(
                "terminator".into(),
                format!("expected one key of {DTMF_KEYS} or \"\", got {t:?}"),
            );
        }
        let s = self.inter_digit_timeout;
        if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
            return bad(
                "inter_digit_timeout".into(),
                format!("expected a positive number of seconds (at most an hour), got {s}"),
            );
        }
        if self.max_digits == 0 {
            return bad("max_digits".into(), "expected at least 1".into());
        }
        if self.collect && !self.prompt.contains("{digits}") {
            return bad(
                "prompt".into(),
                "must contain {digits}, where the keys go".into(),
            );
        }
        for (i, k) in self.keys.iter().enumerate() {
            let key = |name: &str| format!("keys[{i}].{name}");
            if k.digits.is_empty() || k.digits.chars().any(|c| !DTMF_KEYS.contains(c)) {
                return bad(
                    key("digits"),
                    format!("expected keys of {DTMF_KEYS}, got {:?}", k.digits),
                );
            }
            if let Some(j) = self.keys[..i].iter().position(|o| {
                o.digits.starts_with(k.digits.as_str()) || k.digits.starts_with(o.digits.as_str())
            }) {
                return bad(
                    key("digits"),
                    format!(
                        "{:?} and keys[{j}]'s {:?}: one starts the other, so the longer could \
                         never be typed",
                        k.digits, self.keys[j].digits
                    ),
                );
            }
            if k.say.is_none() && k.transfer.is_none() && !k.end_call {
                return bad(
                    key("digits"),
                    "needs an action: say, transfer or end_call".into(),
                );
            }
            if matches!(&k.say, Some(s) if s.trim().is_empty()) {
                return bad(key("say"), "must not be empty".into());
            }
            if matches!(&k.transfer, Some(s) if s.trim().is_empty()) {
                return bad(key("transfer"), "must not be empty".into());
            }
            if k.transfer.is_some() && k.end_call {
                return bad(
                    key("end_call"),
                    "a transfer already ends the agent's part; choose one".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DtmfConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_collect_until_pound_or_three_seconds() {
        let c = parse("");
        assert_eq!(c.terminator, "#");
        assert_eq!(c.inter_digit_timeout, 3.0);
        assert!(c.collect);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn each_broken_rule_names_its_key() {
        let cases = [
            ("terminator = \"x\"", "terminator"),
            ("terminator = \"##\"", "terminator"),
            ("inter_digit_timeout = 0", "inter_digit_timeout"),
            ("max_digits = 0", "max_digits"),
            ("prompt = \"typed\"", "prompt"),
            ("[[keys]]\ndigits = \"1x\"\nsay = \"a\"", "keys[0].digits"),
            ("[[keys]]\ndigits = \"1\"", "keys[0].digits"),
            ("[[keys]]\ndigits = \"1\"\nsay = \" \"", "keys[0].say"),
            (
                "[[keys]]\ndigits = \"1\"\ntransfer = \"sip:a@b\"\nend_call = true",
                "keys[0].end_call",
            ),
            (
                "[[keys]]\ndigits = \"*9\"\nend_call = true\n[[keys]]\ndigits = \"*\"\nsay = \"a\"",
                "keys[1].digits",
            ),
        ];
        for (text, key) in cases {
            let issue = parse(text).validate().unwrap_err();
            assert_eq!(issue.0, key, "{text}: {issue:?}");
        }
    }

    #[test]
    fn a_mistake_in_hark_toml_names_the_file_line_and_key() {
        let text = "[agent]\ninstructions = \"x\"\n\n[agent.dtmf]\n[[agent.dtmf.keys]]\n\
                    digits = \"9\"\nend_call = true\n[[agent.dtmf.keys]]\ndigits = \"91\"\n\
                    say = \"a\"\n";
        let err = crate::config::Config::parse(text, std::path::Path::new("hark.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("hark.toml:9: agent.dtmf.keys[1].digits: \"91\" and keys[0]'s \"9\""),
            "{err}"
        );
    }

    #[test]
    fn a_menu_of_say_transfer_and_end_call_is_valid() {
        let c = parse(
            "[[keys]]\ndigits = \"0\"\nsay = \"Connecting you.\"\ntransfer = \"sip:desk@pbx\"\n\
             [[keys]]\ndigits = \"*9\"\nend_call = true\n",
        );
        assert!(c.validate().is_ok());
        assert_eq!(c.keys[0].transfer.as_deref(), Some("sip:desk@pbx"));
    }
}
