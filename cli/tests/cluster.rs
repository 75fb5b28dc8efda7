//! The cluster commands (`get`, `status`, `promote`, `abort`, `retry`,
//! `pause`, `resume`, `undo`, `history`) as a user runs them: the real
//! `weir` binary against a real control plane (tests/envtest, the target's
//! pods run by the node agent), found through `KUBECONFIG`. There is no
//! weir controller here: each test writes the Canary's status by hand
//! through the status subresource, as the controller would, and checks
//! what the commands print and write (the annotations are read back with
//! the controller's own parser).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use weir_controller::engine::Commands;
use weir_controller::kube::builders::{Owner, controller_revision, template_revision};
use weir_controller::kube::commands::from_annotations;
use weir_controller::kube::events;
use weir_crds::Canary;
use weir_envtest::{TestEnv, control_plane};
use weir_test_kit::poll::until;

/// Longest wait for a child or a watched change.
const DEADLINE: Duration = Duration::from_secs(30);

/// One test's namespace with a target Deployment and Canary `chat`.
struct Fixture {
    env: TestEnv,
    canaries: Api<Canary>,
    deployments: Api<Deployment>,
    /// Scratch files of this test (kubeconfigs, symlinks).
    dir: PathBuf,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let env = TestEnv::on_cluster(test).await;
        let canaries: Api<Canary> = Api::namespaced(env.client.clone(), &env.namespace);
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
        deployments
            .create(&PostParams::default(), &target("vllm:v4"))
            .await
            .expect("target");
        canaries
            .create(&PostParams::default(), &canary())
            .await
            .expect("canary");
        let dir = std::env::temp_dir().join(format!("weir-cli-{}", env.namespace));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Fixture {
            env,
            canaries,
            deployments,
            dir,
        }
    }

    fn ns(&self) -> &str {
        &self.env.namespace
    }

    /// `weir ARGS -n <namespace>` with the admin kubeconfig.
    fn weir(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["-n", self.ns()]);
        run_with(control_plane().kubeconfig(), &all)
    }

    /// Merges `status` into the Canary's status (the subresource).
    async fn status(&self, status: serde_json::Value) {
        self.canaries
            .patch_status(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "status": status })),
            )
            .await
            .expect("status written");
    }

    async fn canary(&self) -> Canary {
        self.canaries.get("chat").await.expect("canary")
    }

    async fn commands(&self) -> Commands {
        from_annotations(
            self.canary()
                .await
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
        )
    }

    async fn target_image(&self) -> String {
        let d = self.deployments.get("chat-frontend").await.expect("target");
        image_of(&d.spec.expect("spec").template)
    }

    /// A copy of the admin kubeconfig, changed by `edit`.
    fn kubeconfig(&self, name: &str, edit: impl FnOnce(&mut Kubeconfig)) -> PathBuf {
        let mut k = Kubeconfig::read_from(control_plane().kubeconfig()).expect("kubeconfig");
        edit(&mut k);
        let path = self.dir.join(name);
        std::fs::write(&path, serde_json::to_string(&k).expect("kubeconfig json")).expect("write");
        path
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A finished `weir`.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self.stdout
    }

    /// Asserts exit 1 and returns stderr.
    fn failed(self) -> String {
        assert_eq!(self.code, Some(1), "{self:#?}");
        self.stderr
    }
}

fn run_with(kubeconfig: &Path, args: &[&str]) -> Run {
    common::command(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("weir runs")
        .into()
}

fn template(image: &str) -> PodTemplateSpec {
    serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "chat"}},
        "spec": {"containers": [{"name": "vllm", "image": image}]}
    }))
    .expect("template")
}

fn image_of(template: &PodTemplateSpec) -> String {
    template.spec.as_ref().expect("pod spec").containers[0]
        .image
        .clone()
        .expect("image")
}

fn target(image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-frontend"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": template(image)
        }
    }))
    .expect("deployment")
}

/// Canary `chat` with four steps (the unit tests' fixture too).
fn canary() -> Canary {
    serde_json::from_str(include_str!("fixtures/canary.json")).expect("canary")
}

/// A run on its analysis step at 20%, with a verdict of Continue.
fn progressing() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/progressing.json")).expect("status")
}

#[tokio::test]
async fn get_lists_the_canary_with_its_phase_step_and_weight() {
    let f = Fixture::new("cli-get").await;
    f.status(progressing()).await;

    let out = f.weir(&["get"]).ok();
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    assert!(
        header.starts_with("NAME") && header.contains("WEIGHT"),
        "{out}"
    );
    let row = lines.next().expect("a row");
    for part in [
        "chat ",
        "Progressing",
        "2/4: analysis",
        "20%",
        "7c1a02bb33",
        "Continue: ttft.p95 undecided",
    ] {
        assert!(row.contains(part), "{part:?} missing from {row:?}");
    }

    let all = run_with(control_plane().kubeconfig(), &["get", "-A"]).ok();
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with(f.ns()) && l.contains("Progressing")),
        "{all}"
    );

    // Without -n: the kubeconfig context's namespace, as kubectl does.
    let ns = f.ns().to_string();
    let scoped = f.kubeconfig("scoped", |k| {
        for c in &mut k.contexts {
            if let Some(ctx) = c.context.as_mut() {
                ctx.namespace = Some(ns.clone());
            }
        }
    });
    let out = run_with(&scoped, &["get"]).ok();
    assert!(out.lines().any(|l| l.starts_with("chat ")), "{out}");
    let json = run_with(&scoped, &["get", "-o", "json"]).ok();
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON line");
    assert_eq!(
        (row["name"].as_str(), row["canaryWeight"].as_f64()),
        (Some("chat"), Some(20.0))
    );
}

#[tokio::test]
async fn status_shows_the_steps_the_analysis_and_the_events() {
    let f = Fixture::new("cli-status").await;
    f.status(progressing()).await;
    // The target as the canary cohort at one replica, as the controller
    // scales it for the status above; the Deployment controller reports it.
    f.deployments
        .patch(
            "chat-frontend",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("target scaled");
    until("the target at one ready pod", DEADLINE, || async {
        let s = f.deployments.get("chat-frontend").await.ok()?.status?;
        (s.replicas == Some(1) && s.ready_replicas == Some(1)).then_some(())
    })
    .await;
    // Written the way the controller writes them (events.k8s.io/v1).
    let canary = f.canary().await;
    for (reason, note) in [
        (
            "RolloutStarted",
            "new revision 7c1a02bb33: starting the rollout",
        ),
        ("WeightSet", "canary weight 20%"),
    ] {
        events::record(&f.env.client, &canary, "test", false, reason, note)
            .await
            .expect("event");
    }

    let out = f.weir(&["status", "chat"]).ok();
    assert!(out.contains("  ✓ 1. setWeight 20%\n"), "{out}");
    assert!(out.contains("  ▶ 2. analysis (min 1m, max 10m)\n"), "{out}");
    assert!(
        out.contains("Phase:      Progressing: step 2/4: analysis, 812/1000 samples"),
        "{out}"
    );
    let effect = out
        .lines()
        .find(|l| l.trim_start().starts_with("ttft.p95"))
        .unwrap_or_else(|| panic!("no effect row in {out}"));
    for part in [
        "undecided",
        "+4.1% [−1.2%, +9.8%] vs margin +10%",
        "3130",
        "812",
    ] {
        assert!(effect.contains(part), "{part:?} missing from {effect:?}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("canary") && l.contains("20%") && l.contains("chat-canary:8000")),
        "{out}"
    );
    let started = out.find("RolloutStarted").expect("first event shown");
    let weight = out.find("canary weight 20%").expect("second event shown");
    assert!(started < weight, "newest last:\n{out}");

    let json = f.weir(&["status", "chat", "-o", "json"]).ok();
    assert_eq!(json.lines().count(), 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["steps"][1]["state"], "current");
    assert_eq!(v["analysis"]["metrics"][0]["stableN"], 3130);
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["events"][1]["reason"], "WeightSet");
    let canary_replicas = &v["replicas"][1];
    assert_eq!(
        (
            canary_replicas["deployment"].as_str(),
            canary_replicas["wanted"].as_u64(),
            canary_replicas["ready"].as_u64()
        ),
        (Some("chat-frontend"), Some(1), Some(1))
    );
}

#[tokio::test]
async fn requests_set_the_annotations_the_controller_reads_and_are_refused_out_of_phase() {
    let f = Fixture::new("cli-requests").await;
    f.status(progressing()).await;

    let out = f.weir(&["promote", "chat", "--full"]).ok();
    assert!(out.contains("promoting chat fully"), "{out}");
    let promoted = f.commands().await.promote.expect("promote requested");
    assert!(promoted.1, "--full is a full promotion");
    assert!(!promoted.0.is_empty());

    let err = f.weir(&["retry", "chat"]).failed();
    assert!(
        err.contains("cannot retry chat: it is Progressing; retry restarts an Aborted run"),
        "{err}"
    );
    assert_eq!(
        f.commands().await.retry,
        None,
        "a refused request writes nothing"
    );

    f.weir(&["abort", "chat"]).ok();
    let abort = f.commands().await.abort.expect("abort requested");
    assert_ne!(abort, promoted.0, "each request has its own id");

    f.status(serde_json::json!({"phase": "Aborted"})).await;
    let err = f.weir(&["promote", "chat"]).failed();
    assert!(err.contains("cannot promote chat: it is Aborted"), "{err}");
    assert_eq!(
        f.commands().await.promote,
        Some(promoted.clone()),
        "unchanged"
    );
    f.weir(&["retry", "chat"]).ok();
    assert!(f.commands().await.retry.is_some());

    for phase in ["Idle", "Succeeded"] {
        f.status(serde_json::json!({ "phase": phase })).await;
        let err = f.weir(&["abort", "chat"]).failed();
        assert!(
            err.contains(&format!(
                "cannot abort chat: it is {phase}, no run is in progress"
            )),
            "{err}"
        );
        assert_eq!(f.commands().await.abort, Some(abort.clone()), "unchanged");
    }
}

#[tokio::test]
async fn wait_returns_once_the_controller_acknowledges_and_times_out_otherwise() {
    let f = Fixture::new("cli-wait").await;
    f.status(progressing()).await;
    let mut cmd = common::command(&["abort", "chat", "-n", f.ns(), "--wait", "--timeout", "60s"]);
    cmd.env("KUBECONFIG", control_plane().kubeconfig());
    let mut waiting = common::spawn_command("abort --wait", cmd);
    let fixture = &f;
    let id = until("the abort annotation", DEADLINE, move || async move {
        fixture.commands().await.abort
    })
    .await;
    assert!(
        waiting.alive(),
        "--wait returned before any acknowledgement"
    );
    // What the controller does: act, and record the id.
    f.status(serde_json::json!({
        "phase": "Aborted",
        "message": "aborted by request (weir abort)",
        "acknowledged": {"abort": id},
    }))
    .await;
    let status = waiting.wait_exit(DEADLINE).expect("--wait returns");
    assert_eq!(status.code(), Some(0), "{}", waiting.stderr.text());
    let out = waiting.stdout.when_closed(DEADLINE);
    assert!(
        out.contains("acknowledged by the controller; chat is Aborted: aborted by request"),
        "{out}"
    );

    f.status(serde_json::json!({"phase": "Progressing"})).await;
    let err = f
        .weir(&["abort", "chat", "--wait", "--timeout", "1s"])
        .failed();
    assert!(
        err.contains("the controller did not acknowledge the abort request within 1s"),
        "{err}"
    );
}

#[tokio::test]
async fn pause_and_resume_flip_spec_paused() {
    let f = Fixture::new("cli-pause").await;
    f.status(progressing()).await;
    let out = f.weir(&["pause", "chat"]).ok();
    assert!(out.contains("pausing chat at step 2/4: analysis"), "{out}");
    assert!(f.canary().await.spec.paused);
    let again = f.weir(&["pause", "chat"]).ok();
    assert!(again.contains("already paused"), "{again}");
    f.weir(&["resume", "chat"]).ok();
    assert!(!f.canary().await.spec.paused);
}

#[tokio::test]
async fn undo_writes_the_chosen_revision_into_the_target() {
    let f = Fixture::new("cli-undo").await;
    let canary = f.canary().await;
    let owner = Owner {
        name: "chat".into(),
        namespace: f.ns().into(),
        uid: canary.metadata.uid.clone().expect("uid"),
    };
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(f.env.client.clone(), f.ns());
    let mut hashes = BTreeMap::new();
    for (number, image) in [(1, "vllm:v1"), (2, "vllm:v2"), (4, "vllm:v4")] {
        let t = template(image);
        let hash = template_revision(&t);
        revisions
            .create(
                &PostParams::default(),
                &controller_revision(&owner, &t, &hash, number),
            )
            .await
            .expect("revision");
        hashes.insert(number, hash);
    }
    f.status(serde_json::json!({"phase": "Succeeded", "stableRevision": hashes[&4]}))
        .await;

    let out = f.weir(&["undo", "chat"]).ok();
    assert_eq!(
        f.target_image().await,
        "vllm:v2",
        "the version before stable"
    );
    assert!(out.contains("pod template set to revision 2"), "{out}");
    assert!(out.contains("a canary run"), "{out}");

    f.weir(&["undo", "chat", "--to-revision", "1"]).ok();
    assert_eq!(f.target_image().await, "vllm:v1");

    let err = f.weir(&["undo", "chat", "--to-revision", "3"]).failed();
    assert!(
        err.contains("no ControllerRevision 3 for canary chat; revisions are 1, 2, 4"),
        "{err}"
    );
    assert_eq!(f.target_image().await, "vllm:v1", "unchanged");

    // While a run is in progress, undo drops the canary: stable's template.
    f.status(serde_json::json!({"phase": "Progressing", "canaryRevision": hashes[&1]}))
        .await;
    let out = f.weir(&["undo", "chat"]).ok();
    assert_eq!(f.target_image().await, "vllm:v4");
    assert!(out.contains("withdraws canary revision"), "{out}");

    let history = f.weir(&["history", "chat"]).ok();
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{history}");
    for (row, (number, image)) in rows
        .iter()
        .zip([(1, "vllm:v1"), (2, "vllm:v2"), (4, "vllm:v4")])
    {
        assert!(row.starts_with(&format!("{number} ")), "{row}");
        assert!(
            row.contains(image) && row.contains(&hashes[&number]),
            "{row}"
        );
    }
    assert!(rows[2].ends_with("stable"), "{history}");
    // The same table, but for the ages, which may have ticked meanwhile.
    let without_ages = |table: &str| -> Vec<(String, bool)> {
        table
            .lines()
            .map(|l| {
                (
                    l.split(" (").next().unwrap_or(l).to_string(),
                    l.ends_with("stable"),
                )
            })
            .collect()
    };
    let list = f.weir(&["undo", "chat", "--list"]).ok();
    assert_eq!(without_ages(&list), without_ages(&history), "{list}");
}

#[tokio::test]
async fn status_watch_draws_a_frame_per_change_and_exits_with_the_outcome() {
    let f = Fixture::new("cli-watch").await;
    f.status(progressing()).await;
    let watch = |output: &str| {
        let mut cmd = common::command(&["status", "chat", "-n", f.ns(), "--watch", "-o", output]);
        cmd.env("KUBECONFIG", control_plane().kubeconfig());
        common::spawn_command(&format!("status --watch -o {output}"), cmd)
    };
    let frames = |text: &str| text.matches("Canary chat (namespace").count();

    let mut text = watch("text");
    text.stdout
        .wait_for(DEADLINE, |t| (frames(t) == 1).then_some(()))
        .expect("first frame");
    f.status(serde_json::json!({"phase": "Paused", "pausedReason": "Step", "currentStep": 2}))
        .await;
    text.stdout
        .wait_for(DEADLINE, |t| {
            (frames(t) == 2 && t.contains("▶ 3. pause")).then_some(())
        })
        .unwrap_or_else(|| panic!("second frame:\n{}", text.stdout.text()));
    assert!(text.alive(), "the run has not ended");
    f.status(serde_json::json!({
        "phase": "Aborted",
        "abort": {"reason": "AnalysisFailed", "message": "ttft.p95 +31% beyond margin +10%", "at": jiff::Timestamp::now()}
    }))
    .await;
    let status = text.wait_exit(DEADLINE).expect("exits when the run ends");
    assert_eq!(status.code(), Some(3), "aborted:\n{}", text.stderr.text());
    let out = text.stdout.when_closed(DEADLINE);
    assert_eq!(frames(&out), 3, "{out}");
    assert!(
        out.contains("Aborted:    AnalysisFailed: ttft.p95 +31% beyond margin +10%"),
        "{out}"
    );

    // JSON: one object per change; an inconclusive abort exits 4.
    f.status(progressing()).await;
    let mut json = watch("json");
    json.stdout
        .wait_for(DEADLINE, |t| (t.lines().count() == 1).then_some(()))
        .expect("first object");
    f.status(serde_json::json!({
        "phase": "Aborted",
        "abort": {"reason": "AnalysisInconclusive", "message": "no verdict within maxDuration", "at": jiff::Timestamp::now()}
    }))
    .await;
    let status = json.wait_exit(DEADLINE).expect("exits");
    assert_eq!(status.code(), Some(4), "{}", json.stderr.text());
    let out = json.stdout.when_closed(DEADLINE);
    let phases: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            v["phase"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(phases, ["Progressing", "Aborted"], "{out}");
}

#[tokio::test]
async fn errors_say_what_is_wrong_and_exit_1() {
    let f = Fixture::new("cli-errors").await;
    f.status(progressing()).await;
    let ns = f.ns().to_string();

    for args in [
        &["status", "nope"][..],
        &["abort", "nope"],
        &["undo", "nope"],
    ] {
        let err = f.weir(args).failed();
        assert!(
            err.contains(&format!(
                "no Canary nope in namespace {ns}; `weir get -A` lists them"
            )),
            "{err}"
        );
    }

    let err = common::command(&["get"])
        .env("KUBECONFIG", f.dir.join("absent"))
        .env("HOME", &f.dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .map(Run::from)
        .expect("runs")
        .failed();
    assert!(err.contains("no cluster config"), "{err}");
    assert!(err.contains("KUBECONFIG"), "says where it looked: {err}");

    let err = f.weir(&["get", "--context", "elsewhere"]).failed();
    assert!(
        err.contains("no context elsewhere in the kubeconfig"),
        "{err}"
    );

    let closed = f.kubeconfig("closed", |k| {
        for c in &mut k.clusters {
            if let Some(cluster) = c.cluster.as_mut() {
                cluster.server = Some("https://127.0.0.1:1".into());
            }
        }
    });
    let err = run_with(&closed, &["get", "-n", &ns]).failed();
    assert!(
        err.contains("cannot reach the API server at https://127.0.0.1:1"),
        "{err}"
    );

    // A user with no rights, then one who may read Canaries but not patch them.
    let alice = f.kubeconfig("alice", |k| {
        for a in &mut k.auth_infos {
            if let Some(auth) = a.auth_info.as_mut() {
                auth.impersonate = Some("alice".into());
            }
        }
    });
    let err = run_with(&alice, &["get", "-n", &ns]).failed();
    assert!(
        err.contains(&format!(
            "forbidden: you may not list canaries.weir.dev in namespace {ns}"
        )),
        "{err}"
    );
    let rbac = f.dir.join("rbac.json");
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "canary-reader"},
         "rules": [{"apiGroups": ["weir.dev"], "resources": ["canaries"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "alice-reads"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "canary-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}
    ]});
    std::fs::write(&rbac, objects.to_string()).expect("write rbac");
    let applied = control_plane()
        .command("kubectl")
        .args(["apply", "-n", &ns, "-f"])
        .arg(&rbac)
        .output()
        .expect("kubectl runs");
    assert!(applied.status.success(), "{applied:?}");
    let (config, namespace) = (alice.clone(), ns.clone());
    until("alice's role to take effect", DEADLINE, move || {
        let run = run_with(&config, &["get", "-n", &namespace]);
        async move { (run.code == Some(0)).then_some(()) }
    })
    .await;
    // Reading status works without rights on Deployments and Events.
    let out = run_with(&alice, &["status", "chat", "-n", &ns]).ok();
    assert!(out.contains("▶ 2. analysis"), "{out}");
    let err = run_with(&alice, &["abort", "chat", "-n", &ns]).failed();
    assert!(
        err.contains(&format!(
            "forbidden: you may not patch canaries.weir.dev in namespace {ns}"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_weir_is_weir_through_a_symlink() {
    let f = Fixture::new("cli-plugin").await;
    f.status(progressing()).await;
    let plugin = f.dir.join("kubectl-weir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weir"), &plugin).expect("symlink");

    let run = |args: &[&str]| -> Run {
        std::process::Command::new(&plugin)
            .args(args)
            .env("KUBECONFIG", control_plane().kubeconfig())
            .output()
            .expect("kubectl-weir runs")
            .into()
    };
    let out = run(&["get", "-n", f.ns()]).ok();
    assert!(
        out.lines()
            .any(|l| l.starts_with("chat ") && l.contains("Progressing")),
        "{out}"
    );
    let help = run(&["--help"]).ok();
    assert!(help.contains("Usage: kubectl weir"), "{help}");
    let err = run(&["status", "nope", "-n", f.ns()]).failed();
    assert!(err.contains("`kubectl weir get -A` lists them"), "{err}");

    // And found by kubectl itself, as a plugin on PATH.
    let path = format!(
        "{}:{}",
        f.dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out: Run = control_plane()
        .command("kubectl")
        .args(["weir", "get", "-n", f.ns()])
        .env("PATH", path)
        .output()
        .expect("kubectl runs")
        .into();
    let out = out.ok();
    assert!(
        out.lines()
            .any(|l| l.starts_with("chat ") && l.contains("20%")),
        "{out}"
    );
}
