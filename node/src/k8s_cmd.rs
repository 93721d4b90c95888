//! `tollgate k8s translate` and `tollgate k8s apply`: Kong Ingress Controller manifests as
//! configuration.
//!
//! Both translate with `tollgate-k8s` (the controller's rules) and then check the result as
//! the Admin API would, with Tollgate's own schemas, so that a bad plugin config or an
//! unknown plugin is reported here naming its Kubernetes object
//! (`KongPlugin api-gateway-demo/rate-limit: plugins[2]: schema violation (config.minute: …)`),
//! and nothing is sent. `apply` then posts the file to `POST /config?owner_tag=k8s-apply:<set>`, which
//! replaces only what the previous apply of that set made.

use std::io::Read;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tollgate_config::declarative::{self, DeclarativeError, Sequence};
use tollgate_k8s::{apply_tag, tags, translate, Options};

use crate::cli::{K8sCommand, K8sInput, K8sOutput};

fn read_input(input: &K8sInput) -> anyhow::Result<String> {
    let limit = tollgate_k8s::MAX_MANIFEST_BYTES as u64 + 1;
    let mut text = String::new();
    if input.file.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)?;
    } else {
        std::fs::File::open(&input.file)
            .with_context(|| format!("cannot read {}", input.file.display()))?
            .take(limit)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", input.file.display()))?;
    }
    Ok(text)
}

/// Translates and checks; prints warnings to standard error.
pub fn translated(input: &K8sInput, owner_tag: Option<String>) -> anyhow::Result<Value> {
    let mut opts = Options {
        ingress_class: input.ingress_class.clone(),
        owner_tag,
        ..Options::default()
    };
    for b in &input.backends {
        opts.add_backend(b).map_err(|e| anyhow!(e))?;
    }
    let text = read_input(input)?;
    let t =
        translate(&text, &opts).map_err(|e| anyhow!("the manifests cannot be translated:\n{e}"))?;
    for w in &t.warnings {
        eprintln!("warning: {w}");
    }
    check(&t.config)?;
    Ok(t.config)
}

/// Runs Tollgate's own validation on the translated file, naming the Kubernetes object
/// behind each bad entity.
fn check(config: &Value) -> anyhow::Result<()> {
    let text = config.to_string();
    match declarative::parse(&text, &mut Sequence(0)) {
        Ok(_) => Ok(()),
        Err(DeclarativeError::Entities(errs)) => {
            let lines: Vec<String> = errs
                .iter()
                .map(|e| match tags::resource_of(&e.entity) {
                    Some(r) => format!("{r}: {e}"),
                    None => e.to_string(),
                })
                .collect();
            bail!(
                "Tollgate refuses the translated configuration:\n{}",
                lines.join("\n")
            )
        }
        Err(e) => bail!("Tollgate refuses the translated configuration: {e}"),
    }
}

pub fn run(cmd: K8sCommand) -> anyhow::Result<()> {
    match cmd {
        K8sCommand::Translate { input, output } => {
            let config = translated(&input, None)?;
            match output {
                K8sOutput::Yaml => print!("{}", serde_yaml::to_string(&config)?),
                K8sOutput::Json => println!("{}", serde_json::to_string_pretty(&config)?),
            }
            Ok(())
        }
        K8sCommand::Apply {
            input,
            admin,
            admin_token,
            set,
            allow_empty,
        } => {
            let tag = apply_tag(&set);
            let config = translated(&input, Some(tag.clone()))?;
            let entities = config
                .as_object()
                .map_or(0, |o| o.keys().filter(|k| !k.starts_with('_')).count());
            if entities == 0 && !allow_empty {
                bail!(
                    "the manifests translate to nothing (see the warnings): applying that would delete everything tagged {tag}; pass --allow-empty to mean it"
                );
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(post(&admin, admin_token.as_deref(), &tag, &config))
        }
    }
}

async fn post(admin: &str, token: Option<&str>, tag: &str, config: &Value) -> anyhow::Result<()> {
    let base = admin.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!("--admin {admin}: expected an http:// URL of a node's Admin API");
    }
    let url = format!(
        "{base}/config?owner_tag={}",
        form_urlencoded::byte_serialize(tag.as_bytes()).collect::<String>()
    );
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(config.to_string());
    if let Some(t) = token {
        req = req.header("kong-admin-token", t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // The message only: a unique violation's `fields` repeat the clashing value.
        let shown = match body.get("message") {
            Some(m) => m.to_string(),
            None => body.to_string(),
        };
        bail!(
            "{base} refused the configuration ({status}): {}",
            redact_keys(&shown)
        );
    }
    let n = |k: &str| body.get(k).and_then(Value::as_u64).unwrap_or(0);
    if status.as_u16() == 200 {
        println!("unchanged: {} entities tagged {tag}", n("unchanged"));
    } else {
        println!(
            "applied ({tag}): {} created, {} updated, {} deleted, {} unchanged",
            n("created"),
            n("updated"),
            n("deleted"),
            n("unchanged")
        );
    }
    Ok(())
}

/// Hides credential values in an Admin API message: a unique violation names the clashing
/// value (`{key="..."}`), which for a key-auth or jwt key is a secret that belongs in no log.
fn redact_keys(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("key=\\\"") {
        let (head, tail) = rest.split_at(i + "key=\\\"".len());
        out.push_str(head);
        match tail.find("\\\"") {
            Some(end) => {
                out.push_str("[redacted]");
                rest = &tail[end..];
            }
            None => {
                rest = tail;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn credential_values_are_redacted_from_messages() {
        let body =
            serde_json::json!({"message": "UNIQUE violation detected on '{key=\"s3cret\"}'"})
                .to_string();
        let shown = super::redact_keys(&body);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("key=\\\"[redacted]\\\""), "{shown}");
    }
}
