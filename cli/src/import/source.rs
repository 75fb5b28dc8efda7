//! Reading the source resources: YAML documents as JSON values, and [`Obj`],
//! a view of one object that remembers which keys the mapping read, so that
//! every field nobody read becomes a "not carried over" note instead of
//! vanishing silently. Wrong types are errors naming the source field.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::ImportError;

/// One YAML document of the input, with the file it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file, for messages.
    pub file: String,
    /// The document.
    pub value: Value,
}

impl Document {
    /// `apiVersion`'s group (`argoproj.io`), or "" for the core group.
    pub fn group(&self) -> &str {
        let api = self.value["apiVersion"].as_str().unwrap_or_default();
        api.rsplit_once('/').map(|(g, _)| g).unwrap_or_default()
    }

    /// `kind`, or "".
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`, or "".
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// Whether this is `kind` of API group `group`.
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group() == group && self.kind() == kind
    }
}

/// Splits a file's text into its documents (empty ones skipped).
///
/// # Errors
/// [`ImportError::Yaml`] naming the file.
pub fn documents(file: &str, text: &str) -> Result<Vec<Document>, ImportError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ImportError::Yaml {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    Ok(values
        .into_iter()
        .filter(|v| !v.is_null())
        .map(|value| Document {
            file: file.to_string(),
            value,
        })
        .collect())
}

/// One object of a source resource, at `path` (e.g.
/// `spec.strategy.canary`), with the keys read so far.
#[derive(Debug)]
pub struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    used: RefCell<BTreeSet<String>>,
}

fn wrong(path: &str, expected: &str, got: &Value) -> ImportError {
    let got = match got {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    };
    ImportError::Field {
        field: path.to_string(),
        problem: format!("is {got}; expected {expected}"),
    }
}

impl<'a> Obj<'a> {
    /// `value` as an object at `path`.
    ///
    /// # Errors
    /// When `value` is not a map.
    pub fn new(path: impl Into<String>, value: &'a Value) -> Result<Obj<'a>, ImportError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Obj {
                path,
                map,
                used: RefCell::default(),
            }),
            other => Err(wrong(&path, "a map", other)),
        }
    }

    /// This object's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` in this object.
    pub fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key` (null counts as absent), marked as read.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (not marked as read).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Whether `key` is there at all, null included (`- pause:`).
    pub fn has_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A nested object.
    ///
    /// # Errors
    /// When `key` holds something else than a map.
    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, ImportError> {
        self.get(key).map(|v| Obj::new(self.at(key), v)).transpose()
    }

    /// A list of objects (absent: empty).
    ///
    /// # Errors
    /// When `key` is not a list of maps.
    pub fn objs(&self, key: &str) -> Result<Vec<Obj<'a>>, ImportError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Obj::new(format!("{}[{i}]", self.at(key)), v))
                .collect(),
            Some(other) => Err(wrong(&self.at(key), "a list", other)),
        }
    }

    /// A string (numbers are read as their text: `"30"` and `30` alike).
    ///
    /// # Errors
    /// When `key` holds a map, a list or a boolean.
    pub fn str(&self, key: &str) -> Result<Option<String>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(wrong(&self.at(key), "a string", other)),
        }
    }

    /// A number (a numeric string too: Kubernetes users quote them).
    ///
    /// # Errors
    /// When `key` holds something that is not a number.
    pub fn num(&self, key: &str) -> Result<Option<f64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(wrong(&self.at(key), "a number", other)),
        }
    }

    /// A non-negative whole number.
    ///
    /// # Errors
    /// When `key` holds something else.
    pub fn count(&self, key: &str) -> Result<Option<u32>, ImportError> {
        match self.num(key)? {
            None => Ok(None),
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
                Ok(Some(n as u32))
            }
            Some(n) => Err(ImportError::Field {
                field: self.at(key),
                problem: format!("is {n}; expected a whole number of at least 0"),
            }),
        }
    }

    /// A boolean.
    ///
    /// # Errors
    /// When `key` holds something else.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong(&self.at(key), "true or false", other)),
        }
    }

    /// The keys present that nobody read, with their paths, in order.
    pub fn unread(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.map
            .iter()
            .filter(|(k, v)| !used.contains(*k) && !v.is_null())
            .map(|(k, _)| self.at(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_keys_are_named_with_their_path() {
        let v = serde_json::json!({"a": 1, "b": {"c": true}, "d": null});
        let o = Obj::new("spec", &v).expect("a map");
        assert_eq!(o.num("a").expect("a number"), Some(1.0));
        assert_eq!(o.unread(), ["spec.b"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let v = serde_json::json!({"steps": {"setWeight": 10}, "n": "ten", "w": -1});
        let o = Obj::new("spec", &v).expect("a map");
        let e = o.objs("steps").expect_err("not a list").to_string();
        assert_eq!(e, "spec.steps: is a map; expected a list");
        let e = o.num("n").expect_err("not a number").to_string();
        assert_eq!(e, "spec.n: is \"ten\"; expected a number");
        let e = o.count("w").expect_err("negative").to_string();
        assert!(e.starts_with("spec.w: is -1"), "{e}");
    }

    #[test]
    fn documents_skip_empty_ones() {
        let docs = documents("f.yaml", "---\nkind: A\n---\n---\nkind: B\n").expect("yaml");
        let kinds: Vec<&str> = docs.iter().map(Document::kind).collect();
        assert_eq!(kinds, ["A", "B"]);
        let e = documents("f.yaml", "a: [1,\n")
            .expect_err("bad yaml")
            .to_string();
        assert!(e.starts_with("f.yaml: "), "{e}");
    }
}
