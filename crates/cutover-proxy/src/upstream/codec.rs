//! HTTP/1.1 towards an upstream, without I/O: the request head as bytes, the response head
//! parsed from bytes, and how each message's body is framed (RFC 9112 §6).
//!
//! The upstream is the operator's own service, but its answers are still bytes from a
//! socket: a head has a size budget, framing that could desynchronise the connection
//! (differing `Content-Length`s, `Transfer-Encoding` on HTTP/1.0) is refused, and a
//! connection is kept for another request only when its message ended where the framing
//! said it would.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use crate::forward::{ForwardingFields, connection_lists, connection_names_no_field, field_name};

/// Most bytes a response head (or a chunked body's trailer section) may take.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a response head; hyper's default too.
const MAX_HEADERS: usize = 100;

/// Most bytes of a chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// What an upstream sent that is not HTTP/1.1 the proxy can pass on. The connection is
/// not used again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BadResponse {
    /// The head is not HTTP (httparse's reason).
    #[error("malformed response head from the upstream: {0}")]
    Malformed(&'static str),
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("response head from the upstream over {MAX_HEAD} bytes")]
    TooLarge,
    /// Framing that cannot be trusted: differing or invalid `Content-Length`s,
    /// `Transfer-Encoding` on HTTP/1.0, a chunk that does not parse.
    #[error("response framing from the upstream cannot be trusted: {0}")]
    Framing(&'static str),
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("the upstream switched protocols unasked")]
    UnaskedUpgrade,
}

/// How a request's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body is sent (its headers, a client's `Content-Length: 0` included, go as they are).
    Bodiless,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How the request's body is framed: as hyper's client frames it, so an upstream sees the
/// same messages it did. A body known to be empty sends none; a declared
/// `Content-Length` (checked against the body where it came in) or a known size is a
/// length; an unknown size is chunked, except on GET, HEAD and CONNECT, which send none.
pub(super) fn request_framing(
    method: &Method,
    headers: &HeaderMap,
    end_stream: bool,
    exact: Option<u64>,
) -> RequestFraming {
    if end_stream {
        return RequestFraming::Bodiless;
    }
    if let Some(length) = declared_length(headers) {
        return RequestFraming::Length(length);
    }
    match exact {
        Some(length) => RequestFraming::Length(length),
        None if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
            RequestFraming::Bodiless
        }
        None => RequestFraming::Chunked,
    }
}

/// The single `Content-Length` of `headers`, if it has exactly one valid value (repeated
/// identical values count as one).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let parsed = parse_length(value.as_bytes())?;
        if length.is_some_and(|l| l != parsed) {
            return None;
        }
        length = Some(parsed);
    }
    length
}

/// A `Content-Length` value: digits only, no sign, no space, no overflow. The one
/// parser of the field, for the client's request (its limit) and the upstream's answer.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Writes the request head into `out`: origin-form target, HTTP/1.1, the headers as
/// they are except `Content-Length`, which is written once, as `framing` has it (equal
/// repeated values go upstream as one header; a bodiless request keeps the one it had),
/// and then the fields `added` (the forwarding fields, kept out of the map).
pub(super) fn encode_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    added: Option<&ForwardingFields>,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    let method = method.as_str();
    let mut size = method.len() + target.len() + 16;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    if let Some(added) = added {
        added.each(|name, value| size += name.len() + value.len() + 4);
    }
    out.reserve(size + 32);
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut declared = None;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            declared.get_or_insert(value);
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(added) = added {
        added.each(|name, value| {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        });
    }
    match framing {
        RequestFraming::Length(length) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa_u64(length, &mut [0; 20]));
            out.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Bodiless => {
            if let Some(declared) = declared {
                out.put_slice(b"content-length: ");
                out.put_slice(declared.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
    }
    out.put_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
pub(crate) fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// Lower-case hexadecimal digits, for [`hex_usize`].
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// `n` in hexadecimal with the digits of `alphabet`, written at the end of `buf`: chunk
/// sizes, lower case to upstreams (as hyper's client writes them), upper case to clients
/// (as hyper's server does).
pub(crate) fn hex_usize<'a>(mut n: usize, alphabet: &[u8; 16], buf: &'a mut [u8; 16]) -> &'a [u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = alphabet[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// The line that opens a chunk of `len` bytes: its size in hex, CRLF.
pub(super) fn chunk_line(len: usize, out: &mut BytesMut) {
    out.put_slice(hex_usize(len, HEX_LOWER, &mut [0; 16]));
    out.put_slice(b"\r\n");
}

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body: HEAD, 204, 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A response head, its body's framing, and whether the connection may carry another
/// request once the body has been read.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) framing: ResponseFraming,
    pub(super) reusable: bool,
}

/// Parses the response head at the start of `buf`, skipping interim (1xx) answers, and
/// takes it out of `buf`; `Ok(None)` when more bytes are needed. Header values are slices
/// of the bytes read, not copies.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, BadResponse> {
    loop {
        // Uninitialised: filling a hundred fields first would cost more than the parse.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(BadResponse::TooLarge);
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(BadResponse::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
            Err(e) => return Err(BadResponse::Malformed(parse_error_text(e))),
        };
        let code = response.code.unwrap_or(0);
        if code == 101 {
            return Err(BadResponse::UnaskedUpgrade);
        }
        if (100..200).contains(&code) {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            let _ = buf.split_to(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| BadResponse::Malformed("status"))?;
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each field sits in `buf`, so its value can be a slice of the frozen head.
        let base = buf.as_ptr() as usize;
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let count = response.headers.len();
        for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            // Within `MAX_HEAD` plus one read: fits.
            *span = (
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            );
        }
        let head = buf.split_to(len).freeze();
        let mut headers = crate::header_maps::take(count);
        let mut framing_fields = FramingFields::default();
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = field_name(&head[ns as usize..ne as usize])
                .map_err(|_| BadResponse::Malformed("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| BadResponse::Malformed("header value"))?;
            if name == header::CONNECTION {
                // Hop-by-hop, and naming no other field: the proxy would only strip it.
                // The usual value whole first: it lists no `close` either, and splitting
                // it into tokens twice cost about 400 instructions per answer.
                if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                framing_fields.note(&name, &value);
                if connection_names_no_field(value.as_bytes()) {
                    continue;
                }
            } else {
                framing_fields.note(&name, &value);
            }
            headers.append(name, value);
        }
        let (framing, reusable) =
            response_framing(status, version, method, &framing_fields, &mut headers)?;
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            reusable,
        }));
    }
}

/// httparse's error as text (its `Display` allocates nothing, but is a `fmt` call).
fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "version",
    }
}

/// What a response's framing fields say, noted while its header map is built, so that
/// deciding the framing hashes no name again.
#[derive(Default)]
struct FramingFields {
    /// The `Content-Length`, `Err` when invalid or when repeated with another value.
    length: Option<Result<u64, ()>>,
    /// Any `Transfer-Encoding` field.
    transfer_encoding: bool,
    /// Whether the last transfer coding of the last such field is `chunked`.
    chunked_last: bool,
    /// Whether a `Connection` field lists `close`.
    close: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            let parsed = parse_length(value.as_bytes()).ok_or(());
            self.length = Some(match self.length {
                None => parsed,
                Some(Ok(earlier)) if parsed == Ok(earlier) => parsed,
                Some(_) => Err(()),
            });
        } else if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked_last = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if *name == header::CONNECTION {
            self.close |= connection_lists(value, "close");
        }
    }
}

/// The body framing of a response (RFC 9112 §6.3) and whether its connection can be used
/// again. A chunked response that also declares a length loses the length (it would
/// contradict the body the client gets) and its connection.
fn response_framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    fields: &FramingFields,
    headers: &mut HeaderMap,
) -> Result<(ResponseFraming, bool), BadResponse> {
    let mut reusable = version == Version::HTTP_11 && !fields.close;
    if matches!(status.as_u16(), 204 | 304) || *method == Method::HEAD {
        return Ok((ResponseFraming::Empty, reusable));
    }
    if fields.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(BadResponse::Framing("transfer-encoding on HTTP/1.0"));
        }
        if fields.length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            reusable = false;
        }
        return Ok(if fields.chunked_last {
            (ResponseFraming::Chunked, reusable)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    match fields.length {
        Some(Ok(length)) => Ok((ResponseFraming::Length(length), reusable)),
        Some(Err(())) => Err(BadResponse::Framing("content-length")),
        None => Ok((ResponseFraming::UntilClose, false)),
    }
}

/// What a response body's decoder made of the bytes it has.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields of a chunked body.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// Where a response body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyDecoder {
    /// `n` more bytes of a length-framed body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// `n` more bytes of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF that closes a chunk's data.
    ChunkEnd,
    /// Expecting the trailer section (or its empty line).
    Trailers,
    /// Everything until the upstream closes.
    UntilClose,
    /// The body is complete.
    Done,
}

impl BodyDecoder {
    /// The decoder for a body of `framing`.
    pub(super) fn new(framing: ResponseFraming) -> BodyDecoder {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => BodyDecoder::Done,
            ResponseFraming::Length(n) => BodyDecoder::Length(n),
            ResponseFraming::Chunked => BodyDecoder::ChunkSize,
            ResponseFraming::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Whether the body is complete.
    pub(super) fn is_done(&self) -> bool {
        *self == BodyDecoder::Done
    }

    /// Bytes of body still to come, when the framing says.
    pub(super) fn remaining(&self) -> Option<u64> {
        match *self {
            BodyDecoder::Length(n) => Some(n),
            BodyDecoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body out of `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BadResponse> {
        loop {
            match *self {
                BodyDecoder::Done => return Ok(Decoded::End),
                BodyDecoder::Length(_) | BodyDecoder::ChunkData(_) | BodyDecoder::UntilClose
                    if buf.is_empty() =>
                {
                    return Ok(Decoded::NeedMore);
                }
                BodyDecoder::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
                BodyDecoder::Length(n) => {
                    let (data, rest) = take(buf, n);
                    *self = if rest == 0 {
                        BodyDecoder::Done
                    } else {
                        BodyDecoder::Length(rest)
                    };
                    return Ok(Decoded::Data(data));
                }
                BodyDecoder::ChunkData(n) => {
                    let (data, rest) = take(buf, n);
                    *self = if rest == 0 {
                        BodyDecoder::ChunkEnd
                    } else {
                        BodyDecoder::ChunkData(rest)
                    };
                    return Ok(Decoded::Data(data));
                }
                BodyDecoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadResponse::Framing("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    *self = BodyDecoder::ChunkSize;
                }
                BodyDecoder::ChunkSize => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    *self = if size == 0 {
                        BodyDecoder::Trailers
                    } else {
                        BodyDecoder::ChunkData(size)
                    };
                }
                BodyDecoder::Trailers => {
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        let _ = buf.split_to(2);
                        *self = BodyDecoder::Done;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find_blank_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let section = buf.split_to(end);
                    *self = BodyDecoder::Done;
                    return trailers(&section).map(Decoded::Trailers);
                }
            }
        }
    }
}

/// Up to `n` bytes from the front of `buf`, and how many of `n` are left after them.
fn take(buf: &mut BytesMut, n: u64) -> (Bytes, u64) {
    let len = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
    (buf.split_to(len).freeze(), n - len as u64)
}

/// Where the first CRLF in `buf` starts, looking no further than `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, BadResponse> {
    match buf.windows(2).take(limit).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some(end)),
        None if buf.len() > limit => Err(BadResponse::Framing("chunk-size line too long")),
        None => Ok(None),
    }
}

/// The end of the trailer section (just past its blank line), within [`MAX_HEAD`].
fn find_blank_line(buf: &[u8]) -> Result<Option<usize>, BadResponse> {
    match buf.windows(4).take(MAX_HEAD).position(|w| w == b"\r\n\r\n") {
        Some(at) => Ok(Some(at + 4)),
        None if buf.len() > MAX_HEAD => Err(BadResponse::TooLarge),
        None => Ok(None),
    }
}

/// A chunk-size line (without its CRLF): hex digits, then optional whitespace and
/// `;`-extensions, which are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, BadResponse> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BadResponse::Framing("chunk size"));
    }
    // Only spaces and tabs before the extensions (RFC 9112's BWS), not CR, LF or the
    // other characters `trim_ascii_start` would skip: `5\r;x` is no chunk size.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(BadResponse::Framing("chunk size"));
    }
    if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(BadResponse::Framing("chunk extension"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        // Sixteen hex digits at most: no overflow.
        (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

/// The trailer fields of a chunked body, `section` ending with its blank line.
fn trailers(section: &[u8]) -> Result<HeaderMap, BadResponse> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        Ok(httparse::Status::Partial) => return Err(BadResponse::Malformed("trailers")),
        Err(e) => return Err(BadResponse::Malformed(parse_error_text(e))),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| BadResponse::Malformed("trailer name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| BadResponse::Malformed("trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests;
