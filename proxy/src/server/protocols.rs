//! What a client connection speaks: HTTP/1.x, HTTP/2 with prior knowledge
//! (h2c) on a plain listener, or whatever TLS's ALPN picked (h2 or
//! HTTP/1.1). Every request, or HTTP/2 stream, then goes to the same
//! [`Forwarder`], so each stream is routed, metered and recorded as its own
//! request.
//!
//! pingora (0.9.1) can detect h2c itself, but it reads the first 24 bytes
//! of every connection before any deadline applies: a complete HTTP/1.0
//! request shorter than the HTTP/2 preface waits for bytes that never come,
//! and a client trickling bytes holds the connection without limit. So
//! [`Protocols`] looks first, under the request-head deadline and only as
//! far as it must: an HTTP/1 request differs from the preface at its first
//! byte, or its second (`POST`, `PUT`, `PATCH`) or third (`PROPFIND`).
//! Only a connection that sent the whole preface reaches pingora's h2c
//! path, which then finds the 24 bytes at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp as _};
use pingora::listeners::ALPN;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{H2Options, default_h2_options};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::server::ShutdownWatch;

use super::forward::{Forwarder, draining};
use super::{ConnectionGuard, Connections};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many of the first bytes to compare with [`PREFACE`], in turn: each
/// look waits for that many bytes, so HTTP/1 is told apart as soon as its
/// bytes differ, after at most 3; only a client that sent `PRI` is waited
/// for until the whole preface is in.
const LOOKS: [usize; 4] = [1, 2, 3, PREFACE.len()];

/// pingora's TLS acceptor (rustls).
#[cfg(feature = "tls")]
pub(super) type TlsAcceptor = pingora::listeners::tls::Acceptor;

/// One listener's connections: the cap, TLS, the protocol, then the
/// session loop for it (weir's own for HTTP/1, pingora's for HTTP/2).
pub(super) struct Protocols {
    /// HTTP/1.x, and HTTP/2 where TLS's ALPN chose it.
    http: Arc<App>,
    /// HTTP/2 with prior knowledge, for a plain connection that opened with
    /// the preface.
    h2c: Arc<App>,
    connections: Arc<Connections>,
    /// How long a new connection may take to show what it speaks (its TLS
    /// handshake included): the request-head deadline.
    header: Duration,
    /// Terminates TLS on every connection when set.
    #[cfg(feature = "tls")]
    tls: Option<TlsAcceptor>,
}

impl Protocols {
    pub(super) fn new(
        forwarder: Forwarder,
        connections: Arc<Connections>,
        header: Duration,
        idle: Duration,
        #[cfg(feature = "tls")] tls: Option<TlsAcceptor>,
    ) -> Self {
        let forwarder = Arc::new(forwarder);
        let app = |h2c| {
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            // An HTTP/2 connection with no open stream is closed like an
            // idle HTTP/1 one.
            options.h2_idle_timeout = Some(idle);
            Arc::new(App {
                forwarder: Arc::clone(&forwarder),
                options,
            })
        };
        Protocols {
            http: app(false),
            h2c: app(true),
            connections,
            header,
            #[cfg(feature = "tls")]
            tls,
        }
    }

    /// Serves one accepted connection to its end.
    pub(super) async fn serve(&self, tcp: tokio::net::TcpStream, shutdown: &ShutdownWatch) {
        // Held for the connection's life, across its kept-alive requests
        // or HTTP/2 streams. At the cap the connection is closed unread:
        // holding a descriptor and buffers for a client the proxy cannot
        // serve is how a flood starves the ones it can; the client
        // retries, or goes to another replica.
        let Some(_connection): Option<ConnectionGuard> = self.connections.enter() else {
            return;
        };
        // Small requests and stream events leave at once.
        let _ = tcp.set_nodelay(true);
        // No read or write buffer in front of the socket: weir's HTTP/1
        // reads into a buffer of its own that it gives back while a
        // response streams, and gathers each write itself. (HTTP/2 and TLS
        // keep buffers of their own.)
        let l4 = L4Stream::from(tcp);
        #[cfg(feature = "tls")]
        let stream: Stream = match &self.tls {
            Some(tls) => {
                // Boxed: the handshake's state is held only for its
                // moment, not by every open stream's task.
                let handshake = Box::pin(tls.tls_handshake(l4));
                match tokio::time::timeout(self.header, handshake).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    // Failed, or not done within the deadline.
                    _ => return,
                }
            }
            None => Box::new(l4),
        };
        #[cfg(not(feature = "tls"))]
        let stream: Stream = Box::new(l4);
        // One await of the session loop: two would each take its size in
        // this future.
        self.process(stream, shutdown).await;
    }

    /// What the connection speaks, and its session loop.
    async fn process(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let app = if stream.get_ssl_digest().is_some() {
            if stream.selected_alpn_proto() != Some(ALPN::H2) {
                return self.http1(stream, shutdown).await;
            }
            &self.http
        } else {
            let mut closing = shutdown.clone();
            let looked = tokio::select! {
                biased;
                looked = tokio::time::timeout(self.header, opens_with_preface(&mut stream)) => looked,
                () = draining(&mut closing) => return,
            };
            match looked {
                Ok(Ok(true)) => &self.h2c,
                Ok(Ok(false)) => return self.http1(stream, shutdown).await,
                // Closed, or silent past the deadline.
                Ok(Err(_)) | Err(_) => return,
            }
        };
        // pingora's HTTP/2 server, boxed by its trait.
        let _ = app.process_new(stream, shutdown).await;
    }

    /// An HTTP/1 connection, on weir's own HTTP/1 (`downstream.rs`).
    async fn http1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        self.http.forwarder.serve_h1(stream, shutdown).await;
    }
}

/// Whether `stream` opens with the HTTP/2 preface, reading only as far as
/// needed to tell; whatever was read is put back for the session.
async fn opens_with_preface(stream: &mut Stream) -> std::io::Result<bool> {
    let mut seen = [0u8; PREFACE.len()];
    for n in LOOKS {
        // `false`: this kind of stream cannot be peeked, so no h2c.
        if !stream.try_peek(&mut seen[..n]).await? || seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
    }
    Ok(true)
}

/// pingora's view of the forwarder, with one set of protocol options.
pub(super) struct App {
    forwarder: Arc<Forwarder>,
    options: HttpServerOptions,
}

#[async_trait]
impl HttpServerApp for App {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // HTTP/2 streams share their connection, so no stream keeps
        // upstream connections: each takes one from the shared pool.
        self.forwarder.serve_h2(session, shutdown).await;
        // An HTTP/2 stream is never a connection to reuse.
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    /// pingora's bounded defaults (header list size, concurrent streams
    /// per connection): an HTTP/2 client cannot open more streams at once
    /// than an HTTP/1 one could open connections.
    fn h2_options(&self) -> Option<H2Options> {
        Some(default_h2_options())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The looks tell every HTTP/1 method apart from the preface, at most
    /// at the third byte, and never a prefix of the preface itself.
    #[test]
    fn http1_methods_differ_from_the_preface_within_the_looks() {
        for method in [
            "GET",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "HEAD",
            "OPTIONS",
            "TRACE",
            "CONNECT",
            "PROPFIND",
            "PROPPATCH",
        ] {
            let request = format!("{method} / HTTP/1.1\r\nhost: a\r\n\r\n");
            let differs_at = LOOKS
                .iter()
                .find(|&&n| request.as_bytes()[..n] != PREFACE[..n]);
            assert!(
                differs_at.is_some_and(|&n| n <= 3),
                "{method} not told apart within 3 bytes"
            );
        }
        assert_eq!(LOOKS.last(), Some(&PREFACE.len()));
    }

    /// A connected pair: pingora's stream for the server side, and the
    /// client's socket.
    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        (stream, client)
    }

    async fn read_back(stream: &mut Stream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut back = vec![0u8; n];
        stream.read_exact(&mut back).await.expect("read back");
        back
    }

    #[tokio::test]
    async fn a_request_shorter_than_the_preface_is_told_apart_and_kept() {
        use tokio::io::AsyncWriteExt;
        let (mut stream, mut client) = pair().await;
        let request = b"GET / HTTP/1.0\r\n\r\n";
        assert!(request.len() < PREFACE.len());
        client.write_all(request).await.expect("write");
        // Nothing more comes, and the answer must not wait for it.
        assert!(!opens_with_preface(&mut stream).await.expect("look"));
        assert_eq!(read_back(&mut stream, request.len()).await, request);
    }

    #[tokio::test]
    async fn the_preface_is_recognised_and_kept() {
        use tokio::io::AsyncWriteExt;
        let (mut stream, mut client) = pair().await;
        client.write_all(PREFACE).await.expect("write");
        assert!(opens_with_preface(&mut stream).await.expect("look"));
        assert_eq!(read_back(&mut stream, PREFACE.len()).await, PREFACE);
    }

    /// A connection's task holds this future for the connection's life: it
    /// must stay small (pingora's accept-side task was 8.8 KiB; awaiting the
    /// session loop at two places made this one 8 KiB; 3.3 KiB in the test
    /// profile).
    #[tokio::test]
    async fn a_connections_future_stays_small() {
        use std::sync::atomic::AtomicUsize;
        let forwarder = super::super::forward::tests::forwarder();
        let connections = Arc::new(Connections {
            open: AtomicUsize::new(0),
            max: 1,
        });
        let protocols = Protocols::new(
            forwarder,
            connections,
            Duration::from_secs(1),
            Duration::from_secs(1),
            #[cfg(feature = "tls")]
            None,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let connection = protocols.serve(tcp, &shutdown);
        let size = size_of_val(&connection);
        assert!(size < 5 * 1024, "a connection's future takes {size} bytes");
    }

    #[tokio::test]
    async fn a_post_is_told_apart_at_its_second_byte() {
        use tokio::io::AsyncWriteExt;
        let (mut stream, mut client) = pair().await;
        // Only "PO" sent: a look at 24 bytes would wait forever here.
        client.write_all(b"PO").await.expect("write");
        assert!(!opens_with_preface(&mut stream).await.expect("look"));
        assert_eq!(read_back(&mut stream, 2).await, b"PO");
    }
}
