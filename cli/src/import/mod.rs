//! `weir import FILE`: an Argo Rollouts `Rollout` (with its
//! `AnalysisTemplate`s) or a Flagger `Canary` (with its `MetricTemplate`s),
//! from a file or a directory of files, printed as a weir `Canary`.
//!
//! Every source field is accounted for: carried over as it was, carried
//! over with a comment saying how its meaning changed, or listed in a
//! comment as not carried over with the weir alternative (then the exit
//! code is 3). The mapping is pure ([`convert`]: documents in, Canaries and
//! notes out; [`argo`], [`flagger`], the checks in `checks`); this module's
//! [`run`] only reads files and prints. Every Canary is checked with the
//! controller's own spec validation before it is printed, so what is
//! printed is what the controller would run.

pub mod argo;
mod checks;
pub mod flagger;
pub mod notes;
pub mod source;
pub mod yaml;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use weir_controller::engine::{Rollout, SpecError};
use weir_crds::{Canary, CanarySpec, ServicePort, TargetRef};
use weir_proxy::config::file::{MAX_CONFIG_BYTES, read_bounded_text};

use crate::exit::Code;
use notes::{Notes, Severity};
use source::Document;

/// weir's default warm-up (`spec.analysis.warmup`), which the import keeps.
pub(crate) const WARMUP: &str = "60s";

/// Placeholder port when the input does not say one.
const GUESSED_PORT: u16 = 8000;

/// `weir import`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A YAML file, or a directory of YAML files, holding Argo Rollouts
    /// Rollouts and AnalysisTemplates or Flagger Canaries and
    /// MetricTemplates (other kinds are ignored).
    pub path: PathBuf,
    /// The port the frontend serves on, when the input does not say it
    /// (an Argo Rollout with workloadRef whose Deployment is not in the input).
    #[arg(long)]
    pub port: Option<u16>,
}

/// What stops an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not YAML.
    #[error("{file}: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A source field has the wrong type or shape.
    #[error("{field}: {problem}")]
    Field {
        /// Path of the field in the source resource.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The problem is in this resource.
    #[error("{kind} {name} in {file}: {source}")]
    In {
        /// The source kind.
        kind: String,
        /// Its name.
        name: String,
        /// Its file.
        file: String,
        /// The problem.
        source: Box<ImportError>,
    },
    /// Nothing to convert in the input.
    #[error(
        "{path}: no Argo Rollouts Rollout (argoproj.io) or Flagger Canary (flagger.app) \
         found{found}"
    )]
    Nothing {
        /// The input path.
        path: String,
        /// The kinds that were there, as ` (found: A, B)`.
        found: String,
    },
    /// The converted Canary would be refused by the controller.
    #[error(
        "the weir Canary made from {name} would be refused ({source}); change the source resource, \
         or convert by hand with docs/migrating.md"
    )]
    Unrunnable {
        /// The resource's name.
        name: String,
        /// The controller's objection.
        source: SpecError,
    },
}

/// The whole input: every document of every file, for looking up the
/// templates and Deployments a resource refers to.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The documents.
    pub docs: &'a [Document],
}

impl<'a> Input<'a> {
    /// The document of `kind` in API group `group` named `name`.
    pub fn find(&self, group: &str, kind: &str, name: &str) -> Option<&'a Document> {
        self.docs
            .iter()
            .find(|d| d.is(group, kind) && d.name() == name)
    }

    /// The first container port of Deployment `name`, if it is in the input.
    pub fn deployment_port(&self, name: &str) -> Option<u16> {
        let d = self.find("apps", "Deployment", name)?;
        let port =
            d.value["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
                .as_u64()?;
        u16::try_from(port).ok()
    }
}

/// A Canary being built by one of the converters.
#[derive(Debug)]
pub struct Draft {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when the source has one.
    pub namespace: Option<String>,
    /// The spec so far (weir's defaults where the source said nothing).
    pub spec: CanarySpec,
    /// The frontend's port, when the source says it.
    pub port: Option<u16>,
}

impl Draft {
    /// A draft named like `doc`, with weir's defaults.
    pub fn new(doc: &Document) -> Draft {
        // The defaults come from the CRD types' own serde defaults, so they
        // are defined once.
        let spec = serde_json::from_value(serde_json::json!({
            "strategy": {},
            "analysis": {"metrics": [], "warmup": WARMUP},
        }))
        .unwrap_or_else(|e| unreachable!("weir's default CanarySpec: {e}"));
        Draft {
            name: doc.name().to_string(),
            namespace: doc.value["metadata"]["namespace"]
                .as_str()
                .map(String::from),
            spec,
            port: None,
        }
    }

    /// Points the draft at Deployment `name`.
    pub fn target(&mut self, name: &str) {
        self.spec.target_ref = Some(TargetRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
        });
    }
}

/// One converted resource.
#[derive(Debug)]
pub struct Converted {
    /// The weir Canary.
    pub canary: Canary,
    /// How the source's fields fared.
    pub notes: Notes,
    /// What it was made from, e.g. `Argo Rollouts Rollout llm/chat in rollout.yaml`.
    pub from: String,
}

/// Converts every Argo Rollout and Flagger Canary of `docs`. `port`
/// overrides the port found in the input.
///
/// # Errors
/// The first resource that cannot be converted, naming it and the field.
pub fn convert(docs: &[Document], port: Option<u16>) -> Result<Vec<Converted>, ImportError> {
    let input = Input { docs };
    let mut out = Vec::new();
    for doc in docs {
        let (tool, result) = if argo::is_rollout(doc) {
            let mut notes = Notes::default();
            (
                "Argo Rollouts",
                argo::convert(doc, &input, &mut notes).map(|d| (d, notes)),
            )
        } else if flagger::is_canary(doc) {
            let mut notes = Notes::default();
            (
                "Flagger",
                flagger::convert(doc, &input, &mut notes).map(|d| (d, notes)),
            )
        } else {
            continue;
        };
        let wrap = |e: ImportError| ImportError::In {
            kind: doc.kind().to_string(),
            name: doc.name().to_string(),
            file: doc.file.clone(),
            source: Box::new(e),
        };
        let (draft, mut notes) = result.map_err(wrap)?;
        let canary = finish(draft, port, &mut notes).map_err(wrap)?;
        let ns = doc.value["metadata"]["namespace"]
            .as_str()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        out.push(Converted {
            canary,
            notes,
            from: format!("{tool} {} {ns}{} in {}", doc.kind(), doc.name(), doc.file),
        });
    }
    Ok(out)
}

/// The port, the Canary object, and the controller's verdict on it.
fn finish(mut draft: Draft, port: Option<u16>, notes: &mut Notes) -> Result<Canary, ImportError> {
    if draft.name.is_empty() {
        return Err(ImportError::Field {
            field: "metadata.name".into(),
            problem: "is missing; the weir Canary takes the resource's name".into(),
        });
    }
    let port = match port.or(draft.port) {
        Some(p) => p,
        None => {
            notes.dropped(
                "spec.service.port",
                "spec",
                format!(
                    "the input does not say which port the frontend serves on; {GUESSED_PORT} is a \
                     guess: correct it, or run weir import --port N (or include the Deployment in \
                     the input)"
                ),
            );
            GUESSED_PORT
        }
    };
    draft.spec.service = Some(ServicePort { port });
    Rollout::new(&draft.name, &draft.spec).map_err(|source| ImportError::Unrunnable {
        name: draft.name.clone(),
        source,
    })?;
    let mut canary = Canary::new(&draft.name, draft.spec);
    canary.metadata.namespace = draft.namespace;
    Ok(canary)
}

/// The Canary as a YAML document with a comment on every field the notes
/// concern, and a header saying where it came from.
pub fn render(c: &Converted) -> String {
    let mut value = serde_json::to_value(&c.canary).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("status");
    }
    let mut comments = yaml::Comments::new();
    let changed = c
        .notes
        .0
        .iter()
        .filter(|n| n.severity == Severity::Changed)
        .count();
    let dropped = c.notes.0.len() - changed;
    comments.entry(String::new()).or_default().extend([
        format!("Converted by weir import from {}.", c.from),
        format!(
            "{changed} field(s) carried over with a new meaning and {dropped} not carried over: \
             see the comments below, and docs/migrating.md."
        ),
    ]);
    for note in &c.notes.0 {
        let at = existing(&value, &note.at);
        comments.entry(at).or_default().push(note.comment());
    }
    yaml::render(&value, &comments)
}

/// `path` if the value has it, else its nearest ancestor that it has (a
/// note on a field weir left at its default still shows, one level up).
fn existing(value: &Value, path: &str) -> String {
    let mut path = path.to_string();
    loop {
        if lookup(value, &path).is_some() || path.is_empty() {
            return path;
        }
        let cut = path.rfind(['.', '[']).unwrap_or(0);
        path.truncate(cut);
    }
}

fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut v = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        v = v.get(key)?;
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            v = v.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// Reads `path` (a file, or the YAML and JSON files of a directory).
///
/// # Errors
/// A file that cannot be read or parsed.
pub fn read(path: &Path) -> Result<Vec<Document>, ImportError> {
    let read_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| ImportError::Read { path, source }
    };
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in files {
        let text =
            read_bounded_text(&file, MAX_CONFIG_BYTES, "any manifest").map_err(read_err(&file))?;
        docs.extend(source::documents(&file.display().to_string(), &text)?);
    }
    Ok(docs)
}

/// Runs `weir import`: prints each Canary; exit 3 when a field could not
/// be carried over.
pub fn run(args: &Args) -> anyhow::Result<Code> {
    let docs = read(&args.path)?;
    let converted = convert(&docs, args.port)?;
    if converted.is_empty() {
        let mut kinds: Vec<String> = docs
            .iter()
            .map(|d| match d.group() {
                "" => d.kind().to_string(),
                group => format!("{} ({group})", d.kind()),
            })
            .collect();
        kinds.dedup();
        let found = if kinds.is_empty() {
            String::new()
        } else {
            format!(" (found: {})", kinds.join(", "))
        };
        return Err(ImportError::Nothing {
            path: args.path.display().to_string(),
            found,
        })
        .context("nothing to import");
    }
    let documents: Vec<String> = converted.iter().map(render).collect();
    print!("{}", documents.join("---\n"));
    let dropped: usize = converted
        .iter()
        .map(|c| {
            c.notes
                .0
                .iter()
                .filter(|n| n.severity == Severity::Dropped)
                .count()
        })
        .sum();
    if dropped > 0 {
        eprintln!(
            "weir import: {dropped} field(s) could not be carried over; each has a comment in the \
             output with the weir alternative"
        );
        return Ok(Code::Aborted);
    }
    Ok(Code::Success)
}
