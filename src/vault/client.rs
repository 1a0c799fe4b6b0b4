//! The shared Vault client: one reqwest connection pool and one [`Pacer`] under vaultrs.
//!
//! A [`VaultClient`] holds no token. Each operation builds a [`Scoped`] vaultrs client for the
//! token it uses: a clone of the pooled `reqwest::Client` wrapped by rustify's
//! `Client::new(base, reqwest::Client)`, plus a per-token `EndpointMiddleware` (API prefix,
//! `X-Vault-Token`, `X-Vault-Namespace`, `X-Vault-Request`). vaultrs's typed calls and vdbi's
//! own rustify endpoints (see [`super::endpoints`]) run through it; every error is mapped by
//! [`super::exec`], which drops response bodies.

use super::error::VaultError;
use super::limiter::{Lane, Pacer, RateLimiter};
use super::secret::VaultToken;
use reqwest::header::HeaderValue;
use rustify::clients::reqwest::Client as HttpClient;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::VaultClientSettings;

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
    /// Client-side limit of the paced lane (the renewer and the revoker), per second (compat
    /// `vaultRateLimit`); 0 = unlimited. Foreground calls are never limited (see
    /// [`super::limiter`]).
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

/// A Vault client. Cheap to clone: all clones share one HTTP connection pool and one
/// [`Pacer`]. It holds no token; every operation takes the token to use. Built only by the
/// actor layer (`actors::vault_session`), which makes the VaultSession the only caller.
#[derive(Clone, Debug)]
pub struct VaultClient {
    inner: Arc<Inner>,
    lane: Lane,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The address's origin (`scheme://host:port/`): rustify's base.
    base: String,
    /// `v1`, or `<prefix>/v1` for an address with a path prefix: vaultrs's middleware puts
    /// it in front of every endpoint path.
    version: String,
    namespace: Option<String>,
    pacer: Pacer,
    settings: VaultSettings,
    /// What vaultrs's `Client::settings()` returns (built once, never from the environment).
    vaultrs_settings: VaultClientSettings,
}

/// A vaultrs client for one token: the shared pool, this token's middleware.
pub(crate) struct Scoped<'a> {
    http: HttpClient,
    middle: EndpointMiddleware,
    settings: &'a VaultClientSettings,
}

impl vaultrs::client::Client for Scoped<'_> {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        self.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_string();
    }
}

/// Joins path pieces (each may contain `/`) into a Vault API path, dropping empty segments and
/// refusing `.` and `..` (URL normalisation would make the request escape its prefix: a
/// pod-controlled uuid `../x` must not reach another KV path). The segments stay raw: rustify
/// percent-encodes each one (`%` included) when it builds the URL.
pub(crate) fn raw_path(parts: &[&str]) -> Result<String, VaultError> {
    let mut out = String::new();
    for seg in parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty())
    {
        if seg == "." || seg == ".." {
            return Err(VaultError::InvalidRequest(format!(
                "path segment {seg:?} is not allowed"
            )));
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(seg);
    }
    Ok(out)
}

#[cfg(test)]
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

#[cfg(test)]
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
/// segment and dropping empty ones: `api_path(&["kv/", "data", "a/b"])` = `kv/data/a/b`; what
/// rustify sends for [`raw_path`]'s answer (`.` and `..` refused the same way; `%` is escaped,
/// so `%2e%2e` stays literal and harmless).
#[cfg(test)]
pub(crate) fn api_path(parts: &[&str]) -> Result<String, VaultError> {
    let raw = raw_path(parts)?;
    let encoded: Vec<String> = raw
        .split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect();
    Ok(encoded.join("/"))
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

impl VaultClient {
    /// Builds the client (one pooled rustls/ring HTTP client) in the paced lane. Installs the
    /// ring crypto provider if none is installed yet.
    pub(crate) fn new(settings: VaultSettings) -> Result<VaultClient, VaultError> {
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
            Some(ns) => {
                // the middleware would panic on a value that is not a valid header
                HeaderValue::from_str(ns)
                    .map_err(|_| VaultError::Config(format!("invalid Vault namespace {ns:?}")))?;
                Some(ns.to_string())
            }
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
        let mut origin = address.clone();
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        let base = origin.to_string();
        let version = match address.path().trim_matches('/') {
            "" => "v1".to_string(),
            prefix => format!("{prefix}/v1"),
        };
        let vaultrs_settings = VaultClientSettings {
            address: address.clone(),
            ca_certs: settings
                .ca_cert_file
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            identity: None,
            timeout: Some(settings.request_timeout),
            token: String::new(),
            verify: !settings.skip_verify,
            version: 1,
            wrapping: false,
            namespace: namespace.clone(),
            proxy: None,
        };
        Ok(VaultClient {
            inner: Arc::new(Inner {
                http,
                base,
                version,
                namespace,
                pacer: Pacer::new(limiter),
                settings,
                vaultrs_settings,
            }),
            lane: Lane::Paced,
        })
    }

    pub fn settings(&self) -> &VaultSettings {
        &self.inner.settings
    }

    /// The paced lane's limiter (`None` when unlimited).
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.pacer.limiter()
    }

    /// The lanes shared by every clone.
    pub fn pacer(&self) -> &Pacer {
        &self.inner.pacer
    }

    /// The lane this handle's calls take.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The same client (pool, pacer) whose calls take `lane`.
    pub(crate) fn in_lane(&self, lane: Lane) -> VaultClient {
        VaultClient {
            inner: self.inner.clone(),
            lane,
        }
    }

    /// A vaultrs client for `token` (`None`: unauthenticated) over the shared pool.
    pub(crate) fn scoped(&self, token: Option<&VaultToken>) -> Result<Scoped<'_>, VaultError> {
        let token = match token {
            None => String::new(),
            Some(t) => {
                // the middleware would panic on a value that is not a valid header
                HeaderValue::from_str(t.expose()).map_err(|_| {
                    VaultError::InvalidRequest(
                        "the token holds characters not allowed in a header".into(),
                    )
                })?;
                t.expose().to_string()
            }
        };
        Ok(Scoped {
            http: HttpClient::new(&self.inner.base, self.inner.http.clone()),
            middle: EndpointMiddleware {
                token,
                version: self.inner.version.clone(),
                wrap: None,
                namespace: self.inner.namespace.clone(),
            },
            settings: &self.inner.vaultrs_settings,
        })
    }

    /// Runs one call: waits for this handle's lane (cancel-safe: a caller that gives up while
    /// waiting takes no slot), then runs `call` with a vaultrs client for `token`.
    pub(crate) async fn run<'s, T, F, Fut>(
        &'s self,
        token: Option<&VaultToken>,
        call: F,
    ) -> Result<T, VaultError>
    where
        F: FnOnce(Scoped<'s>) -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let scoped = self.scoped(token)?;
        let _permit = self.inner.pacer.admit(self.lane).await;
        call(scoped).await
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
        assert_eq!(c.inner.base, "https://vault.example:8200/");
        assert_eq!(c.inner.version, "prefix/v1");
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

    /// The URL a request is sent to, as the middleware and rustify build it.
    fn url_of<E: rustify::endpoint::Endpoint>(c: &VaultClient, e: E) -> String {
        use rustify::endpoint::Endpoint as _;
        use vaultrs::client::Client as _;
        let scoped = c.scoped(Some(&VaultToken::new("s.t"))).unwrap();
        let req = e
            .with_middleware(scoped.middle())
            .request(scoped.http().base.as_str())
            .unwrap();
        assert_eq!(req.headers()["X-Vault-Token"], "s.t");
        // (an empty query string, `?`, is what vaultrs sends for an unset version)
        req.uri().to_string().trim_end_matches('?').to_string()
    }

    #[test]
    fn request_urls_keep_the_prefix_and_encode_segments() {
        use vaultrs::api::kv2::requests::ReadSecretRequest;
        let c = VaultClient::new(VaultSettings {
            address: "https://vault.example:8200/prefix/".into(),
            ..Default::default()
        })
        .unwrap();
        let read = |path: &str| {
            let path = raw_path(&["kv", path]).unwrap();
            let (mount, path) = path.split_once('/').unwrap();
            ReadSecretRequest::builder()
                .mount(mount)
                .path(path)
                .build()
                .unwrap()
        };
        assert_eq!(
            url_of(&c, read("a b?#")),
            "https://vault.example:8200/prefix/v1/kv/data/a%20b%3F%23"
        );
        // `%` is escaped: `%2e%2e` never becomes `..` on the server
        assert_eq!(
            url_of(&c, read("%2e%2e")),
            "https://vault.example:8200/prefix/v1/kv/data/%252e%252e"
        );
        let plain = VaultClient::new(VaultSettings {
            address: "http://127.0.0.1:8200".into(),
            ..Default::default()
        })
        .unwrap();
        // vaultrs's renew-self path starts with a tab, which the URL parser drops
        let renew_self = vaultrs::api::token::requests::RenewTokenSelfRequest::builder()
            .build()
            .unwrap();
        assert_eq!(
            url_of(&plain, renew_self),
            "http://127.0.0.1:8200/v1/auth/token/renew-self"
        );
    }
}
