//! A thin HTTP client for the orlojd REST API: URL building, bearer auth, error bodies, SSE.

use futures::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::time::Duration;

/// What went wrong talking to the server.
#[derive(Debug)]
pub enum ApiError {
    /// The server could not be reached at all.
    Unreachable {
        /// The server base URL.
        server: String,
        /// The root cause (connection refused, DNS failure, ...).
        cause: String,
    },
    /// The server answered with an error status.
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The `message` of the JSON error body, or the raw body.
        message: String,
    },
    /// The answer could not be read or decoded.
    Invalid(String),
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable { server, cause } => {
                write!(f, "cannot reach orloj server at {server}: {cause}")
            }
            ApiError::Status { status, message } if message.is_empty() => {
                write!(f, "server answered {status}")
            }
            ApiError::Status { status, message } => {
                write!(f, "server answered {}: {message}", status.as_u16())
            }
            ApiError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApiError {}

/// Extracts the human message from an error body: JSON `{"message"}` (or `{"error"}`),
/// else the trimmed raw text.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for key in ["message", "error"] {
            if let Some(m) = v.get(key).and_then(Value::as_str)
                && !m.trim().is_empty()
            {
                return m.trim().to_string();
            }
        }
    }
    String::from_utf8_lossy(body).trim().to_string()
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Client for one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Timeout for ordinary (non-streaming) requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a request the server rate-limited (429) is sent again before giving up.
const RATE_LIMIT_RETRIES: u32 = 8;

/// How long to wait before retry number `retry` (from 1) of a rate-limited request: the
/// server's `Retry-After` seconds when given (at most 10 s), else 100 ms doubling per retry.
fn retry_after(headers: &reqwest::header::HeaderMap, retry: u32) -> Duration {
    let hinted = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match hinted {
        Some(secs) => Duration::from_secs(secs.min(10)),
        None => Duration::from_millis(100u64 << retry.min(6)),
    }
}

impl ApiClient {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`), sending `token` as a bearer token.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ApiError> {
        let base = Url::parse(server).map_err(|e| {
            ApiError::Invalid(format!(
                "invalid server URL {server:?}: {e} (expected e.g. http://127.0.0.1:8080)"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ApiError::Invalid(format!(
                "invalid server URL {server:?}: expected an http:// or https:// URL"
            )));
        }
        // reqwest is built without a default TLS provider (ring only, see TESTING.md).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("orlojctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The server base URL, as given.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + path segments (each escaped) + query pairs (empty values dropped).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(segments);
        }
        let pairs: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn send_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            ApiError::Unreachable {
                server: self.server().to_string(),
                cause: root_cause(&e),
            }
        } else {
            ApiError::Invalid(format!(
                "request to {} failed: {}",
                self.server(),
                root_cause(&e)
            ))
        }
    }

    /// Sends a request and returns the status and body of a successful (2xx) answer.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let url = self.url(segments, query);
        let mut retries = 0;
        let resp = loop {
            let mut rb = self
                .request(method.clone(), url.clone())
                .timeout(REQUEST_TIMEOUT);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            if let Some(rv) = if_match {
                rb = rb.header(reqwest::header::IF_MATCH, format!("\"{rv}\""));
            }
            let resp = rb.send().await.map_err(|e| self.send_error(e))?;
            // A 429 is answered before the request is handled, so sending it again is safe.
            if resp.status() == StatusCode::TOO_MANY_REQUESTS && retries < RATE_LIMIT_RETRIES {
                retries += 1;
                tokio::time::sleep(retry_after(resp.headers(), retries)).await;
                continue;
            }
            break resp;
        };
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Invalid(format!("cannot read server answer: {e}")))?;
        if status.is_success() {
            Ok((status, bytes.to_vec()))
        } else {
            Err(ApiError::Status {
                status,
                message: error_message(&bytes),
            })
        }
    }

    /// Like [`ApiClient::call`] but decodes a JSON body (`null` for an empty one).
    pub async fn call_json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (_, bytes) = self.call(method, segments, query, body, if_match).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Invalid(format!("server answer is not JSON: {e}")))
    }

    /// GET returning JSON.
    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Value, ApiError> {
        self.call_json(Method::GET, segments, query, None, None)
            .await
    }

    /// GET one object; `None` when the server says 404.
    pub async fn get_object(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self
            .get(&["v1", plural, name], &[("namespace", namespace)])
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a server-sent-event stream and hands every event to `on_event` until it returns
    /// `false` or the stream ends.
    pub async fn stream_sse(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        mut on_event: impl FnMut(SseEvent) -> bool,
    ) -> Result<(), ApiError> {
        let resp = self
            .request(Method::GET, self.url(segments, query))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(ApiError::Status {
                status,
                message: error_message(&bytes),
            });
        }
        let mut parser = SseParser::default();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::Invalid(format!("event stream broke: {e}")))?;
            for ev in parser.push(&chunk) {
                if !on_event(ev) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Incremental parser for `text/event-stream` bodies.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    out.push(SseEvent {
                        event: if self.event.is_empty() {
                            "message".into()
                        } else {
                            std::mem::take(&mut self.event)
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                        id: self.id.take(),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => self.data.push(value.to_string()),
                "id" => self.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_comments_and_multiline_data() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: resou").is_empty());
        let evs = p.push(b"rce\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\nid: 7\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "resource".into(),
                    data: "{\"a\":1}".into(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: "x\ny".into(),
                    id: Some("7".into())
                },
            ]
        );
    }

    #[test]
    fn error_message_prefers_json_message() {
        assert_eq!(
            error_message(br#"{"error":"not_found","message":"agent default/x not found"}"#),
            "agent default/x not found"
        );
        assert_eq!(error_message(br#"{"error":"boom"}"#), "boom");
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn url_building_escapes_and_drops_empty_query() {
        let c = ApiClient::new("http://h:1/prefix/", None).expect("client");
        let u = c.url(&["v1", "agents", "a b"], &[("namespace", ""), ("x", "1")]);
        assert_eq!(u.as_str(), "http://h:1/prefix/v1/agents/a%20b?x=1");
        assert!(ApiClient::new("127.0.0.1:8080", None).is_err());
        assert!(ApiClient::new("ftp://h", None).is_err());
    }
}
