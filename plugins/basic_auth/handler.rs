//! `basic-auth`: identifies the consumer from a username and password in `Proxy-Authorization`
//! or `Authorization`, as Kong 3.9.3's plugin does (`kong/plugins/basic-auth/access.lua`).
//!
//! Stored passwords are argon2id hashes, slow to verify on purpose. A credential's entry
//! remembers the password it last verified, as an HMAC under a key made at process start
//! (never the password itself), so a client that keeps sending the right password pays the
//! hash once per credential, and a wrong password against a credential that has been verified
//! is refused at the cost of one HMAC. The slow verifications run off the runtime's threads,
//! at most [`SLOW_VERIFICATIONS`] at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tollgate_config::entities::BasicAuthCredential;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::password::{self, Stored};
use tollgate_config::plugins::basic_auth::{BasicAuthConfig, SCHEMA};
use tollgate_config::State;
use uuid::Uuid;

use super::auth::{self, already_authenticated, reject_or_anonymous, set_consumer};
use super::{CredentialInfo, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = BasicAuthConfig::parse(&p.config.0)?;
    let challenge = auth::challenge(
        format!("Basic realm=\"{}\"", cfg.realm),
        "Basic realm=\"service\"",
    );
    Some(Arc::new(BasicAuth {
        id: p.id,
        cfg,
        challenge,
    }))
}

/// Most argon2 verifications running at once: a flood of wrong passwords takes this many
/// blocking threads, not the machine.
pub const SLOW_VERIFICATIONS: usize = 2;

/// Most requests waiting for a verification; past it a request is refused at once (401)
/// rather than queued without end behind a flood.
pub const MAX_WAITING: usize = 64;

static SLOW: LazyLock<Arc<tokio::sync::Semaphore>> =
    LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(SLOW_VERIFICATIONS)));

static WAITING: AtomicUsize = AtomicUsize::new(0);

/// The key of the verified-password tags: random per process, so a tag says nothing outside
/// it.
static TAG_KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

fn tag(password: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&*TAG_KEY).expect("any key length works");
    m.update(password);
    m.finalize().into_bytes().into()
}

/// A credential as the data plane keeps it.
pub struct Entry {
    pub id: Uuid,
    pub consumer: Uuid,
    pub username: HeaderValue,
    hash: String,
    /// The tag of the password this hash verified, once one did.
    verified: OnceLock<[u8; 32]>,
}

/// Credentials by username. An entry whose credential did not change is carried over from
/// the previous snapshot with what it verified.
pub type Index = HashMap<String, Arc<Entry>>;

pub fn index(state: &State, prev: &Index) -> Index {
    state
        .all::<BasicAuthCredential>()
        .filter_map(|c| {
            let kept = prev.get(&c.username).filter(|e| {
                e.id == c.id && e.consumer == c.consumer.id && e.hash == c.password
            });
            let entry = match kept {
                Some(e) => e.clone(),
                None => Arc::new(Entry {
                    id: c.id,
                    consumer: c.consumer.id,
                    username: HeaderValue::from_str(&c.username).ok()?,
                    hash: c.password.clone(),
                    verified: OnceLock::new(),
                }),
            };
            Some((c.username.clone(), entry))
        })
        .collect()
}

/// What checking a password takes.
enum Check {
    Yes,
    No,
    /// An argon2 verification, not yet done for this credential.
    Slow,
}

impl Entry {
    fn check_fast(&self, given: &[u8]) -> Check {
        if let Some(t) = self.verified.get() {
            return if bool::from(t.ct_eq(&tag(given))) {
                Check::Yes
            } else {
                Check::No
            };
        }
        match password::stored(&self.hash) {
            Some(Stored::KongSha1(_)) => {
                if password::verify(&self.hash, given, self.consumer) {
                    Check::Yes
                } else {
                    Check::No
                }
            }
            Some(Stored::Argon2(_)) => Check::Slow,
            None => Check::No,
        }
    }

    async fn check_slow(self: Arc<Self>, given: Vec<u8>) -> bool {
        if WAITING.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            WAITING.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let permit = SLOW.clone().acquire_owned().await;
        WAITING.fetch_sub(1, Ordering::Relaxed);
        let Ok(permit) = permit else {
            return false;
        };
        let entry = self.clone();
        // The permit goes with the work: a client that goes away does not free it while the
        // hash still runs.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let ok = password::verify(&entry.hash, &given, entry.consumer);
            if ok {
                let _ = entry.verified.set(tag(&given));
            }
            ok
        })
        .await;
        ok.unwrap_or(false)
    }
}

pub struct BasicAuth {
    id: Uuid,
    cfg: BasicAuthConfig,
    challenge: HeaderValue,
}

static PROXY_AUTHORIZATION: HeaderName = http::header::PROXY_AUTHORIZATION;
static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

/// Kong's reading of a header: `\s*[Bb]asic\s*(.+)` anywhere in the first value, base64,
/// then `([^:]+):(.*)` searched anywhere: a username of at least one character (leading
/// colons skipped), the password may hold colons. The bytes are taken as they are, as Kong
/// takes them (a Latin-1 password works); the username must be text to name a credential.
fn credentials(req: &http::request::Parts, name: &HeaderName) -> Option<(String, Vec<u8>)> {
    let v = req.headers.get(name)?.as_bytes();
    let at = v
        .windows(5)
        .position(|w| w[0] | 0x20 == b'b' && &w[1..] == b"asic")?;
    let encoded = v[at + 5..].trim_ascii_start();
    let encoded = encoded
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()?
        .trim_ascii_end();
    if encoded.is_empty() || encoded.len() > 8192 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    let start = raw.iter().position(|b| *b != b':')?;
    let raw = &raw[start..];
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&raw[..colon]).ok()?;
    // PCRE's `.` stops at a newline.
    let pass = raw[colon + 1..].split(|b| *b == b'\n').next().unwrap_or_default();
    Some((user.to_string(), pass.to_vec()))
}

/// Where the request stands after the cheap part.
enum Step {
    Done(Flow),
    Slow(Arc<Entry>, Vec<u8>),
}

impl BasicAuth {
    fn fail(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        reject_or_anonymous(ctx, req, &self.cfg.anonymous, || {
            auth::unauthorized("Unauthorized", &self.challenge)
        })
    }

    fn succeed(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts, e: &Entry) -> Flow {
        let Some(consumer) = ctx.config.consumer(e.consumer).cloned() else {
            return self.fail(ctx, req);
        };
        let cred = CredentialInfo {
            id: e.id,
            consumer: e.consumer,
        };
        set_consumer(ctx, req, consumer, Some((cred, e.username.clone())));
        Flow::Continue
    }

    fn start(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Step {
        if already_authenticated(&self.cfg.anonymous, ctx) {
            return Step::Done(Flow::Continue);
        }
        if !req.headers.contains_key(&AUTHORIZATION)
            && !req.headers.contains_key(&PROXY_AUTHORIZATION)
        {
            return Step::Done(self.fail(ctx, req));
        }
        // Proxy-Authorization first; Authorization only when it named no known username.
        let mut found = None;
        for name in [&PROXY_AUTHORIZATION, &AUTHORIZATION] {
            let given = credentials(req, name);
            if self.cfg.hide_credentials {
                req.headers.remove(name);
            }
            match given {
                Some((user, pass)) => {
                    if let Some(e) = ctx.config.basic_auth(&user) {
                        found = Some((e.clone(), pass));
                        break;
                    }
                    if *name == AUTHORIZATION {
                        break;
                    }
                }
                None if *name == AUTHORIZATION => break,
                None => {}
            }
        }
        let Some((entry, pass)) = found else {
            return Step::Done(self.fail(ctx, req));
        };
        match entry.check_fast(&pass) {
            Check::Yes => Step::Done(self.succeed(ctx, req, &entry)),
            Check::No => Step::Done(self.fail(ctx, req)),
            Check::Slow => Step::Slow(entry, pass),
        }
    }
}

impl Plugin for BasicAuth {
    super::identity!();

    fn is_async(&self) -> bool {
        true
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        // Only reached by callers that do not await (tests): a slow check fails closed.
        match self.start(ctx, req) {
            Step::Done(flow) => flow,
            Step::Slow(..) => self.fail(ctx, req),
        }
    }

    fn access_async<'s>(
        &'s self,
        ctx: &'s mut Ctx<'_>,
        req: &'s mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Flow> + Send + 's>> {
        match self.start(ctx, req) {
            Step::Done(flow) => Box::pin(std::future::ready(flow)),
            Step::Slow(entry, pass) => Box::pin(async move {
                if entry.clone().check_slow(pass).await {
                    self.succeed(ctx, req, &entry)
                } else {
                    self.fail(ctx, req)
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(h: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder();
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn authorization_values_read_as_kong_reads_them() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let get = |v: String| credentials(&parts(&[("authorization", &v)]), &AUTHORIZATION);
        assert_eq!(
            get(format!("Basic {}", b64("user321:password:123"))),
            Some(("user321".into(), b"password:123".to_vec()))
        );
        assert_eq!(
            get(format!("basic {}", b64("bob:"))),
            Some(("bob".into(), vec![]))
        );
        assert_eq!(get(format!("Basic {}", b64(":pw"))), None);
        // Kong's unanchored pattern skips leading colons.
        assert_eq!(
            get(format!("Basic {}", b64(":a:b"))),
            Some(("a".into(), b"b".to_vec()))
        );
        let latin1 = base64::engine::general_purpose::STANDARD.encode(b"bob:caf\xe9");
        assert_eq!(
            get(format!("Basic {latin1}")),
            Some(("bob".into(), b"caf\xe9".to_vec()))
        );
        assert_eq!(get(format!("Basic {}", b64("nocolon"))), None);
        assert_eq!(get("Basic !!!notbase64".into()), None);
        assert_eq!(get("Bearer abc".into()), None);
        assert_eq!(get(format!("Basic {}", "A".repeat(10_000))), None);
    }

    #[test]
    fn a_verified_password_is_remembered_as_a_keyed_tag_only() {
        let hash = password::hash("pw", "seed", Uuid::nil());
        let e = Entry {
            id: Uuid::nil(),
            consumer: Uuid::nil(),
            username: HeaderValue::from_static("u"),
            hash,
            verified: OnceLock::new(),
        };
        assert!(matches!(e.check_fast(b"pw"), Check::Slow));
        assert!(password::verify(&e.hash, b"pw", Uuid::nil()));
        e.verified.set(tag(b"pw")).unwrap();
        assert!(matches!(e.check_fast(b"pw"), Check::Yes));
        assert!(matches!(e.check_fast(b"wrong"), Check::No));
        assert_ne!(e.verified.get().unwrap().as_slice(), b"pw");
    }
}
