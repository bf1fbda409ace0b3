//! A response head and its body's framing, written for a request [`super::fast`] read:
//! byte for byte what hyper's HTTP/1.1 server writes for the same response to the same
//! request, so that a client cannot tell which of the two served it.
//!
//! The requests that come this way are HTTP/1.1, keep-alive, without a body, `TE` or
//! `Expect`, and never `CONNECT` (see [`super::fast`]): what hyper does for the others
//! (HTTP/1.0 peers, trailers, upgrades) is not needed here.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{StatusCode, Version};

use crate::forward::connection_lists;

/// What the response's body is, as hyper tells it from the body before the head is
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyLength {
    /// Nothing to send (the body is at its end already).
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Not known before it ends.
    Unknown,
}

/// How the body's bytes go on the wire after the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes, no more: longer bodies are cut, shorter ones end the connection.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// As they come, the end told by closing the connection (a response marked
    /// HTTP/1.0 whose length is not known).
    UntilClose,
}

/// What [`head`] decided beside the bytes it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Written {
    /// The body's framing.
    pub(super) framing: Framing,
    /// Whether the connection ends after this response.
    pub(super) last: bool,
}

/// Writes the head of `parts` into `dst` for a request that was `HEAD` or not, with a
/// body of `length`; `closing` when the connection must end after it (the proxy is
/// shutting down), which adds `Connection: close` as hyper does when keep-alive is off.
///
/// As hyper's server: the status line with the canonical reason (`<none>` for codes
/// without one); `Content-Length` kept from the response where a body may be described
/// (the first value), or written from an exactly known length; chunked when the length
/// is unknown; none of either, and no body, for 1xx, 204 and 304, and no body for
/// `HEAD`; `Date` added unless the response has one. `Transfer-Encoding` from the
/// response is left out: the proxy strips it from upstream answers and frames bodies
/// itself. Where hyper refuses to write a head at all (a `Content-Length` that is not a
/// number, or two that differ, on a body of unknown length), this writes the first valid
/// length or chunks: the request path never makes such a response (the upstream codec
/// refuses those heads, and the proxy's own answers have whole bodies).
pub(super) fn head(
    parts: &http::response::Parts,
    head_request: bool,
    length: BodyLength,
    closing: bool,
    dst: &mut Vec<u8>,
) -> Written {
    let status = parts.status;
    let http10 = parts.version == Version::HTTP_10;
    // hyper answers 1xx other than 101 (which ends the connection) with a 500.
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        date_line(dst);
        dst.extend_from_slice(b"\r\n");
        return Written {
            framing: Framing::Length(0),
            last: true,
        };
    }
    let mut last = closing || status == StatusCode::SWITCHING_PROTOCOLS;
    status_line(status, http10, dst);
    let may_describe = !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let may_have_body = may_describe && !head_request;
    // hyper adds `close` to the response's `Connection` when keep-alive is off.
    let add_close = closing && !last_by_header(parts);
    let mut framing = None;
    let mut wrote_date = false;
    let mut connection = false;
    // A `Connection` or `Trailer` line whose values are still being joined.
    let mut open: Option<&header::HeaderName> = None;
    let mut previous: Option<&header::HeaderName> = None;
    for (name, value) in &parts.headers {
        let same = previous == Some(name);
        if !same && let Some(open) = open.take() {
            end_joined(open, add_close, dst);
        }
        previous = Some(name);
        match *name {
            header::CONTENT_LENGTH => {
                if same || framing.is_some() {
                    continue;
                }
                let declared = match length {
                    BodyLength::Known(known) => known,
                    BodyLength::Unknown => match crate::upstream::parse_length(value.as_bytes()) {
                        Some(declared) => declared,
                        // Not a length: hyper refuses to write the head at all; the
                        // body's length decides instead.
                        None => continue,
                    },
                    // No body: the length describes a `HEAD` answer's, or is dropped.
                    BodyLength::Empty if head_request => 0,
                    BodyLength::Empty => continue,
                };
                framing = Some(Framing::Length(declared));
                line(dst, b"content-length: ", value);
            }
            header::TRANSFER_ENCODING => {}
            header::CONNECTION => {
                last |= connection_lists(value, "close");
                if same {
                    dst.extend_from_slice(b", ");
                    dst.extend_from_slice(value.as_bytes());
                } else {
                    dst.extend_from_slice(b"connection: ");
                    dst.extend_from_slice(value.as_bytes());
                    open = Some(name);
                    connection = true;
                }
            }
            header::TRAILER => {
                if http10 || !may_have_body {
                    continue;
                }
                if same {
                    dst.extend_from_slice(b", ");
                    dst.extend_from_slice(value.as_bytes());
                } else {
                    dst.extend_from_slice(b"trailer: ");
                    dst.extend_from_slice(value.as_bytes());
                    open = Some(name);
                }
            }
            _ => {
                wrote_date |= *name == header::DATE;
                dst.extend_from_slice(name.as_str().as_bytes());
                dst.extend_from_slice(b": ");
                dst.extend_from_slice(value.as_bytes());
                dst.extend_from_slice(b"\r\n");
            }
        }
    }
    if let Some(open) = open {
        end_joined(open, add_close, dst);
    }
    if add_close && !connection {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match length {
            BodyLength::Unknown if http10 || !may_have_body => Framing::UntilClose,
            BodyLength::Unknown => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyLength::Empty | BodyLength::Known(0) => {
                if may_describe && !head_request {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyLength::Known(known) => {
                if may_describe {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(crate::upstream::itoa_u64(known, &mut [0; 20]));
                    dst.extend_from_slice(b"\r\n");
                }
                Framing::Length(known)
            }
        },
    };
    let framing = if may_have_body {
        framing
    } else {
        Framing::Length(0)
    };
    if !wrote_date {
        date_line(dst);
    }
    dst.extend_from_slice(b"\r\n");
    Written {
        last: last || framing == Framing::UntilClose,
        framing,
    }
}

/// Ends the line of a header whose values were joined: `Connection` gets `close` added
/// when `add_close`.
fn end_joined(name: &header::HeaderName, add_close: bool, dst: &mut Vec<u8>) {
    if add_close && name == header::CONNECTION {
        dst.extend_from_slice(b", close");
    }
    dst.extend_from_slice(b"\r\n");
}

/// Whether the response's own `Connection` header says `close`.
fn last_by_header(parts: &http::response::Parts) -> bool {
    parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| connection_lists(value, "close"))
}

/// `name` (with its colon and space) and `value`, and the line's end.
fn line(dst: &mut Vec<u8>, name: &[u8], value: &HeaderValue) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// The status line, with the canonical reason phrase, as hyper writes it.
fn status_line(status: StatusCode, http10: bool, dst: &mut Vec<u8>) {
    if status == StatusCode::OK && !http10 {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// A chunk's size line: the length in hexadecimal (upper case, as hyper writes it) and the
/// line's end.
pub(super) fn chunk_size(len: usize, dst: &mut Vec<u8>) {
    dst.extend_from_slice(crate::upstream::hex_usize(
        len,
        b"0123456789ABCDEF",
        &mut [0; 16],
    ));
    dst.extend_from_slice(b"\r\n");
}

/// The `Date` line for now. The date changes once a second: each thread formats it once
/// per second and copies it after, as hyper does.
fn date_line(dst: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == date.1.len() {
                date.1.copy_from_slice(formatted.as_bytes());
                date.0 = second;
            }
        }
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(&date.1);
        dst.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(
        status: u16,
        headers: &[(&str, &str)],
        head_request: bool,
        length: BodyLength,
        closing: bool,
    ) -> (String, Written) {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        let (parts, ()) = response.body(()).expect("response").into_parts();
        let mut dst = Vec::new();
        let written = head(&parts, head_request, length, closing, &mut dst);
        let text = String::from_utf8(dst).expect("text");
        // The date changes; the rest is compared.
        let date = text.find("date: ").expect("a date");
        let text = format!("{}{}", &text[..date], &text[date + 37..]);
        (text, written)
    }

    #[test]
    fn a_known_length_is_written_and_kept() {
        let (text, written) = encoded(200, &[("x-a", "1")], false, BodyLength::Known(5), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(written.framing, Framing::Length(5));
        assert!(!written.last);
        let (text, written) = encoded(
            404,
            &[("content-length", "7"), ("content-length", "7")],
            false,
            BodyLength::Unknown,
            false,
        );
        assert_eq!(text, "HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(written.framing, Framing::Length(7));
    }

    #[test]
    fn an_unknown_length_is_chunked_and_an_empty_body_says_zero() {
        let (text, written) = encoded(200, &[], false, BodyLength::Unknown, false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(written.framing, Framing::Chunked);
        let (text, _) = encoded(503, &[], false, BodyLength::Empty, false);
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn head_204_and_304_answers_have_no_body() {
        let (text, written) = encoded(
            200,
            &[("content-length", "42")],
            true,
            BodyLength::Empty,
            false,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n");
        assert_eq!(written.framing, Framing::Length(0));
        let (text, written) = encoded(204, &[], false, BodyLength::Unknown, false);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(written.framing, Framing::Length(0));
        let (text, _) = encoded(
            304,
            &[("content-length", "42"), ("etag", "\"x\"")],
            false,
            BodyLength::Empty,
            false,
        );
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n");
    }

    #[test]
    fn connection_close_ends_the_connection_and_shutdown_adds_it() {
        let (text, written) = encoded(
            400,
            &[("connection", "close")],
            false,
            BodyLength::Known(0),
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(written.last);
        let (text, written) = encoded(200, &[], false, BodyLength::Known(2), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n"
        );
        assert!(written.last);
    }

    #[test]
    fn a_response_marked_http_1_0_of_unknown_length_ends_with_the_connection() {
        let mut response = http::Response::new(());
        *response.version_mut() = Version::HTTP_10;
        let (parts, ()) = response.into_parts();
        let mut dst = Vec::new();
        let written = head(&parts, false, BodyLength::Unknown, false, &mut dst);
        assert!(dst.starts_with(b"HTTP/1.0 200 OK\r\ndate: "));
        assert_eq!(written.framing, Framing::UntilClose);
        assert!(written.last);
    }

    #[test]
    fn chunk_sizes_are_written_in_hex() {
        let mut dst = Vec::new();
        chunk_size(0x1f40, &mut dst);
        chunk_size(0, &mut dst);
        assert_eq!(dst, b"1F40\r\n0\r\n");
    }
}
