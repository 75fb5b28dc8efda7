//! The bundle file: what it holds, its canonical form and checksum, and
//! reading it back with errors that name the line and the field.
//!
//! ```yaml
//! apiVersion: weir.dev/v1alpha1
//! kind: Bundle
//! checksum: sha256:…          # of the canonical JSON of everything below but exportedAt
//! exportedAt: 2025-06-01T12:00:00Z
//! secrets: names               # or included (--include-secrets)
//! references:                  # objects restore checks for but does not hold
//! - {kind: Secret, namespace: llm, name: hf-token, usedBy: [Deployment/chat-frontend]}
//! objects:                     # canonical order: namespace, kind, name
//! - {apiVersion: v1, kind: ConfigMap, …}
//! ```
//!
//! Canonical JSON: object keys sorted at every depth, no white space. The
//! checksum covers the format version too, so a bundle cannot be
//! re-labelled; `exportedAt` is left out so that two exports of the same
//! state carry the same checksum.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::refs::RefKind;
use super::{Key, Kind};

/// The bundle format this weir writes and reads.
pub const API_VERSION: &str = "weir.dev/v1alpha1";
/// The bundle's `kind`.
pub const KIND: &str = "Bundle";

/// The first lines of every bundle file.
const HEADER: &str = "\
# A weir bundle: Canaries with their Deployments, Services, history and
# configuration, written by `weir export`. Restore with
# `weir restore -f FILE`. The checksum covers every field but exportedAt:
# an edited bundle is refused.
";

/// Whether Secrets are in the bundle or only named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Secrets {
    /// Names only, under `references` (the default).
    Names,
    /// In full, under `objects` (`--include-secrets`).
    Included,
}

/// An object the bundle does not hold but its pod templates need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reference {
    /// Its kind.
    pub kind: RefKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Every use is `optional: true` (pods start without it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// The bundled objects that use it (`Deployment/chat-frontend`).
    pub used_by: Vec<String>,
}

/// A bundle's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// When it was written (RFC 3339; not covered by the checksum).
    pub exported_at: Option<String>,
    /// Whether Secrets are held or only named.
    pub secrets: Secrets,
    /// Objects needed but not held, in canonical order.
    pub references: Vec<Reference>,
    /// The objects, stripped, in canonical order with sorted keys.
    pub objects: Vec<Value>,
}

impl Bundle {
    /// A bundle of `objects` (already stripped) in canonical form:
    /// objects sorted by namespace, kind and name, keys sorted, each
    /// object once; references sorted, each once, their users merged.
    pub fn new(
        objects: Vec<Value>,
        references: Vec<Reference>,
        secrets: Secrets,
        exported_at: Option<String>,
    ) -> Bundle {
        let mut keyed: BTreeMap<(String, Kind, String), Value> = BTreeMap::new();
        for o in objects {
            let key = Key::of(&o).map_or_else(
                || (String::new(), Kind::ConfigMap, String::new()),
                |k| (k.namespace, k.kind, k.name),
            );
            keyed.insert(key, canonical(o));
        }
        let mut merged: BTreeMap<(String, RefKind, String), Reference> = BTreeMap::new();
        for r in references {
            let key = (r.namespace.clone(), r.kind, r.name.clone());
            match merged.get_mut(&key) {
                Some(m) => {
                    m.optional &= r.optional;
                    m.used_by.extend(r.used_by);
                }
                None => {
                    merged.insert(key, r);
                }
            }
        }
        let references = merged
            .into_values()
            .map(|mut r| {
                r.used_by.sort();
                r.used_by.dedup();
                r
            })
            .collect();
        Bundle {
            exported_at,
            secrets,
            references,
            objects: keyed.into_values().collect(),
        }
    }

    /// `sha256:<hex>` of the canonical JSON of everything but
    /// `exportedAt`.
    pub fn checksum(&self) -> String {
        let covered = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "secrets": self.secrets,
            "references": self.references,
            "objects": self.objects,
        });
        let text = canonical(covered).to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The namespaces of its objects, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .objects
            .iter()
            .filter_map(Key::of)
            .map(|k| k.namespace)
            .chain(self.references.iter().map(|r| r.namespace.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The file: a comment, then the bundle as YAML with its checksum.
    ///
    /// # Errors
    /// The YAML writer failed (it does not for JSON values).
    pub fn to_yaml(&self) -> Result<String> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct File<'a> {
            api_version: &'a str,
            kind: &'a str,
            checksum: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            exported_at: Option<&'a str>,
            secrets: Secrets,
            references: &'a [Reference],
            objects: &'a [Value],
        }
        let file = File {
            api_version: API_VERSION,
            kind: KIND,
            checksum: self.checksum(),
            exported_at: self.exported_at.as_deref(),
            secrets: self.secrets,
            references: &self.references,
            objects: &self.objects,
        };
        let body = serde_saphyr::to_string(&file)
            .map_err(|e| anyhow!("cannot write the bundle as YAML: {e}"))?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Reads a bundle file and checks it: the format version, every
    /// object's kind, apiVersion, name and namespace, no object twice,
    /// and the checksum.
    ///
    /// # Errors
    /// A message naming the line and the field, and the fix.
    pub fn parse(text: &str) -> Result<Bundle> {
        let raw: Raw = serde_saphyr::from_str(text).map_err(|e| {
            anyhow!("not a weir bundle: {e}; a bundle is the file `weir export` writes")
        })?;
        let at = |s: &serde_saphyr::Location| format!("line {}", s.line());
        match &raw.api_version {
            Some(v) if v.value == API_VERSION => {}
            Some(v) => bail!(
                "{}: apiVersion: {} is not a bundle format this weir reads ({API_VERSION}); \
                 restore it with the weir that wrote it, or export again with this one",
                at(&v.referenced),
                v.value
            ),
            None => bail!(
                "apiVersion: missing; a bundle starts with `apiVersion: {API_VERSION}` and \
                 `kind: {KIND}` (it is the file `weir export` writes)"
            ),
        }
        match &raw.kind {
            Some(k) if k.value == KIND => {}
            Some(k) => bail!(
                "{}: kind: {} is not {KIND}; `weir restore` takes the file `weir export` \
                 writes (apply a manifest with kubectl apply)",
                at(&k.referenced),
                k.value
            ),
            None => bail!("kind: missing; a bundle says `kind: {KIND}`"),
        }
        unknown_fields(text)?;
        let Some(claimed) = raw.checksum else {
            bail!("checksum: missing; a bundle carries the checksum `weir export` wrote")
        };
        let secrets = match raw.secrets {
            None => Secrets::Names,
            Some(s) => match s.value.as_str() {
                "names" => Secrets::Names,
                "included" => Secrets::Included,
                other => bail!(
                    "{}: secrets: {other} is neither `names` nor `included`",
                    at(&s.referenced)
                ),
            },
        };
        let mut references = Vec::new();
        for (i, r) in raw.references.into_iter().enumerate() {
            let line = at(&r.referenced);
            let reference: Reference = serde_json::from_value(r.value).map_err(|e| {
                anyhow!(
                    "{line}: references[{i}]: {e}; a reference is \
                     {{kind: ConfigMap|Secret|ServiceAccount|PersistentVolumeClaim, namespace, name, usedBy}}"
                )
            })?;
            references.push(reference);
        }
        let mut objects = Vec::new();
        let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
        for (i, o) in raw.objects.into_iter().enumerate() {
            let key =
                check_object(i, &o.value).map_err(|e| anyhow!("{}: {e}", at(&o.referenced)))?;
            if let Some(first) = seen.insert(key.clone(), i) {
                bail!(
                    "{}: objects[{i}]: {key} is also objects[{first}]; a bundle holds each object once",
                    at(&o.referenced)
                );
            }
            objects.push(o.value);
        }
        let bundle = Bundle::new(objects, references, secrets, raw.exported_at);
        let actual = bundle.checksum();
        if claimed.value != actual {
            bail!(
                "checksum mismatch: the bundle says {} but its content hashes to {actual}; it was \
                 changed after `weir export` wrote it. Restore the file as exported, or export again",
                claimed.value
            );
        }
        Ok(bundle)
    }
}

/// The file as read, before any check. Unknown fields are looked for
/// after the format version (see [`unknown_fields`]): a Kubernetes
/// manifest given by mistake gets "not a bundle", not "unknown field
/// metadata".
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    checksum: Option<Spanned<String>>,
    exported_at: Option<String>,
    secrets: Option<Spanned<String>>,
    #[serde(default)]
    references: Vec<Spanned<Value>>,
    #[serde(default)]
    objects: Vec<Spanned<Value>>,
}

/// The top-level fields of a bundle.
const FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "checksum",
    "exportedAt",
    "secrets",
    "references",
    "objects",
];

/// Refuses a top-level field a bundle does not have.
fn unknown_fields(text: &str) -> Result<()> {
    let top: BTreeMap<String, Spanned<serde::de::IgnoredAny>> =
        serde_saphyr::from_str(text).map_err(|e| anyhow!("not a weir bundle: {e}"))?;
    for (field, at) in top {
        if !FIELDS.contains(&field.as_str()) {
            bail!(
                "line {}: {field}: not a bundle field (a bundle has {}); remove it, or export again",
                at.referenced.line(),
                FIELDS.join(", ")
            );
        }
    }
    Ok(())
}

/// Checks object `i` of a bundle; its key when it is one a restore can
/// apply.
fn check_object(i: usize, object: &Value) -> Result<Key> {
    let field = |path: &str| object.pointer(path).and_then(Value::as_str);
    let Some(kind_name) = field("/kind") else {
        bail!("objects[{i}].kind: missing; every object names its kind")
    };
    let Some(kind) = Kind::parse(kind_name) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        bail!(
            "objects[{i}].kind: {kind_name} is not a kind a bundle holds ({}); remove it, or \
             export again with this weir",
            known.join(", ")
        )
    };
    let api_version = field("/apiVersion").unwrap_or_default();
    if api_version != kind.api_version() {
        bail!(
            "objects[{i}].apiVersion: {kind} {api_version:?} is not what this weir restores ({}); \
             export again with this weir",
            kind.api_version()
        );
    }
    for f in ["name", "namespace"] {
        if field(&format!("/metadata/{f}")).is_none_or(str::is_empty) {
            bail!("objects[{i}].metadata.{f}: missing on this {kind}");
        }
    }
    Key::of(object).ok_or_else(|| anyhow!("objects[{i}]: no kind, namespace or name"))
}

/// `value` with the keys of every object sorted (whatever order the JSON
/// map type keeps).
pub fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect::<Map<String, Value>>())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, api_version: &str, ns: &str, name: &str, extra: Value) -> Value {
        let mut o = json!({"apiVersion": api_version, "kind": kind,
                           "metadata": {"name": name, "namespace": ns}});
        if let (Some(o), Value::Object(extra)) = (o.as_object_mut(), extra) {
            o.extend(extra);
        }
        o
    }

    fn sample() -> Bundle {
        Bundle::new(
            vec![
                object(
                    "Service",
                    "v1",
                    "llm",
                    "chat-stable",
                    json!({"spec": {"ports": [{"port": 8000}]}}),
                ),
                object(
                    "Canary",
                    "weir.dev/v1alpha1",
                    "llm",
                    "chat",
                    json!({"status": {"phase": "Paused", "currentStep": 1, "canaryWeight": 25}}),
                ),
                object(
                    "ConfigMap",
                    "v1",
                    "llm",
                    "tricky",
                    json!({"data": {
                        "yes": "yes", "on": "on", "zero": "0123", "exp": "1e3", "null": "null",
                        "empty": "", "tilde": "~", "n": "n", "y": "Y", "off": "Off", "octal": "0o17", "float": "1.0", "multi": "line one\nline two\n", "colon": "a: b",
                        "unicode": "métrique ▶", "quote": "it's \"quoted\"", "hash": "# not a comment"}}),
                ),
                object(
                    "Deployment",
                    "apps/v1",
                    "llm",
                    "chat-frontend",
                    json!({"spec": {"replicas": 0, "template": {"metadata": {"labels": {"app": "chat"}}}}}),
                ),
                object(
                    "Canary",
                    "weir.dev/v1alpha1",
                    "a-first",
                    "x",
                    json!({"spec": {"analysis": {"confidence": 0.95}}}),
                ),
            ],
            vec![
                Reference {
                    kind: RefKind::Secret,
                    namespace: "llm".into(),
                    name: "hf-token".into(),
                    optional: false,
                    used_by: vec!["Deployment/chat-frontend-stable".into()],
                },
                Reference {
                    kind: RefKind::Secret,
                    namespace: "llm".into(),
                    name: "hf-token".into(),
                    optional: true,
                    used_by: vec!["Deployment/chat-frontend".into()],
                },
            ],
            Secrets::Names,
            Some("2025-06-01T12:00:00Z".into()),
        )
    }

    fn keys(b: &Bundle) -> Vec<String> {
        b.objects
            .iter()
            .filter_map(Key::of)
            .map(|k| k.to_string())
            .collect()
    }

    #[test]
    fn objects_are_ordered_by_namespace_kind_and_name_and_references_merged() {
        let b = sample();
        assert_eq!(
            keys(&b),
            [
                "Canary a-first/x",
                "ConfigMap llm/tricky",
                "Deployment llm/chat-frontend",
                "Canary llm/chat",
                "Service llm/chat-stable",
            ]
        );
        assert_eq!(b.references.len(), 1);
        assert_eq!(
            b.references[0].used_by,
            [
                "Deployment/chat-frontend",
                "Deployment/chat-frontend-stable"
            ]
        );
        assert!(!b.references[0].optional, "one use requires it");
        assert_eq!(b.namespaces(), ["a-first", "llm"]);
    }

    #[test]
    fn the_checksum_ignores_input_order_and_export_time_but_not_content() {
        let b = sample();
        let mut shuffled = b.objects.clone();
        shuffled.reverse();
        let again = Bundle::new(
            shuffled,
            b.references.clone(),
            Secrets::Names,
            Some("2030-01-01T00:00:00Z".into()),
        );
        assert_eq!(b.checksum(), again.checksum());
        assert!(b.checksum().starts_with("sha256:") && b.checksum().len() == 7 + 64);

        let mut changed = b.clone();
        changed.objects[3]["status"]["currentStep"] = json!(2);
        assert_ne!(b.checksum(), changed.checksum(), "status is covered");
        let mut relabelled = b.clone();
        relabelled.secrets = Secrets::Included;
        assert_ne!(
            b.checksum(),
            relabelled.checksum(),
            "the secrets mode is covered"
        );
    }

    #[test]
    fn a_bundle_survives_its_yaml_exactly() {
        let b = sample();
        let text = b.to_yaml().expect("yaml");
        assert!(text.starts_with("# A weir bundle"), "{text}");
        let back = Bundle::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        assert_eq!(back, b);
        assert_eq!(back.to_yaml().expect("yaml"), text, "byte for byte");
    }

    #[test]
    fn bad_bundles_are_refused_naming_the_line_and_the_field() {
        let good = sample().to_yaml().expect("yaml");
        let cases: Vec<(&str, String, &[&str])> = vec![
            (
                "not YAML",
                "objects: [unclosed\n".into(),
                &["not a weir bundle", "line"],
            ),
            (
                "a manifest, not a bundle",
                "apiVersion: apps/v1\nkind: Deployment\n".into(),
                &["line 1", "apiVersion: apps/v1", "weir.dev/v1alpha1"],
            ),
            (
                "a newer format",
                good.replace(
                    "apiVersion: weir.dev/v1alpha1\nkind: Bundle",
                    "apiVersion: weir.dev/v2\nkind: Bundle",
                ),
                &["apiVersion: weir.dev/v2", "export again"],
            ),
            (
                "an unknown top-level field",
                good.replace("kind: Bundle\n", "kind: Bundle\nextra: 1\n"),
                &["line 7: extra: not a bundle field"],
            ),
            (
                "an unknown kind",
                good.replace("kind: Service", "kind: Pod"),
                &[
                    "objects[4].kind: Pod is not a kind",
                    "ConfigMap, Secret, Deployment",
                ],
            ),
            (
                "a wrong apiVersion",
                good.replace("apiVersion: apps/v1", "apiVersion: apps/v1beta1"),
                &["objects[2].apiVersion", "apps/v1"],
            ),
            (
                "an edited object",
                good.replace("currentStep: 1", "currentStep: 0"),
                &[
                    "checksum mismatch",
                    "the bundle says sha256:",
                    "hashes to sha256:",
                ],
            ),
            (
                "no checksum",
                good.lines()
                    .filter(|l| !l.starts_with("checksum:"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                &["checksum: missing"],
            ),
        ];
        for (what, text, needles) in cases {
            let err = format!("{:#}", Bundle::parse(&text).expect_err(what));
            for n in needles {
                assert!(err.contains(n), "{what}: {err:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn the_line_of_a_bad_object_is_named() {
        let text = "apiVersion: weir.dev/v1alpha1\nkind: Bundle\nchecksum: sha256:0\nobjects:\n\
                    - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a, namespace: ns1}\n\
                    - apiVersion: v1\n  kind: Pod\n  metadata: {name: b, namespace: ns1}\n";
        let err = format!("{:#}", Bundle::parse(text).expect_err("a Pod"));
        assert!(err.starts_with("line 8: objects[1].kind: Pod"), "{err}");
    }
}
