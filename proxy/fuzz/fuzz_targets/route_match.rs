//! Route matching and cohort selection on arbitrary hosts, paths and headers:
//! never panics, and every decision obeys the selection rules.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_proxy::route::{RequestInfo, Selected, route};
use weir_proxy::{RouteTable, config};

const CONFIG: &str = "
listen: 127.0.0.1:8080
overrideHeader: true
routes:
  - name: chat
    match: {hosts: [chat.example.com, '[::1]'], pathPrefix: /v1}
    sticky: {header: x-session-id}
    backends:
      - {cohort: stable, url: 'http://127.0.0.1:9001', weight: 80}
      - {cohort: canary, url: 'http://127.0.0.1:9002', weight: 20}
      - {cohort: preview, url: 'http://127.0.0.1:9003', weight: 0}
  - name: web
    sticky: {cookie: sid}
    backends:
      - {cohort: stable, url: 'http://127.0.0.1:9001', weight: 99.99}
      - {cohort: canary, url: 'http://127.0.0.1:9002', weight: 0.01}
";

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| match config::file::parse(CONFIG) {
        Ok(c) => c.table,
        Err(e) => panic!("fuzz config is invalid: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let draw = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let text = String::from_utf8_lossy(&data[8..]);
    // host \0 path \0 name=value \0 name=value ...
    let mut parts = text.split('\0');
    let host = parts.next().filter(|h| !h.is_empty());
    let path = parts.next().unwrap_or("/");
    let headers: Vec<(&str, &str)> = parts.filter_map(|h| h.split_once('=')).collect();
    let Ok(d) = route(
        table(),
        &RequestInfo::new(host, path, headers.as_slice()),
        draw,
    ) else {
        return;
    };
    let backend = d.backend();
    assert!(d.backend < d.route.backends().len());
    if d.selected != Selected::Override {
        assert!(
            !backend.weight.is_zero(),
            "weight-0 backend chosen by {:?}",
            d.selected
        );
    }
    if let Some(f) = d.fallback_backend() {
        assert!(d.fallback != Some(d.backend) && !f.weight.is_zero());
    }
});
