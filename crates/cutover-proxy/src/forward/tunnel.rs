//! The tunnel of an upgraded connection (WebSocket and others): bytes copied both ways
//! until either side closes or both are quiet for `timeouts.tunnelIdle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hyper_util::rt::TokioIo;

use crate::listen::ConnInfo;
use crate::observed::{IoObserver, Observed};

/// Milliseconds since `base`, for activity stamps.
fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an upgraded connection reports to: `last` is stamped whenever bytes move, so the
/// tunnel can be closed when both directions have been quiet for `timeouts.tunnelIdle`.
struct Stamp {
    base: Instant,
    last: Arc<AtomicU64>,
}

impl IoObserver for Stamp {
    fn read(&mut self, _: &[u8]) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }

    fn wrote(&mut self, _: usize) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }
}

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways
/// until either side closes or both are quiet for `timeouts.tunnelIdle`. The tunnel holds
/// its client connection's slot (`conn`), so tunnels count against `maxConnections`.
pub(super) fn tunnel(
    conn: Arc<ConnInfo>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    // Kept apart from `conn`, which is dropped (freeing its slot) before the count falls.
    let shared = conn.shared.clone();
    shared.tunnels.fetch_add(1, Ordering::AcqRel);
    let idle: std::time::Duration = shared.config.timeouts.tunnel_idle.into();
    tokio::spawn(async move {
        if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
            let base = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let stamp = || Stamp {
                base,
                last: last.clone(),
            };
            let mut client = Observed {
                io: TokioIo::new(client),
                observer: stamp(),
            };
            let mut upstream = Observed {
                io: TokioIo::new(upstream),
                observer: stamp(),
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
