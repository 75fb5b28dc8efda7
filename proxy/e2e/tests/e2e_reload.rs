//! End to end: weights change while streams flow, and no request notices.
//!
//! A proxy serving a config file (a [`FileSource`] polled every 50 ms, the
//! way `weir proxy -f` reloads it) takes 100 weight changes, alternately
//! through `PUT /v1/routes/chat/weights` and by rewriting the file, while
//! four clients stream completions back to back. Every stream must end
//! with 200 and `data: [DONE]`, and the proxy must count every one as ok.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{
    REQUEST_TIMEOUT, Table, chat, client, counts, observations_when, put_weights, read_body,
    routes_state, served_by, start_proxy, stream_complete, stream_sim,
};
use weir_proxy::{ConfigSource, FileSource, Outcome};
use weir_test_kit::poll::until;

/// Replaces `path` so a concurrent reader sees the old or the new text,
/// never a half-written file (as editors and ConfigMap updates do).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write the temporary config");
    std::fs::rename(&tmp, path).expect("rename it over the config");
}

/// What one client loop saw.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    on_canary: u64,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_weight_changes_under_load_fail_no_request() {
    const CHANGES: u64 = 100;
    const LOOPS: usize = 4;
    /// Per loop: a bound on requests whatever happens.
    const MAX_PER_LOOP: u64 = 20_000;
    /// Requests the whole run must at least carry to mean anything.
    const MIN_REQUESTS: u64 = 200;

    let ttft = Duration::from_millis(5);
    let itl = Duration::from_millis(1);
    let stable = stream_sim("stable", ttft, itl, 8).await;
    let canary = stream_sim("canary", ttft, itl, 8).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("proxy.yaml");
    write_config(&path, &Table::new(&stable, &canary, 10.0).yaml());
    let (source, _config) = FileSource::open(&path).expect("a valid config file");
    let source = Arc::new(source);
    let watcher = {
        let source = Arc::clone(&source);
        tokio::spawn(async move { source.watch(Duration::from_millis(50)).await })
    };
    let proxy = start_proxy(Arc::clone(&source) as Arc<dyn ConfigSource>).await;
    let (listen, admin_addr) = (proxy.listen, proxy.admin);
    let admin = client();
    assert_eq!(routes_state(&admin, admin_addr).await, (1, 10.0));

    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..LOOPS {
        let (stop, completed, client) = (Arc::clone(&stop), Arc::clone(&completed), client());
        loops.spawn(async move {
            let mut seen = Seen::default();
            while !stop.load(Ordering::Acquire) && seen.sent < MAX_PER_LOOP {
                seen.sent += 1;
                let outcome = async {
                    let response = chat(&client, listen, true)
                        .send()
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                    let status = response.status();
                    let (cohort, sim) = served_by(&response);
                    let body = read_body(response)
                        .await
                        .map_err(|(body, e)| format!("body after {body:?}: {e}"))?;
                    if status != 200 || !stream_complete(&body) || cohort != sim {
                        return Err(format!("{status} {cohort}/{sim}: {body:?}"));
                    }
                    Ok(cohort == "canary")
                }
                .await;
                match outcome {
                    Ok(on_canary) => seen.on_canary += u64::from(on_canary),
                    Err(e) => seen.failures.push(e),
                }
                completed.fetch_add(1, Ordering::AcqRel);
            }
            seen
        });
    }

    // Changes start once traffic flows.
    until("the first streams", REQUEST_TIMEOUT, || {
        let completed = Arc::clone(&completed);
        async move { (completed.load(Ordering::Acquire) >= 20).then_some(()) }
    })
    .await;
    let during_from = completed.load(Ordering::Acquire);

    let mut generation = 1;
    for i in 0..CHANGES {
        // 1..=99, never the same twice in a row (37 is coprime with 99).
        let weight = ((i * 37) % 99 + 1) as f64;
        if i % 2 == 0 {
            put_weights(&admin, admin_addr, weight).await;
        } else {
            write_config(&path, &Table::new(&stable, &canary, weight).yaml());
        }
        generation += 1;
        // Each change is exactly one new generation, in force before the next.
        let want = (generation, weight);
        until(&format!("change {i} in service"), REQUEST_TIMEOUT, || {
            let admin = admin.clone();
            async move { (routes_state(&admin, admin_addr).await == want).then_some(()) }
        })
        .await;
    }
    let during = completed.load(Ordering::Acquire) - during_from;
    stop.store(true, Ordering::Release);

    let mut sent = 0;
    let mut on_canary = 0;
    let mut failures = Vec::new();
    while let Some(done) = loops.join_next().await {
        let seen = done.expect("a client loop finished");
        sent += seen.sent;
        on_canary += seen.on_canary;
        failures.extend(seen.failures);
    }
    watcher.abort();
    println!(
        "reload: {CHANGES} changes, {sent} streams ({during} completed during the changes), {on_canary} on the canary, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} streams failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(sent >= MIN_REQUESTS, "only {sent} streams were sent");
    assert!(during > 0, "no stream completed while the weights changed");
    assert!(
        on_canary > 0 && on_canary < sent,
        "both cohorts served ({on_canary} of {sent} on the canary)"
    );
    assert!(source.last_error().is_none(), "{:?}", source.last_error());
    // The file holds the last weights (the PUTs wrote back into it too).
    let last = ((CHANGES - 1) * 37 % 99 + 1) as f64;
    let on_disk = weir_proxy::config::file::parse(
        &std::fs::read_to_string(&path).expect("read the config back"),
    )
    .expect("the file stays valid");
    let chat = on_disk.table.get(common::ROUTE).expect("the chat route");
    let (i, _) = chat
        .backend_for(&weir_proxy::Cohort::Canary)
        .expect("a canary backend");
    assert_eq!(chat.backends()[i].weight.percent(), last);

    // The proxy counted every stream, all ok.
    let snapshot = observations_when(admin_addr, "every stream in /v1/observations", |s| {
        counts(s, "stable").total() + counts(s, "canary").total() >= sent
    })
    .await;
    let (s, c) = (counts(&snapshot, "stable"), counts(&snapshot, "canary"));
    assert_eq!(
        (s[Outcome::Ok], c[Outcome::Ok]),
        (sent - on_canary, on_canary),
        "{snapshot:?}"
    );
    assert_eq!(
        s.total() + c.total(),
        sent,
        "no outcome but ok: {s:?} {c:?}"
    );
}
