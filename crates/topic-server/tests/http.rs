//! The HTTP routes on the shared port, over real HTTP/1.1, and graceful shutdown.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{STEP, TestServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A plain HTTP/1.1 GET; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = get_with_head(addr, path).await;
    (status, body)
}

/// A plain HTTP/1.1 GET; returns (status, lower-cased head, body).
async fn get_with_head(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let response = tokio::time::timeout(STEP, exchange).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_ascii_lowercase(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    assert_eq!(get(server.addr, "/healthz").await, (200, "ok".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"m","topicType":"INT64","value":1}))
        .await;
    c.ok(json!({"type":"subscribe","selector":"m"})).await;
    c.next().await;
    c.next().await;
    c.ok(json!({"type":"set","path":"m","value":2})).await;
    c.next().await;
    let (status, body) = get(server.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    // Only on the metrics listener, never on the public port.
    assert_eq!(get(server.addr, "/metrics").await.0, 404);
    for name in [
        "topic_server_connections",
        "topic_server_topics",
        "topic_server_updates_in_total",
        "topic_server_messages_out_total",
        "topic_server_bytes_out_total",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{body}"
        );
    }
    assert!(body.contains("# TYPE topic_server_updates_in_total counter"));
    let updates: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("topic_server_updates_in_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(updates >= 2.0, "{updates}");

    // A closed session is counted by reason.
    drop(c);
    common::wait_for_metric(
        server.metrics_addr,
        "topic_server_sessions_closed_total{reason=",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn dashboard_files_are_served_at_root() {
    let server = TestServer::start().await;
    let (status, body) = get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>dashboard</title>"), "{body}");
    let (status, body) = get(server.addr, "/index.html").await;
    assert_eq!(status, 200);
    assert!(body.contains("dashboard"));
    let (status, body) = get(server.addr, "/js/main.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("export const main"), "{body}");
    assert_eq!(get(server.addr, "/css/style.css").await.0, 200);
    let (status, body) = get(server.addr, "/node_modules/uplot/dist/uPlot.iife.min.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("uPlot"), "{body}");
    assert_eq!(get(server.addr, "/no/such/file.js").await.0, 404);
    assert_eq!(get(server.addr, "/js/missing.js").await.0, 404);
    // /ws without an upgrade is refused rather than served as a file.
    assert!(get(server.addr, "/ws").await.0 >= 400);
    server.stop().await;
}

#[tokio::test]
async fn development_files_are_not_served() {
    let server = TestServer::start().await;
    for path in [
        "/package.json",
        "/README.md",
        "/test/page.test.mjs",
        "/node_modules/.package-lock.json",
        "/node_modules/uplot/package.json",
        "/js/../package.json",
        "/js/%2e%2e/package.json",
        "/css/../README.md",
    ] {
        let (status, body) = get(server.addr, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("private"), "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn dashboard_responses_carry_security_headers() {
    let server = TestServer::start().await;
    for path in ["/", "/index.html", "/js/main.js", "/package.json"] {
        let (_, head, _) = get_with_head(server.addr, path).await;
        for header in [
            "content-security-policy: default-src 'self'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
        ] {
            assert!(head.contains(header), "{path} lacks {header}:\n{head}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"s","topicType":"INT64","value":1}))
        .await;
    let reader = tokio::spawn(async move { c.expect_close().await });
    let started = std::time::Instant::now();
    server.stop().await;
    let frame = tokio::time::timeout(STEP, reader).await.unwrap().unwrap();
    assert_eq!(frame.code, CloseCode::Away);
    assert!(started.elapsed() < Duration::from_secs(5));
}
