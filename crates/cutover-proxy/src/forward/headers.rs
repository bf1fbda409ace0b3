//! Request and response headers at the proxy: hop-by-hop headers stripped both ways
//! (RFC 9110 §7.6.1), smuggling shapes recognised, the request's host and upgrade read,
//! and `X-Forwarded-*` and `Forwarded` set (replaced unless the peer is a trusted proxy).

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

/// Hop-by-hop headers, as Go's `httputil.ReverseProxy` and RFC 9110 §7.6.1 list them. A
/// `static`, not a `const`: a `const` array is built again (and dropped) at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `name` is in [`HOP_BY_HOP`], by its text: most names differ from all nine in
/// length, which is all this looks at for them. Comparing a name with each of the nine
/// `HeaderName`s cost about 120 instructions a field.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including those the `Connection` header names; says
/// whether it removed any of the latter (which may be any field, `Host` among them).
///
/// One pass over the names the message has, without hashing, finds what goes; only those
/// are removed. Removing every name of [`HOP_BY_HOP`] blindly costs a hash and a probe
/// each, on every request and every response, for messages that mostly carry none of
/// them or only `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Bit `i` set: `HOP_BY_HOP[i]` is present.
    let mut fixed: u16 = 0;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            fixed |= 1 << i;
        }
    }
    // Present names that only the `Connection` header makes hop-by-hop (rare); looked
    // for only when there is a `Connection` header (`HOP_BY_HOP[0]`) that lists a name
    // beyond [`HOP_BY_HOP`]: its usual values (`keep-alive`, `upgrade`) list none, and
    // matching each field against its tokens cost about 1,500 instructions per message.
    let mut listed: Vec<HeaderName> = Vec::new();
    if fixed & 1 != 0 && lists_other_names(headers) {
        let connection = headers.get_all(header::CONNECTION);
        let tokens = || {
            connection
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
        };
        for name in headers.keys() {
            if hop_by_hop_index(name).is_none()
                && tokens().any(|t| t.eq_ignore_ascii_case(name.as_str()))
            {
                listed.push(name.clone());
            }
        }
    }
    if fixed == 0 && listed.is_empty() {
        return false;
    }
    remove_marked(headers, &HOP_BY_HOP, fixed);
    for name in &listed {
        headers.remove(name);
    }
    !listed.is_empty()
}

/// Whether a `Connection` header lists a token that is not a name of [`HOP_BY_HOP`]
/// (which go anyway): only then can it name another field to remove. Values that are not
/// text name nothing, as in [`strip_hop_by_hop`].
fn lists_other_names(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        // The usual values whole, before any tokenizing.
        .filter(|v| {
            let v = v.as_bytes();
            !(v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"upgrade"))
        })
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|token| {
            !token.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|name| token.eq_ignore_ascii_case(name.as_str()))
        })
}

/// Whether a `Connection` value lists `token` (compared without case). A value that is not
/// text lists nothing, as hyper reads it: the proxy's codecs and hyper's must agree on
/// whether a connection ends or upgrades.
pub(crate) fn connection_lists(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The field name `bytes`. The standard names requests and answers carry most, spelled as
/// browsers and servers spell them (`Content-Length`, or all in lower case), are matched
/// by their bytes; any other goes through [`HeaderName::from_bytes`], whose case folding
/// and table walk cost about 150 instructions a field on every message the proxy reads.
pub(crate) fn field_name(bytes: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    let spelled = |title: &[u8], lower: &[u8]| bytes == title || bytes == lower;
    let common = match bytes.len() {
        4 if spelled(b"Host", b"host") => header::HOST,
        4 if spelled(b"Date", b"date") => header::DATE,
        6 if spelled(b"Accept", b"accept") => header::ACCEPT,
        6 if spelled(b"Server", b"server") => header::SERVER,
        6 if spelled(b"Cookie", b"cookie") => header::COOKIE,
        10 if spelled(b"User-Agent", b"user-agent") => header::USER_AGENT,
        10 if spelled(b"Connection", b"connection") => header::CONNECTION,
        10 if spelled(b"Set-Cookie", b"set-cookie") => header::SET_COOKIE,
        12 if spelled(b"Content-Type", b"content-type") => header::CONTENT_TYPE,
        13 if spelled(b"Cache-Control", b"cache-control") => header::CACHE_CONTROL,
        13 if spelled(b"Last-Modified", b"last-modified") => header::LAST_MODIFIED,
        14 if spelled(b"Content-Length", b"content-length") => header::CONTENT_LENGTH,
        15 if spelled(b"Accept-Encoding", b"accept-encoding") => header::ACCEPT_ENCODING,
        15 if spelled(b"Accept-Language", b"accept-language") => header::ACCEPT_LANGUAGE,
        _ => return HeaderName::from_bytes(bytes),
    };
    Ok(common)
}

/// Whether a `Connection` value lists nothing but `keep-alive`, which names only a field
/// that is hop-by-hop anyway: a reader may then leave the field out of the message it
/// builds rather than have [`strip_hop_by_hop`] find and remove it (a hash and a probe
/// per message). Any other token, `close` included, names a field to remove (RFC 9110
/// §7.6.1), so the field stays for [`strip_hop_by_hop`] to read.
pub(crate) fn connection_names_no_field(value: &[u8]) -> bool {
    value.split(|&b| b == b',').all(|token| {
        let token = token.trim_ascii();
        token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// The `Upgrade` value if this is an HTTP/1.1 upgrade request (WebSocket and others).
/// One pass over the fields, no name hashed: nearly every request is no upgrade.
pub(super) fn upgrade_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let mut upgrade = None;
    let mut connection_upgrade = false;
    for (name, value) in req.headers() {
        if name == header::UPGRADE {
            upgrade.get_or_insert(value);
        } else if name == header::CONNECTION {
            connection_upgrade |= connection_lists(value, "upgrade");
        }
    }
    upgrade.filter(|_| connection_upgrade).cloned()
}

/// Request shapes used to smuggle a second request past a proxy: a `Transfer-Encoding`
/// other than plain `chunked` (a coding the proxy would silently drop, or one the upstream
/// may read differently), or conflicting lengths. (Both `Content-Length` and
/// `Transfer-Encoding` never get here over HTTP/1: the parser drops the length and closes
/// the connection after the answer, as RFC 9112 §6.3 requires of an intermediary. The
/// check stays for requests that arrive another way.)
pub(crate) fn smuggling(headers: &HeaderMap) -> Option<&'static str> {
    smuggling_in(&Framing::of(headers), headers)
}

/// What a request's framing fields are, found in one pass over its fields (no name
/// hashed: most requests have neither field, and looking each up costs a hash and a
/// probe).
pub(crate) struct Framing<'a> {
    /// Whether a `Transfer-Encoding` field is present.
    pub(crate) transfer_encoding: bool,
    /// The first `Content-Length` value.
    pub(crate) first_length: Option<&'a HeaderValue>,
    /// Whether `Content-Length` is repeated.
    pub(crate) repeated_length: bool,
    /// Whether a repeated `Content-Length` differs from the first.
    pub(crate) conflicting_lengths: bool,
}

impl<'a> Framing<'a> {
    /// The framing fields of `headers`.
    pub(crate) fn of(headers: &'a HeaderMap) -> Framing<'a> {
        let mut framing = Framing {
            transfer_encoding: false,
            first_length: None,
            repeated_length: false,
            conflicting_lengths: false,
        };
        for (name, value) in headers {
            if name == header::TRANSFER_ENCODING {
                framing.transfer_encoding = true;
            } else if name == header::CONTENT_LENGTH {
                match framing.first_length {
                    None => framing.first_length = Some(value),
                    Some(first) => {
                        framing.repeated_length = true;
                        framing.conflicting_lengths |= first != value;
                    }
                }
            }
        }
        framing
    }
}

/// [`smuggling`], given the request's [`Framing`].
pub(crate) fn smuggling_in(framing: &Framing<'_>, headers: &HeaderMap) -> Option<&'static str> {
    let has_te = framing.transfer_encoding;
    if has_te && framing.first_length.is_some() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if has_te {
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let plain_chunked = matches!(
            (codings.next(), codings.next()),
            (Some(only), None) if only.eq_ignore_ascii_case("chunked")
        );
        if !plain_chunked {
            return Some("a Transfer-Encoding other than chunked");
        }
    }
    if framing.conflicting_lengths {
        return Some("conflicting Content-Length values");
    }
    None
}

/// The request's host without port: the URI's authority (HTTP/2) or the `Host` header.
/// Borrowed as it came, in whatever case: route lookups compare hosts case-insensitively.
pub(super) fn host_of<B>(req: &Request<B>) -> Option<&str> {
    if let Some(host) = req.uri().host() {
        return Some(host.trim_start_matches('[').trim_end_matches(']'));
    }
    let value = req.headers().get(header::HOST)?.to_str().ok()?;
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        // A byte search: `rsplit_once(':')` searches for a `char` from the end, which
        // cost about 100 instructions more per request on a host with a port.
        match value.bytes().rposition(|b| b == b':') {
            Some(colon) if value.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => {
                // `:` is one byte, so `colon` is on a character boundary.
                value.get(..colon).unwrap_or(value)
            }
            _ => value,
        }
    };
    Some(host)
}

/// An address range of `limits.trustedProxies`: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/prefix`; `None` if either part is malformed.
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = ip.parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 peer counts as IPv4).
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let masked = |bits: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            if shift >= width { 0 } else { bits >> shift }
        };
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32) == masked(u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128) == masked(u128::from(ip), 128)
            }
            _ => false,
        }
    }
}

/// A `Forwarded` parameter value (RFC 7239 §4): bare if it is a token, else a quoted
/// string with `"` and `\` escaped. IPv6 nodes, `host:port` and anything with
/// separators need the quotes.
fn forwarded_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_forwarded_value(&mut out, value);
    out
}

/// [`forwarded_value`], appended to `out`.
fn push_forwarded_value(out: &mut String, value: &str) {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !value.is_empty() && value.bytes().all(tchar) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A `Forwarded` value: the earlier hops' elements (`previous`), then this hop's
/// `element` with `host=` when the request names one.
fn forwarded_value_of(
    previous: Option<&str>,
    element: &str,
    host: Option<&str>,
) -> Option<HeaderValue> {
    let mut value = String::with_capacity(
        previous.map_or(0, |p| p.len() + 2) + element.len() + host.map_or(0, |h| h.len() + 8),
    );
    if let Some(previous) = previous {
        value.push_str(previous);
        value.push_str(", ");
    }
    value.push_str(element);
    if let Some(host) = host {
        value.push_str(";host=");
        push_forwarded_value(&mut value, host);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// What a connection remembers of the host its requests named, for [`PeerForwarding`].
enum LastHost {
    /// No request named one yet.
    Empty,
    /// One request named a host with this hash.
    Seen(u64),
    /// Two requests in a row named this host (a copy: the client's value is a slice of
    /// hyper's read buffer, which a clone would keep alive while the connection idles),
    /// and this is its `Forwarded` value.
    Cached(Box<[u8]>, HeaderValue),
}

/// FNV-1a of `bytes`: only to tell whether a host came again, checked by comparing the
/// bytes before anything is reused.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a connection's peer puts into the forwarding headers, worked out once per
/// connection rather than formatted again for each of its requests.
pub(crate) struct PeerForwarding {
    /// The peer's address, as `X-Forwarded-For` gets it.
    ip: HeaderValue,
    /// `for=...;proto=...`: this hop's `Forwarded` element before any `host=`.
    element: String,
    /// The same as a header value, for requests without a host.
    element_value: Option<HeaderValue>,
    /// `http` or `https`.
    proto: &'static str,
    /// The last host this connection's requests named: a keep-alive connection mostly
    /// asks for one host, and the `Forwarded` value is then a reference count, not a
    /// string built, checked and allocated per request (about 550 instructions). Kept
    /// from the second request for a host on, so that a connection that made one
    /// request and idles holds no more memory for it.
    last_host: std::sync::Mutex<LastHost>,
}

impl PeerForwarding {
    /// This hop's `Forwarded` element naming `host`: the one made for the connection's
    /// last request when the host is the same.
    fn for_host(&self, host: &HeaderValue) -> Option<HeaderValue> {
        // `try_lock`: HTTP/2 requests of one connection may run at once; one that finds
        // the cache busy builds its value itself.
        let mut last = self.last_host.try_lock().ok();
        let seen = fnv1a(host.as_bytes());
        if let Some(LastHost::Cached(cached, value)) = last.as_deref()
            && **cached == *host.as_bytes()
        {
            return Some(value.clone());
        }
        let value = forwarded_value_of(None, &self.element, host.to_str().ok())?;
        if let Some(last) = last.as_deref_mut() {
            *last = match last {
                // The second request for this host: worth keeping its value.
                LastHost::Seen(earlier) if *earlier == seen => {
                    LastHost::Cached(host.as_bytes().into(), value.clone())
                }
                _ => LastHost::Seen(seen),
            };
        }
        Some(value)
    }

    /// The forwarding values of a connection from `peer`, over TLS or not.
    pub(crate) fn of(peer: SocketAddr, tls: bool) -> PeerForwarding {
        let canonical = peer.ip().to_canonical();
        let ip = canonical.to_string();
        let proto = if tls { "https" } else { "http" };
        let node = if canonical.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        let element = format!("for={};proto={proto}", forwarded_value(&node));
        PeerForwarding {
            ip: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            element_value: HeaderValue::from_str(&element).ok(),
            element,
            proto,
            last_host: std::sync::Mutex::new(LastHost::Empty),
        }
    }
}

/// [`forwarding_fields`] for a request from `peer`, inserted into `headers`, as the tests
/// call it.
#[cfg(test)]
pub(super) fn add_forwarding(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    host: Option<&HeaderValue>,
    tls: bool,
    trusted: bool,
) {
    add_forwarding_for(headers, &PeerForwarding::of(peer, tls), host, trusted);
}

/// [`forwarding_fields`] inserted into `headers`: the request as an upstream sees it.
#[cfg(test)]
pub(super) fn add_forwarding_for(
    headers: &mut HeaderMap,
    peer: &PeerForwarding,
    host: Option<&HeaderValue>,
    trusted: bool,
) {
    forwarding_fields(headers, peer, host, trusted).insert_into(headers);
}

/// `X-Forwarded-For`, made at compile time (`from_static` at run time checks every byte).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The forwarding fields this hop adds to a request: `X-Forwarded-For`, `-Proto`,
/// `-Host` and `Forwarded`. They are kept beside the request's header map, not inserted
/// into it: the upstream codec writes them after the request's own fields
/// ([`ForwardingFields::each`]), which hashes nothing, where four inserts into the map
/// cost about 900 instructions per request. The paths that hand a header map on (an
/// upgrade through hyper-util's client, a mirrored copy) insert them
/// ([`ForwardingFields::insert_into`]).
pub(crate) struct ForwardingFields {
    /// `X-Forwarded-For`: the peer, after a trusted proxy's list.
    for_: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: `http` or `https`.
    proto: &'static str,
    /// `X-Forwarded-Host`: the host the client asked for, if it named one.
    host: Option<HeaderValue>,
    /// `Forwarded`: this hop's element, after a trusted proxy's.
    forwarded: Option<HeaderValue>,
}

impl ForwardingFields {
    /// Calls `field` with each field's name (lower case, as a `HeaderName` writes it) and
    /// value, in the order they are written.
    pub(crate) fn each(&self, mut field: impl FnMut(&str, &[u8])) {
        if let Some(value) = &self.for_ {
            field(X_FORWARDED_FOR.as_str(), value.as_bytes());
        }
        field(X_FORWARDED_PROTO.as_str(), self.proto.as_bytes());
        if let Some(value) = &self.host {
            field(X_FORWARDED_HOST.as_str(), value.as_bytes());
        }
        if let Some(value) = &self.forwarded {
            field(header::FORWARDED.as_str(), value.as_bytes());
        }
    }

    /// Inserts the fields into `headers`, replacing any of the same names.
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        if let Some(value) = &self.for_ {
            headers.insert(X_FORWARDED_FOR, value.clone());
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Some(value) = &self.host {
            headers.insert(X_FORWARDED_HOST, value.clone());
        }
        if let Some(value) = &self.forwarded {
            headers.insert(header::FORWARDED, value.clone());
        }
    }
}

/// The forwarding fields for a request from the peer of `peer`'s connection, with the
/// client's own taken out of `headers`. The client's `X-Forwarded-For` and `Forwarded`
/// are kept (and appended to) only when `trusted` (the peer is in
/// `limits.trustedProxies`); from anyone else they are replaced, so a client cannot
/// choose the address the upstream believes. Its `X-Forwarded-Proto` and `-Host` are
/// always replaced. The peer's values are worked out once per connection: an untrusted
/// peer's request costs no formatting unless it has a host (the `Forwarded` value names
/// it).
pub(super) fn forwarding_fields(
    headers: &mut HeaderMap,
    peer: &PeerForwarding,
    host: Option<&HeaderValue>,
    trusted: bool,
) -> ForwardingFields {
    let joined = |name: &HeaderName, headers: &HeaderMap| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let for_ = match trusted.then(|| joined(&X_FORWARDED_FOR, headers)).flatten() {
        Some(previous) => {
            let ip = peer.ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{previous}, {ip}")).ok()
        }
        None => Some(peer.ip.clone()),
    };
    let previous_forwarded = trusted
        .then(|| joined(&header::FORWARDED, headers))
        .flatten();
    remove_client_forwarding(headers);
    let forwarded = match (previous_forwarded, host) {
        (None, None) => peer.element_value.clone(),
        (None, Some(host)) => peer.for_host(host),
        (previous, host) => forwarded_value_of(
            previous.as_deref(),
            &peer.element,
            host.and_then(|h| h.to_str().ok()),
        ),
    };
    ForwardingFields {
        for_,
        proto: peer.proto,
        host: host.cloned(),
        forwarded,
    }
}

/// Takes the client's forwarding fields out of `headers`: one pass over the names it
/// has, then a removal only for those present (most requests carry none).
fn remove_client_forwarding(headers: &mut HeaderMap) {
    let mut present: u16 = 0;
    for name in headers.keys() {
        present |= match name.as_str() {
            "x-forwarded-for" => 1,
            "x-forwarded-proto" => 2,
            "x-forwarded-host" => 4,
            "forwarded" => 8,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    let names = [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        header::FORWARDED,
    ];
    remove_marked(headers, &names, present);
}

/// Removes from `headers` each name of `names` whose bit is set in `marked` (bit `i` for
/// `names[i]`): the second half of a pass that found, without hashing, which are present.
fn remove_marked(headers: &mut HeaderMap, names: &[HeaderName], marked: u16) {
    for (i, name) in names.iter().enumerate() {
        if marked & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_tokens_name_fields_in_every_connection_header() {
        // The usual value lists only hop-by-hop names: the other fields stay.
        let mut h = headers(&[
            ("connection", "Keep-Alive"),
            ("keep-alive", "timeout=5"),
            ("server", "nginx"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("server") && h.contains_key("content-length"));
        // A name listed by a second `Connection` header, and `close` naming a field.
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("close", "odd"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        // Empty tokens and a value that is not text name nothing; the field after them
        // is still found.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static(" , ,"));
        h.append(
            "connection",
            HeaderValue::from_bytes(b"\xff").expect("opaque"),
        );
        h.append("connection", HeaderValue::from_static(",x-secret,"));
        h.append("x-secret", HeaderValue::from_static("1"));
        h.append("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_tokens_are_read_as_hyper_reads_them() {
        let lists = |bytes: &[u8], token| {
            connection_lists(&HeaderValue::from_bytes(bytes).expect("value"), token)
        };
        assert!(lists(b"close", "close"));
        assert!(lists(b"Keep-Alive , CLOSE", "close"));
        assert!(lists(b"keep-alive,\tUpgrade", "upgrade"));
        assert!(!lists(b"closed", "close"));
        assert!(!lists(b"keep-alive", "close"));
        // A value that is not text lists nothing, whatever else it says.
        assert!(!lists(b"close, \xff", "close"));
    }

    #[test]
    fn field_names_are_read_as_hyper_reads_them() {
        for spelling in [
            "Host",
            "host",
            "HOST",
            "hOsT",
            "Date",
            "date",
            "Accept",
            "accept",
            "Server",
            "server",
            "SERVER",
            "Cookie",
            "cookie",
            "User-Agent",
            "user-agent",
            "Connection",
            "connection",
            "Set-Cookie",
            "set-cookie",
            "Content-Type",
            "content-type",
            "Cache-Control",
            "cache-control",
            "Last-Modified",
            "last-modified",
            "Content-Length",
            "content-length",
            "content-LENGTH",
            "Accept-Encoding",
            "accept-encoding",
            "Accept-Language",
            "accept-language",
            "X-Request-Id",
            "Hostx",
            "Dat",
            "content-lengtH",
            "ETag",
        ] {
            assert_eq!(
                field_name(spelling.as_bytes()).ok(),
                HeaderName::from_bytes(spelling.as_bytes()).ok(),
                "{spelling}"
            );
        }
        for bad in [&b"Host "[..], b"Ho\rst", b"", b"Content Length"] {
            assert!(field_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_found_by_their_text() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for name in ["content-length", "host", "x-connection", "tee", "upgrades"] {
            let name = HeaderName::from_static(name);
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }

    #[test]
    fn only_keep_alive_names_no_field() {
        assert!(connection_names_no_field(b"keep-alive"));
        assert!(connection_names_no_field(b" ,KEEP-ALIVE,"));
        assert!(!connection_names_no_field(b"keep-alive, x-secret"));
        assert!(!connection_names_no_field(b"close"));
        assert!(!connection_names_no_field(b"upgrade"));
    }

    #[test]
    fn smuggling_shapes_are_recognised() {
        let smuggled: [&[(&str, &str)]; 4] = [
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("transfer-encoding", "chunked, gzip")],
            &[("content-length", "5"), ("content-length", "6")],
            &[("transfer-encoding", "gzip, chunked")],
        ];
        for shape in smuggled {
            assert!(smuggling(&headers(shape)).is_some(), "{shape:?}");
        }
        assert!(smuggling(&headers(&[("transfer-encoding", "chunked")])).is_none());
        assert!(smuggling(&headers(&[("content-length", "5")])).is_none());
    }

    #[test]
    fn the_host_is_the_host_field_less_a_numeric_port() {
        let cases = [
            ("shop.example", "shop.example"),
            ("shop.example:8080", "shop.example"),
            ("shop.example:", "shop.example"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("shop.example:80x", "shop.example:80x"),
            ("a:b:80", "a:b"),
            (":80", ""),
        ];
        for (field, host) in cases {
            let req = Request::builder()
                .header(header::HOST, field)
                .body(())
                .expect("request");
            assert_eq!(host_of(&req), Some(host), "{field}");
        }
        let req = Request::builder()
            .uri("http://[::1]:8080/")
            .header(header::HOST, "other.example")
            .body(())
            .expect("request");
        assert_eq!(host_of(&req), Some("::1"), "the URI's authority first");
        assert_eq!(host_of(&Request::new(())), None);
        // Hostile fields: bytes past ASCII give no host (no route with a host takes the
        // request); an unclosed bracket, an empty field or a lone colon take nothing
        // from past the field.
        let odd = Request::builder()
            .header(
                header::HOST,
                HeaderValue::from_bytes(b"sh\xf6p.example:80").expect("obs-text is allowed"),
            )
            .body(())
            .expect("request");
        assert_eq!(host_of(&odd), None);
        for (field, host) in [("[::1", "::1"), ("", ""), (":", ""), ("[]:80", "")] {
            let req = Request::builder()
                .header(header::HOST, field)
                .body(())
                .expect("request");
            assert_eq!(host_of(&req), Some(host), "{field:?}");
        }
    }

    /// [`add_forwarding`] for a request from `peer` with `Host: host`.
    fn forward(h: &mut HeaderMap, peer: &str, host: Option<&str>, tls: bool, trusted: bool) {
        let host = host.map(|h| HeaderValue::from_str(h).expect("host"));
        let peer = peer.parse().expect("peer");
        add_forwarding(h, peer, host.as_ref(), tls, trusted);
    }

    #[test]
    fn forwarding_headers_append_to_what_a_trusted_proxy_sent() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        forward(&mut h, "[::1]:5000", Some("shop.example"), true, true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=\"[::1]\";proto=https;host=shop.example"
        );
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_client_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("forwarded", "for=1.2.3.4;by=evil"),
        ]);
        forward(&mut h, "192.0.2.7:5000", None, false, false);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h.get_all(header::FORWARDED).iter().count(), 1);
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=http");
    }

    /// The fields the upstream codec writes are those a map gets inserted, for every
    /// mix of trust and host: the two ways they leave cannot drift apart.
    #[test]
    fn forwarding_fields_written_are_those_inserted() {
        let peer = PeerForwarding::of("[::1]:5000".parse().expect("addr"), true);
        for trusted in [false, true] {
            for host in [None, Some(HeaderValue::from_static("shop.example"))] {
                let mut h = headers(&[
                    ("x-forwarded-for", "10.0.0.1"),
                    ("forwarded", "for=10.0.0.1"),
                    ("x-forwarded-proto", "gopher"),
                    ("x-forwarded-host", "evil"),
                    ("x-kept", "1"),
                ]);
                let fields = forwarding_fields(&mut h, &peer, host.as_ref(), trusted);
                assert_eq!(h.len(), 1, "the client's own are out: {h:?}");
                let mut written = Vec::new();
                fields.each(|name, value| written.push((name.to_owned(), value.to_vec())));
                let mut inserted = HeaderMap::new();
                fields.insert_into(&mut inserted);
                let inserted: Vec<_> = inserted
                    .iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                    .collect();
                assert_eq!(written, inserted, "trusted {trusted}, host {host:?}");
                assert_eq!(written.len(), 3 + usize::from(host.is_some()));
            }
        }
    }

    #[test]
    fn a_connections_forwarded_value_follows_the_host_of_each_request() {
        let peer = PeerForwarding::of("10.0.0.1:5000".parse().expect("addr"), false);
        let value = |host: &'static str| {
            let mut h = HeaderMap::new();
            add_forwarding_for(&mut h, &peer, Some(&HeaderValue::from_static(host)), false);
            h[header::FORWARDED].clone()
        };
        for host in [
            "a.example",
            "a.example",
            "b.example",
            "xb.example",
            "a.example",
        ] {
            let expected = format!("for=10.0.0.1;proto=http;host={host}");
            assert_eq!(value(host), expected.as_str());
        }
        for _ in 0..2 {
            assert_eq!(value("a b"), r#"for=10.0.0.1;proto=http;host="a b""#);
            assert_eq!(
                value("\"a b\""),
                r#"for=10.0.0.1;proto=http;host="\"a b\"""#
            );
            assert_eq!(value("b"), "for=10.0.0.1;proto=http;host=b");
        }
    }

    #[test]
    fn forwarded_values_are_quoted_where_rfc_7239_needs_it() {
        assert_eq!(forwarded_value("192.0.2.7"), "192.0.2.7");
        assert_eq!(forwarded_value("shop.example"), "shop.example");
        assert_eq!(forwarded_value("[2001:db8::1]"), "\"[2001:db8::1]\"");
        assert_eq!(
            forwarded_value("shop.example:8080"),
            "\"shop.example:8080\""
        );
        assert_eq!(forwarded_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(forwarded_value(""), "\"\"");
        let mut h = HeaderMap::new();
        let peer = "[::ffff:192.0.2.7]:5000";
        forward(&mut h, peer, Some("shop.example:8443"), false, false);
        assert_eq!(
            h[header::FORWARDED],
            "for=192.0.2.7;proto=http;host=\"shop.example:8443\"",
            "an IPv4-mapped peer is written as IPv4, a host with a port is quoted"
        );
    }

    #[test]
    fn trusted_proxy_ranges_match_by_prefix() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let net = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peers");
        let one = Cidr::parse("::1").expect("address");
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("203.0.113.1"))
        );
        assert!(Cidr::parse("fd00::/8").expect("v6").contains(ip("fdab::1")));
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }
}
