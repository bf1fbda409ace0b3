//! The route table the controller keeps for every release, published to the embedded
//! proxy (or served at `GET /v1/routes` to proxies that pull it).
//!
//! Every release's driver hands in its whole desired route; one publisher task coalesces
//! what arrives while it is publishing into the next table, so a thousand rollouts moving
//! at once cost a handful of table swaps, not a thousand. A caller learns that its route
//! is live when a table containing it has been published.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cutover_proxy::Proxy;
use cutover_proxy::config::{RouteConfig, RouteTableConfig};
use serde::Serialize;
use tokio::sync::watch;

/// The table as proxies pull it: its version and routes.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedTable {
    /// Increases with every change.
    pub version: u64,
    /// Every release's route.
    pub routes: Vec<RouteConfig>,
}

/// The outcome of the publisher's latest attempt.
#[derive(Clone, Debug, Default)]
struct Publication {
    /// The version last attempted.
    attempted: u64,
    /// The version last published.
    live: u64,
    /// Why the attempt failed, if it did.
    error: Option<String>,
}

struct Desired {
    version: u64,
    routes: BTreeMap<String, RouteConfig>,
    /// Candidates the proxy cut off (release → version): they stay cut in every route set
    /// for that release until its driver clears the mark (a new rollout, a retry).
    cut: BTreeMap<String, String>,
}

/// Takes all traffic from the route's candidate if it is the one marked cut.
fn apply_cut(route: &mut RouteConfig, cut: Option<&String>) {
    if cut.is_some_and(|version| route.candidate.as_ref().is_some_and(|c| &c.name == version)) {
        route.weight = 0;
        route.match_rules.clear();
        route.mirror_percent = 0;
    }
}

/// The route table and its publisher.
pub struct RoutePublisher {
    desired: Mutex<Desired>,
    changed: watch::Sender<u64>,
    /// How the last publication went.
    published: watch::Sender<Publication>,
    /// Nothing is published before this is set: after a start, the drivers set their
    /// routes first, so that the first table is complete.
    opened: watch::Sender<bool>,
    last: Mutex<Option<PublishedTable>>,
}

impl RoutePublisher {
    /// A table published to `proxy` (or only kept, for pulling proxies, when `None`).
    pub fn start(proxy: Option<Arc<Proxy>>) -> Arc<RoutePublisher> {
        // Versions start at the clock, so a proxy pulling from a restarted controller
        // never mistakes a new table for the one it applied.
        let first = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let table = Arc::new(RoutePublisher {
            desired: Mutex::new(Desired {
                version: first,
                routes: BTreeMap::new(),
                cut: BTreeMap::new(),
            }),
            changed: watch::channel(first).0,
            published: watch::channel(Publication {
                attempted: first,
                live: first,
                error: None,
            })
            .0,
            last: Mutex::new(None),
            opened: watch::channel(false).0,
        });
        tokio::spawn(publish_loop(table.clone(), proxy));
        table
    }

    fn desired(&self) -> std::sync::MutexGuard<'_, Desired> {
        self.desired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or with `None` removes) a release's route; returns the table version that
    /// holds it, for [`RoutePublisher::published_at`]. Synchronous, so routes set one after
    /// another by a driver land in that order.
    pub fn set(&self, release: &str, mut route: Option<RouteConfig>) -> u64 {
        let version = {
            let mut desired = self.desired();
            if let Some(route) = route.as_mut() {
                apply_cut(route, desired.cut.get(release));
            }
            let same = desired.routes.get(release) == route.as_ref();
            if !same {
                desired.version += 1;
                match route {
                    Some(route) => desired.routes.insert(release.to_string(), route),
                    None => desired.routes.remove(release),
                };
            }
            desired.version
        };
        let _ = self.changed.send(version);
        version
    }

    /// Waits until a table of `version` or later is live.
    pub async fn published_at(&self, version: u64) -> Result<(), String> {
        let mut published = self.published.subscribe();
        loop {
            {
                let p = published.borrow_and_update();
                if p.live >= version {
                    return Ok(());
                }
                if let Some(error) = p.error.as_ref().filter(|_| p.attempted >= version) {
                    return Err(error.clone());
                }
            }
            if published.changed().await.is_err() {
                return Err("the route publisher stopped".into());
            }
        }
    }

    /// The published table once it is newer than `version`, waiting up to `limit` for one;
    /// after `limit`, the table as it stands (`None` if none was published yet). What a
    /// pulling proxy long-polls, so it takes a change within milliseconds instead of at its
    /// next poll.
    pub async fn published_after(
        &self,
        version: u64,
        limit: std::time::Duration,
    ) -> Option<PublishedTable> {
        let mut published = self.published.subscribe();
        let _ = tokio::time::timeout(limit, published.wait_for(|p| p.live != version)).await;
        self.published()
    }

    /// Lets the publisher publish, starting with the table as it stands.
    pub fn open(&self) {
        self.opened.send_replace(true);
    }

    /// Takes all traffic from `release`'s candidate if it is `version` (a guardrail
    /// tripped in the proxy), so no table published before its driver acts undoes the
    /// proxy's cut-off.
    pub fn cut_candidate(&self, release: &str, version: &str) {
        let version = {
            let mut desired = self.desired();
            let Desired {
                version: table_version,
                routes,
                cut,
            } = &mut *desired;
            cut.insert(release.to_string(), version.to_string());
            let Some(route) = routes.get_mut(release) else {
                return;
            };
            apply_cut(route, cut.get(release));
            *table_version += 1;
            *table_version
        };
        let _ = self.changed.send(version);
    }

    /// Forgets a cut-off of `release`'s candidate: its next rollout (or retry) may route
    /// to that version again.
    pub fn clear_cut(&self, release: &str) {
        self.desired().cut.remove(release);
    }

    /// The route of `release` as last asked for.
    pub fn route(&self, release: &str) -> Option<RouteConfig> {
        self.desired().routes.get(release).cloned()
    }

    /// The last published table; `None` before the first publication (right after a
    /// start, before the drivers have set their routes), so that a pulling proxy never
    /// takes an empty table for the real one.
    pub fn published(&self) -> Option<PublishedTable> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The least time between two tables: changes arriving meanwhile go out together.
const MIN_PUBLISH_GAP: std::time::Duration = std::time::Duration::from_millis(10);

async fn publish_loop(table: Arc<RoutePublisher>, proxy: Option<Arc<Proxy>>) {
    let mut changed = table.changed.subscribe();
    let mut opened = table.opened.subscribe();
    if opened.wait_for(|o| *o).await.is_err() {
        return;
    }
    let mut last_publish = tokio::time::Instant::now();
    // The first table goes out as soon as the publisher opens, changed or not.
    changed.mark_changed();
    loop {
        if changed.changed().await.is_err() {
            return;
        }
        tokio::time::sleep_until(last_publish + MIN_PUBLISH_GAP).await;
        last_publish = tokio::time::Instant::now();
        let (version, config) = {
            let desired = table.desired();
            (
                desired.version,
                RouteTableConfig {
                    routes: desired.routes.values().cloned().collect(),
                },
            )
        };
        let result = match &proxy {
            Some(proxy) => proxy
                .set_routes(&config)
                .await
                .map(|_| version)
                .map_err(|e| format!("the proxy refused the route table: {e}")),
            None => Ok(version),
        };
        let attempted = version;
        match result {
            Ok(version) => {
                *table
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(PublishedTable {
                    version,
                    routes: config.routes,
                });
                table.published.send_modify(|p| {
                    p.attempted = attempted;
                    p.live = version;
                    p.error = None;
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot publish the route table");
                table.published.send_modify(|p| {
                    p.attempted = attempted;
                    p.error = Some(e);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn route(release: &str, weight: u8) -> RouteConfig {
        serde_json::from_value(serde_json::json!({
            "release": release,
            "stable": {"name": "v1", "endpoints": ["127.0.0.1:1"]},
            "candidate": {"name": "v2", "endpoints": ["127.0.0.1:2"]},
            "weight": weight,
        }))
        .expect("a route")
    }

    #[tokio::test]
    async fn a_long_poll_answers_as_soon_as_the_table_changes() {
        let table = RoutePublisher::start(None);
        let first = table.set("shop", Some(route("shop", 0)));
        table.open();
        table.published_at(first).await.expect("published");
        let waiting = {
            let table = table.clone();
            tokio::spawn(async move { table.published_after(first, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "answered with no change");
        let second = table.set("shop", Some(route("shop", 20)));
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("answered after the change")
            .expect("the task")
            .expect("a table");
        assert_eq!(answer.version, second);
        assert_eq!(answer.routes[0].weight, 20);
    }

    #[tokio::test]
    async fn a_long_poll_gives_the_table_as_it_stands_after_its_limit() {
        let table = RoutePublisher::start(None);
        let first = table.set("shop", Some(route("shop", 0)));
        table.open();
        table.published_at(first).await.expect("published");
        let answer = table
            .published_after(first, Duration::from_millis(50))
            .await
            .expect("a table");
        assert_eq!(answer.version, first);
        // An older version than the live one answers at once.
        let answer = table
            .published_after(first - 1, Duration::from_secs(30))
            .await
            .expect("a table");
        assert_eq!(answer.version, first);
    }
}
