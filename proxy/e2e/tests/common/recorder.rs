//! An upstream that records what reaches it: a test can then say
//! "nothing reached it" and "it got exactly this", which a client alone
//! cannot see.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records each request head (lowercased) and body and
/// answers every request `200` with the body `ok`, keeping the connection.
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Log>,
}

/// What a [`Recorder`] saw.
#[derive(Default)]
struct Log {
    heads: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Vec<u8>>>,
    /// Requests that arrived on a connection which had already had its
    /// one answer, and were dropped with the connection unanswered.
    dropped: AtomicU64,
}

impl Recorder {
    pub async fn start() -> Recorder {
        Recorder::answering(usize::MAX).await
    }

    /// A recorder that answers `per_connection` requests on a connection,
    /// with `keep-alive`, and closes it without a word when the next one
    /// arrives: what a server does that closes an idle keep-alive
    /// connection just as the proxy reuses it (llama.cpp's server does it
    /// after some errors).
    pub async fn answering(per_connection: usize) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, Arc::clone(&sink), per_connection));
            }
        });
        Recorder { addr, log }
    }

    pub fn heads(&self) -> Vec<String> {
        lock(&self.log.heads).clone()
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        lock(&self.log.bodies).clone()
    }

    pub fn dropped(&self) -> u64 {
        self.log.dropped.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads request heads (bodies by `content-length` only) off one
/// connection and answers the first `answers` of them.
async fn serve(mut conn: TcpStream, log: Arc<Log>, answers: usize) {
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let chunked = head.contains("\r\ntransfer-encoding: chunked");
        // A chunked body is read to its last chunk (no trailers) and kept
        // decoded.
        let (body, used) = loop {
            let body = &buf[end + 4..];
            let whole = if chunked {
                dechunk(body)
            } else {
                (body.len() >= length).then(|| (body[..length].to_vec(), length))
            };
            if let Some(whole) = whole {
                break whole;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if answered == answers {
            log.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        answered += 1;
        lock(&log.bodies).push(body);
        buf.drain(..end + 4 + used);
        lock(&log.heads).push(head);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        if conn.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// A whole chunked body decoded, with the bytes it took; `None` while it
/// is incomplete.
fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = data.len();
    let mut body = Vec::new();
    loop {
        let line = find(data, b"\r\n")?;
        let size = std::str::from_utf8(&data[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line + 2..];
        if size == 0 {
            let rest = data.strip_prefix(b"\r\n")?;
            return Some((body, total - rest.len()));
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A proxy whose one route sends everything to `stable` (`canary` at 0).
pub async fn proxy_to(stable: SocketAddr, canary: SocketAddr) -> super::Proxy {
    proxy_to_with(stable, canary, |_| {}).await
}

/// [`proxy_to`] with settings changed by `configure`.
pub async fn proxy_to_with(
    stable: SocketAddr,
    canary: SocketAddr,
    configure: impl FnOnce(&mut weir_proxy::Settings),
) -> super::Proxy {
    let yaml = format!(
        "listen: 127.0.0.1:1\n\
         admin: 127.0.0.1:2\n\
         routes:\n\
         \x20 - name: chat\n\
         \x20   backends:\n\
         \x20     - {{cohort: stable, url: http://{stable}, weight: 100}}\n\
         \x20     - {{cohort: canary, url: http://{canary}, weight: 0}}\n"
    );
    let table = weir_proxy::config::file::parse(&yaml)
        .expect("valid config")
        .table;
    let source = Arc::new(weir_proxy::MemorySource::new(table, true));
    super::start_proxy_with(source, configure).await
}
