//! The container image `image/build` writes, checked the way a cluster
//! would use it: its root file system unpacked and its entrypoint run in a
//! chroot as uid 65532, with only the image's environment.
//!
//! The image is built from this test build's `weir` binary (the one cargo
//! already compiled for the other tests), so the suite pays for strip and
//! gzip only, not a release build. A release binary is smaller, so the size
//! bound checked here holds for it too.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use weir_test_kit::poll;

/// The bound on the compressed image.
const MAX_COMPRESSED: u64 = 40 * 1024 * 1024;
/// The user every process of the image runs as.
const NONROOT: u32 = 65532;

/// A directory removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The blob a descriptor (`{"digest": "sha256:..."}`) points at.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"]
        .as_str()
        .expect("a descriptor's digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The image as its OCI layout describes it.
struct Image {
    config: Value,
    layer: PathBuf,
}

fn open(layout: &Path) -> Image {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json: manifests");
    assert_eq!(manifests.len(), 1, "one image in the layout");
    let manifest = read_json(&blob(layout, &manifests[0]));
    let layers = manifest["layers"].as_array().expect("manifest: layers");
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
        "a gzip layer"
    );
    let layer = blob(layout, &layers[0]);
    let size = std::fs::metadata(&layer).expect("the layer blob").len();
    assert_eq!(
        Some(size),
        layers[0]["size"].as_u64(),
        "the manifest's layer size"
    );
    Image {
        config: read_json(&blob(layout, &manifest["config"])),
        layer,
    }
}

/// Runs `args` in `root` as 65532:65532 with only the image's `Env`. As
/// root: `chroot --userspec`, a real uid 65532. Otherwise in a user
/// namespace that maps the caller to 65532 (`unshare --map-user`).
fn as_nonroot(root: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let caller = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    let mut cmd = if caller == 0 {
        let mut c = Command::new(host_tool("chroot"));
        c.arg(format!("--userspec={NONROOT}:{NONROOT}")).arg(root);
        c
    } else {
        let mut c = Command::new(host_tool("unshare"));
        c.args(["--user", "--map-user=65532", "--map-group=65532"])
            .arg(format!("--root={}", root.display()));
        c
    };
    cmd.args(args).env_clear().envs(env.iter().cloned());
    cmd
}

/// `tool` found on this host's PATH: the command itself runs with the
/// image's environment only, whose PATH is the image's.
fn host_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not installed (Debian: coreutils / util-linux)"))
}

#[test]
fn image_runs_weir_as_nonroot_without_a_shell() {
    let scratch = Scratch::new("image");
    let layout = scratch.0.join("out/oci");
    let build = run(Command::new(repo_root().join("image/build"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg("--out")
        .arg(scratch.0.join("out")));
    eprintln!("{}", String::from_utf8_lossy(&build.stdout));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        scratch.0.join(format!("out/weir-{version}.tar")).is_file(),
        "the docker load archive"
    );

    let image = open(&layout);
    let compressed = std::fs::metadata(&image.layer).expect("layer").len();
    eprintln!(
        "compressed image layer: {compressed} bytes ({:.1} MiB)",
        compressed as f64 / 1048576.0
    );
    assert!(
        compressed < MAX_COMPRESSED,
        "image is {compressed} bytes compressed, over 40 MiB"
    );

    // What a runtime reads from the config.
    let config = &image.config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/weir"])
    );
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/weir-dev/weir"
    );
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .expect("config Env")
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let root = scratch.0.join("rootfs");
    std::fs::create_dir_all(&root).expect("rootfs dir");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&image.layer)
        .arg("-C")
        .arg(&root));

    // Only the binary, the libraries it links, the CA bundle and the user
    // database: no shell, no package manager, nothing else to exec.
    let files = regular_files(&root);
    let mut rest: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    for expected in [
        "usr/local/bin/weir",
        "etc/passwd",
        "etc/group",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(rest.remove(expected), "{expected} missing from {files:?}");
    }
    for lib in &rest {
        let name = lib.rsplit('/').next().unwrap_or(lib);
        assert!(
            (lib.starts_with("lib") || lib.starts_with("usr/lib")) && name.contains(".so"),
            "unexpected file {lib} in the image"
        );
    }
    for shell in [
        "bin/sh",
        "bin/bash",
        "usr/bin/sh",
        "bin/busybox",
        "usr/bin/env",
    ] {
        assert!(!root.join(shell).exists(), "{shell} exists in the image");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "no 65532 entry in /etc/passwd: {passwd}"
    );
    let home = std::fs::metadata(root.join("home/nonroot")).expect("/home/nonroot");
    if std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0 {
        assert_eq!(home.uid(), NONROOT, "/home/nonroot belongs to nonroot");
    }

    // The chart runs `command: [weir]`: found through the image's PATH.
    let out = run(&mut as_nonroot(&root, &env, &["weir", "--version"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("weir {version}")
    );
    let out = run(&mut as_nonroot(
        &root,
        &env,
        &["weir", "controller", "--help"],
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage: weir controller"),
        "controller --help: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A shell is not there to be run, even by a path an attacker might try.
    let sh = as_nonroot(&root, &env, &["/bin/sh", "-c", "id"])
        .stdin(Stdio::null())
        .output()
        .expect("running chroot");
    assert!(!sh.status.success(), "/bin/sh ran in the image");

    // A long-running weir in the image: every uid and gid of the process
    // (real, effective, saved, filesystem) is 65532.
    let mut sim = as_nonroot(&root, &env, &["weir", "sim", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting weir sim in the image");
    let status = format!("/proc/{}/status", sim.id());
    // chroot (or unshare) execs weir in the same process: wait for the exec.
    let ids = poll::until_blocking("weir to run in the image", Duration::from_secs(30), || {
        let exe =
            std::fs::read_link(format!("/proc/{}/exe", sim.id())).map_err(|e| e.to_string())?;
        if !exe.ends_with("usr/local/bin/weir") {
            return Err(format!("exe is {}", exe.display()));
        }
        std::fs::read_to_string(&status).map_err(|e| e.to_string())
    });
    let _ = sim.kill();
    let _ = sim.wait();
    for key in ["Uid:", "Gid:"] {
        let line = ids
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {status}"));
        let values: Vec<&str> = line.split_whitespace().skip(1).collect();
        if std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0 {
            assert_eq!(values, ["65532"; 4], "{line}: weir must not run as root");
        } else {
            // In a user namespace the host sees the caller's own ids.
            assert!(values.iter().all(|v| *v != "0"), "{line}: runs as root");
        }
    }
}

/// Paths of everything under `root` that is not a directory (files,
/// symlinks), relative to it.
fn regular_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading the rootfs") {
            let entry = entry.expect("a rootfs entry");
            let meta = entry.path().symlink_metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}
