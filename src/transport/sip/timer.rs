//! Session timers (RFC 4028).
//!
//! On calls hark answers, a caller's `Session-Expires` is accepted when it is at least
//! [`MIN_SE`] (else 422 with `Min-SE`) and echoed in the 200 with who refreshes. On calls hark
//! places, the INVITE asks for `[sip] session_expires` (and, after a 422, for the far end's
//! `Min-SE`), and the 200 says what was agreed. Either way the timer is then kept: when hark
//! refreshes, a re-INVITE goes out at half the interval; when the far end does and no refresh
//! (re-INVITE or UPDATE) arrives, hark sends BYE before the session expires (§10: the smaller of 32 s and
//! a third of the interval before) and the call ends with [`HangupReason::SessionExpired`].
//!
//! Not covered: the compact header `x`; hark itself refreshes by re-INVITE, never UPDATE.
//!
//! [`HangupReason::SessionExpired`]: super::call::HangupReason::SessionExpired

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::call::HangupReason;
use super::message::{param, split_list, Message};
use super::ua::{Shared, State};

/// The smallest session interval hark accepts, RFC 4028's minimum (§4: 90 s).
pub const MIN_SE: u32 = 90;

/// What the INVITE and hark's answer settled for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Terms {
    /// The session interval.
    pub(super) interval: u32,
    /// hark refreshes (else the caller does).
    pub(super) hark_refreshes: bool,
    /// The caller said `Supported: timer` (so hark's answer may `Require` it).
    pub(super) peer_supports: bool,
}

/// A timer's state beside its terms: when the far end refreshed last.
#[derive(Debug, Default)]
pub(super) struct Timer {
    pub(super) terms: Option<Terms>,
    /// Notified by every accepted refresh (a re-INVITE either way, or the far end's UPDATE).
    pub(super) refreshed: Arc<Notify>,
}

/// Reads the session-timer request of an INVITE or re-INVITE that hark answers: `Ok(None)`
/// when it asks for none, `Err(MIN_SE)` when its interval is too small (answer 422 with
/// `Min-SE`).
pub(super) fn negotiate(msg: &Message) -> Result<Option<Terms>, u32> {
    let Some(value) = msg.header("Session-Expires") else {
        return Ok(None);
    };
    let delta = value
        .split(';')
        .next()
        .and_then(|d| d.trim().parse::<u32>().ok());
    let Some(interval) = delta else {
        // Unreadable: treated as no request (the call still works, just without a timer).
        tracing::warn!(value, "sip: unreadable Session-Expires ignored");
        return Ok(None);
    };
    if interval < MIN_SE {
        return Err(MIN_SE);
    }
    let peer_supports = msg
        .header_values("Supported")
        .iter()
        .flat_map(|v| split_list(v))
        .any(|o| o.trim().eq_ignore_ascii_case("timer"));
    let refresher = param(value, "refresher").map(|r| r.to_ascii_lowercase());
    // §9: honour the caller's choice; without one, the caller refreshes when it supports
    // timers, and hark (the UAS) must when it does not.
    let hark_refreshes = match refresher.as_deref() {
        Some("uas") => true,
        Some("uac") => !peer_supports,
        _ => !peer_supports,
    };
    Ok(Some(Terms {
        interval,
        hark_refreshes,
        peer_supports,
    }))
}

/// Reads what the 2xx to an INVITE hark sent agreed (§7.2): no `Session-Expires`, no timer;
/// without a refresher named, hark (the UAC) refreshes, which is always safe.
pub(super) fn agreed(ok: &Message) -> Option<Terms> {
    let value = ok.header("Session-Expires")?;
    let interval = value.split(';').next()?.trim().parse::<u32>().ok()?;
    let timer = |h: &str| {
        ok.header_values(h)
            .iter()
            .flat_map(|v| split_list(v))
            .any(|o| o.trim().eq_ignore_ascii_case("timer"))
    };
    let refresher = param(value, "refresher").map(|r| r.to_ascii_lowercase());
    Some(Terms {
        // Never below the minimum, whatever the answer says: a 1 s interval would have hark
        // re-INVITE twice a second.
        interval: interval.max(MIN_SE),
        hark_refreshes: refresher.as_deref() != Some("uas"),
        peer_supports: timer("Require") || timer("Supported"),
    })
}

/// The interval to ask for again after a 422 that says `Min-SE` (§7.4): the larger of the
/// two, or `None` when the 422 names none or something absurd (over a day).
pub(super) fn after_422(asked: u32, refused: &Message) -> Option<u32> {
    let min_se = refused
        .header("Min-SE")?
        .split(';')
        .next()?
        .trim()
        .parse::<u32>()
        .ok()?;
    (min_se <= 86_400).then(|| asked.max(min_se))
}

/// Adds the session-timer headers to hark's 2xx for a request it answers (§9).
pub(super) fn decorate(terms: Option<Terms>, ok: &mut Message) {
    ok.push("Supported", "timer");
    if let Some(t) = terms {
        let who = if t.hark_refreshes { "uas" } else { "uac" };
        ok.push("Session-Expires", format!("{};refresher={who}", t.interval));
        if t.peer_supports {
            ok.push("Require", "timer");
        }
    }
}

/// The terms of call `id`, if it has a timer.
pub(super) fn terms(st: &State, id: &str) -> Option<Terms> {
    st.dialogs.get(id).and_then(|d| d.timer.terms)
}

/// Records the terms of a refresh hark accepted (a re-INVITE from the peer, or hark's own
/// 2xx'd re-INVITE) and wakes the timer.
pub(super) fn refreshed(st: &mut State, id: &str, terms: Option<Terms>) {
    let extra = st.dialogs.entry(id.to_owned()).or_default();
    if terms.is_some() {
        extra.timer.terms = terms;
    }
    extra.timer.refreshed.notify_one();
}

/// How long before expiry hark gives up on the peer's refresh and sends BYE (§10).
pub fn bye_margin(interval: u32) -> Duration {
    Duration::from_secs(u64::from((interval / 3).min(32)))
}

/// Keeps call `id`'s session timer until the call ends.
pub(super) fn spawn(shared: Arc<Shared>, id: String) {
    tokio::spawn(async move { run(shared, id).await });
}

async fn run(shared: Arc<Shared>, id: String) {
    loop {
        let (terms, refreshed, held) = {
            let st = shared.lock();
            if !st.calls.contains_key(&id) {
                return;
            }
            let Some(extra) = st.dialogs.get(&id) else {
                return;
            };
            let Some(terms) = extra.timer.terms else {
                return;
            };
            (terms, extra.timer.refreshed.clone(), extra.held)
        };
        let interval = Duration::from_secs(u64::from(terms.interval));
        if terms.hark_refreshes {
            // A refresh by the peer (or a hold) meanwhile restarts the half-interval wait.
            if tokio::time::timeout(interval / 2, refreshed.notified())
                .await
                .is_ok()
            {
                continue;
            }
            if !shared.lock().calls.contains_key(&id) {
                return;
            }
            if super::hold::reinvite_in_flight(&shared.lock(), &id) {
                continue; // that re-INVITE refreshes the session when it succeeds
            }
            tracing::info!(call = %id, "sip: refreshing the session (re-INVITE)");
            if let Err(e) = shared.reoffer(&id, held).await {
                tracing::warn!(call = %id, error = %e, "sip: session refresh failed; ending the call");
                let _ = shared.end_call(&id, HangupReason::SessionExpired).await;
                return;
            }
        } else {
            let wait = interval.saturating_sub(bye_margin(terms.interval));
            if tokio::time::timeout(wait, refreshed.notified())
                .await
                .is_ok()
            {
                continue;
            }
            tracing::warn!(call = %id, interval = terms.interval, "sip: the caller did not refresh the session; hanging up");
            let _ = shared.end_call(&id, HangupReason::SessionExpired).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:hark@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:hark@127.0.0.1>\r\nCall-ID: t\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_callers_choice_of_refresher_is_honoured_and_defaults_follow_rfc_4028_9() {
        let t = |h: &str| negotiate(&invite(h)).unwrap();
        assert_eq!(t(""), None);
        let peer = t("Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n").unwrap();
        assert_eq!(
            (peer.interval, peer.hark_refreshes, peer.peer_supports),
            (1800, false, true)
        );
        let us = t("Supported: 100rel, timer\r\nSession-Expires: 120;refresher=uas\r\n").unwrap();
        assert!(us.hark_refreshes && us.peer_supports);
        let unsaid = t("Supported: timer\r\nSession-Expires: 600\r\n").unwrap();
        assert!(
            !unsaid.hark_refreshes,
            "a caller that supports timers refreshes"
        );
        let proxy = t("Session-Expires: 600\r\n").unwrap();
        assert!(
            proxy.hark_refreshes && !proxy.peer_supports,
            "a proxy asked; hark must"
        );
    }

    fn ok(extra: &str) -> Message {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:hark@127.0.0.1>;tag=h\r\nTo: <sip:b@127.0.0.1>;tag=b\r\nCall-ID: t\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_answer_to_harks_invite_says_who_refreshes_and_no_header_means_no_timer() {
        assert_eq!(agreed(&ok("")), None);
        let far = agreed(&ok(
            "Require: timer\r\nSession-Expires: 600;refresher=uas\r\n",
        ))
        .unwrap();
        assert_eq!(
            (far.interval, far.hark_refreshes, far.peer_supports),
            (600, false, true)
        );
        let us = agreed(&ok("Session-Expires: 1800;refresher=uac\r\n")).unwrap();
        assert!(
            us.hark_refreshes && !us.peer_supports,
            "a proxy answered for a UAS without timers"
        );
        assert!(
            agreed(&ok("Session-Expires: 900\r\n"))
                .unwrap()
                .hark_refreshes
        );
        assert_eq!(
            agreed(&ok("Session-Expires: 5;refresher=uac\r\n"))
                .unwrap()
                .interval,
            MIN_SE
        );
        assert_eq!(agreed(&ok("Session-Expires: later\r\n")), None);
    }

    #[test]
    fn a_422_raises_the_interval_to_its_min_se_but_never_lowers_it() {
        let refused = |h: &str| {
            let text = format!(
                "SIP/2.0 422 Session Interval Too Small\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
                 From: <sip:a@b>;tag=h\r\nTo: <sip:b@c>\r\nCall-ID: t\r\nCSeq: 1 INVITE\r\n{h}\
                 Content-Length: 0\r\n\r\n"
            );
            Message::parse(text.as_bytes()).unwrap()
        };
        assert_eq!(after_422(1800, &refused("Min-SE: 3600\r\n")), Some(3600));
        assert_eq!(after_422(1800, &refused("Min-SE: 600\r\n")), Some(1800));
        assert_eq!(after_422(1800, &refused("")), None);
        assert_eq!(after_422(1800, &refused("Min-SE: 999999\r\n")), None);
    }

    #[test]
    fn too_small_an_interval_is_refused_with_our_minimum() {
        assert_eq!(negotiate(&invite("Session-Expires: 60\r\n")), Err(MIN_SE));
        assert!(negotiate(&invite("Session-Expires: 90\r\n")).is_ok());
        assert_eq!(negotiate(&invite("Session-Expires: soon\r\n")), Ok(None));
    }

    #[test]
    fn the_answer_names_the_refresher_and_requires_timer_only_when_supported() {
        let mut ok = Message::request("X", "sip:x");
        decorate(
            Some(Terms {
                interval: 90,
                hark_refreshes: true,
                peer_supports: true,
            }),
            &mut ok,
        );
        assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uas"));
        assert_eq!(ok.header("Require"), Some("timer"));
        let mut ok = Message::request("X", "sip:x");
        decorate(
            Some(Terms {
                interval: 600,
                hark_refreshes: true,
                peer_supports: false,
            }),
            &mut ok,
        );
        assert_eq!(ok.header("Require"), None);
        assert_eq!(bye_margin(90), Duration::from_secs(30));
        assert_eq!(bye_margin(1800), Duration::from_secs(32));
    }
}
