//! The `sentryDsn` value: parsing, validation and masking. Pure configuration-domain code, so that
//! validating the configuration does not depend on the Sentry client (`telemetry::sentry`), which
//! uses it.

use std::fmt;

/// `sentry_client` of the auth header.
const CLIENT: &str = concat!("vdbi/", env!("CARGO_PKG_VERSION"));

/// An invalid DSN. The DSN shown is masked: its keys never appear in a message.
#[derive(Debug, thiserror::Error)]
#[error("invalid sentryDsn {masked}: {problem}")]
pub struct DsnError {
    pub masked: String,
    pub problem: &'static str,
}

/// A parsed DSN, `{scheme}://{public_key}[:{secret}]@{host}[:{port}]/{path/}{project_id}`.
/// `Debug` masks the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    scheme: String,
    public_key: String,
    secret_key: Option<String>,
    /// With brackets for an IPv6 address.
    host: String,
    /// `None` when the scheme's default port.
    port: Option<u16>,
    /// `""` or `/prefix` (no trailing slash).
    path: String,
    project_id: String,
}

impl Dsn {
    pub fn parse(dsn: &str) -> Result<Dsn, DsnError> {
        let bad = |problem| DsnError {
            masked: mask_dsn(dsn),
            problem,
        };
        let url = url::Url::parse(dsn.trim()).map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let public_key = decode(url.username());
        if public_key.is_empty() {
            return Err(bad("no public key (want scheme://KEY@host/PROJECT)"));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(bad("no host")),
        };
        let (path, project_id) = url.path().rsplit_once('/').unwrap_or(("", ""));
        if project_id.is_empty() {
            return Err(bad("no project id (want scheme://KEY@host/PROJECT)"));
        }
        Ok(Dsn {
            scheme: url.scheme().to_string(),
            public_key,
            secret_key: url.password().map(decode).filter(|s| !s.is_empty()),
            host,
            port: url.port(),
            path: path.to_string(),
            project_id: project_id.to_string(),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Where envelopes go: `{scheme}://{host}[:{port}]{/path}/api/{project_id}/envelope/`.
    pub fn envelope_url(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}{}/api/{}/envelope/",
            self.scheme, self.host, self.path, self.project_id
        )
    }

    /// The `X-Sentry-Auth` header (the only place the keys are sent).
    pub fn auth_header(&self) -> String {
        let mut h = format!(
            "Sentry sentry_version=7, sentry_client={CLIENT}, sentry_key={}",
            self.public_key
        );
        if let Some(secret) = &self.secret_key {
            h.push_str(&format!(", sentry_secret={secret}"));
        }
        h
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.envelope_url())
    }
}

/// The DSN with its keys replaced by `****`; a string that is not `scheme://…@…` is masked whole.
pub fn mask_dsn(dsn: &str) -> String {
    match (dsn.find("://"), dsn.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}://****@{}", &dsn[..i], &dsn[at + 1..]),
        _ => "********".to_string(),
    }
}
