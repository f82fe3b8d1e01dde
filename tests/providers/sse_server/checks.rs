//! The behaviour every streamed LLM provider shares, checked against any protocol: retries
//! before the first byte (429 with `Retry-After`, 5xx with backoff, never a refused key),
//! timeouts (first byte, a stalled stream), a cut connection, cancellation by dropping the
//! stream, keys kept out of errors and logs, and the event latency measurement.
//!
//! A test file describes its protocol in a [`Protocol`] and expands
//! [`shared_stream_tests!`](crate::shared_stream_tests) to run these checks as its own tests.

use std::sync::Arc;
use std::time::Duration;

use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::llm::HttpLlmConfig;
use hark::providers::{Llm, LlmEvent, ProviderError};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{collect, hello, ms, paced, print_event_latency, t, ScriptedHttpServer, Step};
use crate::logs::Captured;

/// The key every provider under test is given.
pub const KEY: &str = "sk-test-0123456789abcdef";

/// A provider under test: an [`Llm`] whose `Debug` output is checked for keys too.
pub trait TestedLlm: Llm + std::fmt::Debug {}
impl<T: Llm + std::fmt::Debug> TestedLlm for T {}

/// What the shared checks need to know of a protocol.
pub struct Protocol {
    /// The provider's name in logs and measurements.
    pub label: &'static str,
    /// The provider's settings for a server at `base_url`: its defaults, [`KEY`], and a
    /// 100 ms base delay between retries.
    pub config: fn(base_url: &str) -> HttpLlmConfig,
    /// The provider built from settings.
    pub build: fn(HttpLlmConfig) -> Arc<dyn TestedLlm>,
    /// The events that open an answer, before its text.
    pub opening: fn() -> Vec<String>,
    /// One event carrying `text`.
    pub text: fn(&str) -> String,
    /// The events that end a complete answer after its text (without usage).
    pub closing: fn() -> Vec<String>,
    /// The JSON body the service sends with an error `status` and this `message`.
    pub error_body: fn(status: u16, message: &str) -> String,
    /// An event reporting, inside the stream, that the service failed (is unavailable) with
    /// this `message`.
    pub stream_error: fn(message: &str) -> String,
}

impl Protocol {
    /// The settings for `server` with a fast retry base delay.
    pub fn config_for(&self, server: &ScriptedHttpServer) -> HttpLlmConfig {
        HttpLlmConfig {
            api_key: Some(ApiKey::new(KEY)),
            retry: RetryPolicy {
                base_delay: ms(100),
                ..RetryPolicy::default()
            },
            ..(self.config)(&server.base_url)
        }
    }

    /// The provider for `server`, its settings changed by `tweak`.
    pub fn provider(
        &self,
        server: &ScriptedHttpServer,
        tweak: impl FnOnce(&mut HttpLlmConfig),
    ) -> Arc<dyn TestedLlm> {
        let mut config = self.config_for(server);
        tweak(&mut config);
        (self.build)(config)
    }

    /// A stream answering `words`, complete.
    pub fn answer(&self, words: &[&str]) -> Vec<Step> {
        let mut steps = vec![Step::StartStream];
        steps.extend((self.opening)().into_iter().map(Step::Send));
        steps.extend(words.iter().map(|w| Step::Send((self.text)(w))));
        steps.extend((self.closing)().into_iter().map(Step::Send));
        steps.push(Step::End);
        steps
    }

    /// A stream that sends `words` and then does `last`.
    pub fn partial(&self, words: &[&str], last: Step) -> Vec<Step> {
        let mut steps = vec![Step::StartStream];
        steps.extend((self.opening)().into_iter().map(Step::Send));
        steps.extend(words.iter().map(|w| Step::Send((self.text)(w))));
        steps.push(last);
        steps
    }

    fn reply(&self, status: u16, retry_after: Option<&str>, message: &str) -> Step {
        Step::Reply {
            status,
            headers: retry_after
                .map(|r| vec![("retry-after", r.to_owned())])
                .unwrap_or_default(),
            body: (self.error_body)(status, message),
        }
    }
}

/// Runs the shared checks as tests of the file that expands it, for the protocol `$p`.
#[macro_export]
macro_rules! shared_stream_tests {
    ($p:expr) => {
        /// The behaviour every streamed provider shares (`tests/sse_server/checks.rs`).
        mod shared {
            use super::*;
            use $crate::sse_server::checks;

            #[tokio::test]
            async fn a_refused_key_is_auth_and_is_not_retried() {
                checks::a_refused_key_is_auth_and_is_not_retried(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn rate_limited_is_retried_after_retry_after() {
                checks::rate_limited_is_retried_after_retry_after(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn a_long_retry_after_is_not_waited_for() {
                checks::a_long_retry_after_is_not_waited_for(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn server_errors_are_retried_with_backoff_then_unavailable() {
                checks::server_errors_are_retried_with_backoff_then_unavailable(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn a_refused_connection_is_unavailable() {
                checks::a_refused_connection_is_unavailable(&$p).await
            }
            #[tokio::test]
            async fn a_json_document_instead_of_a_stream_is_a_protocol_error() {
                checks::a_json_document_instead_of_a_stream_is_a_protocol_error(&$p).await
            }
            #[tokio::test]
            async fn a_malformed_event_is_a_protocol_error_after_the_text_before_it() {
                checks::a_malformed_event_is_a_protocol_error_after_the_text_before_it(&$p).await
            }
            #[tokio::test]
            async fn an_error_in_the_stream_ends_it_after_the_text_before_it() {
                checks::an_error_in_the_stream_ends_it_after_the_text_before_it(&$p).await
            }
            #[tokio::test]
            async fn a_connection_cut_mid_stream_is_an_error_after_the_text_delivered() {
                checks::a_connection_cut_mid_stream_is_an_error_after_the_text_delivered(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn a_stalled_stream_times_out() {
                checks::a_stalled_stream_times_out(&$p).await
            }
            #[tokio::test(start_paused = true)]
            async fn no_answer_at_all_times_out_at_the_first_byte_deadline() {
                checks::no_answer_at_all_times_out_at_the_first_byte_deadline(&$p).await
            }
            #[tokio::test]
            async fn dropping_the_stream_closes_the_connection() {
                checks::dropping_the_stream_closes_the_connection(&$p).await
            }
            #[tokio::test]
            async fn the_key_appears_in_no_error_debug_output_or_log_line() {
                checks::the_key_appears_in_no_error_debug_output_or_log_line(&$p).await
            }
            /// Measures (prints, never asserts) the time from an event leaving the server to
            /// its text reaching the caller, with server, reader and caller on two worker
            /// threads as on a device; `-- --nocapture` shows it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn measures_the_time_from_an_event_on_the_socket_to_its_llm_event() {
                checks::measure_event_latency(&$p).await
            }
        }
    };
}

pub async fn a_refused_key_is_auth_and_is_not_retried(p: &Protocol) {
    let reply = p.reply(401, None, &format!("invalid x-api-key {KEY}"));
    let server = ScriptedHttpServer::start(vec![vec![reply]]).await;
    let err = p.provider(&server, |_| {}).chat(hello()).await.unwrap_err();
    assert_eq!(err, ProviderError::Auth);
    assert_eq!(server.received().len(), 1);
}

pub async fn rate_limited_is_retried_after_retry_after(p: &Protocol) {
    let server = ScriptedHttpServer::start(vec![
        vec![p.reply(
            429,
            Some("2"),
            "Number of request tokens has exceeded your rate limit.",
        )],
        p.answer(&["Hi."]),
    ])
    .await;
    let events = collect(p.provider(&server, |_| {}).chat(hello()).await.unwrap()).await;
    assert_eq!(without_usage(events), [t("Hi.")]);
    let r = server.received();
    assert_eq!(r.len(), 2);
    let waited = r[1].at - r[0].at;
    assert!(waited >= ms(2000) && waited < ms(2100), "{waited:?}");
    assert_eq!(r[0].body, r[1].body, "the same request is sent again");
    assert_eq!(r[0].path, r[1].path);
}

pub async fn a_long_retry_after_is_not_waited_for(p: &Protocol) {
    let reply = p.reply(429, Some("60"), "slow down");
    let server = ScriptedHttpServer::start(vec![vec![reply]]).await;
    let err = p.provider(&server, |_| {}).chat(hello()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(server.received().len(), 1);
}

pub async fn server_errors_are_retried_with_backoff_then_unavailable(p: &Protocol) {
    let reply = p.reply(500, None, "The server had an error.");
    let server = ScriptedHttpServer::start(vec![vec![reply]]).await;
    let start = Instant::now();
    let err = p.provider(&server, |_| {}).chat(hello()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Unavailable("HTTP 500: The server had an error.".into())
    );
    let r = server.received();
    assert_eq!(r.len(), 3, "three attempts");
    // Backoff with jitter: 100 ms then 200 ms, each scaled into [0.5, 1].
    let (w1, w2) = (r[1].at - r[0].at, r[2].at - r[1].at);
    assert!(w1 >= ms(50) && w1 <= ms(100), "{w1:?}");
    assert!(w2 >= ms(100) && w2 <= ms(200), "{w2:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

pub async fn a_refused_connection_is_unavailable(p: &Protocol) {
    // A port nothing listens on: bind, learn it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = HttpLlmConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..(p.config)(&format!("http://127.0.0.1:{port}"))
    };
    let err = (p.build)(config).chat(hello()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable(m) if m.starts_with("cannot connect")),
        "{err:?}"
    );
}

pub async fn a_json_document_instead_of_a_stream_is_a_protocol_error(p: &Protocol) {
    // A 200 with a whole JSON document: a server (or proxy) that ignored the streaming request.
    let reply = Step::Reply {
        status: 200,
        headers: vec![],
        body: "{}".into(),
    };
    let server = ScriptedHttpServer::start(vec![vec![reply]]).await;
    let err = p.provider(&server, |_| {}).chat(hello()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Protocol(m) if m.contains("expected an event stream")),
        "{err:?}"
    );
    assert_eq!(server.received().len(), 1);
}

pub async fn a_malformed_event_is_a_protocol_error_after_the_text_before_it(p: &Protocol) {
    // A text event with its JSON cut short: the closing brace missing.
    let whole = (p.text)("lo");
    let broken = format!("{}\n\n", &whole.trim_end()[..whole.trim_end().len() - 1]);
    let server = ScriptedHttpServer::start(vec![p.partial(&["Hel"], Step::Send(broken))]).await;
    let events = collect(p.provider(&server, |_| {}).chat(hello()).await.unwrap()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], t("Hel"));
    assert!(
        matches!(&events[1], Err(ProviderError::Protocol(m)) if m.starts_with("malformed ")),
        "{events:?}"
    );
}

pub async fn an_error_in_the_stream_ends_it_after_the_text_before_it(p: &Protocol) {
    let error = (p.stream_error)("The model is overloaded.");
    let server = ScriptedHttpServer::start(vec![p.partial(&["One"], Step::Send(error))]).await;
    let events = collect(p.provider(&server, |_| {}).chat(hello()).await.unwrap()).await;
    assert_eq!(
        events,
        [
            t("One"),
            Err(ProviderError::Unavailable(
                "error in stream: The model is overloaded.".into()
            ))
        ]
    );
}

pub async fn a_connection_cut_mid_stream_is_an_error_after_the_text_delivered(p: &Protocol) {
    let server =
        ScriptedHttpServer::start(vec![p.partial(&["The answer", " is"], Step::Cut)]).await;
    let events = collect(p.provider(&server, |_| {}).chat(hello()).await.unwrap()).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[..2], [t("The answer"), t(" is")]);
    assert!(
        matches!(&events[2], Err(ProviderError::Unavailable(_))),
        "{events:?}"
    );
    assert_eq!(
        server.received().len(),
        1,
        "a started answer is not retried"
    );
}

pub async fn a_stalled_stream_times_out(p: &Protocol) {
    let server = ScriptedHttpServer::start(vec![p.partial(&["Well"], Step::Hold)]).await;
    let llm = p.provider(&server, |c| c.idle_timeout = Duration::from_secs(3));
    let mut stream = llm.chat(hello()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), t("Well"));
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    assert!(since.elapsed() >= ms(2900), "{:?}", since.elapsed());
    assert!(stream.recv().await.is_none());
}

pub async fn no_answer_at_all_times_out_at_the_first_byte_deadline(p: &Protocol) {
    let server = ScriptedHttpServer::start(vec![vec![Step::Hold]]).await;
    let llm = p.provider(&server, |c| c.first_byte_timeout = Duration::from_secs(4));
    let start = Instant::now();
    assert_eq!(llm.chat(hello()).await.unwrap_err(), ProviderError::Timeout);
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert_eq!(server.received().len(), 1, "a timeout is not retried");
}

pub async fn dropping_the_stream_closes_the_connection(p: &Protocol) {
    let mut server =
        ScriptedHttpServer::start(vec![p.partial(&["A long story"], Step::Hold)]).await;
    // A long idle timeout: the connection must close because of the drop, not a timeout.
    let llm = p.provider(&server, |c| c.idle_timeout = Duration::from_secs(600));
    let mut stream = llm.chat(hello()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), t("A long story"));
    drop(stream);
    // The server's read returns when hark closes the socket; the timeout only bounds a failure.
    tokio::time::timeout(Duration::from_secs(10), server.disconnects.recv())
        .await
        .expect("the server saw no disconnect")
        .unwrap();
}

pub async fn the_key_appears_in_no_error_debug_output_or_log_line(p: &Protocol) {
    let logs = Captured::default();
    let _guard = logs.install();

    // Every way a service can echo the key back: in a 401, a 400, a 500 and inside the stream.
    let echo = |status| p.reply(status, None, &format!("Incorrect API key provided: {KEY}"));
    let mut in_stream = p.partial(&[], Step::Hold);
    in_stream.insert(
        in_stream.len() - 1,
        Step::Send((p.stream_error)(&format!("bad key {KEY}"))),
    );
    let server = ScriptedHttpServer::start(vec![
        vec![echo(401)],
        vec![echo(400)],
        vec![echo(500)],
        in_stream,
    ])
    .await;
    let config = HttpLlmConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..p.config_for(&server)
    };
    let llm = (p.build)(config.clone());
    let mut shown = vec![format!("{config:?}"), format!("{llm:?}")];
    for _ in 0..3 {
        let e = llm.chat(hello()).await.unwrap_err();
        shown.push(format!("{e} {e:?}"));
    }
    for e in collect(llm.chat(hello()).await.unwrap()).await {
        shown.push(format!("{e:?}"));
    }
    assert_eq!(server.received().len(), 4);
    let has = |needle: &str| shown.iter().any(|s| s.contains(needle));
    assert!(
        has("HTTP 400: Incorrect API key provided: ***"),
        "{shown:?}"
    );
    assert!(has("error in stream: bad key ***"), "{shown:?}");
    let logs = logs.text();
    assert!(
        logs.contains("LLM"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

pub async fn measure_event_latency(p: &Protocol) {
    let (go, n) = (Arc::new(Notify::new()), 200);
    let mut script = vec![Step::StartStream];
    script.extend((p.opening)().into_iter().map(Step::Send));
    script.extend(paced((0..n).map(|i| (p.text)(&format!("w{i} "))), &go));
    script.extend((p.closing)().into_iter().map(Step::Send));
    script.push(Step::End);
    let server = ScriptedHttpServer::start(vec![script]).await;
    let mut stream = p.provider(&server, |_| {}).chat(hello()).await.unwrap();
    print_event_latency(p.label, &server, &mut stream, &go, n).await;
    assert_eq!(without_usage(collect(stream).await), []);
}

/// The events but the usage, which only some protocols report for every answer.
fn without_usage(
    events: Vec<Result<LlmEvent, ProviderError>>,
) -> Vec<Result<LlmEvent, ProviderError>> {
    events
        .into_iter()
        .filter(|e| !matches!(e, Ok(LlmEvent::Usage { .. })))
        .collect()
}
