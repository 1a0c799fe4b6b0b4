//! The shared Vault HTTP client: one connection pool, one rate limiter, many tokens.

use super::error::VaultError;
use super::limiter::RateLimiter;
use super::secret::VaultToken;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to reach Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSettings {
    /// `http(s)://host:port`, optionally with a path prefix (the API is under `<address>/v1/`).
    pub address: String,
    /// PEM bundle of the CA(s) that sign Vault's certificate. When set, **only** these roots are
    /// trusted; when unset, the system's roots are.
    pub ca_cert_file: Option<PathBuf>,
    /// Accept any server certificate (tests only).
    pub skip_verify: bool,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// Bound of every HTTP request (connect + send + whole response). Callers add their own
    /// deadline on top with `tokio::time::timeout`.
    pub request_timeout: Duration,
    /// Client-side limit on all calls, per second (compat `vaultRateLimit`); 0 = unlimited.
    pub rate_limit_per_sec: u32,
    /// Calls allowed at once before the limit applies; 0 = one second's worth
    /// (`rate_limit_per_sec`). The Go version used 1.
    pub rate_burst: u32,
}

impl Default for VaultSettings {
    fn default() -> Self {
        VaultSettings {
            address: "http://127.0.0.1:8200".into(),
            ca_cert_file: None,
            skip_verify: false,
            namespace: None,
            request_timeout: Duration::from_secs(60),
            rate_limit_per_sec: 30,
            rate_burst: 0,
        }
    }
}

/// A Vault client. Cheap to clone: all clones share one HTTP connection pool and one rate
/// limiter. It holds no token; every operation takes the token to use.
#[derive(Clone, Debug)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `<address>/v1/`
    base: String,
    namespace: Option<HeaderValue>,
    limiter: Option<RateLimiter>,
    settings: VaultSettings,
}

/// Characters escaped in a path segment (RFC 3986 path chars stay readable; `/` never occurs
/// inside a segment because paths are split on it).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Joins path pieces (each may contain `/`) into a Vault API path, percent-encoding every
/// segment and dropping empty ones: `api_path(&["kv/", "data", "a/b"])` = `kv/data/a/b`.
/// A `.` or `..` segment is refused: URL normalisation would make the request escape its
/// prefix (a pod-controlled uuid `../x` must not reach another KV path).
pub(crate) fn api_path(parts: &[&str]) -> Result<String, VaultError> {
    let mut out = String::new();
    for seg in parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty())
    {
        // (`%` is escaped below, so `%2e%2e` stays literal and harmless)
        if seg == "." || seg == ".." {
            return Err(VaultError::InvalidRequest(format!(
                "path segment {seg:?} is not allowed"
            )));
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    Ok(out)
}

/// One request: `path` is already encoded (see [`api_path`]); `list` adds `?list=true` (Vault's
/// LIST).
pub(crate) struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a VaultToken>,
    pub list: bool,
    pub body: Option<&'a serde_json::Value>,
}

/// A raw answer: status and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// Parses the body as `T`. Errors name `what` and never quote the body.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, VaultError> {
        if self.body.is_empty() {
            return Err(VaultError::InvalidResponse(format!(
                "{what}: empty body (HTTP {})",
                self.status
            )));
        }
        parse_json(what, &self.body)
    }
}

/// Parses JSON; the error message never contains a value from the body (only "missing field"
/// messages, which name the field, are kept as is).
pub(crate) fn parse_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, VaultError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let detail = if msg.starts_with("missing field") {
            msg
        } else {
            format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
        };
        VaultError::InvalidResponse(format!("{what}: {detail}"))
    })
}

/// The `errors` of an error body. A body that is not Vault's `{"errors":[…]}` (a proxy's page)
/// is summed up as its first 200 characters. `secret` (the token sent) is masked first.
fn error_strings(body: &[u8], secret: Option<&str>) -> Vec<String> {
    #[derive(Deserialize)]
    struct ErrBody {
        #[serde(default)]
        errors: Option<Vec<String>>,
    }
    // Belt and braces: Vault does not echo tokens, but a proxy's error page might.
    let mask = |text: String| match secret.filter(|s| s.len() >= 4) {
        Some(s) if text.contains(s) => text.replace(s, "***"),
        _ => text,
    };
    match serde_json::from_slice::<ErrBody>(body) {
        Ok(b) => b.errors.unwrap_or_default().into_iter().map(mask).collect(),
        Err(_) if body.iter().all(|b| b.is_ascii_whitespace()) => Vec::new(),
        Err(_) => {
            let text = mask(String::from_utf8_lossy(body).into_owned());
            let text: String = text.chars().take(200).collect();
            vec![format!("non-JSON body: {}", text.trim())]
        }
    }
}

/// Follows at most 3 redirects (Vault standbys answer 307 to the active node), never from
/// https to http: the `X-Vault-Token` header travels with a redirect.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().iter().any(|u| u.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Maps a reqwest failure. The URL is dropped (it is in the caller's context anyway).
fn transport_error(e: reqwest::Error) -> VaultError {
    if e.is_timeout() {
        return VaultError::Timeout;
    }
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    VaultError::Transport(msg)
}

impl VaultClient {
    /// Builds the client (one pooled rustls/ring HTTP client). Installs the ring crypto
    /// provider if none is installed yet.
    pub fn new(settings: VaultSettings) -> Result<VaultClient, VaultError> {
        crate::tls::install_crypto_provider();
        let address = url::Url::parse(settings.address.trim())
            .map_err(|e| VaultError::Config(format!("invalid Vault address: {e}")))?;
        let https = match address.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(VaultError::Config(format!(
                    "invalid Vault address scheme {other:?} (want http or https)"
                )))
            }
        };
        if address.host_str().is_none_or(str::is_empty) {
            return Err(VaultError::Config("Vault address has no host".into()));
        }
        let mut b = reqwest::Client::builder()
            .tls_backend_rustls()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(redirect_policy())
            .user_agent(concat!("vdbi/", env!("CARGO_PKG_VERSION")));
        if !https {
            // Plain HTTP: no root store needed (and none must be loaded).
            b = b.tls_certs_only(Vec::new());
        } else {
            if let Some(path) = &settings.ca_cert_file {
                let pem = std::fs::read(path).map_err(|e| {
                    VaultError::Config(format!("reading Vault CA bundle {}: {e}", path.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    VaultError::Config(format!("parsing Vault CA bundle {}: {e}", path.display()))
                })?;
                if certs.is_empty() {
                    return Err(VaultError::Config(format!(
                        "Vault CA bundle {} holds no certificate",
                        path.display()
                    )));
                }
                b = b.tls_certs_only(certs);
            }
            if settings.skip_verify {
                b = b.tls_danger_accept_invalid_certs(true);
            }
        }
        let http = b
            .build()
            .map_err(|e| VaultError::Config(format!("building the HTTP client: {e}")))?;
        let namespace = match settings.namespace.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(ns) => Some(
                HeaderValue::from_str(ns)
                    .map_err(|_| VaultError::Config(format!("invalid Vault namespace {ns:?}")))?,
            ),
        };
        let limiter = match settings.rate_limit_per_sec {
            0 => None,
            rate => Some(RateLimiter::new(
                rate,
                if settings.rate_burst == 0 {
                    rate
                } else {
                    settings.rate_burst
                },
            )),
        };
        let base = format!("{}/v1/", address.as_str().trim_end_matches('/'));
        Ok(VaultClient {
            inner: Arc::new(Inner {
                http,
                base,
                namespace,
                limiter,
                settings,
            }),
        })
    }

    pub fn settings(&self) -> &VaultSettings {
        &self.inner.settings
    }

    /// The shared limiter (`None` when unlimited).
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }

    /// Sends one request through the limiter and the pool; any status is a [`Reply`].
    pub(crate) async fn send(&self, request: Request<'_>) -> Result<Reply, VaultError> {
        let Request {
            method,
            path,
            token,
            list,
            body,
        } = request;
        if let Some(l) = &self.inner.limiter {
            l.acquire().await;
        }
        let mut url = format!("{}{}", self.inner.base, path);
        if list {
            url.push_str("?list=true");
        }
        let mut req = self
            .inner
            .http
            .request(method, url)
            .header("X-Vault-Request", "true");
        if let Some(t) = token {
            let mut v = HeaderValue::from_str(t.expose()).map_err(|_| {
                VaultError::InvalidRequest(
                    "the token holds characters not allowed in a header".into(),
                )
            })?;
            v.set_sensitive(true);
            req = req.header("X-Vault-Token", v);
        }
        if let Some(ns) = &self.inner.namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| VaultError::Config(format!("encoding the request: {e}")))?;
            req = req.header(CONTENT_TYPE, "application/json").body(bytes);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(transport_error)?;
        Ok(Reply { status, body })
    }

    /// [`send`](Self::send), then turns a non-2xx status into the classified error.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&VaultToken>,
        list: bool,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, VaultError> {
        let reply = self
            .send(Request {
                method,
                path,
                token,
                list,
                body,
            })
            .await?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            let errors = error_strings(&reply.body, token.map(VaultToken::expose));
            Err(VaultError::from_status(reply.status, errors))
        }
    }

    /// Generic read of `path` (e.g. `sys/mounts`), returning the whole response JSON, or `None`
    /// for a 204. Meant for tests and set-up code: the value may hold secrets, never log it.
    pub async fn logical_read(
        &self,
        token: &VaultToken,
        path: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        let r = self
            .call(Method::GET, &api_path(&[path])?, Some(token), false, None)
            .await?;
        opt_json(&r, path)
    }

    /// Generic write (`POST`) of `body` to `path`; see [`logical_read`](Self::logical_read).
    pub async fn logical_write(
        &self,
        token: &VaultToken,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        let r = self
            .call(
                Method::POST,
                &api_path(&[path])?,
                Some(token),
                false,
                Some(body),
            )
            .await?;
        opt_json(&r, path)
    }

    /// Generic `DELETE` of `path`; see [`logical_read`](Self::logical_read).
    pub async fn logical_delete(&self, token: &VaultToken, path: &str) -> Result<(), VaultError> {
        self.call(
            Method::DELETE,
            &api_path(&[path])?,
            Some(token),
            false,
            None,
        )
        .await?;
        Ok(())
    }
}

fn opt_json(r: &Reply, what: &str) -> Result<Option<serde_json::Value>, VaultError> {
    if r.body.iter().all(|b| b.is_ascii_whitespace()) {
        Ok(None)
    } else {
        r.json(what).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        let p = |parts: &[&str]| api_path(parts).unwrap();
        assert_eq!(p(&["kv/", "data", "a/b"]), "kv/data/a/b");
        assert_eq!(p(&["/kv", "metadata", "/prefix/"]), "kv/metadata/prefix");
        assert_eq!(
            p(&["auth/kubernetes", "role", "a b?#"]),
            "auth/kubernetes/role/a%20b%3F%23"
        );
        assert_eq!(p(&["x", "", "y"]), "x/y");
        assert_eq!(p(&["kv", "data", "%2e%2e"]), "kv/data/%252e%252e");
        assert!(matches!(
            api_path(&["kv", "data", "p/../x"]),
            Err(VaultError::InvalidRequest(_))
        ));
        assert!(api_path(&["kv", "data", "./x"]).is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_strings(br#"{"errors":["permission denied"]}"#, None),
            vec!["permission denied"]
        );
        assert!(error_strings(br#"{"errors":[]}"#, None).is_empty());
        assert!(error_strings(b"", None).is_empty());
        assert_eq!(
            error_strings(b"<html>bad gateway</html>", None),
            vec!["non-JSON body: <html>bad gateway</html>"]
        );
        // the token is masked before the 200-character cut, so no half token survives
        let page = format!("{}s.secret-token-value", "x".repeat(190));
        let e = error_strings(page.as_bytes(), Some("s.secret-token-value"));
        assert!(!e[0].contains("s.secr"), "{e:?}");
        let e = error_strings(br#"{"errors":["bad s.tok1 here"]}"#, Some("s.tok1"));
        assert_eq!(e, vec!["bad *** here"]);
    }

    #[test]
    fn parse_errors_never_quote_the_body() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Creds {
            username: String,
            password: u32,
        }
        let e =
            parse_json::<Creds>("creds", br#"{"username":"u","password":"hunter2"}"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse_json::<Creds>("creds", br#"{"password":1}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vault: invalid response: creds: missing field `username` at line 1 column 14"
        );
    }

    #[test]
    fn bad_settings() {
        let s = |address: &str| VaultSettings {
            address: address.into(),
            ..Default::default()
        };
        assert!(matches!(
            VaultClient::new(s("ftp://x")),
            Err(VaultError::Config(_))
        ));
        assert!(matches!(
            VaultClient::new(s("not a url")),
            Err(VaultError::Config(_))
        ));
        let missing = VaultSettings {
            address: "https://vault:8200".into(),
            ca_cert_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            VaultClient::new(missing),
            Err(VaultError::Config(_))
        ));
        let c = VaultClient::new(s("https://vault.example:8200/prefix/")).unwrap();
        assert_eq!(c.inner.base, "https://vault.example:8200/prefix/v1/");
        assert_eq!(c.rate_limiter().unwrap().burst(), 30);
        let unlimited = VaultSettings {
            rate_limit_per_sec: 0,
            ..s("http://127.0.0.1:1")
        };
        assert!(VaultClient::new(unlimited)
            .unwrap()
            .rate_limiter()
            .is_none());
    }
}
