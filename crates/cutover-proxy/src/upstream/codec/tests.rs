use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn head(method: Method, uri: &str, pairs: &[(&str, &str)], framing: RequestFraming) -> String {
    let mut out = BytesMut::new();
    let uri: Uri = uri.parse().expect("uri");
    encode_head(&method, &uri, &headers(pairs), None, framing, &mut out);
    String::from_utf8(out.to_vec()).expect("utf-8")
}

fn parse(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, BadResponse> {
    parse_response(&mut BytesMut::from(bytes), method)
}

/// Decodes `wire` fed in pieces of `step` bytes: the body bytes, the trailers, and
/// whether the decoder reached the end.
fn decode_in_steps(
    framing: ResponseFraming,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BadResponse> {
    let mut decoder = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let (mut body, mut trailers) = (Vec::new(), None);
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Trailers(t) => trailers = Some(t),
            Decoded::End => return Ok((body, trailers, true)),
            Decoded::NeedMore if fed == wire.len() => return Ok((body, trailers, false)),
            Decoded::NeedMore => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn a_request_head_is_origin_form_http_1_1_with_its_headers() {
    let text = head(
        Method::GET,
        "/item?id=7",
        &[("host", "shop"), ("x-a", "1"), ("x-a", "2")],
        RequestFraming::Bodiless,
    );
    assert_eq!(
        text,
        "GET /item?id=7 HTTP/1.1\r\nhost: shop\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
    );
    assert!(
        head(
            Method::GET,
            "http://a.example",
            &[],
            RequestFraming::Bodiless
        )
        .starts_with("GET / HTTP/1.1\r\n")
    );
}

#[test]
fn a_request_body_is_framed_by_its_declared_or_known_length_else_chunked() {
    let none = HeaderMap::new();
    let declared = headers(&[("content-length", "5")]);
    assert_eq!(
        request_framing(&Method::POST, &none, true, Some(0)),
        RequestFraming::Bodiless
    );
    assert_eq!(
        request_framing(&Method::POST, &declared, false, Some(5)),
        RequestFraming::Length(5)
    );
    assert_eq!(
        request_framing(&Method::POST, &none, false, Some(9)),
        RequestFraming::Length(9)
    );
    assert_eq!(
        request_framing(&Method::POST, &none, false, None),
        RequestFraming::Chunked
    );
    // As hyper's client: an unknown-length body on GET is not sent.
    assert_eq!(
        request_framing(&Method::GET, &none, false, None),
        RequestFraming::Bodiless
    );
    let length = head(
        Method::POST,
        "/",
        &[("host", "a")],
        RequestFraming::Length(12),
    );
    assert!(
        length.ends_with("host: a\r\ncontent-length: 12\r\n\r\n"),
        "{length}"
    );
    let repeated = [("content-length", "12"), ("content-length", "12")];
    let once = head(Method::POST, "/", &repeated, RequestFraming::Length(12));
    assert_eq!(once.matches("content-length: 12\r\n").count(), 1, "{once}");
    let empty = head(
        Method::POST,
        "/",
        &[("content-length", "0")],
        RequestFraming::Bodiless,
    );
    assert!(empty.ends_with("\r\ncontent-length: 0\r\n\r\n"), "{empty}");
    let chunked = head(
        Method::PUT,
        "/",
        &[("content-length", "x")],
        RequestFraming::Chunked,
    );
    assert!(
        chunked.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"),
        "{chunked}"
    );
    assert!(!chunked.contains("content-length"), "{chunked}");
}

#[test]
fn chunk_lines_are_lower_case_hex() {
    for (len, line) in [(1, "1\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
        let mut out = BytesMut::new();
        chunk_line(len, &mut out);
        assert_eq!(&out[..], line.as_bytes());
    }
}

#[test]
fn a_response_head_is_parsed_and_taken_out_of_the_buffer() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokNEXT"[..]);
    let head = parse_response(&mut buf, &Method::GET)
        .expect("parses")
        .expect("complete");
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers["x-a"], "b");
    assert_eq!(head.framing, ResponseFraming::Length(2));
    assert!(head.reusable);
    assert_eq!(&buf[..], b"okNEXT");
    assert!(
        parse(b"HTTP/1.1 200 OK\r\nContent-Len", &Method::GET)
            .expect("partial")
            .is_none()
    );
}

#[test]
fn a_connection_field_is_kept_only_when_it_names_another_field() {
    let fields = |connection: &str| {
        let bytes =
            format!("HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: 0\r\n\r\n");
        let head = parse(bytes.as_bytes(), &Method::GET)
            .expect("parses")
            .expect("complete");
        (
            head.headers.get_all("connection").iter().count(),
            head.reusable,
        )
    };
    // `keep-alive` alone names only a field stripped anyway: left out.
    assert_eq!(fields("keep-alive"), (0, true));
    assert_eq!(fields("Keep-Alive, "), (0, true));
    // Any other token names a field (`close` one called `Close`): kept, so that the field
    // it names is stripped too; `close` still ends the connection.
    assert_eq!(fields("Close"), (1, false));
    assert_eq!(fields("keep-alive, close"), (1, false));
    assert_eq!(fields("keep-alive, x-private"), (1, true));
}

#[test]
fn interim_answers_are_skipped() {
    let head = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &Method::POST,
    )
    .expect("parses")
    .expect("complete");
    assert_eq!(head.status, StatusCode::OK);
    assert!(
        !head.headers.contains_key("link"),
        "the interim answer's fields are not kept"
    );
    assert!(
        parse(b"HTTP/1.1 100 Continue\r\n\r\n", &Method::POST)
            .expect("ok")
            .is_none()
    );
}

#[test]
fn framing_follows_rfc_9112() {
    let framing = |wire: &[u8], method: Method| {
        parse(wire, &method)
            .expect("parses")
            .map(|h| (h.framing, h.reusable))
            .expect("complete")
    };
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Method::HEAD
        ),
        (ResponseFraming::Empty, true)
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            Method::GET
        ),
        (ResponseFraming::Empty, true)
    );
    assert_eq!(
        framing(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
        (ResponseFraming::Empty, true)
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET
        ),
        (ResponseFraming::Chunked, true)
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET
        ),
        (ResponseFraming::UntilClose, false)
    );
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET),
        (ResponseFraming::UntilClose, false)
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\n",
            Method::GET
        ),
        (ResponseFraming::Length(3), false)
    );
    assert_eq!(
        framing(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", Method::GET),
        (ResponseFraming::Length(3), false)
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            Method::GET
        ),
        (ResponseFraming::Length(3), true)
    );
}

#[test]
fn a_chunked_answer_that_also_declares_a_length_loses_the_length_and_its_connection() {
    let head = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::GET,
    )
    .expect("parses")
    .expect("complete");
    assert_eq!(head.framing, ResponseFraming::Chunked);
    assert!(!head.reusable);
    assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
}

#[test]
fn untrustworthy_heads_are_refused() {
    for (wire, expected) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            BadResponse::Framing("content-length"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            BadResponse::Framing("content-length"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            BadResponse::Framing("content-length"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            BadResponse::Framing("content-length"),
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadResponse::Framing("transfer-encoding on HTTP/1.0"),
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            BadResponse::UnaskedUpgrade,
        ),
        (
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            BadResponse::Malformed("header name"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            BadResponse::Malformed("header value"),
        ),
        (b"SMTP ready\r\n\r\n", BadResponse::Malformed("version")),
    ] {
        assert_eq!(
            parse(wire, &Method::GET).expect_err("refused"),
            expected,
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn a_head_over_its_budget_is_refused_complete_or_not() {
    let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
    while wire.len() <= MAX_HEAD {
        wire.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(
        parse(&wire, &Method::GET).expect_err("too large"),
        BadResponse::TooLarge
    );
    wire.extend_from_slice(b"\r\n");
    assert_eq!(
        parse(&wire, &Method::GET).expect_err("complete but too large"),
        BadResponse::TooLarge
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        parse(&many, &Method::GET).expect_err("too many"),
        BadResponse::TooLarge
    );
}

#[test]
fn length_bodies_end_at_their_length_in_any_pieces() {
    for step in [1, 3, 100] {
        let (body, trailers, ended) =
            decode_in_steps(ResponseFraming::Length(5), b"hello", step).expect("decodes");
        assert_eq!(
            (body.as_slice(), trailers, ended),
            (&b"hello"[..], None, true)
        );
    }
    let (body, _, ended) = decode_in_steps(ResponseFraming::Length(5), b"hel", 2).expect("decodes");
    assert_eq!(
        (body.as_slice(), ended),
        (&b"hel"[..], false),
        "short: not ended"
    );
    let mut buf = BytesMut::from(&b"helloEXTRA"[..]);
    let mut decoder = BodyDecoder::new(ResponseFraming::Length(5));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from_static(b"hello")))
    );
    assert!(decoder.is_done());
    assert_eq!(
        &buf[..],
        b"EXTRA",
        "bytes past the body are left for the caller to see"
    );
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers_in_any_pieces() {
    let wire = b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 11\r\nX-B: 2\r\n\r\n";
    for step in [1, 2, 7, wire.len()] {
        let (body, trailers, ended) =
            decode_in_steps(ResponseFraming::Chunked, wire, step).expect("decodes");
        assert_eq!(body, b"hello world", "step {step}");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "11");
        assert_eq!(trailers["x-b"], "2");
        assert!(ended);
    }
    let (body, trailers, ended) =
        decode_in_steps(ResponseFraming::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n", 4)
            .expect("decodes");
    assert_eq!(
        (body.as_slice(), trailers, ended),
        (&b"0123456789"[..], None, true)
    );
}

#[test]
fn broken_chunks_are_refused() {
    for wire in [
        &b"x\r\n"[..],
        b"5\r\nhelloXX",
        b"12345678901234567\r\n",
        b"5 junk\r\n",
        b"5;a\x01b\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"5\n\r\nhello\r\n0\r\n\r\n",
        b"5\r;x\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            decode_in_steps(ResponseFraming::Chunked, wire, 3).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    let mut long = b"5;".to_vec();
    long.resize(MAX_CHUNK_LINE + 10, b'a');
    assert_eq!(
        decode_in_steps(ResponseFraming::Chunked, &long, 1000),
        Err(BadResponse::Framing("chunk-size line too long"))
    );
}

#[test]
fn a_body_until_close_takes_everything() {
    let (body, _, ended) =
        decode_in_steps(ResponseFraming::UntilClose, b"all of it", 4).expect("decodes");
    assert_eq!(
        (body.as_slice(), ended),
        (&b"all of it"[..], false),
        "ends only at close"
    );
}
