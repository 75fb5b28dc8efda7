//! TLS termination end to end: a CA and certificates made by the `openssl`
//! command for each test, a client that trusts only that CA, and the
//! certificate renewed and broken on disk while the proxy runs.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{
    REQUEST_TIMEOUT, Table, chat, instant_sim, read_body, start_proxy_with, stream_complete,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use weir_proxy::MemorySource;
use weir_proxy::tls::{Certificate, Renewal, TlsFiles};
use weir_test_kit::tls::{make_ca, make_leaf};

fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .expect("a PEM certificate")
        .to_vec()
}

/// A client that trusts only the test CA and reports the peer certificate.
fn tls_client(dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.crt")).expect("the CA");
    reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("a PEM CA")])
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a client")
}

/// The certificate the proxy presents to a new connection.
async fn served(dir: &Path, listen: std::net::SocketAddr) -> Vec<u8> {
    let response = tls_client(dir)
        .get(format!("https://127.0.0.1:{}/v1/models", listen.port()))
        .send()
        .await
        .expect("a TLS connection the client trusts");
    assert_eq!(response.status(), 200);
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the peer certificate")
        .to_vec()
}

fn copy(dir: &Path, from: &str, to: &str) {
    std::fs::copy(dir.join(from), dir.join(to)).expect("copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_tls_and_a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    make_ca(dir);
    make_leaf(dir, "first", "first");
    make_leaf(dir, "second", "second");
    copy(dir, "first.crt", "tls.crt");
    copy(dir, "first.key", "tls.key");
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let certificate = Arc::new(Certificate::open(files.clone()).expect("a good pair"));

    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let source = Arc::new(MemorySource::new(
        Table::new(&stable, &canary, 20.0).table(),
        true,
    ));
    let tls = Arc::clone(&certificate);
    let proxy = start_proxy_with(source, move |s| s.tls = Some(tls)).await;

    // A streamed completion over TLS, verified against the test CA.
    let response = tls_client(dir)
        .post(format!(
            "https://127.0.0.1:{}/v1/chat/completions",
            proxy.listen.port()
        ))
        .header("content-type", "application/json")
        .body(common::chat_body(true))
        .send()
        .await
        .expect("the proxy answers over TLS");
    assert_eq!(response.status(), 200);
    let body = read_body(response).await.expect("the whole stream");
    assert!(stream_complete(&body), "{body}");
    assert_eq!(served(dir, proxy.listen).await, der(&dir.join("first.crt")));

    // Plain HTTP on the TLS port is not served.
    let plain = chat(&common::client(), proxy.listen, false).send().await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "plain HTTP was served on the TLS listener"
    );

    // Renewal: the key first, then the certificate (a watcher may look in
    // between): the mismatched pair is refused, the whole one served.
    copy(dir, "second.key", "tls.key");
    let Renewal::Refused(why) = certificate.poll() else {
        panic!("a key without its certificate is not served");
    };
    assert!(why.contains("cannot be used together"), "{why}");
    assert_eq!(served(dir, proxy.listen).await, der(&dir.join("first.crt")));
    copy(dir, "second.crt", "tls.crt");
    assert_eq!(certificate.poll(), Renewal::Served);
    assert!(certificate.last_error().is_none());
    assert_eq!(
        served(dir, proxy.listen).await,
        der(&dir.join("second.crt"))
    );
    assert_eq!(certificate.poll(), Renewal::Unchanged);

    // A broken renewal keeps the last good certificate in service.
    std::fs::write(&files.cert, "not a certificate\n").expect("write");
    let Renewal::Refused(why) = certificate.poll() else {
        panic!("garbage is not served");
    };
    assert!(why.contains("no certificate in it"), "{why}");
    assert_eq!(
        served(dir, proxy.listen).await,
        der(&dir.join("second.crt"))
    );
}

#[test]
fn a_bad_pair_is_refused_at_startup_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    make_ca(dir);
    make_leaf(dir, "a", "a");
    make_leaf(dir, "b", "b");
    let pair = |cert: &str, key: &str| TlsFiles {
        cert: dir.join(cert),
        key: dir.join(key),
    };
    let err = Certificate::open(pair("a.crt", "b.key")).expect_err("mismatch");
    assert!(
        err.to_string().contains("cannot be used together")
            && err
                .to_string()
                .contains("give the key of the certificate's first (leaf) entry"),
        "{err}"
    );
    let err = Certificate::open(pair("a.key", "a.key")).expect_err("a key as certificate");
    assert!(
        err.to_string().contains("a.key: no certificate in it"),
        "{err}"
    );
    let err = Certificate::open(pair("a.crt", "a.crt")).expect_err("a certificate as key");
    assert!(
        err.to_string()
            .contains("give a PEM file with the private key"),
        "{err}"
    );
    let err = Certificate::open(pair("a.crt", "missing.key")).expect_err("missing");
    assert!(err.to_string().starts_with("cannot read "), "{err}");
}

/// A proxy terminating TLS with a new leaf `name` of the test CA in `dir`,
/// in front of a simulator that streams 12 tokens (kept alive by the
/// handle).
async fn tls_proxy(dir: &Path, name: &str) -> (common::Proxy, weir_sim::SimHandle) {
    make_leaf(dir, name, name);
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let certificate = Arc::new(Certificate::open(files).expect("a good pair"));
    let sim = common::stream_sim(
        "stable",
        std::time::Duration::ZERO,
        std::time::Duration::from_millis(1),
        12,
    )
    .await;
    let source = Arc::new(MemorySource::new(Table::new(&sim, &sim, 0.0).table(), true));
    let proxy = start_proxy_with(source, move |s| s.tls = Some(certificate)).await;
    (proxy, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_gives_http2_to_clients_that_offer_it_and_http11_to_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    make_ca(dir);
    let (proxy, _sim) = tls_proxy(dir, "leaf").await;
    let url = format!(
        "https://127.0.0.1:{}/v1/chat/completions",
        proxy.listen.port()
    );

    let ca = std::fs::read(dir.join("ca.crt")).expect("the CA");
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("a PEM CA")])
            .timeout(REQUEST_TIMEOUT);
        if http1_only {
            builder = builder.http1_only();
        }
        let response = builder
            .build()
            .expect("a client")
            .post(&url)
            .header("content-type", "application/json")
            .body(common::chat_body(true))
            .send()
            .await
            .expect("the proxy answers over TLS");
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let body = read_body(response).await.expect("the whole stream");
        assert!(stream_complete(&body), "{version:?}: {body}");
    }

    let flags = vec![
        "--http2".into(),
        "--cacert".into(),
        dir.join("ca.crt").into(),
    ];
    let text = common::curl_chat(flags, url).await;
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(stream_complete(&text), "{text}");
}

/// A table whose stable backend is `url` (the canary at weight 0 is the
/// same URL: no fallback).
fn table_to(url: &str) -> weir_proxy::RouteTable {
    let yaml = format!(
        "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes:\n  - name: chat\n    backends:\n      - {{cohort: stable, url: {url}, weight: 100}}\n      - {{cohort: canary, url: {url}, weight: 0}}\n"
    );
    weir_proxy::config::file::parse(&yaml)
        .expect("valid config")
        .table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_the_given_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    make_ca(dir);
    // The upstream: a weir proxy terminating TLS in front of a simulator.
    let (upstream, _sim) = tls_proxy(dir, "upstream").await;
    let url = format!("https://127.0.0.1:{}", upstream.listen.port());

    // Trusting the test CA: the stream comes through.
    let source = Arc::new(MemorySource::new(table_to(&url), true));
    let ca = dir.join("ca.crt");
    let proxy = start_proxy_with(source, move |s| s.upstream_ca = Some(ca)).await;
    let response = chat(&common::client(), proxy.listen, true)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let body = read_body(response).await.expect("the whole stream");
    assert!(stream_complete(&body), "{body}");

    // Trusting only the system's store, the upstream's certificate is
    // refused: a connect error naming the upstream, nothing served.
    let source = Arc::new(MemorySource::new(table_to(&url), true));
    let untrusting = start_proxy_with(source, |_| {}).await;
    let response = chat(&common::client(), untrusting.listen, false)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 502);
    let text = response.text().await.expect("body");
    assert!(text.contains(&format!("cannot connect to {url}")), "{text}");
}

#[test]
fn a_ca_bundle_that_cannot_be_used_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    make_ca(dir);
    make_leaf(dir, "a", "a");
    assert_eq!(
        weir_proxy::tls::check_ca_bundle(&dir.join("ca.crt")).expect("a CA"),
        1
    );
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    for (file, says) in [
        (dir.join("a.key"), "a.key: it holds a"),
        (empty, "empty.pem: no certificate in it"),
        (dir.join("missing.pem"), "cannot read "),
    ] {
        let err = weir_proxy::tls::check_ca_bundle(&file).expect_err("refused");
        assert!(err.to_string().contains(says), "{err}");
    }
}
