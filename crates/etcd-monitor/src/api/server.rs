//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2, each connection
//! on its own task. Every request carries a [`ConnInfo`] (peer address,
//! TLS, client-certificate CN) for the access layer. A TLS handshake that
//! fails or stalls ends only its own connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::access::ConnInfo;
use super::tls::{TlsSetup, client_cn};

/// How long shutdown waits for requests in flight.
const GRACE: Duration = Duration::from_secs(8);

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time to send a request's headers (and to idle between requests).
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `token` is cancelled, then lets
/// requests in flight finish (within a bound).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<TlsSetup>>,
    limits: ServerLimits,
    token: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "API: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp, tls.is_some()));
            continue;
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let timeout = limits.header_timeout;
        match &tls {
            None => {
                let info = ConnInfo {
                    remote,
                    tls: false,
                    client_cn: None,
                };
                tokio::spawn(async move {
                    // The protocol is sniffed from the first bytes: a client
                    // that sends none must not hold the connection.
                    let mut first = [0u8; 1];
                    if let Ok(Ok(n)) = tokio::time::timeout(timeout, tcp.peek(&mut first)).await
                        && n > 0
                    {
                        serve_stream(tcp, app, info, watcher, timeout, Protocol::Sniff).await;
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "API: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "API: TLS handshake timed out");
                            return;
                        }
                    };
                    let info = ConnInfo {
                        remote,
                        tls: true,
                        client_cn: client_cn(stream.get_ref().1),
                    };
                    // ALPN chose the protocol: no sniffing, so hyper's header
                    // timeout runs from the start.
                    let protocol = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    serve_stream(stream, app, info, watcher, timeout, protocol).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API: requests still running after {GRACE:?} were cut off");
    }
}

/// Answers a connection beyond `api.max_connections`: a 503 on plain
/// HTTP (a TLS client just sees the connection close), then closes it.
async fn refuse(mut tcp: tokio::net::TcpStream, tls: bool) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!("API: too many open connections (api.max_connections); one refused");
    if !tls {
        let body = r#"{"error":{"code":"overloaded","message":"too many open connections (api.max_connections); retry shortly"}}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), tcp.write_all(answer.as_bytes())).await;
    }
    let _ = tcp.shutdown().await;
}

/// How a connection's HTTP version is known.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// From its first bytes (plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge).
    Sniff,
    /// Negotiated by TLS ALPN.
    Http1,
    /// Negotiated by TLS ALPN.
    Http2,
}

async fn serve_stream<S>(
    stream: S,
    app: Router,
    info: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
    protocol: Protocol,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = match protocol {
        Protocol::Sniff => builder(),
        Protocol::Http1 => builder().http1_only(),
        Protocol::Http2 => builder().http2_only(),
    };
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(app, info));
    let _ = watcher.watch(conn).await;
}

fn builder() -> auto::Builder<TokioExecutor> {
    auto::Builder::new(TokioExecutor::new())
}

fn service(
    app: Router,
    info: ConnInfo,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone,
> {
    let remote: SocketAddr = info.remote;
    hyper_util::service::TowerToHyperService::new(app.map_request(
        move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            req.extensions_mut().insert(ConnectInfo(remote));
            req.map(axum::body::Body::new)
        },
    ))
}
