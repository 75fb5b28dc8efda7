//! A webhook receiver for notification tests: an HTTP/1.1 server on a
//! tokio listener that records every POST (headers, JSON body) and answers
//! as told: 200, 500 to the first request then 200, 400, or never.
//!
//! Minimal on purpose (one request per connection, `Content-Length`
//! bodies, `Connection: close`): what a webhook client sends, without a
//! server framework in every test crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 to everything.
    Ok,
    /// 500 to the first request, 200 after.
    FailFirst,
    /// 400 to everything.
    Refuse,
    /// Reads the request and never answers.
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: serde_json::Value,
}

impl Received {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// The requests a receiver got, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Received>>>);

impl Log {
    /// Every request so far.
    pub fn all(&self) -> Vec<Received> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, r: Received) -> usize {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.push(r);
        all.len() - 1
    }
}

/// Serves on `listener` (for as long as the runtime runs) and returns the
/// log of what it gets.
pub fn serve(listener: TcpListener, answer: Answer) -> Log {
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(one(stream, answer, seen.clone()));
        }
    });
    log
}

async fn one(mut stream: TcpStream, answer: Answer, log: Log) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Headers, then Content-Length bytes of body.
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
    let n = log.push(Received {
        path,
        headers,
        body,
    });
    let status = match answer {
        Answer::Ok => "200 OK",
        Answer::FailFirst if n == 0 => "500 Internal Server Error",
        Answer::FailFirst => "200 OK",
        Answer::Refuse => "400 Bad Request",
        Answer::Hang => {
            // Holds the connection open until the test ends.
            std::future::pending::<()>().await;
            return;
        }
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
