//! Streaming in flat memory, alone in its test binary: the resident set it measures is
//! not disturbed by other tests of the same process.

mod support;

use http::Request;
use http_body_util::BodyExt;
use support::{client, config, full, route, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_bodies_stream_in_flat_memory() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let client = client();
    let size: u64 = 100 * 1024 * 1024;
    let before = support::rss_kib();
    let upload = support::chunks::Chunks {
        left: size,
        chunk: bytes::Bytes::from(vec![b'u'; 64 * 1024]),
    };
    let req = Request::post(format!("http://{}/upload", proxy.listen_addrs()[0]))
        .body(BodyExt::boxed(upload))
        .expect("request");
    let response = client.request(req).await.expect("upload");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), size.to_string());
    let req = Request::get(format!(
        "http://{}/download?bytes={size}",
        proxy.listen_addrs()[0]
    ))
    .body(full(""))
    .expect("request");
    let mut body = client.request(req).await.expect("download").into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, size);
    let growth = support::rss_kib().saturating_sub(before);
    assert!(
        growth < 40 * 1024,
        "memory grew by {growth} KiB moving 200 MB"
    );
}
