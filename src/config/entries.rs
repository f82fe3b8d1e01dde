//! Every provider a config names, primary and fallbacks, each built on its own: what
//! `hark check` lists and, with `--online`, pings one by one.

use std::sync::Arc;

use super::{Config, ProvidersError};
use crate::providers::http::ApiKey;
use crate::providers::realtime::Realtime;
use crate::providers::{Llm, ProviderError, Stt, Tts};

/// One built provider of any kind.
pub enum Built {
    /// `[stt]` or one of its fallbacks.
    Stt(Arc<dyn Stt>),
    /// `[llm]` or one of its fallbacks.
    Llm(Arc<dyn Llm>),
    /// `[tts]` or one of its fallbacks.
    Tts(Arc<dyn Tts>),
    /// `[realtime]`.
    Realtime(Arc<dyn Realtime>),
}

/// One configured provider, described without its key.
pub struct ProviderEntry {
    /// Where it is configured: `stt`, `llm.fallback[0]`, …
    pub section: String,
    /// The provider, model or voice, the URL when not the service's own, and whether a key is
    /// set (never the key).
    pub summary: String,
    /// The provider itself.
    pub built: Built,
}

impl ProviderEntry {
    /// Whether the service answers and takes the key (each provider's `ping`).
    pub async fn ping(&self) -> Result<(), ProviderError> {
        match &self.built {
            Built::Stt(p) => p.ping().await,
            Built::Llm(p) => p.ping().await,
            Built::Tts(p) => p.ping().await,
            Built::Realtime(p) => p.ping().await,
        }
    }
}

fn summary(
    label: &str,
    model: Option<&str>,
    voice: Option<&str>,
    base_url: Option<&str>,
    key: bool,
) -> String {
    let mut s = label.to_owned();
    if let Some(m) = model {
        s.push_str(&format!(", model {m}"));
    }
    if let Some(v) = voice {
        s.push_str(&format!(", voice {v}"));
    }
    if let Some(u) = base_url {
        s.push_str(&format!(", at {}", shown_url(u)));
    }
    s.push_str(if key { ", key set" } else { ", no key" });
    s
}

/// A URL as it may be shown: without a password or query string, where a key could hide.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Builds `primary` as `name` and each fallback as `name.fallback[i]`; `entry` builds one and
/// describes it.
fn push_chain<C>(
    out: &mut Vec<ProviderEntry>,
    name: &str,
    primary: &C,
    fallback: &[C],
    entry: impl Fn(&C) -> Result<(String, Built), ProvidersError>,
) -> Result<(), ProvidersError> {
    let sections = std::iter::once((name.to_owned(), primary)).chain(
        fallback
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{name}.fallback[{i}]"), c)),
    );
    for (section, c) in sections {
        let (summary, built) = entry(c)?;
        out.push(ProviderEntry {
            section,
            summary,
            built,
        });
    }
    Ok(())
}

fn has_key(key: Option<&ApiKey>) -> bool {
    key.is_some_and(|k| !k.is_empty())
}

impl Config {
    /// Every configured provider in order (stt, llm, tts, realtime; each primary before its
    /// fallbacks), built one by one so each can be shown and pinged on its own.
    pub fn provider_entries(&self) -> Result<Vec<ProviderEntry>, ProvidersError> {
        let mut out = Vec::new();
        if let Some(stt) = &self.stt {
            push_chain(&mut out, "stt", stt, &stt.fallback, |c| {
                let p = c.build()?;
                let key = has_key(c.api_key.as_ref());
                let s = summary(
                    p.label(),
                    c.model.as_deref(),
                    None,
                    c.base_url.as_deref(),
                    key,
                );
                Ok((s, Built::Stt(p)))
            })?;
        }
        if let Some(llm) = &self.llm {
            push_chain(&mut out, "llm", llm, &llm.fallback, |c| {
                let p = c.build()?;
                let key = has_key(c.api_key.as_ref());
                let s = summary(p.label(), Some(&c.model), None, c.base_url.as_deref(), key);
                Ok((s, Built::Llm(p)))
            })?;
        }
        if let Some(tts) = &self.tts {
            push_chain(&mut out, "tts", tts, &tts.fallback, |c| {
                let p = c.build()?;
                let key = has_key(c.api_key.as_ref());
                let (model, voice, url) = (
                    c.model.as_deref(),
                    c.voice.as_deref(),
                    c.base_url.as_deref(),
                );
                Ok((summary(p.label(), model, voice, url, key), Built::Tts(p)))
            })?;
        }
        if let Some(rt) = &self.realtime {
            push_chain(&mut out, "realtime", rt, &[], |c| {
                let p = c.build()?;
                let key = has_key(c.api_key.as_ref());
                let (voice, url) = (c.voice.as_deref(), c.base_url.as_deref());
                Ok((
                    summary(p.label(), Some(&c.model), voice, url, key),
                    Built::Realtime(p),
                ))
            })?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn urls_are_shown_without_passwords_or_queries() {
        assert_eq!(
            shown_url("https://me:secret@llm.lan:8080/v1?key=abc"),
            "https://me@llm.lan:8080/v1"
        );
        assert_eq!(
            shown_url("wss://api.deepgram.com/v1/listen"),
            "wss://api.deepgram.com/v1/listen"
        );
        assert_eq!(shown_url("not a url secret"), "(not a URL)");
    }
}
