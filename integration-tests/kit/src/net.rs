//! Loopback plumbing every suite uses: a free port, a plain `GET` over a raw socket (the
//! one every harness uses), an address nothing listens on, and waiting for a condition
//! within a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port; the body on 2xx, `None` otherwise or if down.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let answer = get(SocketAddr::from(([127, 0, 0, 1], port)), path, None)?;
    (200..300).contains(&answer.status).then_some(answer.body)
}

/// What a one-off `GET` ([`get`]) was answered.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and the header fields, as sent.
    pub head: String,
    /// The body, as sent (chunked framing included, if the server chunked it).
    pub body: String,
}

impl Answer {
    /// The value of the header field `name` (any case), trimmed; `None` if it is absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET path` on `address` over a fresh connection (`Connection: close`, read to its
/// end), with the extra header field `header` (name, value) if given; `None` if nothing
/// answered: 2 s to connect, 5 s for each read.
pub fn get(address: SocketAddr, path: &str, header: Option<(&str, &str)>) -> Option<Answer> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra = header.map_or(String::new(), |(name, value)| {
        format!("{name}: {value}\r\n")
    });
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// An address on which nothing listens: connections to it are refused.
pub fn closed_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Polls `check` every `every` until it gives a value; panics naming `what` (and what
/// `last` says about the state by then) after `limit`.
pub fn wait_until<T>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// Waits until `GET /healthz` on 127.0.0.1:`port` answers 2xx (a controller's API is up);
/// panics after 20 s.
pub fn wait_healthz(port: u16) {
    wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "no API",
        || http_get(port, "/healthz"),
    );
}
