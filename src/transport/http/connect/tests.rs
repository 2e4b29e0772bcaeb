use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn codecs_from_content_types() {
    assert_eq!(Codec::of_content_type(&headers(&[])), Some(Codec::Json));
    assert_eq!(
        Codec::of_content_type(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])),
        Some(Codec::Json)
    );
    assert_eq!(
        Codec::of_content_type(&headers(&[("content-type", "application/proto")])),
        Some(Codec::Proto)
    );
    assert_eq!(
        Codec::of_content_type(&headers(&[("content-type", "text/plain")])),
        None
    );
}

#[test]
fn accept_encoding_negotiation() {
    assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
    assert!(accepts_gzip(&headers(&[(
        "accept-encoding",
        "br, gzip;q=0.5"
    )])));
    assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
    assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
    assert!(!accepts_gzip(&headers(&[])));
}

#[test]
fn connect_headers_are_checked() {
    assert_eq!(connect_headers(&headers(&[])).unwrap(), None);
    assert_eq!(
        connect_headers(&headers(&[
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "2500")
        ]))
        .unwrap(),
        Some(Duration::from_millis(2500))
    );
    let e = connect_headers(&headers(&[("connect-protocol-version", "2")])).unwrap_err();
    assert!(e.message.starts_with("connect-protocol-version"));
    let e = connect_headers(&headers(&[("connect-timeout-ms", "-1")])).unwrap_err();
    assert!(e.message.starts_with("connect-timeout-ms"));
    let e = connect_headers(&headers(&[("connect-timeout-ms", "12345678901")])).unwrap_err();
    assert!(e.message.starts_with("connect-timeout-ms"));
}

#[test]
fn gzip_round_trip_and_bomb_limit() {
    let z = gzip_bytes(&[b'a'; 10_000]).unwrap();
    assert_eq!(gunzip(&z, 10_000).unwrap().len(), 10_000);
    let e = gunzip(&z, 9_999).unwrap_err();
    assert_eq!(e.code, Code::ResourceExhausted);
    let e = gunzip(b"not gzip", 100).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(request_gzipped(Some(&HeaderValue::from_static("br"))).is_err());
    assert!(request_gzipped(Some(&HeaderValue::from_static("GZIP"))).unwrap());
}

#[test]
fn get_queries() {
    let (c, b) = GetQuery::parse("connect=v1&encoding=json&message=%7B%7D")
        .message(100)
        .unwrap();
    assert_eq!((c, b.as_slice()), (Codec::Json, &b"{}"[..]));
    // "{}" in URL-safe base64, padded and unpadded.
    for m in ["e30", "e30="] {
        let (_, b) = GetQuery::parse(&format!("encoding=json&base64=1&message={m}"))
            .message(100)
            .unwrap();
        assert_eq!(b, b"{}");
    }
    assert!(GetQuery::parse("message=e30").message(100).is_err());
    assert!(GetQuery::parse("encoding=xml").message(100).is_err());
    assert!(
        GetQuery::parse("encoding=json&connect=v2")
            .message(100)
            .is_err()
    );
}
