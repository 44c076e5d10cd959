//! JSON Patch (RFC 6902) for the policy's state: a stateful policy returns
//! `ops` that the agent applies to the policy data after an allowed request.
//!
//! All of `add`, `remove`, `replace`, `move`, `copy` and `test` are
//! supported. A patch applies entirely or not at all.

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// `ops` is not an array of operation objects.
    #[error("ops must be an array of JSON-patch operations, got {0}")]
    NotAnArray(String),
    /// An operation lacks a field or has one of the wrong type.
    #[error("operation {index}: {reason}")]
    Malformed {
        /// Position in `ops`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A path does not lead where the operation needs it to.
    #[error("operation {index} ({op} {path}): {reason}")]
    Path {
        /// Position in `ops`.
        index: usize,
        /// The operation name.
        op: String,
        /// The JSON pointer.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A `test` operation found a different value.
    #[error("operation {index} (test {path}): value differs")]
    TestFailed {
        /// Position in `ops`.
        index: usize,
        /// The JSON pointer.
        path: String,
    },
}

/// Applies `ops` to `doc`; on error `doc` is unchanged.
pub fn apply_patch(doc: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let list = ops
        .as_array()
        .ok_or_else(|| PatchError::NotAnArray(ops.to_string()))?;
    let mut work = doc.clone();
    for (index, op) in list.iter().enumerate() {
        apply_one(&mut work, index, op)?;
    }
    *doc = work;
    Ok(())
}

fn apply_one(doc: &mut Value, index: usize, op: &Value) -> Result<(), PatchError> {
    let malformed = |reason: &str| PatchError::Malformed {
        index,
        reason: reason.to_string(),
    };
    let name = op
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("missing string field \"op\""))?;
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("missing string field \"path\""))?;
    let path_err = |reason: String| PatchError::Path {
        index,
        op: name.to_string(),
        path: path.to_string(),
        reason,
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| malformed("missing field \"value\""))
    };
    let from = || {
        op.get("from")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("missing string field \"from\""))
    };
    match name {
        "add" => add(doc, path, value()?).map_err(path_err),
        "remove" => remove(doc, path).map(drop).map_err(path_err),
        "replace" => {
            let v = value()?;
            let target = pointer_mut(doc, path).map_err(&path_err)?;
            *target = v;
            Ok(())
        }
        "move" => {
            let from = from()?;
            if path.starts_with(from) && path[from.len()..].starts_with('/') {
                return Err(path_err(format!("cannot move {from} into itself")));
            }
            let v = remove(doc, from).map_err(&path_err)?;
            add(doc, path, v).map_err(path_err)
        }
        "copy" => {
            let v = pointer_mut(doc, from()?).map_err(&path_err)?.clone();
            add(doc, path, v).map_err(path_err)
        }
        "test" => {
            let want = value()?;
            let have = pointer_mut(doc, path).map_err(path_err)?;
            if *have == want {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    index,
                    path: path.to_string(),
                })
            }
        }
        other => Err(malformed(&format!("unknown op {other:?}"))),
    }
}

/// Splits a JSON pointer into unescaped tokens ("" = the whole document).
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "a JSON pointer starts with '/'".to_string())?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token
            .parse()
            .map_err(|_| format!("bad array index {token:?}"))?
    } else {
        return Err(format!("bad array index {token:?}"));
    };
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("index {i} out of bounds (length {len})"));
    }
    Ok(i)
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens(path)? {
        cur = match cur {
            Value::Object(map) => map.get_mut(&t).ok_or_else(|| format!("no member {t:?}"))?,
            Value::Array(list) => {
                let i = array_index(&t, list.len(), false)?;
                &mut list[i]
            }
            _ => return Err(format!("{t:?} is below a scalar")),
        };
    }
    Ok(cur)
}

/// The parent container of `path` and the last token.
fn parent_mut<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut toks = tokens(path)?;
    let last = toks
        .pop()
        .ok_or_else(|| "the whole document cannot be the target".to_string())?;
    let parent_path: String = toks
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok((pointer_mut(doc, &parent_path)?, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(list) => {
            let i = array_index(&last, list.len(), true)?;
            list.insert(i, value);
            Ok(())
        }
        _ => Err("the parent is not an object or array".to_string()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(map) => map
            .remove(&last)
            .ok_or_else(|| format!("no member {last:?}")),
        Value::Array(list) => {
            let i = array_index(&last, list.len(), false)?;
            Ok(list.remove(i))
        }
        _ => Err("the parent is not an object or array".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, ops: Value) -> Result<Value, PatchError> {
        let mut doc = doc;
        apply_patch(&mut doc, &ops).map(|()| doc)
    }

    #[test]
    fn add_replace_remove() {
        let doc = json!({"pstate": {}});
        let doc = patched(
            doc,
            json!([
                {"op": "add", "path": "/pstate/sandbox_name", "value": "pod-1"},
                {"op": "add", "path": "/pstate/ids", "value": ["a"]},
                {"op": "add", "path": "/pstate/ids/-", "value": "c"},
                {"op": "add", "path": "/pstate/ids/1", "value": "b"},
                {"op": "replace", "path": "/pstate/sandbox_name", "value": "pod-2"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"pstate": {"sandbox_name": "pod-2", "ids": ["a", "b", "c"]}})
        );
        let doc = patched(
            doc,
            json!([
                {"op": "remove", "path": "/pstate/ids/0"},
                {"op": "remove", "path": "/pstate/sandbox_name"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"pstate": {"ids": ["b", "c"]}}));
    }

    #[test]
    fn escaped_tokens_move_copy_test() {
        let doc = patched(
            json!({"a": {"x/y": 1, "t~": 2}}),
            json!([
                {"op": "test", "path": "/a/x~1y", "value": 1},
                {"op": "copy", "from": "/a/t~0", "path": "/b"},
                {"op": "move", "from": "/a/x~1y", "path": "/c"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": {"t~": 2}, "b": 2, "c": 1}));
    }

    #[test]
    fn failures_leave_the_document_unchanged() {
        let orig = json!({"pstate": {"k": 1}});
        for ops in [
            json!({"op": "add"}),
            json!([{"op": "add", "path": "/pstate/k2", "value": 2}, {"op": "remove", "path": "/nope"}]),
            json!([{"op": "replace", "path": "/pstate/missing", "value": 1}]),
            json!([{"op": "add", "path": "/missing/child", "value": 1}]),
            json!([{"op": "add", "path": "pstate", "value": 1}]),
            json!([{"op": "frobnicate", "path": "/pstate"}]),
            json!([{"op": "add", "path": "/pstate/k"}]),
            json!([{"op": "test", "path": "/pstate/k", "value": 2}]),
            json!([{"op": "move", "from": "/pstate", "path": "/pstate/inner"}]),
            json!([{"op": "add", "path": "/pstate/k/x", "value": 1}]),
        ] {
            let mut doc = orig.clone();
            assert!(apply_patch(&mut doc, &ops).is_err(), "{ops}");
            assert_eq!(doc, orig);
        }
    }

    #[test]
    fn array_indices_are_checked() {
        let doc = json!({"l": [1, 2]});
        assert!(patched(
            doc.clone(),
            json!([{"op": "add", "path": "/l/3", "value": 0}])
        )
        .is_err());
        assert!(patched(doc.clone(), json!([{"op": "remove", "path": "/l/2"}])).is_err());
        assert!(patched(doc.clone(), json!([{"op": "remove", "path": "/l/01"}])).is_err());
        assert!(patched(doc.clone(), json!([{"op": "remove", "path": "/l/-"}])).is_err());
        assert!(patched(
            json!({"l": []}),
            json!([{"op": "replace", "path": "/l/0", "value": 1}])
        )
        .is_err());
        assert_eq!(
            patched(doc, json!([{"op": "add", "path": "/l/2", "value": 3}])).unwrap(),
            json!({"l": [1, 2, 3]})
        );
    }
}
