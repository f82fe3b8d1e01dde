//! The keys a caller presses, turned into what the agent does (the spec's `DTMFHandler`).
//!
//! Every digit of a call reaches one [`DtmfHandler`], whichever way it came (RFC 4733 events,
//! SIP INFO, in-band tones: the transport has already decoded it). The handler calls the user's
//! callback with the digit, then matches it against the `[agent.dtmf]` mappings: a complete
//! mapped sequence yields its [`DtmfAction`] at once; other keys are collected until the
//! terminator (`#`) or a pause, and the entry is handed over as [`DtmfAction::Collected`], which
//! the call gives the LLM as a user turn ("The caller typed: 1234").
//!
//! The Python handler drops a digit `0` sent as a number, because `0` is falsy; here a digit is
//! a `char` and every one of `0-9*#A-D` is delivered.
//!
//! The handler is a state machine without a clock of its own: the caller passes the time of each
//! key and asks [`DtmfHandler::deadline`] when the pending entry expires, so a call loop can
//! `sleep_until` it and tests can run on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::dtmf::{DtmfConfig, DTMF_KEYS};

/// What the agent should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfAction {
    /// A mapped key or sequence: say `say` (if any), then transfer or end the call (if asked).
    Mapped {
        /// The sequence that matched.
        digits: String,
        /// Said first.
        say: Option<String>,
        /// Then transfer the caller here.
        transfer: Option<String>,
        /// Then end the call.
        end_call: bool,
    },
    /// An entry the caller typed (terminator, pause or length ended it), for the LLM.
    Collected {
        /// The keys, without the terminator.
        digits: String,
        /// The user turn for the LLM (`prompt` with the keys in).
        prompt: String,
    },
}

/// The user's callback: gets every digit, in order.
pub type DtmfCallback = Arc<dyn Fn(char) + Send + Sync>;

/// One call's key handling: callback, mappings and collection.
pub struct DtmfHandler {
    config: DtmfConfig,
    terminator: Option<char>,
    timeout: Duration,
    callback: Option<DtmfCallback>,
    buffer: String,
    last_key: Option<Instant>,
}

impl std::fmt::Debug for DtmfHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtmfHandler")
            .field("buffer", &self.buffer)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl DtmfHandler {
    /// A handler following `config` (validated by the config loader), without a callback.
    pub fn new(config: DtmfConfig) -> Self {
        Self {
            terminator: config.terminator.chars().next(),
            timeout: Duration::from_secs_f64(config.inter_digit_timeout),
            config,
            callback: None,
            buffer: String::new(),
            last_key: None,
        }
    }

    /// Sets (or replaces) the callback that gets every digit (the spec's `set_callback`).
    pub fn set_callback(&mut self, callback: impl Fn(char) + Send + Sync + 'static) {
        self.callback = Some(Arc::new(callback));
    }

    /// The keys collected so far.
    pub fn pending(&self) -> &str {
        &self.buffer
    }

    /// When the pending entry is handed over if no key comes; none: nothing pending.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.buffer.is_empty())
            .then_some(self.last_key)
            .flatten()
            .map(|t| t + self.timeout)
    }

    /// A key pressed at `now`. Keys outside `0-9*#A-D` are ignored (logged). Returns what the
    /// agent should do now, if anything.
    pub fn digit(&mut self, digit: char, now: Instant) -> Option<DtmfAction> {
        let digit = digit.to_ascii_uppercase();
        if !DTMF_KEYS.contains(digit) {
            tracing::warn!(?digit, "not a DTMF key; ignored");
            return None;
        }
        tracing::debug!(%digit, "[DTMFHandler] received");
        if let Some(cb) = &self.callback {
            cb(digit);
        }
        // An entry left over from a pause the loop did not yet act on ends first.
        let expired = self.expire(now);
        self.last_key = Some(now);
        self.buffer.push(digit);
        if let Some(k) = self.config.keys.iter().find(|k| k.digits == self.buffer) {
            self.buffer.clear();
            return Some(DtmfAction::Mapped {
                digits: k.digits.clone(),
                say: k.say.clone(),
                transfer: k.transfer.clone(),
                end_call: k.end_call,
            });
        }
        if Some(digit) == self.terminator {
            self.buffer.pop();
            return self.flush().or(expired);
        }
        let mapped_prefix = self
            .config
            .keys
            .iter()
            .any(|k| k.digits.starts_with(self.buffer.as_str()));
        if !self.config.collect && !mapped_prefix {
            // Nothing to collect for and no sequence this could still become.
            self.buffer.clear();
        } else if self.buffer.len() >= self.config.max_digits {
            return self.flush().or(expired);
        }
        expired
    }

    /// Hands over the pending entry if its deadline has passed at `now`.
    pub fn expire(&mut self, now: Instant) -> Option<DtmfAction> {
        match self.deadline() {
            Some(d) if now >= d => self.flush(),
            _ => None,
        }
    }

    /// The pending entry for the LLM (if collecting and not empty); clears it.
    fn flush(&mut self) -> Option<DtmfAction> {
        let digits = std::mem::take(&mut self.buffer);
        if digits.is_empty() || !self.config.collect {
            return None;
        }
        let prompt = self.config.prompt.replace("{digits}", &digits);
        Some(DtmfAction::Collected { digits, prompt })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::dtmf::DtmfKeyConfig;

    fn menu() -> DtmfConfig {
        DtmfConfig {
            keys: vec![
                DtmfKeyConfig {
                    digits: "0".into(),
                    say: Some("Connecting you to the front desk.".into()),
                    transfer: Some("sip:desk@pbx".into()),
                    end_call: false,
                },
                DtmfKeyConfig {
                    digits: "*9".into(),
                    say: None,
                    transfer: None,
                    end_call: true,
                },
            ],
            ..DtmfConfig::default()
        }
    }

    fn collected(digits: &str) -> Option<DtmfAction> {
        Some(DtmfAction::Collected {
            digits: digits.into(),
            prompt: format!("The caller typed: {digits}"),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_collected_until_the_terminator() {
        let mut h = DtmfHandler::new(DtmfConfig::default());
        let now = Instant::now();
        for d in ['1', '2', '3', '4'] {
            assert_eq!(h.digit(d, now), None);
        }
        assert_eq!(h.pending(), "1234");
        assert_eq!(h.digit('#', now), collected("1234"));
        assert_eq!(h.pending(), "");
        assert_eq!(h.deadline(), None);
        // A lone terminator hands nothing over.
        assert_eq!(h.digit('#', now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_inter_digit_timeout_hands_the_entry_over() {
        let mut h = DtmfHandler::new(DtmfConfig::default());
        h.digit('4', Instant::now());
        tokio::time::advance(Duration::from_millis(2_000)).await;
        h.digit('2', Instant::now());
        // The timeout runs from the last key, not the first.
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert_eq!(h.expire(Instant::now()), None);
        tokio::time::sleep_until(h.deadline().unwrap()).await;
        assert_eq!(h.expire(Instant::now()), collected("42"));
        assert_eq!(h.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_after_an_unhandled_pause_starts_a_new_entry() {
        let mut h = DtmfHandler::new(DtmfConfig::default());
        h.digit('7', Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.digit('8', Instant::now()), collected("7"));
        assert_eq!(h.pending(), "8");
    }

    #[tokio::test(start_paused = true)]
    async fn a_mapped_sequence_fires_when_complete_and_is_not_collected() {
        let mut h = DtmfHandler::new(menu());
        let now = Instant::now();
        assert_eq!(h.digit('*', now), None, "a prefix of *9 waits");
        assert_eq!(
            h.digit('9', now),
            Some(DtmfAction::Mapped {
                digits: "*9".into(),
                say: None,
                transfer: None,
                end_call: true,
            })
        );
        assert_eq!(h.pending(), "");
        // The same keys inside a longer entry do not match: 1*9 is an entry, not a mapping.
        h.digit('1', now);
        h.digit('*', now);
        assert_eq!(h.digit('9', now), None);
        assert_eq!(h.digit('#', now), collected("1*9"));
    }

    #[tokio::test(start_paused = true)]
    async fn digit_zero_is_delivered_not_dropped_as_falsy() {
        let seen = Arc::new(Mutex::new(String::new()));
        let mut h = DtmfHandler::new(menu());
        let s = seen.clone();
        h.set_callback(move |d| s.lock().unwrap().push(d));
        let now = Instant::now();
        let action = h.digit('0', now);
        assert!(
            matches!(&action, Some(DtmfAction::Mapped { digits, transfer: Some(t), .. })
                if digits == "0" && t == "sip:desk@pbx"),
            "{action:?}"
        );
        let mut plain = DtmfHandler::new(DtmfConfig::default());
        plain.digit('0', now);
        plain.digit('0', now);
        assert_eq!(plain.digit('#', now), collected("00"));
        assert_eq!(*seen.lock().unwrap(), "0");
    }

    #[tokio::test(start_paused = true)]
    async fn the_callback_gets_every_key_in_order_mapped_or_not() {
        let seen = Arc::new(Mutex::new(String::new()));
        let mut h = DtmfHandler::new(menu());
        let s = seen.clone();
        h.set_callback(move |d| s.lock().unwrap().push(d));
        let now = Instant::now();
        for d in "12#*9a0".chars() {
            h.digit(d, now);
        }
        assert_eq!(*seen.lock().unwrap(), "12#*9A0");
        // Not keys: neither delivered nor collected.
        h.digit('x', now);
        h.digit(' ', now);
        assert_eq!(*seen.lock().unwrap(), "12#*9A0");
    }

    #[tokio::test(start_paused = true)]
    async fn without_collection_only_mappings_act_and_nothing_lingers() {
        let mut h = DtmfHandler::new(DtmfConfig {
            collect: false,
            ..menu()
        });
        let now = Instant::now();
        assert_eq!(h.digit('5', now), None);
        assert_eq!(h.pending(), "");
        assert_eq!(h.digit('#', now), None);
        assert!(h.digit('0', now).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_reaching_max_digits_is_handed_over_at_once() {
        let mut h = DtmfHandler::new(DtmfConfig {
            max_digits: 3,
            ..DtmfConfig::default()
        });
        let now = Instant::now();
        h.digit('9', now);
        h.digit('8', now);
        assert_eq!(h.digit('7', now), collected("987"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_terminator_means_only_the_pause_ends_an_entry() {
        let mut h = DtmfHandler::new(DtmfConfig {
            terminator: String::new(),
            ..DtmfConfig::default()
        });
        let now = Instant::now();
        assert_eq!(h.digit('#', now), None);
        assert_eq!(h.pending(), "#");
        assert_eq!(h.expire(now + Duration::from_secs(3)), collected("#"));
    }
}
