//! `cors`'s config (Kong 3.9.3's `kong/plugins/cors/schema.lua`): the origins allowed (`*`,
//! literals or regexes), the headers and methods a preflight allows, the headers exposed,
//! credentials, private network access, and whether preflights go to the upstream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

/// Kong's `METHODS`, the default of `methods` and what it may hold.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Most origins, headers or methods in one list: a config is read on every request, and Kong
/// users list a handful.
pub const MAX_LIST: usize = 1000;

/// A configured origin regex compiles within this size.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "cors",
    priority: 2000,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("origins", FieldType::Array),
        FieldDecl::new("headers", FieldType::Array),
        FieldDecl::new("exposed_headers", FieldType::Array),
        FieldDecl::new("methods", FieldType::Array).default(
            r#"["GET","HEAD","PUT","PATCH","POST","DELETE","OPTIONS","TRACE","CONNECT"]"#,
        ),
        FieldDecl::new("max_age", FieldType::Number),
        FieldDecl::new("credentials", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("private_network", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("preflight_continue", FieldType::Boolean)
            .required()
            .default("false"),
    ],
    example: r#"{"origins": ["https://app.example.com"], "credentials": true}"#,
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub origins: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub headers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub exposed_headers: Option<Vec<String>>,
    /// An explicit null stays null (the preflight then allows Kong's full list).
    #[serde(default = "default_methods", deserialize_with = "lenient::opt_string_list")]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub max_age: Option<f64>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default)]
    pub private_network: bool,
    #[serde(default)]
    pub preflight_continue: bool,
}

fn default_methods() -> Option<Vec<String>> {
    Some(METHODS.iter().map(|m| m.to_string()).collect())
}

impl CorsConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// What an origin entry is, by Kong's test: anything beyond `[A-Za-z0-9.:/-]` makes it a
/// regex.
pub fn is_regex_entry(entry: &str) -> bool {
    entry
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-')))
}

/// The regex Kong matches a regex entry with: `$` added when missing, a leading `^` dropped,
/// anchored at the start (PCRE's `a` flag).
pub fn origin_regex(entry: &str) -> Result<regex::Regex, regex::Error> {
    let mut e = entry.strip_prefix('^').unwrap_or(entry).to_string();
    if !e.ends_with('$') {
        e.push('$');
    }
    regex::RegexBuilder::new(&format!("^(?:{e})"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Whether a quantifier follows a quantifier (`a**`, `a+*`, `a*??`): PCRE, which Kong compiles
/// origins with, refuses it ("nothing to repeat"); Rust's regex would read it as a nested
/// repetition. One lazy (`?`) or possessive (`+`) mark after a quantifier is allowed.
pub fn repeats_nothing(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    // 0: after an atom; 1: after a quantifier; 2: after a quantifier and its mark.
    let mut state = 0u8;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            state = 0;
            continue;
        }
        if in_class {
            in_class = c != b']';
            i += 1;
            continue;
        }
        let quantifier = match c {
            b'*' | b'+' | b'?' => Some(1),
            b'{' => {
                let rest = &pattern[i + 1..];
                let end = rest.find('}');
                end.filter(|e| {
                    let inner = &rest[..*e];
                    !inner.is_empty()
                        && inner.bytes().all(|x| x.is_ascii_digit() || x == b',')
                        && inner.as_bytes()[0].is_ascii_digit()
                })
                .map(|e| e + 2)
            }
            _ => None,
        };
        match (quantifier, state) {
            (Some(_), 1) if c == b'?' || c == b'+' => {
                state = 2;
                i += 1;
            }
            (Some(_), 1 | 2) => return true,
            (Some(len), _) => {
                state = 1;
                i += len;
            }
            (None, _) => {
                in_class = c == b'[';
                state = 0;
                i += 1;
            }
        }
    }
    false
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: CorsConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    for (name, list) in [
        ("origins", &c.origins),
        ("headers", &c.headers),
        ("exposed_headers", &c.exposed_headers),
        ("methods", &c.methods),
    ] {
        if list.as_ref().is_some_and(|l| l.len() > MAX_LIST) {
            e.add(
                &format!("config.{name}"),
                format!("length must be at most {MAX_LIST}"),
            );
        }
    }
    for (i, o) in c.origins.iter().flatten().enumerate() {
        // Kong's `is_regex` compiles the whole entry; so does this, and the form it is
        // matched in.
        let ok = o == "*"
            || !repeats_nothing(o)
                && regex::RegexBuilder::new(o)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .is_ok()
                && origin_regex(o).is_ok();
        if !ok {
            e.add(
                &format!("config.origins.{}", i + 1),
                format!("'{o}' is not a valid regex"),
            );
        }
    }
    for (i, m) in c.methods.iter().flatten().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            e.add(
                &format!("config.methods.{}", i + 1),
                format!("expected one of: {}", METHODS.join(", ")),
            );
        }
    }
    // Header values the plugin will send must be valid header text.
    for (name, list) in [("headers", &c.headers), ("exposed_headers", &c.exposed_headers)] {
        for (i, h) in list.iter().flatten().enumerate() {
            if h.bytes().any(|b| b.is_ascii_control()) {
                e.add(
                    &format!("config.{name}.{}", i + 1),
                    "must not contain control characters",
                );
            }
        }
    }
    if let Some(m) = c.max_age {
        if !m.is_finite() {
            e.add("config.max_age", "expected a number");
        }
    }
    e.into_result()?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/13-cors/02-schema_spec.lua.
    #[test]
    fn origins_and_methods_are_checked() {
        let v = validate("cors", None).unwrap();
        assert_eq!(v["methods"].as_array().unwrap().len(), 9);
        assert_eq!(v["credentials"], false);
        let e = validate(
            "cors",
            Some(&json!({"origins": [".*.example.com", "invalid_**regex"]})),
        )
        .unwrap_err()
        .to_json();
        assert_eq!(
            e["config"]["origins"][1],
            "'invalid_**regex' is not a valid regex"
        );
        let e = validate("cors", Some(&json!({"methods": ["FAKE"]})))
            .unwrap_err()
            .to_json();
        assert!(e["config"]["methods"][0]
            .as_str()
            .unwrap()
            .starts_with("expected one of: GET, HEAD"));
        let v = validate("cors", Some(&json!({"methods": null}))).unwrap();
        assert!(v["methods"].is_null());
    }

    #[test]
    fn pcre_refuses_a_quantifier_after_a_quantifier() {
        for bad in ["a**", "invalid_**regex", "a+*", "a*??", "a{2}*"] {
            assert!(repeats_nothing(bad), "{bad}");
        }
        for good in [r".*\.example(?:-foo)?\.com", "a*?", "a*+", r"a\**", "[*+]*", "a{2,}?b", "x{y}"] {
            assert!(!repeats_nothing(good), "{good}");
        }
    }

    #[test]
    fn kongs_regex_adjustments() {
        assert!(!is_regex_entry("https://example.com:8080"));
        assert!(is_regex_entry(r".*\.example\.com"));
        let re = origin_regex(r"^http://.*\.example\.com").unwrap();
        assert!(re.is_match("http://a.example.com"));
        assert!(!re.is_match("http://a.example.com.evil"));
        assert!(!re.is_match("xhttp://a.example.com"));
    }
}
