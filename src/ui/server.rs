//! The live view's HTTP server: the page and its assets (built into the binary), `/api/state`
//! (one snapshot as JSON) and `/ws` (a WebSocket that pushes a snapshot every tick).
//!
//! A viewer may send one kind of message: the trace channels it shows
//! ([`Selection::parse`]); it is then sent those only, at once (at most every [`MIN_RESEND`])
//! and at every tick after.
//!
//! Limits: the engine's HTTP limits per request ([`neurostream_engine::http::limits`]); each
//! viewer has a queue of [`VIEWER_QUEUE`] ticks with drop-oldest (counted and shown); a
//! viewer that cannot take a message within [`SEND_TIMEOUT`] is closed; a message over
//! [`MAX_CLIENT_MESSAGE`] bytes, or one that is not a valid selection, closes the connection
//! (code 1008 with the reason).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use neurostream_engine::http::{self, response, Body, Handler, HttpServer};
use neurostream_engine::Result;
use neurostream_sinks::live::SlowPolicy;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::state::{Selection, UiState};

/// Seconds between snapshots.
pub const TICK: Duration = Duration::from_secs(1);
/// Snapshots queued per viewer before the oldest is dropped.
pub const VIEWER_QUEUE: usize = 4;
/// Time one message may take to reach a viewer before it is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message accepted from a viewer (a selection of trace channels).
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Least time between two snapshots a viewer is sent at once after changing its selection
/// (more changes within it wait for the next tick).
pub const MIN_RESEND: Duration = Duration::from_millis(100);
/// Viewers connected at once; more are refused (HTTP 503) until one leaves.
pub const MAX_VIEWERS: usize = 64;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const UPLOT_JS: &str = include_str!("assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uPlot.min.css");

/// A running live view: the server and the thread that publishes a snapshot every tick.
/// Stops when dropped.
pub struct UiServer {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    server: Option<HttpServer>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for UiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.server.take();
    }
}

/// Serves the live view of `state` on `addr`. Loopback addresses serve anyone on the machine;
/// any other address needs `token`, which the page's URL carries (`/?token=...`) and every
/// request presents (query or `Authorization: Bearer`).
pub fn serve(state: Arc<UiState>, addr: &str, token: Option<String>) -> Result<UiServer> {
    let token: Option<Arc<str>> = token.filter(|t| !t.is_empty()).map(Arc::from);
    let server = http::serve("ui", addr, token.is_some(), "--ui-token", handler(state.clone(), token))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (state, stop) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ui-ticker".into())
            .spawn(move || {
                neurostream_engine::background::lower_current_thread_priority();
                while !stop.load(Ordering::SeqCst) {
                    if !state.viewers.is_empty() {
                        let tick = state.new_tick();
                        *state.latest.lock().unwrap() = Some(tick.clone());
                        state.viewers.publish("state", tick, "ui");
                        state.tick.notify_waiters();
                    }
                    // Woken early by `UiServer::drop`.
                    let next = Instant::now() + TICK;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < next {
                        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                    }
                }
                state.viewers.close_all();
                state.tick.notify_waiters();
            })
            .map_err(|e| neurostream_engine::EngineError::io("ui: starting the ticker thread", e))?
    };
    Ok(UiServer {
        addr: server.addr,
        server: Some(server),
        stop,
        ticker: Some(ticker),
    })
}

fn handler(state: Arc<UiState>, token: Option<Arc<str>>) -> Handler {
    Arc::new(move |req| {
        let (state, token) = (state.clone(), token.clone());
        Box::pin(async move { route(req, state, token.as_deref()) })
    })
}

/// The cookie that carries the token from the page load (`/?token=...`) to its assets and its
/// WebSocket, which cannot put it in their URLs or headers.
const TOKEN_COOKIE: &str = "neurostream_ui_token";

/// The token a request presents: header or query (see [`http::presented_token`]), else the cookie.
fn presented(req: &hyper::Request<hyper::body::Incoming>) -> Option<String> {
    http::presented_token(req).or_else(|| {
        req.headers()
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(token_from_cookies)
    })
}

/// The `Set-Cookie` value that carries `token`: percent-encoded, so that any token (spaces,
/// `;`, `,`, non-ASCII) makes a valid cookie.
fn token_cookie(token: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{TOKEN_COOKIE}={encoded}; Path=/; HttpOnly; SameSite=Strict")
}

/// The token in a `Cookie` header (`name=value; name=value`), decoded as [`token_cookie`]
/// encoded it.
fn token_from_cookies(header: &str) -> Option<String> {
    header.split(';').find_map(|kv| {
        let value = kv.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('=')?;
        // The encoded value holds no `&` or `=`: it decodes as the key of a single pair.
        Some(
            form_urlencoded::parse(value.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default(),
        )
    })
}

fn route(req: hyper::Request<hyper::body::Incoming>, state: Arc<UiState>, token: Option<&str>) -> hyper::Response<Body> {
    if !neurostream_engine::net::token_ok(token, presented(&req).as_deref()) {
        return response(
            401,
            "text/plain; charset=utf-8",
            "missing or wrong token: open the page as /?token=TOKEN\n",
        );
    }
    let mut answer = answer(req, state);
    if let Some(t) = token {
        // The cookie is never sent to other sites or readable by scripts.
        if let Ok(v) = hyper::header::HeaderValue::from_str(&token_cookie(t)) {
            answer.headers_mut().insert(hyper::header::SET_COOKIE, v);
        }
    }
    answer
}

fn answer(mut req: hyper::Request<hyper::body::Incoming>, state: Arc<UiState>) -> hyper::Response<Body> {
    if req.method() != hyper::Method::GET {
        return response(405, "text/plain; charset=utf-8", "GET only\n");
    }
    match req.uri().path() {
        "/" | "/index.html" => response(200, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => response(200, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => response(200, "text/css; charset=utf-8", STYLE_CSS),
        "/vendor/uPlot.iife.min.js" => response(200, "text/javascript; charset=utf-8", UPLOT_JS),
        "/vendor/uPlot.min.css" => response(200, "text/css; charset=utf-8", UPLOT_CSS),
        "/api/state" => response(200, "application/json", state.snapshot().to_string()),
        "/ws" => upgrade(&mut req, state),
        _ => response(404, "text/plain; charset=utf-8", "not found\n"),
    }
}

/// Answers a WebSocket handshake on `/ws` and hands the connection to a viewer task.
fn upgrade(req: &mut hyper::Request<hyper::body::Incoming>, state: Arc<UiState>) -> hyper::Response<Body> {
    let key = req
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let wants = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| wants) else {
        return response(400, "text/plain; charset=utf-8", "/ws is a WebSocket\n");
    };
    // Counted from the handshake on, so a burst of handshakes cannot pass the limit.
    let Some(slot) = ViewerSlot::take(&state) else {
        return response(
            503,
            "text/plain; charset=utf-8",
            format!("{MAX_VIEWERS} viewers are connected already\n"),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let upgrading = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrading.await else { return };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_MESSAGE))
            .max_frame_size(Some(MAX_CLIENT_MESSAGE));
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        viewer(ws, state).await;
        drop(slot);
    });
    hyper::Response::builder()
        .status(101)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::new(bytes::Bytes::new()))
        .expect("a valid response")
}

/// One of the [`MAX_VIEWERS`] places, given back when dropped.
struct ViewerSlot(Arc<UiState>);

impl ViewerSlot {
    fn take(state: &Arc<UiState>) -> Option<ViewerSlot> {
        let taken = state
            .open_viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_VIEWERS).then_some(n + 1));
        taken.is_ok().then(|| ViewerSlot(state.clone()))
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.open_viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends one viewer a snapshot at once, then one per tick the ticker queues for it, each with
/// the traces it picked, until it leaves, misbehaves or the run's view closes.
async fn viewer<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, state: Arc<UiState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let n = state.viewers.served.load(Ordering::Relaxed);
    let end = state
        .viewers
        .add(&format!("viewer #{n}"), "state", SlowPolicy::DropOldest, VIEWER_QUEUE);
    let mut selection = Selection::default();
    if !send(&mut ws, state.new_tick().text(&state, &selection), &state).await {
        return;
    }
    // A selection sent right after connecting is answered at once.
    let mut resent = Instant::now().checked_sub(MIN_RESEND).unwrap_or_else(Instant::now);
    loop {
        // Registered before the queue is drained, so a tick queued meanwhile wakes it.
        let ticked = state.tick.notified();
        tokio::pin!(ticked);
        ticked.as_mut().enable();
        loop {
            match end.rx.try_recv() {
                Ok(tick) => {
                    if !send(&mut ws, tick.text(&state, &selection), &state).await {
                        return;
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(Message::Text(text))) => match Selection::parse(&text) {
                    Ok(picked) => {
                        selection = picked;
                        let latest = state.latest.lock().unwrap().clone();
                        if resent.elapsed() >= MIN_RESEND {
                            resent = Instant::now();
                            let tick = latest.unwrap_or_else(|| state.new_tick());
                            if !send(&mut ws, tick.text(&state, &selection), &state).await {
                                return;
                            }
                        }
                    }
                    Err(why) => {
                        let frame = CloseFrame {
                            code: CloseCode::Policy,
                            reason: why.chars().take(120).collect::<String>().into(),
                        };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(Some(frame))).await;
                        return;
                    }
                },
                Some(Ok(_)) => {} // pings are answered by the library; binary messages mean nothing here
            },
            _ = &mut ticked => {}
        }
    }
    drop(end);
}

/// Sends one rendered snapshot (shared by every viewer with the same selection, not copied)
/// within [`SEND_TIMEOUT`].
async fn send<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    text: tokio_tungstenite::tungstenite::Utf8Bytes,
    state: &UiState,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Text(text))).await {
        Ok(Ok(())) => {
            state.sent.fetch_add(1, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_token_survives_the_cookie() {
        for token in ["s3cret", "a b;c,d=e&f", "ünï\"cødé\\", "+%2B"] {
            let cookie = token_cookie(token);
            assert!(hyper::header::HeaderValue::from_str(&cookie).is_ok(), "{cookie}");
            let value = cookie.split(';').next().unwrap();
            let header = format!("theme=dark; {value}; other=1");
            assert_eq!(token_from_cookies(&header).as_deref(), Some(token), "{cookie}");
        }
        assert_eq!(token_from_cookies("theme=dark"), None);
    }
}
