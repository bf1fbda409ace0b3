//! The tunnel of an upgraded connection (WebSocket and others): bytes copied both ways
//! until either side closes or both are quiet for `timeouts.tunnelIdle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hyper_util::rt::TokioIo;

use crate::Shared;
use crate::listen::ConnInfo;

/// Milliseconds since `base`, for activity stamps.
fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An upgraded connection that stamps `last` whenever bytes move, so the tunnel can be
/// closed when both directions have been quiet for `timeouts.tunnelIdle`.
struct Stamped<T> {
    io: T,
    base: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Stamped<T> {
    fn stamp(&self) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.stamp();
        }
        result
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        result
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways
/// until either side closes or both are quiet for `timeouts.tunnelIdle`. The tunnel holds
/// its client connection's slot (`conn`), so tunnels count against `maxConnections`.
pub(super) fn tunnel(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    shared.tunnels.fetch_add(1, Ordering::AcqRel);
    let idle: std::time::Duration = shared.config.timeouts.tunnel_idle.into();
    tokio::spawn(async move {
        if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
            let base = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let mut client = Stamped {
                io: TokioIo::new(client),
                base,
                last: last.clone(),
            };
            let mut upstream = Stamped {
                io: TokioIo::new(upstream),
                base,
                last: last.clone(),
            };
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                let quiet_until = tokio::time::Instant::from_std(base)
                    + std::time::Duration::from_millis(last.load(Ordering::Relaxed))
                    + idle;
                tokio::select! {
                    _ = &mut copy => break,
                    _ = tokio::time::sleep_until(quiet_until) => {
                        let quiet = millis_since(base).saturating_sub(last.load(Ordering::Relaxed));
                        if u128::from(quiet) >= idle.as_millis() {
                            tracing::debug!(peer = %conn.peer, "tunnel idle; closing");
                            break;
                        }
                    }
                }
            }
        }
        drop(conn);
        shared.tunnels.fetch_sub(1, Ordering::AcqRel);
        shared.tunnels_done.notify_one();
    });
}
