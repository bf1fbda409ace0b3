//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs and free
//! to change with the targets).
//!
//! Each takes the fuzzer's raw bytes, reads them the way a hostile client or a hostile
//! admin caller would send them, runs the proxy's own code on them, and asserts what must
//! hold whatever the input (a broken invariant is a crash the fuzzer reports). They live
//! here, not in `fuzz/`, so the committed corpus also runs in `cargo test` (see the tests
//! below) and so the functions they reach can stay private to the crate.
//!
//! Input formats, chosen so seeds are readable text:
//! - [`route_request`]: a route table as the admin API's `PUT /routes` body (JSON), a line
//!   `---`, then a request head: `METHOD TARGET`, then `Name: value` lines.
//! - [`forward_headers`]: `Name: value` lines.

#![doc(hidden)]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::RouteTableConfig;
use crate::table::{Pick, Registry};

/// Headers from `Name: value` lines; lines that are not a valid header are skipped (the
/// HTTP parser would have refused them before the proxy saw them).
pub fn parse_headers(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// Compiles a route table from the input's JSON (as `PUT /routes` does), then routes the
/// input's request through it (route lookup by host and path, match rules, sticky keys,
/// weights, mirroring). Panics if a route without a candidate sends a request to one.
/// Returns the version picked, if the table compiled and a route took the request.
pub fn route_request(input: &[u8]) -> Option<Pick> {
    let (routes, request) = match find(input, b"\n---\n") {
        Some(at) => (&input[..at], &input[at + 5..]),
        None => (input, &[][..]),
    };
    let config = serde_json::from_slice::<RouteTableConfig>(routes).ok()?;
    let registry = Registry::new(1);
    let table = registry.compile(&config, 1).ok()?;
    let (head, header_lines) = match request.iter().position(|&b| b == b'\n') {
        Some(at) => (&request[..at], &request[at + 1..]),
        None => (request, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let headers = parse_headers(header_lines);
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .map_or(h, |(h, _)| h)
                .to_ascii_lowercase()
        });
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    for route in &config.routes {
        if let Some(cookie) = route.match_rules.iter().find_map(|r| r.cookie.as_deref()) {
            let _ = crate::table::cookie(&headers, cookie);
        }
    }
    let route = table.find(host.as_deref(), target)?;
    let mut first = None;
    for _ in 0..3 {
        let pick = route.choose(&headers, Some(client));
        assert!(
            route.candidate.is_some() || pick == Pick::Stable,
            "a route without a candidate picked one"
        );
        let expected = match pick {
            Pick::Candidate => route.candidate.as_ref().map(|c| &c.name),
            Pick::Stable => Some(&route.stable.name),
        };
        assert_eq!(Some(&route.version(pick).name), expected);
        let _ = route.mirror();
        first = first.or(Some(pick));
    }
    first
}

/// Runs the forwarding path's header handling on the input's headers: the smuggling check,
/// then hop-by-hop removal. Panics if a hop-by-hop header, or one the `Connection` header
/// names, is still there afterwards.
pub fn forward_headers(input: &[u8]) -> Option<&'static str> {
    let mut headers = parse_headers(input);
    let verdict = crate::forward::smuggling(&headers);
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    crate::forward::strip_hop_by_hop(&mut headers);
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .map(|n| n.to_string())
    .chain(named)
    {
        assert!(
            !headers.contains_key(name.as_str()),
            "hop-by-hop header '{name}' was forwarded"
        );
    }
    verdict
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed (and every crash the fuzzers found, kept as a seed) runs
    /// through its target in the ordinary test suite.
    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|entry| {
                let bytes = std::fs::read(entry.path()).expect("seed");
                (entry.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    #[test]
    fn the_route_corpus_compiles_and_routes() {
        let picks: Vec<(String, Option<Pick>)> = corpus("route_request")
            .into_iter()
            .map(|(name, seed)| (name, route_request(&seed)))
            .collect();
        // Seeds that did not compile or route would leave the fuzzer to find the format.
        assert!(picks.iter().all(|(_, p)| p.is_some()), "{picks:?}");
        assert!(picks.iter().any(|(_, p)| *p == Some(Pick::Candidate)));
    }

    #[test]
    fn the_header_corpus_is_handled_and_smuggling_shapes_are_named() {
        let verdicts: Vec<(String, Option<&str>)> = corpus("forward_headers")
            .into_iter()
            .map(|(name, seed)| (name, forward_headers(&seed)))
            .collect();
        assert!(
            verdicts
                .iter()
                .any(|(name, v)| name.starts_with("smuggle") && v.is_some()),
            "{verdicts:?}"
        );
        for (name, verdict) in &verdicts {
            if name.starts_with("smuggle") {
                assert!(verdict.is_some(), "{name} was not recognised");
            }
        }
    }

    #[test]
    fn headers_are_read_from_lines_and_invalid_ones_skipped() {
        let headers = parse_headers(b"Host: a\r\nbad header: x\nX-A:  1 \nX-A: 2\n");
        assert_eq!(headers.get("host").map(|v| v.as_bytes()), Some(&b"a"[..]));
        assert_eq!(headers.get_all("x-a").iter().count(), 2);
        assert_eq!(headers.len(), 3);
    }
}
