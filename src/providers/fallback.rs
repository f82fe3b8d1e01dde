//! Fallback across providers of one kind: [`FallbackStt`], [`FallbackLlm`] and [`FallbackTts`]
//! wrap a priority list and are providers themselves, so the session never knows.
//!
//! The behaviour is the spec's `FallbackBase` (spec/30 §8): a failing provider is replaced by
//! the next in the list, a failed one is tried again after a cooldown (60 s) once a request
//! starts, and one that keeps failing (3 times) is left off. Every switch and recovery is a
//! [`FallbackEvent`] (logged, and published to [`Roster::subscribe`]rs). What is resent after a
//! switch: the LLM gets the whole request again, speech-to-text the audio of the utterance not
//! yet transcribed, text-to-speech the same text.
//!
//! Deliberate differences from the reference, for a device that runs for months:
//! - failures are counted while they are consecutive: a success clears the count, so three
//!   network blips spread over a month do not switch the primary off for good;
//! - moving on skips providers that are switched off for good (the reference walks into them);
//! - an answer that already produced output is not silently restarted on the next provider
//!   (the reference re-streams it, so the user hears the start twice): the failure ends that
//!   answer with its error and the next request goes to the next provider;
//! - text-to-speech providers with a different sample rate are resampled to the primary's (the
//!   reference assumes they match, which the offline espeak voice does not).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::{
    AudioStream, Llm, LlmRequest, LlmStream, ProviderError, Stt, SttEvent, SttInput, SttSession,
    Tts,
};
use crate::audio::resample::Resampler;

/// When a failed provider is tried again, and when it is given up on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FallbackPolicy {
    /// How long a failed provider rests before a request may try it again (spec: 60 s).
    pub cooldown: Duration,
    /// Consecutive failures after which a provider is not tried again (spec: 3).
    pub max_failures: u32,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        FallbackPolicy {
            cooldown: Duration::from_secs(60),
            max_failures: 3,
        }
    }
}

/// A switch away from a failed provider, or back to a recovered one.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackEvent {
    /// `"stt"`, `"llm"` or `"tts"`.
    pub component: &'static str,
    /// The provider that was active.
    pub from: String,
    /// The provider now active; `None` when every provider has failed.
    pub to: Option<String>,
    /// Why: the failure, or the cooldown that ended.
    pub reason: String,
    /// A switch back to a higher-priority provider after its cooldown.
    pub recovery: bool,
    /// Consecutive failures of `from` so far (0 on recovery).
    pub failures: u32,
}

/// A fallback wrapper was given no provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0} fallback needs at least one provider")]
pub struct NoProviders(pub &'static str);

/// Which provider of a priority list is active, and the failure history behind it.
pub struct Roster {
    component: &'static str,
    labels: Vec<String>,
    policy: FallbackPolicy,
    state: Mutex<RosterState>,
    events: broadcast::Sender<FallbackEvent>,
}

struct RosterState {
    current: usize,
    failed_at: Vec<Option<Instant>>,
    failures: Vec<u32>,
}

impl Roster {
    fn new(
        component: &'static str,
        labels: Vec<String>,
        policy: FallbackPolicy,
    ) -> Result<Self, NoProviders> {
        if labels.is_empty() {
            return Err(NoProviders(component));
        }
        let n = labels.len();
        Ok(Roster {
            component,
            labels,
            policy,
            state: Mutex::new(RosterState {
                current: 0,
                failed_at: vec![None; n],
                failures: vec![0; n],
            }),
            events: broadcast::channel(16).0,
        })
    }

    /// Switch and recovery events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FallbackEvent> {
        self.events.subscribe()
    }

    /// The label of the provider requests go to now.
    pub fn active(&self) -> &str {
        &self.labels[self.lock().current]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RosterState> {
        // A panic while holding this lock cannot leave the state inconsistent (every update
        // is a plain store), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The provider to use for a new request: the active one, or a higher-priority one whose
    /// cooldown has passed (checked lazily, as in the spec: there is no timer).
    fn start(&self) -> usize {
        let mut st = self.lock();
        let now = Instant::now();
        for i in 0..st.current {
            if st.failures[i] >= self.policy.max_failures {
                continue;
            }
            let Some(at) = st.failed_at[i] else { continue };
            if now.duration_since(at) > self.policy.cooldown {
                let from = st.current;
                st.failed_at[i] = None;
                st.current = i;
                drop(st);
                self.emit(FallbackEvent {
                    component: self.component,
                    from: self.labels[from].clone(),
                    to: Some(self.labels[i].clone()),
                    reason: format!("cooldown of {:?} ended", self.policy.cooldown),
                    recovery: true,
                    failures: 0,
                });
                return i;
            }
        }
        st.current
    }

    /// Provider `idx` worked: its failures are forgiven.
    fn succeeded(&self, idx: usize) {
        self.lock().failures[idx] = 0;
    }

    /// Provider `idx` failed with `error`: moves on and returns the provider to try next, or
    /// `None` when none is left. A failure of a provider that is no longer active (two
    /// requests failing together) does not move twice.
    fn failed(&self, idx: usize, error: &ProviderError) -> Option<usize> {
        let mut st = self.lock();
        if idx != st.current {
            return Some(st.current);
        }
        st.failed_at[idx] = Some(Instant::now());
        st.failures[idx] += 1;
        let failures = st.failures[idx];
        let next =
            (idx + 1..self.labels.len()).find(|&j| st.failures[j] < self.policy.max_failures);
        if let Some(j) = next {
            st.current = j;
        }
        drop(st);
        self.emit(FallbackEvent {
            component: self.component,
            from: self.labels[idx].clone(),
            to: next.map(|j| self.labels[j].clone()),
            reason: error.to_string(),
            recovery: false,
            failures,
        });
        next
    }

    fn emit(&self, event: FallbackEvent) {
        match (&event.to, event.recovery) {
            (Some(to), true) => tracing::info!(
                component = event.component, from = %event.from, to = %to,
                "provider recovered: {}", event.reason
            ),
            (Some(to), false) => tracing::warn!(
                component = event.component, from = %event.from, to = %to,
                failures = event.failures, "provider failed, switched: {}", event.reason
            ),
            (None, _) => tracing::error!(
                component = event.component, from = %event.from,
                "all providers failed: {}", event.reason
            ),
        }
        let _ = self.events.send(event);
    }
}

/// A chain answers when any of its providers does; otherwise the first one's error.
async fn ping_chain(
    pings: impl Iterator<Item = impl std::future::Future<Output = Result<(), ProviderError>>>,
) -> Result<(), ProviderError> {
    let mut first = None;
    for ping in pings {
        match ping.await {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| ProviderError::Unavailable("no providers".into())))
}

fn fallback_label(component: &str, labels: &[String]) -> String {
    format!("fallback-{component}({})", labels.join(","))
}

/// A language model that falls back along a priority list.
pub struct FallbackLlm {
    providers: Vec<Arc<dyn Llm>>,
    roster: Arc<Roster>,
    label: String,
}

impl FallbackLlm {
    /// Wraps `providers`, the first being the primary.
    pub fn new(providers: Vec<Arc<dyn Llm>>, policy: FallbackPolicy) -> Result<Self, NoProviders> {
        let labels: Vec<String> = providers.iter().map(|p| p.label().to_owned()).collect();
        let label = fallback_label("llm", &labels);
        Ok(FallbackLlm {
            roster: Arc::new(Roster::new("llm", labels, policy)?),
            providers,
            label,
        })
    }

    /// Which provider is active, and switch events.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }
}

#[async_trait]
impl Llm for FallbackLlm {
    fn label(&self) -> &str {
        &self.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        ping_chain(self.providers.iter().map(|p| p.ping())).await
    }

    /// Tries providers in turn until one starts answering: a provider that fails before its
    /// first event is replaced and the whole request goes to the next. A failure after that
    /// ends this answer (the next request goes elsewhere).
    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let mut idx = self.roster.start();
        loop {
            let started = match self.providers[idx].chat(request.clone()).await {
                Ok(mut stream) => match stream.recv().await {
                    Some(Ok(first)) => Ok(Some((first, stream))),
                    Some(Err(e)) => Err(e),
                    None => Ok(None),
                },
                Err(e) => Err(e),
            };
            match started {
                Ok(None) => {
                    self.roster.succeeded(idx);
                    return Ok(mpsc::channel(1).1);
                }
                Ok(Some((first, mut inner))) => {
                    self.roster.succeeded(idx);
                    let (tx, rx) = mpsc::channel(64);
                    let roster = self.roster.clone();
                    tokio::spawn(async move {
                        let mut next = Some(Ok(first));
                        while let Some(item) = next {
                            if let Err(e) = &item {
                                roster.failed(idx, e);
                            }
                            if tx.send(item).await.is_err() {
                                return; // the caller cancelled: dropping `inner` cancels too
                            }
                            next = tokio::select! {
                                n = inner.recv() => n,
                                _ = tx.closed() => return,
                            };
                        }
                    });
                    return Ok(rx);
                }
                Err(e) => match self.roster.failed(idx, &e) {
                    Some(n) => idx = n,
                    None => return Err(e),
                },
            }
        }
    }
}

/// Speech synthesis that falls back along a priority list, speaking at the primary's rate.
pub struct FallbackTts {
    providers: Vec<Arc<dyn Tts>>,
    roster: Arc<Roster>,
    label: String,
    rate: u32,
}

impl FallbackTts {
    /// Wraps `providers`, the first being the primary; its sample rate is the wrapper's.
    pub fn new(providers: Vec<Arc<dyn Tts>>, policy: FallbackPolicy) -> Result<Self, NoProviders> {
        let labels: Vec<String> = providers.iter().map(|p| p.label().to_owned()).collect();
        let label = fallback_label("tts", &labels);
        let roster = Arc::new(Roster::new("tts", labels, policy)?);
        Ok(FallbackTts {
            rate: providers[0].sample_rate(),
            providers,
            roster,
            label,
        })
    }

    /// Which provider is active, and switch events.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }
}

#[async_trait]
impl Tts for FallbackTts {
    fn label(&self) -> &str {
        &self.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        ping_chain(self.providers.iter().map(|p| p.ping())).await
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Synthesises with the active provider, keeping the text it was given; a provider that
    /// fails before any audio is replaced and the next one gets the same text.
    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError> {
        let (tx, rx) = mpsc::channel(64);
        let job = TtsJob {
            providers: self.providers.clone(),
            roster: self.roster.clone(),
            rate: self.rate,
            text: Some(text),
            said: Vec::new(),
            out: tx,
        };
        tokio::spawn(job.run());
        Ok(rx)
    }
}

/// One reply's synthesis across providers.
struct TtsJob {
    providers: Vec<Arc<dyn Tts>>,
    roster: Arc<Roster>,
    rate: u32,
    /// The reply's text as it arrives; `None` once complete.
    text: Option<mpsc::Receiver<String>>,
    /// Every segment received so far, resent to a replacement provider.
    said: Vec<String>,
    out: mpsc::Sender<Result<Vec<f32>, ProviderError>>,
}

impl TtsJob {
    async fn run(mut self) {
        let mut idx = self.roster.start();
        loop {
            match self.attempt(idx).await {
                Ok(()) => {
                    self.roster.succeeded(idx);
                    return;
                }
                Err((e, delivered)) => {
                    let next = self.roster.failed(idx, &e);
                    match next {
                        Some(n) if !delivered => idx = n,
                        _ => {
                            let _ = self.out.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Runs provider `idx` to the end of the reply. On failure, says whether audio had already
    /// been delivered (then the text cannot be resent without repeating it).
    async fn attempt(&mut self, idx: usize) -> Result<(), (ProviderError, bool)> {
        let provider = &self.providers[idx];
        let (text_tx, text_rx) = mpsc::channel(self.said.len() + 64);
        for s in &self.said {
            let _ = text_tx.try_send(s.clone());
        }
        let mut text_tx = Some(text_tx);
        if self.text.is_none() {
            text_tx = None; // the whole text is already queued
        }
        let mut audio = provider.synthesize(text_rx).await.map_err(|e| (e, false))?;
        let mut resampler = (provider.sample_rate() != self.rate)
            .then(|| Resampler::new(provider.sample_rate(), self.rate));
        let mut delivered = false;
        loop {
            tokio::select! {
                segment = recv_text(&mut self.text), if self.text.is_some() => match segment {
                    Some(s) => {
                        self.said.push(s.clone());
                        if let Some(t) = &text_tx {
                            let _ = t.send(s).await;
                        }
                    }
                    None => {
                        self.text = None;
                        text_tx = None;
                    }
                },
                chunk = audio.recv() => match chunk {
                    Some(Ok(samples)) => {
                        let samples = match resampler.as_mut() {
                            Some(r) => {
                                let mut out = Vec::with_capacity(samples.len() * self.rate as usize / provider.sample_rate() as usize + 16);
                                r.process(&samples, &mut out);
                                out
                            }
                            None => samples,
                        };
                        delivered = true;
                        if !samples.is_empty() && self.out.send(Ok(samples)).await.is_err() {
                            return Ok(()); // cancelled
                        }
                    }
                    Some(Err(e)) => return Err((e, delivered)),
                    None => {
                        if let Some(r) = resampler.as_mut() {
                            let mut tail = Vec::new();
                            r.flush(&mut tail);
                            if !tail.is_empty() {
                                let _ = self.out.send(Ok(tail)).await;
                            }
                        }
                        return Ok(());
                    }
                },
                _ = self.out.closed() => return Ok(()),
            }
        }
    }
}

async fn recv_text(text: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match text {
        Some(t) => t.recv().await,
        None => std::future::pending().await,
    }
}

/// Streaming speech-to-text that falls back along a priority list. The audio of the utterance
/// not yet transcribed (up to [`FallbackStt::REPLAY_SECONDS`]) is kept, so a replacement
/// provider hears it again.
pub struct FallbackStt {
    providers: Vec<Arc<dyn Stt>>,
    roster: Arc<Roster>,
    label: String,
    rate: u32,
}

impl FallbackStt {
    /// The most audio kept for resending to a replacement provider.
    pub const REPLAY_SECONDS: u32 = 10;

    /// Wraps `providers`, the first being the primary; its sample rate is the wrapper's.
    pub fn new(providers: Vec<Arc<dyn Stt>>, policy: FallbackPolicy) -> Result<Self, NoProviders> {
        let labels: Vec<String> = providers.iter().map(|p| p.label().to_owned()).collect();
        let label = fallback_label("stt", &labels);
        let roster = Arc::new(Roster::new("stt", labels, policy)?);
        Ok(FallbackStt {
            rate: providers[0].sample_rate(),
            providers,
            roster,
            label,
        })
    }

    /// Which provider is active, and switch events.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Connects provider `idx`, or the next ones as each fails; the index and session of the
    /// first that connects.
    async fn connect_from(
        providers: &[Arc<dyn Stt>],
        roster: &Roster,
        mut idx: usize,
    ) -> Result<(usize, SttSession), ProviderError> {
        loop {
            match providers[idx].connect().await {
                Ok(s) => return Ok((idx, s)),
                Err(e) => match roster.failed(idx, &e) {
                    Some(n) => idx = n,
                    None => return Err(e),
                },
            }
        }
    }
}

#[async_trait]
impl Stt for FallbackStt {
    fn label(&self) -> &str {
        &self.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        ping_chain(self.providers.iter().map(|p| p.ping())).await
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    async fn connect(&self) -> Result<SttSession, ProviderError> {
        let start = self.roster.start();
        let (idx, session) = Self::connect_from(&self.providers, &self.roster, start).await?;
        let shared = Arc::new(Mutex::new(Replay::new(
            session.input,
            self.rate,
            self.providers[idx].sample_rate(),
        )));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stt_forward(
            self.providers.clone(),
            self.roster.clone(),
            idx,
            session.events,
            shared.clone(),
            tx,
        ));
        Ok(SttSession {
            input: Box::new(FallbackInput(shared)),
            events: rx,
        })
    }
}

/// The active provider's input and the audio it may need again.
struct Replay {
    inner: Box<dyn SttInput>,
    /// Audio since the last final transcript, at the wrapper's rate; bounded, oldest dropped.
    kept: VecDeque<f32>,
    capacity: usize,
    /// The user stopped speaking and no final has come back yet.
    flush_pending: bool,
    rate: u32,
    resampler: Option<Resampler>,
    scratch: Vec<f32>,
}

impl Replay {
    fn new(inner: Box<dyn SttInput>, rate: u32, inner_rate: u32) -> Self {
        let capacity = (rate * FallbackStt::REPLAY_SECONDS) as usize;
        Replay {
            inner,
            kept: VecDeque::with_capacity(capacity),
            capacity,
            flush_pending: false,
            rate,
            resampler: (inner_rate != rate).then(|| Resampler::new(rate, inner_rate)),
            scratch: Vec::with_capacity(rate as usize),
        }
    }

    fn forward(&mut self, samples: &[f32]) {
        match self.resampler.as_mut() {
            Some(r) => {
                self.scratch.clear();
                r.process(samples, &mut self.scratch);
                self.inner.push_audio(&self.scratch);
            }
            None => self.inner.push_audio(samples),
        }
    }

    /// Switches to a new provider's input and resends what it missed.
    fn replace(&mut self, inner: Box<dyn SttInput>, inner_rate: u32) {
        self.inner = inner;
        self.resampler = (inner_rate != self.rate).then(|| Resampler::new(self.rate, inner_rate));
        let kept = std::mem::take(&mut self.kept);
        let (a, b) = kept.as_slices();
        self.forward(a);
        self.forward(b);
        self.kept = kept;
        if self.flush_pending {
            self.inner.flush();
        }
    }
}

/// The session's side of a [`FallbackStt`] stream. The lock is held only for the copy and the
/// hand-over to the active provider's input (which never blocks); the forwarding task takes it
/// only to swap providers or to drop transcribed audio.
struct FallbackInput(Arc<Mutex<Replay>>);

impl FallbackInput {
    fn lock(&self) -> std::sync::MutexGuard<'_, Replay> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SttInput for FallbackInput {
    fn push_audio(&mut self, samples: &[f32]) {
        let mut r = self.lock();
        let overflow = (r.kept.len() + samples.len()).saturating_sub(r.capacity);
        let overflow = overflow.min(r.kept.len());
        r.kept.drain(..overflow);
        let fits = samples.len().min(r.capacity);
        r.kept.extend(&samples[samples.len() - fits..]);
        r.forward(samples);
    }

    fn flush(&mut self) {
        let mut r = self.lock();
        r.flush_pending = true;
        r.inner.flush();
    }
}

/// Forwards transcripts, dropping audio that has been transcribed; on a failure, connects the
/// next provider and resends the rest.
async fn stt_forward(
    providers: Vec<Arc<dyn Stt>>,
    roster: Arc<Roster>,
    mut idx: usize,
    mut events: mpsc::Receiver<SttEvent>,
    shared: Arc<Mutex<Replay>>,
    tx: mpsc::Sender<SttEvent>,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tx.closed() => return,
        };
        let error = match event {
            Some(SttEvent::Error(e)) => e,
            None => return, // the stream ended normally (the input was dropped)
            Some(event) => {
                if matches!(event, SttEvent::Final { .. }) {
                    roster.succeeded(idx);
                    let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
                    r.kept.clear();
                    r.flush_pending = false;
                }
                if tx.send(event).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(next) = roster.failed(idx, &error) else {
            let _ = tx.send(SttEvent::Error(error)).await;
            return;
        };
        match FallbackStt::connect_from(&providers, &roster, next).await {
            Ok((n, session)) => {
                idx = n;
                events = session.events;
                let rate = providers[n].sample_rate();
                shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(session.input, rate);
            }
            Err(e) => {
                let _ = tx.send(SttEvent::Error(e)).await;
                return;
            }
        }
    }
}
