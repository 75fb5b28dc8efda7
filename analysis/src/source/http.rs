//! HTTP plumbing shared by the scrape and the Prometheus API: URL checks,
//! error classification (refused, timed out) and a size-capped body read.

use std::time::Duration;

use super::SourceError;

/// Parses a URL given by a user.
pub(crate) fn parse_url(url: &str) -> Result<url::Url, SourceError> {
    let parsed = url::Url::parse(url).map_err(|e| SourceError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SourceError::InvalidUrl {
            url: url.to_string(),
            reason: format!("scheme {} is not http or https", parsed.scheme()),
        });
    }
    Ok(parsed)
}

/// The URL for messages: no credentials, no query string.
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have credentials at all.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The causes of an error, outermost first, without reqwest's own
/// "error sending request for url (...)" line (it repeats the URL with
/// its query string).
fn causes(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

fn classify(e: &reqwest::Error, shown: &str, timeout: Duration) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout {
            url: shown.to_string(),
            after: timeout,
        }
    } else {
        SourceError::Unreachable {
            url: shown.to_string(),
            reason: causes(e),
        }
    }
}

/// GET `url`; returns the status and the body (at most `max_bytes`).
pub(crate) async fn get(
    client: &reqwest::Client,
    url: url::Url,
    shown: &str,
    timeout: Duration,
    accept: &str,
    max_bytes: usize,
) -> Result<(u16, String), SourceError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, accept)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| classify(&e, shown, timeout))?;
    let status = response.status().as_u16();
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(&e, shown, timeout))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(SourceError::Parse {
                what: shown.to_string(),
                line: None,
                reason: format!("the response is larger than {max_bytes} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).map_err(|e| SourceError::Parse {
        what: shown.to_string(),
        line: None,
        reason: format!("the response is not UTF-8: {e}"),
    })?;
    Ok((status, body))
}
