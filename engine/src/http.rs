//! The engine's HTTP servers (`/metrics`, the live view): hyper on a small tokio runtime of its
//! own thread, every connection within the [`limits`], loopback unless a token is set.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{EngineError, Result};

/// Limits of the engine's HTTP servers: every one is enforced as bytes arrive.
pub mod limits {
    use std::time::Duration;
    /// Largest request head (request line and headers), bytes; hyper's smallest buffer.
    pub const MAX_REQUEST_HEAD: usize = 8192;
    /// Time a client has to send its whole request head.
    pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time a whole plain HTTP connection may last (head, then the response written); an
    /// upgraded (WebSocket) connection is handed over and limited by its own handler.
    pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
    /// Connections served at once; more are closed as they arrive.
    pub const MAX_CONNECTIONS: usize = 256;
}

/// A response body: the whole body at once.
pub type Body = http_body_util::Full<bytes::Bytes>;

/// What a server answers to one request.
pub type Handler = Arc<
    dyn Fn(hyper::Request<hyper::body::Incoming>) -> Pin<Box<dyn Future<Output = hyper::Response<Body>> + Send>> + Send + Sync,
>;

/// A running HTTP server; stops when dropped.
pub struct HttpServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `handler` on `addr` with hyper, connections concurrently (a slow or idle client never
/// holds up another), each within the [`limits`]. `what` names the server in messages
/// (`metrics`, `ui`). Refuses a non-loopback address unless `has_token` (the handler checks it).
pub fn serve(what: &str, addr: &str, has_token: bool, token_flag: &str, handler: Handler) -> Result<HttpServer> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| EngineError::io(format!("{what}: binding {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| EngineError::io(format!("{what}: local address"), e))?;
    if !local.ip().is_loopback() && !has_token {
        return Err(EngineError::Runtime(format!(
            "{what}: {local} is reachable from other machines; give a token ({token_flag}) that clients send as `Authorization: Bearer TOKEN`, or bind 127.0.0.1"
        )));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| EngineError::io(format!("{what}: listener"), e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::io(format!("{what}: starting the server runtime"), e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let name = what.to_string();
    let thread = std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            crate::background::lower_current_thread_priority();
            runtime.block_on(accept_loop(name, listener, handler, stopped))
        })
        .map_err(|e| EngineError::io(format!("{what}: starting the server thread"), e))?;
    Ok(HttpServer {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn accept_loop(
    what: String,
    listener: std::net::TcpListener,
    handler: Handler,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::warn!("{what}: cannot register the listener");
        return;
    };
    let open = Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream); // over the connection limit
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            serve_connection(stream, handler).await;
            drop(permit);
        });
    }
}

/// Serves one connection within the [`limits`]; an upgrade (WebSocket) is handed to whatever
/// the handler spawned for it.
pub async fn serve_connection<S>(stream: S, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits::HEAD_TIMEOUT)
        .max_buf_size(limits::MAX_REQUEST_HEAD)
        .keep_alive(false)
        // A client may close its sending side once its request is out and still read the answer.
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    let _ = tokio::time::timeout(limits::CONNECTION_TIMEOUT, connection).await;
}

/// The bearer token a request presents: `Authorization: Bearer TOKEN`, or a `token=` query
/// parameter (browsers cannot set headers on a page load or a WebSocket).
pub fn presented_token<B>(req: &hyper::Request<B>) -> Option<String> {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    header.or_else(|| {
        form_urlencoded::parse(req.uri().query()?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    })
}

/// A response of `status` with `body` of `content_type`.
pub fn response(status: u16, content_type: &str, body: impl Into<bytes::Bytes>) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Body::new(body.into()))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let r = hyper::Request::get("/x?a=1&token=s%20e+c").body(()).unwrap();
        assert_eq!(presented_token(&r).as_deref(), Some("s e c"));
        let r = hyper::Request::get("/x?token=%zz%4").body(()).unwrap();
        assert_eq!(presented_token(&r).as_deref(), Some("%zz%4"));
        let r = hyper::Request::get("/x")
            .header("Authorization", "Bearer abc ")
            .body(())
            .unwrap();
        assert_eq!(presented_token(&r).as_deref(), Some("abc"));
        assert_eq!(presented_token(&hyper::Request::get("/").body(()).unwrap()), None);
    }
}
