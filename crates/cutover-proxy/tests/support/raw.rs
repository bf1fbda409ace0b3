//! A client over a raw socket: requests written byte for byte, answers read and framed by
//! hand, so a test sees exactly what the proxy sent.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a raw connection.
#[derive(Debug)]
pub struct Answer {
    pub head: String,
    pub body: Vec<u8>,
    /// The answer as it came on the wire, head and framed body.
    pub wire: Vec<u8>,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A raw client connection with what it has read and not yet used.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more, within 5 s; false on EOF or error.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within 5 s; read so far: {:?}", self.text()),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads one response; `bodiless` for answers to HEAD (and 1xx/204/304, which carry
    /// no body whatever they say).
    pub async fn answer(&mut self, bodiless: bool) -> Answer {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "closed before a head: {:?}", self.text());
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut answer = Answer {
            head,
            body: Vec::new(),
            wire: self.buf.drain(..end).collect(),
        };
        let status = answer.status();
        if bodiless || status < 200 || status == 204 || status == 304 {
            return answer;
        }
        if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().expect("content-length");
            while self.buf.len() < length {
                assert!(self.fill().await, "closed mid-body");
            }
            answer.body = self.buf.drain(..length).collect();
            answer.wire.extend_from_slice(&answer.body);
        } else if answer
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "closed mid-chunk");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
                    .expect("chunk size");
                answer.wire.extend(self.buf.drain(..line_end + 2));
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    while !self.buf.starts_with(b"\r\n") {
                        assert!(self.fill().await, "closed in the trailers");
                    }
                    answer.wire.extend(self.buf.drain(..2));
                    break;
                }
                while self.buf.len() < size + 2 {
                    assert!(self.fill().await, "closed mid-chunk");
                }
                let data: Vec<u8> = self.buf.drain(..size).collect();
                answer.wire.extend_from_slice(&data);
                answer.body.extend(data);
                answer.wire.extend(self.buf.drain(..2));
            }
        } else {
            // Close-delimited.
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
            answer.wire.extend_from_slice(&answer.body);
        }
        answer
    }

    /// Whether the proxy closes the connection within `within` (nothing else arriving).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Reads until the peer closes or `within` passes; returns what came and whether the
/// connection was closed (EOF or reset) by then.
pub async fn read_until_closed<S>(stream: &mut S, within: Duration) -> (String, bool)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}
