//! Kong 3.9.3 conformance: the assertions of Kong's own specs, ported as YAML cases
//! (`tests/conformance/*.yaml`, format in its README) and run against one real node and one
//! echo backend. Prints a line per case and the counts a closing note reports.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{client, Echo, Node};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct SpecFile {
    spec: String,
    /// Extra arguments the file's node is started with (one node per distinct list).
    #[serde(default)]
    node: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    it: String,
    /// The issue that brings the feature, or why it is not there yet (no issue plans it).
    #[serde(default)]
    missing: Option<Missing>,
    #[serde(default)]
    differs: Option<String>,
    steps: Vec<Step>,
}

#[derive(Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
enum Missing {
    Issue(u32),
    Why(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Issue(n) => write!(f, "until issue {n}"),
            Missing::Why(w) => write!(f, "not planned yet: {w}"),
        }
    }
}

#[derive(Deserialize)]
struct Step {
    req: Option<String>,
    json: Option<serde_yaml::Value>,
    form: Option<String>,
    raw: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    status: Option<u16>,
    body: Option<serde_yaml::Value>,
    body_text: Option<String>,
    /// Substrings the answer's text body must contain (placeholders substituted).
    #[serde(default)]
    body_contains: Vec<String>,
    /// Substrings the answer's text body must not contain (placeholders substituted).
    #[serde(default)]
    body_lacks: Vec<String>,
    #[serde(default)]
    resp_headers: BTreeMap<String, String>,
    sleep: Option<f64>,
    align: Option<String>,
    /// The request's HTTP version: "1.1" (default) or "1.0".
    version: Option<String>,
    /// Signs the request the way Kong's hmac-auth plugin checks it (see `HmacSpec`).
    hmac: Option<HmacSpec>,
}

/// A step's `hmac:` map: after placeholders are substituted, the harness builds Kong 3.9.3's
/// signing string from the step's own request (kong/plugins/hmac-auth/access.lua `create_hash`)
/// and sets the `header` to `<scheme> username="…", algorithm="…", headers="…", signature="…"`
/// (or to `format` with `{scheme}`, `{username}`, `{algorithm}`, `{headers}`, `{signature}`
/// replaced, for the whitespace and field-name variants Kong's specs send).
#[derive(Deserialize)]
struct HmacSpec {
    #[serde(default)]
    username: String,
    /// The credential's secret; not needed when `signature` is given.
    secret: Option<String>,
    #[serde(default = "HmacSpec::default_algorithm")]
    algorithm: String,
    /// The signed headers, in order; `request-line` and `@request-target` are pseudo-headers.
    #[serde(default = "HmacSpec::default_headers")]
    headers: Vec<String>,
    /// `authorization` (default) or `proxy-authorization`.
    #[serde(default = "HmacSpec::default_header")]
    header: String,
    #[serde(default = "HmacSpec::default_scheme")]
    scheme: String,
    /// Sent instead of the computed signature (a wrong signature on purpose).
    signature: Option<String>,
    /// Adds `Digest: SHA-256=<base64 of sha256(body)>` computed from the step's body.
    #[serde(default)]
    digest_body: bool,
    format: Option<String>,
    /// Signs this path and query instead of the request's (a signature made for another URI).
    path: Option<String>,
}

impl HmacSpec {
    fn default_algorithm() -> String {
        "hmac-sha256".into()
    }
    fn default_headers() -> Vec<String> {
        vec!["date".into()]
    }
    fn default_header() -> String {
        "authorization".into()
    }
    fn default_scheme() -> String {
        "hmac".into()
    }

    /// Kong's signing string: for each listed header, `name: value` when the request has it;
    /// otherwise `request-line` is `METHOD /path?query HTTP/1.1`, `@request-target` is
    /// `@request-target: method /path?query` (method lowercased), and any other name is
    /// `name:`. Lines are joined by "\n" (access.lua `create_hash`).
    fn signing_string(
        &self,
        method: &str,
        path_with_query: &str,
        version: &str,
        headers: &[(String, String)],
    ) -> String {
        let lines: Vec<String> = self
            .headers
            .iter()
            .map(|h| {
                let value = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, v)| v);
                match (value, h.as_str()) {
                    (Some(v), _) => format!("{h}: {v}"),
                    (None, "@request-target") => format!(
                        "@request-target: {} {path_with_query}",
                        method.to_ascii_lowercase()
                    ),
                    (None, "request-line") => {
                        format!("{method} {path_with_query} HTTP/{version}")
                    }
                    (None, _) => format!("{h}:"),
                }
            })
            .collect();
        lines.join("\n")
    }

    fn sign(&self, secret: &str, data: &str) -> Result<String, String> {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let secret = secret.as_bytes();
        macro_rules! mac {
            ($d:ty) => {{
                let mut m = <Hmac<$d> as Mac>::new_from_slice(secret)
                    .expect("HMAC takes keys of any length");
                m.update(data.as_bytes());
                m.finalize().into_bytes().to_vec()
            }};
        }
        let raw = match self.algorithm.as_str() {
            "hmac-sha1" => mac!(sha1::Sha1),
            "hmac-sha256" => mac!(sha2::Sha256),
            "hmac-sha384" => mac!(sha2::Sha384),
            "hmac-sha512" => mac!(sha2::Sha512),
            a => return Err(format!("hmac: cannot sign with {a:?}; give a signature")),
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Values a case captured (`$name`), and the fixed ones (`$echo`).
struct Vars(HashMap<String, Value>);

impl Vars {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Replaces every `$name` in `s` with its value; longest names first so `$echo_host`
    /// is not read as `$echo` followed by `_host`.
    fn subst(&self, s: &str) -> String {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut out = s.to_string();
        for n in names {
            out = out.replace(&format!("${n}"), &Self::text(&self.0[n]));
        }
        out
    }

    /// Substitutes inside a JSON value. A string that is exactly `$name` takes the captured
    /// value with its type (an id stays a string, a number a number).
    fn subst_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => match s.strip_prefix('$').and_then(|n| self.0.get(n)) {
                Some(val) => val.clone(),
                None => Value::String(self.subst(s)),
            },
            Value::Array(a) => Value::Array(a.iter().map(|v| self.subst_value(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (self.subst(k), self.subst_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Whether `got` matches `want` (see the README's matching rules), capturing new names.
    fn matches(&mut self, want: &Value, got: Option<&Value>, at: &str) -> Result<(), String> {
        if let Value::String(s) = want {
            if let Some(name) = s.strip_prefix('$') {
                let present = got.filter(|g| !g.is_null());
                match name {
                    "absent" => {
                        return match present {
                            None => Ok(()),
                            Some(g) => Err(format!("{at}: expected absent, got {g}")),
                        }
                    }
                    "any" => return present.map(|_| ()).ok_or(format!("{at}: missing")),
                    "uuid" => {
                        return match present.and_then(Value::as_str) {
                            Some(u) if uuid::Uuid::parse_str(u).is_ok() => Ok(()),
                            _ => Err(format!("{at}: expected a UUID, got {got:?}")),
                        }
                    }
                    "number" => {
                        return match present {
                            Some(Value::Number(_)) => Ok(()),
                            _ => Err(format!("{at}: expected a number, got {got:?}")),
                        }
                    }
                    _ if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        match self.0.get(name) {
                            Some(v) => {
                                let v = v.clone();
                                return self.matches(&v, got, at);
                            }
                            None => {
                                let g =
                                    present.ok_or(format!("{at}: missing (capture ${name})"))?;
                                self.0.insert(name.to_string(), g.clone());
                                return Ok(());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let got = got.ok_or_else(|| format!("{at}: missing, expected {want}"))?;
        match (want, got) {
            (Value::Object(w), Value::Object(g)) => {
                for (k, wv) in w {
                    let k = self.subst(k);
                    self.matches(wv, g.get(&k), &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            (Value::Array(w), Value::Array(g)) => {
                if w.len() != g.len() {
                    return Err(format!("{at}: expected {} elements, got {got}", w.len()));
                }
                for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                    self.matches(wv, Some(gv), &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => Ok(()),
            (Value::String(w), g) => {
                let w = self.subst(w);
                if g.as_str() == Some(w.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{at}: expected {w:?}, got {g}"))
                }
            }
            (w, g) if w == g => Ok(()),
            (w, g) => Err(format!("{at}: expected {w}, got {g}")),
        }
    }
}

fn yaml_to_json(v: &serde_yaml::Value) -> Value {
    serde_json::to_value(v).expect("YAML case values are JSON values")
}

struct Env<'a> {
    node: &'a Node,
    echo: &'a Echo,
}

impl Env<'_> {
    /// Every case starts from an empty configuration.
    async fn reset(&self) {
        let r = client()
            .post(self.node.admin_url("/config"))
            .json(&serde_json::json!({"_format_version": "3.0"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "reset: {}", r.status());
    }

    async fn run_step(&self, step: &Step, vars: &mut Vars) -> Result<(), String> {
        if let Some(s) = step.sleep {
            tokio::time::sleep(Duration::from_secs_f64(s)).await;
            return Ok(());
        }
        if let Some(unit) = &step.align {
            let period = match unit.as_str() {
                "second" => 1000,
                "minute" => 60_000,
                u => return Err(format!("align: unknown unit {u}")),
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let left = period - now % period;
            // A burst must fit in one window: a minute with 15 s left is enough even on a
            // loaded machine, so only a window nearly over is waited out (just past its end).
            if period == 1000 || left < 15_000 {
                tokio::time::sleep(Duration::from_millis(left + 20)).await;
            }
            return Ok(());
        }
        let req = step
            .req
            .as_deref()
            .ok_or("a step needs req, sleep or align")?;
        // `$date` / `$date_old`: this step's time as an HTTP date (and one hour earlier),
        // fixed for the whole step so a signed Date header and its signature agree.
        let now = SystemTime::now();
        vars.0
            .insert("date".into(), Value::String(httpdate::fmt_http_date(now)));
        vars.0.insert(
            "date_old".into(),
            Value::String(httpdate::fmt_http_date(now - Duration::from_secs(3600))),
        );
        let req = vars.subst(req);
        let mut words = req.splitn(3, ' ');
        let (base, method, path) = match words.next() {
            Some("PROXY") => (
                &self.node.proxy,
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            ),
            Some(m) => (&self.node.admin, m, words.next().unwrap_or("")),
            None => return Err("empty req".into()),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let url =
            reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| format!("{req}: {e}"))?;
        let (version, version_text) = match step.version.as_deref() {
            None | Some("1.1") => (reqwest::Version::HTTP_11, "1.1"),
            Some("1.0") => (reqwest::Version::HTTP_10, "1.0"),
            Some(v) => return Err(format!("version: unknown HTTP version {v}")),
        };
        let mut headers: Vec<(String, String)> = step
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), vars.subst(v)))
            .collect();
        let has_content_type = step
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"));
        let body = if let Some(j) = &step.json {
            if !has_content_type {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(vars.subst_value(&yaml_to_json(j)).to_string())
        } else if let Some(f) = &step.form {
            if !has_content_type {
                headers.push((
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ));
            }
            Some(vars.subst(f))
        } else {
            step.raw.as_ref().map(|r| vars.subst(r))
        };
        if let Some(h) = &step.hmac {
            let set = |headers: &mut Vec<(String, String)>, name: &str, value: String| {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
                headers.push((name.to_string(), value));
            };
            if h.digest_body {
                use base64::Engine;
                use sha2::Digest;
                let sum = sha2::Sha256::digest(body.as_deref().unwrap_or("").as_bytes());
                let digest = format!(
                    "SHA-256={}",
                    base64::engine::general_purpose::STANDARD.encode(sum)
                );
                set(&mut headers, "digest", digest);
            }
            let signature = match &h.signature {
                Some(s) => vars.subst(s),
                None => {
                    // Kong signs `kong.request.get_path_with_query()`: the path and query
                    // exactly as they go on the wire.
                    let path_with_query = match (&h.path, url.query()) {
                        (Some(p), _) => vars.subst(p),
                        (None, Some(q)) => format!("{}?{q}", url.path()),
                        (None, None) => url.path().to_string(),
                    };
                    let data =
                        h.signing_string(method.as_str(), &path_with_query, version_text, &headers);
                    let secret = h
                        .secret
                        .as_deref()
                        .ok_or("hmac: a secret (or a signature) is needed")?;
                    h.sign(&vars.subst(secret), &data)?
                }
            };
            let username = vars.subst(&h.username);
            let list = h.headers.join(" ");
            let value = match &h.format {
                Some(f) => vars
                    .subst(f)
                    .replace("{scheme}", &h.scheme)
                    .replace("{username}", &username)
                    .replace("{algorithm}", &h.algorithm)
                    .replace("{headers}", &list)
                    .replace("{signature}", &signature),
                None => format!(
                    "{} username=\"{username}\", algorithm=\"{}\", headers=\"{list}\", signature=\"{signature}\"",
                    h.scheme, h.algorithm
                ),
            };
            vars.0
                .insert("hmac_header".into(), Value::String(value.clone()));
            set(&mut headers, &h.header, value);
        }
        let mut rb = client().request(method.clone(), url).version(version);
        for (k, v) in &headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let resp = rb.send().await.map_err(|e| format!("{req}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let ctx = || format!("{req} -> {status} {}", truncate(&text));
        if let Some(want) = step.status {
            if want != status {
                return Err(format!("status {status}, expected {want}: {}", ctx()));
            }
        }
        for (name, want) in &step.resp_headers {
            let got = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>();
            let got = (!got.is_empty()).then(|| got.join(", "));
            // `$name` not captured yet: capture the header's value (it must be present).
            if let Some(n) = want.strip_prefix('$').filter(|n| {
                !n.is_empty()
                    && !matches!(*n, "absent" | "any")
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !vars.0.contains_key(*n)
            }) {
                match got {
                    Some(g) => {
                        vars.0.insert(n.to_string(), Value::String(g));
                        continue;
                    }
                    None => {
                        return Err(format!(
                            "header {name}: missing (capture {want}): {}",
                            ctx()
                        ))
                    }
                }
            }
            let want = vars.subst(want);
            let ok = match (want.as_str(), &got) {
                ("$absent", g) => g.is_none(),
                ("$any", g) => g.is_some(),
                (w, Some(g)) => w == g,
                (_, None) => false,
            };
            if !ok {
                return Err(format!(
                    "header {name}: {got:?}, expected {want:?}: {}",
                    ctx()
                ));
            }
        }
        if let Some(want) = &step.body_text {
            if vars.subst(want) != text {
                return Err(format!("body text differs, expected {want:?}: {}", ctx()));
            }
        }
        for want in &step.body_contains {
            let want = vars.subst(want);
            if !text.contains(&want) {
                // A metrics page is long: show the lines of the same family instead.
                let family = want.split(['{', ' ']).next().unwrap_or("");
                let near: Vec<&str> = text
                    .lines()
                    .filter(|l| !family.is_empty() && l.starts_with(family))
                    .take(12)
                    .collect();
                return Err(format!(
                    "body lacks {want:?} (lines of {family:?}: {near:#?}): {}",
                    ctx()
                ));
            }
        }
        for unwanted in &step.body_lacks {
            let unwanted = vars.subst(unwanted);
            if let Some(at) = text.find(&unwanted) {
                let line = text[at..].lines().next().unwrap_or("");
                return Err(format!("body contains {unwanted:?} ({line}): {}", ctx()));
            }
        }
        if let Some(want) = &step.body {
            let got: Value = serde_json::from_str(&text)
                .map_err(|_| format!("answer is not JSON: {}", ctx()))?;
            vars.matches(&yaml_to_json(want), Some(&got), "body")
                .map_err(|e| format!("{e}: {}", ctx()))?;
        }
        Ok(())
    }

    async fn run_case(&self, case: &Case) -> Result<(), String> {
        self.reset().await;
        let mut vars = Vars(HashMap::new());
        let addr = self.echo.addr;
        vars.0.insert("echo".into(), Value::String(self.echo.url()));
        vars.0
            .insert("echo_host".into(), Value::String(addr.ip().to_string()));
        vars.0.insert("echo_port".into(), Value::from(addr.port()));
        for (i, step) in case.steps.iter().enumerate() {
            self.run_step(step, &mut vars)
                .await
                .map_err(|e| format!("step {}: {e}", i + 1))?;
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

fn spec_files() -> Vec<(String, SpecFile)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let f: SpecFile = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, f)
        })
        .collect()
}

#[tokio::test]
async fn kong_conformance() {
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let echo = Echo::start("conformance").await;
    let mut nodes: HashMap<Vec<String>, Node> = HashMap::new();
    let (mut passed, mut failed, mut differs) = (0, Vec::new(), 0);
    let mut missing: BTreeMap<Missing, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut ported = 0;
    for (name, file) in spec_files() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        if !nodes.contains_key(&file.node) {
            let args: Vec<&str> = file.node.iter().map(String::as_str).collect();
            nodes.insert(file.node.clone(), Node::start_with(&args).await);
        }
        let env = Env {
            node: &nodes[&file.node],
            echo: &echo,
        };
        for case in &file.cases {
            ported += 1;
            let result = env.run_case(case).await;
            let id = format!("{name}: {}", case.it);
            match (case.missing.clone(), result) {
                (Some(why), Ok(())) => {
                    println!("UNEXPECTED PASS (missing {why}) {id}");
                    unexpected.push(id);
                }
                (Some(why), Err(_)) => {
                    println!("missing ({why}) {id}");
                    *missing.entry(why).or_default() += 1;
                }
                (None, Ok(())) => {
                    passed += 1;
                    if case.differs.is_some() {
                        differs += 1;
                    }
                    println!("ok {id}");
                }
                (None, Err(e)) => {
                    println!("FAIL {id}\n     {} — {e}", file.spec);
                    failed.push(id);
                }
            }
        }
    }
    println!("\nKong 3.9.3 conformance: {ported} cases ported, {passed} pass ({differs} of them deliberate differences), {} fail", failed.len());
    for (why, n) in &missing {
        println!("  expected-missing {why}: {n}");
    }
    assert!(
        failed.is_empty() && unexpected.is_empty(),
        "{} cases fail, {} expected-missing cases pass: {failed:#?} {unexpected:#?}",
        failed.len(),
        unexpected.len()
    );
}
