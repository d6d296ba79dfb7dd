//! The node reference: every kind's keys (name, type, default, unit, meaning), read from the
//! JSON schema of its config type, so the config type is the one place they are written.
//!
//! `neurostream kinds KIND` prints it and the README's pipeline reference is generated from it
//! ([`markdown_table`]); a test fails when the README is out of date.

use serde_json::{Map, Value};

use crate::spec::NodeConfig;

/// One key of a kind's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyDoc {
    /// The TOML key.
    pub name: String,
    /// Its type in words: `integer`, `number`, `list of string`, `"a" | "b"`.
    pub type_name: String,
    /// The default as a TOML literal; `None` when the key is required or has no fixed default.
    pub default: Option<String>,
    /// Whether a node must set it.
    pub required: bool,
    /// Its unit (`Hz`, `s`, `samples`, `MB`), when it has one.
    pub unit: Option<String>,
    /// What it means: the doc comment of the config field.
    pub meaning: String,
}

/// A kind with its keys, as the reference shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct KindDoc {
    /// `source`, `operator` or `sink`.
    pub section: &'static str,
    /// The `kind = "..."` name.
    pub kind: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Its keys: required ones first, then by name.
    pub keys: Vec<KeyDoc>,
}

/// The keys of config type `C`, from its JSON schema (doc comments, serde defaults, and the
/// `x-unit` / `x-type` extensions set with `#[schemars(extend(...))]`).
pub fn keys_of<C: NodeConfig>() -> Vec<KeyDoc> {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let schema = generator.into_root_schema_for::<C>();
    let root = schema.as_value();
    let defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut keys = Vec::new();
    collect_keys(root, &defs, &mut keys);
    keys.sort_by(|a, b| b.required.cmp(&a.required).then_with(|| a.name.cmp(&b.name)));
    keys
}

/// Properties of an object schema, including those of flattened structs (`allOf`) and the
/// variants of flattened tagged enums (`oneOf`/`anyOf`), each key once.
fn collect_keys(schema: &Value, defs: &Map<String, Value>, keys: &mut Vec<KeyDoc>) {
    let schema = resolve(schema, defs);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if keys.iter().any(|k: &KeyDoc| &k.name == name) {
                continue;
            }
            keys.push(KeyDoc {
                name: name.clone(),
                type_name: type_name(prop, defs),
                default: prop.get("default").filter(|d| !d.is_null()).map(toml_literal),
                required: required.contains(&name.as_str()),
                unit: prop.get("x-unit").and_then(Value::as_str).map(str::to_string),
                meaning: prop
                    .get("description")
                    .and_then(Value::as_str)
                    .map(one_paragraph)
                    .unwrap_or_default(),
            });
        }
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        for sub in schema.get(combinator).and_then(Value::as_array).into_iter().flatten() {
            if resolve(sub, defs).get("properties").is_some() || resolve(sub, defs).get("allOf").is_some() {
                collect_keys(sub, defs, keys);
            }
        }
    }
}

/// Follows a `$ref` into `$defs`.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .map_or(schema, |d| resolve(d, defs)),
        None => schema,
    }
}

/// A schema's type in words.
fn type_name(schema: &Value, defs: &Map<String, Value>) -> String {
    if let Some(t) = schema.get("x-type").and_then(Value::as_str) {
        return t.to_string();
    }
    let schema = resolve(schema, defs);
    if let Some(c) = schema.get("const") {
        return toml_literal(c);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(toml_literal).collect::<Vec<_>>().join(" \\| ");
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(variants) = schema.get(combinator).and_then(Value::as_array) {
            let mut names: Vec<String> = Vec::new();
            for v in variants {
                let n = type_name(v, defs);
                if n != "null" && !names.contains(&n) {
                    names.push(n);
                }
            }
            return names.join(" \\| ");
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    };
    types
        .iter()
        .map(|t| match *t {
            "array" => {
                let item = schema
                    .get("items")
                    .map_or_else(|| "value".to_string(), |i| type_name(i, defs));
                let fixed = schema.get("minItems").filter(|n| Some(*n) == schema.get("maxItems"));
                match fixed {
                    Some(n) => format!("{n} × {item}"),
                    None => format!("list of {item}"),
                }
            }
            "object" => "table".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A JSON value written as TOML would write it.
fn toml_literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k} = {}", toml_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Null => "none".to_string(),
        other => other.to_string(),
    }
}

/// A doc comment's lines joined into one paragraph (rustdoc keeps the line breaks).
fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Markdown key table of a kind, as the README shows it.
pub fn markdown_table(doc: &KindDoc) -> String {
    let mut out = String::from("| key | type | default | unit | meaning |\n| --- | --- | --- | --- | --- |\n");
    for k in &doc.keys {
        let default = match (&k.default, k.required) {
            (_, true) => "required".to_string(),
            (Some(d), false) => format!("`{d}`"),
            (None, false) => "—".to_string(),
        };
        let ty = if k.type_name.contains('"') {
            format!("`{}`", k.type_name)
        } else {
            k.type_name.clone()
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.name,
            ty,
            default,
            k.unit.as_deref().unwrap_or(""),
            k.meaning.replace('|', "\\|")
        ));
    }
    out
}

/// The plain-text key listing of a kind, as `neurostream kinds KIND` prints it.
pub fn text(doc: &KindDoc) -> String {
    let mut out = format!("{} `{}`: {}\n", doc.section, doc.kind, doc.summary);
    if doc.keys.is_empty() {
        out.push_str("\n(no keys)\n");
    }
    for k in &doc.keys {
        let default = match (&k.default, k.required) {
            (_, true) => "required".to_string(),
            (Some(d), false) => format!("default {d}"),
            (None, false) => "optional".to_string(),
        };
        let unit = k.unit.as_deref().map(|u| format!(", in {u}")).unwrap_or_default();
        out.push_str(&format!(
            "\n  {} ({}; {default}{unit})\n      {}\n",
            k.name,
            k.type_name.replace("\\|", "|"),
            k.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config exercising every shape the reference renders.
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Example {
        /// Cutoff
        /// frequency.
        #[schemars(extend("x-unit" = "Hz"))]
        cutoff: f64,
        /// Band.
        #[serde(default = "band")]
        band: Band,
        /// Names.
        #[serde(default)]
        names: Vec<String>,
        /// Optional count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// Range.
        #[serde(default = "range")]
        range: [f64; 2],
    }
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Band {
        /// Low.
        Low,
        /// High.
        High,
    }
    fn band() -> Band {
        Band::High
    }
    fn range() -> [f64; 2] {
        [0.5, 40.0]
    }
    impl NodeConfig for Example {
        const KIND: &'static str = "example";
    }

    #[test]
    fn keys_carry_type_default_unit_and_meaning() {
        let keys = keys_of::<Example>();
        let by = |n: &str| keys.iter().find(|k| k.name == n).unwrap().clone();
        let cutoff = by("cutoff");
        assert!(cutoff.required);
        assert_eq!(cutoff.type_name, "number");
        assert_eq!(cutoff.unit.as_deref(), Some("Hz"));
        assert_eq!(cutoff.meaning, "Cutoff frequency.");
        assert_eq!(by("band").type_name, "\"low\" \\| \"high\"");
        assert_eq!(by("band").default.as_deref(), Some("\"high\""));
        assert_eq!(by("names").type_name, "list of string");
        assert_eq!(by("names").default.as_deref(), Some("[]"));
        let count = by("count");
        assert!(!count.required);
        assert_eq!((count.type_name.as_str(), count.default), ("integer", None));
        assert_eq!(by("range").type_name, "2 × number");
        assert_eq!(by("range").default.as_deref(), Some("[0.5, 40.0]"));
    }
}
