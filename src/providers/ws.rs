//! The crate's one WebSocket client: tokio-tungstenite on the shared rustls configuration
//! ([`super::tls`]), for every streaming provider (speech-to-text, text-to-speech, realtime).
//!
//! [`connect`] opens a socket with the provider's headers, a connect timeout, Nagle off (audio
//! frames are small and late ones are useless) and handshake failures mapped to
//! [`ProviderError`] the way [`super::http`] maps HTTP statuses: a refused upgrade (401, 429,
//! 5xx) means the same as the same status on a plain request. Errors never carry the URL,
//! because some services take the key in the query string.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::http::{self, shorten, ApiKey};
use super::ProviderError;

pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// An open WebSocket (plain or TLS); split it with `futures_util::StreamExt::split`.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest message accepted from a service. Audio chunks and JSON events are far smaller;
/// the cap keeps a misbehaving server from growing a stream's memory without bound.
const MAX_MESSAGE: usize = 4 << 20;

/// Opens a WebSocket to `url` (`ws://` or `wss://`) with `headers` (e.g. `Authorization`),
/// giving up after `timeout` for the TCP, TLS and upgrade handshakes together. `key` is what
/// to redact from a refused upgrade's error body.
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
    key: Option<&ApiKey>,
    timeout: Duration,
) -> Result<WsStream, ProviderError> {
    let mut request = url
        .into_client_request()
        .map_err(|_| ProviderError::Protocol("invalid WebSocket URL".into()))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ProviderError::Protocol(format!("invalid header name {name:?}")))?;
        // The value may be a key: never echo it.
        let value = HeaderValue::from_str(value)
            .map_err(|_| ProviderError::Protocol(format!("invalid value for header {name}")))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connector = Connector::Rustls(super::tls::client_config());
    let handshake = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(ProviderError::Timeout),
        Ok(Ok((stream, _response))) => Ok(stream),
        Ok(Err(e)) => Err(error(e, key)),
    }
}

/// The [`ProviderError`] a WebSocket error means, with the key redacted from anything the
/// service said.
pub fn error(e: WsError, key: Option<&ApiKey>) -> ProviderError {
    match e {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            http::status_error(response.status(), response.headers(), &body, key)
        }
        WsError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ProviderError::Timeout,
        WsError::Io(io) => {
            ProviderError::Unavailable(format!("connection failed: {}", shorten(&io.to_string())))
        }
        WsError::Tls(tls) => {
            ProviderError::Unavailable(format!("TLS: {}", shorten(&tls.to_string())))
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            ProviderError::Unavailable("connection closed".into())
        }
        WsError::Url(_) => ProviderError::Protocol("invalid WebSocket URL".into()),
        WsError::Capacity(c) => ProviderError::Protocol(format!("message too large: {c}")),
        other => {
            let text = other.to_string();
            let text = match key {
                Some(k) => k.redact(&text),
                None => text,
            };
            ProviderError::Protocol(shorten(&text))
        }
    }
}

/// The error a close frame from the service means: 1000/1001 are a normal end (`None`);
/// 1008 (policy, used for bad keys) is [`ProviderError::Auth`]; 1011/1012/1013 (server error,
/// restart, try later) are [`ProviderError::Unavailable`]; anything else is a protocol error.
/// The service's reason text is kept, redacted and shortened.
pub fn close_error(frame: Option<&CloseFrame>, key: Option<&ApiKey>) -> Option<ProviderError> {
    let frame = frame?;
    let reason = match key {
        Some(k) => k.redact(frame.reason.as_str()),
        None => frame.reason.to_string(),
    };
    let reason = shorten(&reason);
    let code = u16::from(frame.code);
    match frame.code {
        CloseCode::Normal | CloseCode::Away => None,
        CloseCode::Policy => Some(ProviderError::Auth),
        CloseCode::Error | CloseCode::Restart | CloseCode::Again => Some(
            ProviderError::Unavailable(format!("closed by the service ({code}): {reason}")),
        ),
        _ => Some(ProviderError::Protocol(format!(
            "closed by the service ({code}): {reason}"
        ))),
    }
}

#[cfg(test)]
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;

    /// A WebSocket echo server on a local port that checks the client's `Authorization`.
    async fn echo_server(refuse_with: Option<u16>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
            let check = move |req: &Request, resp: Response| {
                if let Some(status) = refuse_with {
                    let mut r = tokio_tungstenite::tungstenite::http::Response::new(Some(
                        r#"{"error":{"message":"bad key sk-test-1"}}"#.to_string(),
                    ));
                    *r.status_mut() = status.try_into().unwrap();
                    if status == 429 {
                        r.headers_mut()
                            .insert("retry-after", HeaderValue::from_static("3"));
                    }
                    return Err(r);
                }
                assert_eq!(req.headers()["authorization"], "Token sk-test-1");
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() || m.is_binary() {
                    ws.send(m).await.unwrap();
                }
            }
        });
        format!("ws://{addr}/v1/listen")
    }

    #[tokio::test]
    async fn connects_with_headers_and_exchanges_messages() {
        let url = echo_server(None).await;
        let key = ApiKey::new("sk-test-1");
        let auth = format!("Token {}", key.expose());
        let mut ws = connect(
            &url,
            &[("Authorization", &auth)],
            Some(&key),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    }

    #[tokio::test]
    async fn a_refused_upgrade_maps_like_an_http_status_and_hides_the_key() {
        let key = ApiKey::new("sk-test-1");
        let url = echo_server(Some(401)).await;
        let e = connect(&url, &[], Some(&key), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e, ProviderError::Auth);
        let url = echo_server(Some(429)).await;
        let e = connect(&url, &[], Some(&key), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let url = echo_server(Some(400)).await;
        let e = connect(&url, &[], Some(&key), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e, ProviderError::Protocol("HTTP 400: bad key ***".into()));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        // Accepts TCP but never answers the upgrade.
        let e = connect(&url, &[], None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e, ProviderError::Timeout);
        drop(listener);
        let e = connect(&url, &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Unavailable(_)), "{e:?}");
        assert!(
            !e.to_string().contains("127.0.0.1"),
            "no URL in errors: {e}"
        );
    }

    #[test]
    fn close_codes_map_to_errors() {
        let frame = |code: u16, reason: &'static str| CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let key = ApiKey::new("k-9");
        assert_eq!(close_error(None, None), None);
        assert_eq!(close_error(Some(&frame(1000, "")), None), None);
        assert_eq!(
            close_error(Some(&frame(1008, "bad k-9")), Some(&key)),
            Some(ProviderError::Auth)
        );
        assert_eq!(
            close_error(Some(&frame(1011, "oops k-9")), Some(&key)),
            Some(ProviderError::Unavailable(
                "closed by the service (1011): oops ***".into()
            ))
        );
        assert!(matches!(
            close_error(Some(&frame(4000, "bad request")), None),
            Some(ProviderError::Protocol(_))
        ));
    }
}
