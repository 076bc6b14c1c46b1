//! A validator for the OpenAPI 3.0 schema subset LINE's `messaging-api.yml` uses, with its
//! discriminators (which plain JSON Schema validators ignore, letting `"type":"txt"` pass).
//!
//! Written here rather than taken from a JSON Schema crate because OpenAPI 3.0's
//! `discriminator` + `allOf` inheritance is what makes LINE's message schemas bite, and
//! those crates treat `discriminator` as an annotation. Any schema keyword it does not
//! know is reported as an error, so it cannot pass a body by skipping a rule.

use std::path::Path;

use serde_json::{Map, Value};

/// One violation, with LINE's style of property path (`messages[0].text`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    pub property: String,
    pub message: String,
}

/// The `components.schemas` of an OpenAPI 3.0 document.
#[derive(Clone, Debug)]
pub struct OpenApi {
    schemas: Map<String, Value>,
}

/// Keywords that carry no validation rule.
const ANNOTATIONS: &[&str] = &[
    "description",
    "externalDocs",
    "example",
    "examples",
    "default",
    "title",
    "deprecated",
    "readOnly",
    "writeOnly",
    "xml",
];
const KNOWN: &[&str] = &[
    "$ref",
    "type",
    "nullable",
    "enum",
    "format",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "items",
    "required",
    "properties",
    "additionalProperties",
    "allOf",
    "oneOf",
    "anyOf",
    "discriminator",
];

const MAX_DEPTH: usize = 64;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl OpenApi {
    /// Reads a YAML (or JSON) OpenAPI document from disk.
    pub fn load(path: impl AsRef<Path>) -> Result<OpenApi, String> {
        let text = std::fs::read_to_string(path.as_ref())
            .map_err(|e| format!("{}: {e}", path.as_ref().display()))?;
        Self::from_yaml_str(&text)
    }

    pub fn from_yaml_str(text: &str) -> Result<OpenApi, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let schemas = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("the document has no components.schemas")?;
        Ok(OpenApi { schemas })
    }

    /// Whether the document defines `name`.
    pub fn has_schema(&self, name: &str) -> bool {
        self.schemas.contains_key(name)
    }

    /// Checks `value` against `components.schemas[name]`; empty means valid.
    pub fn validate(&self, name: &str, value: &Value) -> Vec<SchemaError> {
        let mut errors = Vec::new();
        match self.schemas.get(name) {
            Some(schema) => self.check(schema, value, "", true, 0, &mut errors),
            None => errors.push(SchemaError {
                property: String::new(),
                message: format!("no schema named {name}"),
            }),
        }
        errors
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        self.schemas
            .get(reference.strip_prefix("#/components/schemas/")?)
    }

    fn check(
        &self,
        schema: &Value,
        v: &Value,
        path: &str,
        dispatch: bool,
        depth: usize,
        errors: &mut Vec<SchemaError>,
    ) {
        let push = |errors: &mut Vec<SchemaError>, message: String| {
            errors.push(SchemaError {
                property: path.to_string(),
                message,
            })
        };
        if depth > MAX_DEPTH {
            push(errors, "schema nesting too deep".into());
            return;
        }
        let Some(s) = schema.as_object() else {
            if schema != &Value::Bool(true) {
                push(errors, "invalid schema".into());
            }
            return;
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            // OpenAPI 3.0: siblings of $ref are ignored.
            match self.resolve(r) {
                Some(target) => self.check(target, v, path, dispatch, depth + 1, errors),
                None => push(errors, format!("unresolvable $ref {r}")),
            }
            return;
        }
        for key in s.keys() {
            if !KNOWN.contains(&key.as_str())
                && !ANNOTATIONS.contains(&key.as_str())
                && !key.starts_with("x-")
            {
                push(
                    errors,
                    format!("schema keyword {key} is not supported by this validator"),
                );
                return;
            }
        }
        if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if dispatch {
            if let Some(d) = s.get("discriminator") {
                let prop = d
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .unwrap_or("type");
                if let Some(mapping) = d.get("mapping").and_then(Value::as_object) {
                    let Some(obj) = v.as_object() else {
                        push(errors, "Must be an object".into());
                        return;
                    };
                    let tag = obj.get(prop).and_then(Value::as_str);
                    match tag.and_then(|t| mapping.get(t)).and_then(Value::as_str) {
                        // The subtype's allOf re-checks this base schema without dispatch.
                        Some(target) => match self.resolve(target) {
                            Some(sub) => self.check(sub, v, path, true, depth + 1, errors),
                            None => push(errors, format!("unresolvable mapping {target}")),
                        },
                        None => {
                            let keys: Vec<&str> = mapping.keys().map(String::as_str).collect();
                            errors.push(SchemaError {
                                property: join(path, prop),
                                message: format!(
                                    "Must be one of the following values: [{}]",
                                    keys.join(", ")
                                ),
                            });
                        }
                    }
                    return;
                }
            }
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "number" => v.is_number(),
                "integer" => v.is_i64() || v.is_u64(),
                _ => false,
            };
            if !ok {
                push(errors, format!("Must be of type {t}"));
                return;
            }
        }
        if let Some(list) = s.get("enum").and_then(Value::as_array) {
            if !list.contains(v) {
                let shown: Vec<String> = list
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect();
                push(
                    errors,
                    format!(
                        "Must be one of the following values: [{}]",
                        shown.join(", ")
                    ),
                );
            }
        }
        if let Some(text) = v.as_str() {
            let len = text.chars().count();
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if (len as u64) < min {
                    push(errors, format!("Length must be at least {min}"));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if len as u64 > max {
                    push(errors, format!("Length must be at most {max}"));
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match pattern_matches(p, text) {
                    Some(true) => {}
                    Some(false) => push(errors, format!("Must match {p}")),
                    None => push(
                        errors,
                        format!("pattern {p} is not supported by this validator"),
                    ),
                }
            }
            match s.get("format").and_then(Value::as_str) {
                Some("uri") if url::Url::parse(text).is_err() => {
                    push(errors, "Must be an absolute URI".into())
                }
                Some("uuid") if !is_uuid(text) => push(errors, "Must be a UUID".into()),
                _ => {}
            }
        }
        if let Some(n) = v.as_f64() {
            let exclusive = |k: &str| s.get(k) == Some(&Value::Bool(true));
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                if n < min || (exclusive("exclusiveMinimum") && n == min) {
                    push(errors, format!("Must be at least {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                if n > max || (exclusive("exclusiveMaximum") && n == max) {
                    push(errors, format!("Must be at most {max}"));
                }
            }
            let range = match s.get("format").and_then(Value::as_str) {
                Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
                Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
                _ => None,
            };
            if let Some((lo, hi)) = range {
                if n < lo || n > hi {
                    push(errors, "Out of range".into());
                }
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    push(errors, format!("Size must be at least {min}"));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    push(errors, format!("Size must be at most {max}"));
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.check(
                        item_schema,
                        item,
                        &format!("{path}[{i}]"),
                        true,
                        depth + 1,
                        errors,
                    );
                }
            }
        }
        if let Some(obj) = v.as_object() {
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = name.as_str() {
                    if !obj.contains_key(name) {
                        errors.push(SchemaError {
                            property: join(path, name),
                            message: "Must be specified".into(),
                        });
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (key, value) in obj {
                match props.and_then(|p| p.get(key)) {
                    Some(ps) => self.check(ps, value, &join(path, key), true, depth + 1, errors),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors.push(SchemaError {
                            property: join(path, key),
                            message: "Unknown property".into(),
                        }),
                        Some(extra @ Value::Object(_)) => {
                            self.check(extra, value, &join(path, key), true, depth + 1, errors)
                        }
                        _ => {}
                    },
                }
            }
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A $ref inside allOf is the parent of an inheritance chain: check its rules
            // without dispatching back down to this subtype.
            self.check(sub, v, path, false, depth + 1, errors);
        }
        for (key, need_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(options) = s.get(key).and_then(Value::as_array) {
                let passing = options
                    .iter()
                    .filter(|o| {
                        let mut e = Vec::new();
                        self.check(o, v, path, true, depth + 1, &mut e);
                        e.is_empty()
                    })
                    .count();
                if (need_one && passing != 1) || passing == 0 {
                    errors.push(SchemaError {
                        property: path.to_string(),
                        message: format!(
                            "Must match {} of the {key} schemas",
                            if need_one {
                                "exactly one"
                            } else {
                                "at least one"
                            }
                        ),
                    });
                }
            }
        }
    }
}

pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// An atom of the pattern subset: a set of characters (a class or one literal).
enum Atom {
    Class(Vec<(char, char)>),
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        let Atom::Class(ranges) = self;
        ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
    }
}

/// Anchored patterns made of literals and `[...]` classes with `{n}`, `{m,n}`, `+`, `*`,
/// `?` quantifiers: what LINE's documents use. `None` for anything else.
fn pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    let body = pattern.strip_prefix('^')?.strip_suffix('$')?;
    let chars: Vec<char> = body.chars().collect();
    let mut atoms: Vec<(Atom, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let atom = match chars[i] {
            '[' => {
                let mut ranges = Vec::new();
                i += 1;
                while i < chars.len() && chars[i] != ']' {
                    if chars[i] == '\\' || chars[i] == '^' {
                        return None;
                    }
                    if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
                        ranges.push((chars[i], chars[i + 2]));
                        i += 3;
                    } else {
                        ranges.push((chars[i], chars[i]));
                        i += 1;
                    }
                }
                if i >= chars.len() {
                    return None;
                }
                i += 1;
                Atom::Class(ranges)
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == ':' => {
                i += 1;
                Atom::Class(vec![(c, c)])
            }
            _ => return None,
        };
        let (min, max) = match chars.get(i) {
            Some('+') => {
                i += 1;
                (1, usize::MAX)
            }
            Some('*') => {
                i += 1;
                (0, usize::MAX)
            }
            Some('?') => {
                i += 1;
                (0, 1)
            }
            Some('{') => {
                let end = chars[i..].iter().position(|c| *c == '}')? + i;
                let spec: String = chars[i + 1..end].iter().collect();
                i = end + 1;
                match spec.split_once(',') {
                    None => {
                        let n = spec.parse().ok()?;
                        (n, n)
                    }
                    Some((a, b)) => (
                        a.parse().ok()?,
                        if b.is_empty() {
                            usize::MAX
                        } else {
                            b.parse().ok()?
                        },
                    ),
                }
            }
            _ => (1, 1),
        };
        atoms.push((atom, min, max));
    }
    let text: Vec<char> = text.chars().collect();
    fn go(atoms: &[(Atom, usize, usize)], text: &[char]) -> bool {
        let Some(((atom, min, max), rest)) = atoms.split_first() else {
            return text.is_empty();
        };
        let run = text.iter().take_while(|c| atom.matches(**c)).count();
        let top = run.min(*max);
        (*min..=top).rev().any(|n| go(rest, &text[n..]))
    }
    Some(go(&atoms, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_of_the_subset() {
        let p = "^[a-zA-Z0-9_]{1,30}$";
        assert_eq!(pattern_matches(p, "city_news"), Some(true));
        assert_eq!(pattern_matches(p, "city-news"), Some(false));
        assert_eq!(pattern_matches(p, ""), Some(false));
        assert_eq!(pattern_matches("^[0-9]{8}$", "20261122"), Some(true));
        assert_eq!(pattern_matches("^[0-9]{8}$", "2026112"), Some(false));
        assert_eq!(pattern_matches("^(a|b)$", "a"), None);
    }
}
