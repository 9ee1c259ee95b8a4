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

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const GRACE: Duration = Duration::from_secs(8);

/// Serves `app` on `listener` until `token` is cancelled, then lets
/// requests in flight finish (within a bound).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<TlsSetup>>,
    token: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
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
        let app = app.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let info = ConnInfo {
                    remote,
                    tls: false,
                    client_cn: None,
                };
                tokio::spawn(serve_stream(tcp, app, info, watcher));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
                    serve_stream(stream, app, info, watcher).await;
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

async fn serve_stream<S>(
    stream: S,
    app: Router,
    info: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = builder();
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
