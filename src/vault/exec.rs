//! Running rustify endpoints with a vaultrs client, and turning every vaultrs/rustify error
//! into a [`VaultError`] that holds no success body.
//!
//! rustify keeps a failed response's body in its errors (`ServerResponseError.content`,
//! `ResponseParseError.content`), and serde's messages quote the value they choke on. The
//! mapping keeps only the status, Vault's `errors` strings (with the token sent masked; a
//! proxy's non-JSON error page is cut to 200 characters, token masked) and, for a body that
//! does not parse, the kind and position or the name of a missing field, never the body.

use super::client::Scoped;
use super::error::VaultError;
use super::secret::VaultToken;
use rustify::endpoint::Endpoint;
use rustify::errors::ClientError as RestError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use vaultrs::client::Client as _;
use vaultrs::error::ClientError;

/// Executes `endpoint` with `client`'s middleware and returns the raw 2xx response body.
pub(crate) async fn exec_raw<E: Endpoint>(
    client: &Scoped<'_>,
    endpoint: E,
    what: &str,
) -> Result<Vec<u8>, VaultError> {
    let token = client.middle().token.as_str();
    endpoint
        .with_middleware(client.middle())
        .exec(client.http())
        .await
        .map(|r| r.response.into_body())
        .map_err(|e| from_rest_error(e, what, Some(token)))
}

/// Executes `endpoint` and unwraps the whole Vault envelope (`data`, `auth`, `lease_id`,
/// `lease_duration`, `renewable`) into `vaultrs::api::EndpointResult<E::Response>`.
pub(crate) async fn exec_envelope<E: Endpoint>(
    client: &Scoped<'_>,
    endpoint: E,
    what: &str,
) -> Result<vaultrs::api::EndpointResult<E::Response>, VaultError> {
    let token = client.middle().token.as_str();
    endpoint
        .with_middleware(client.middle())
        .exec(client.http())
        .await
        .and_then(|r| r.wrap::<vaultrs::api::EndpointResult<E::Response>>())
        .map_err(|e| from_rest_error(e, what, Some(token)))
}

/// Maps an error of a vaultrs call. `token` (the one sent) is masked in Vault's messages.
pub(crate) fn from_client_error(
    e: ClientError,
    what: &str,
    token: Option<&VaultToken>,
) -> VaultError {
    let token = token.map(VaultToken::expose);
    match e {
        ClientError::APIError { code, errors } => {
            VaultError::from_status(code, mask_all(errors, token))
        }
        ClientError::RestClientError { source } => from_rest_error(source, what, token),
        ClientError::JsonParseError { source } => {
            VaultError::InvalidResponse(format!("{what}: {}", json_detail(&source)))
        }
        ClientError::ResponseEmptyError => {
            VaultError::InvalidResponse(format!("{what}: empty response"))
        }
        ClientError::ResponseDataEmptyError => {
            VaultError::InvalidResponse(format!("{what}: no data"))
        }
        ClientError::ResponseWrapError | ClientError::WrapInvalidError => {
            VaultError::InvalidResponse(format!("{what}: unexpected response wrapping"))
        }
        ClientError::FileNotFoundError { .. }
        | ClientError::FileReadError { .. }
        | ClientError::FileWriteError { .. }
        | ClientError::ParseCertificateError { .. }
        | ClientError::RestClientBuildError { .. } => VaultError::Config(format!("{what}: {e}")),
        ClientError::InvalidLoginMethodError | ClientError::InvalidUpdateParameter => {
            VaultError::InvalidRequest(format!("{what}: {e}"))
        }
    }
}

/// Maps a rustify error (see the module documentation).
pub(crate) fn from_rest_error(e: RestError, what: &str, token: Option<&str>) -> VaultError {
    match e {
        RestError::ServerResponseError { code, content } => {
            let errors = content
                .as_deref()
                .map(|c| error_strings(c.as_bytes(), token))
                .unwrap_or_default();
            VaultError::from_status(code, errors)
        }
        RestError::RequestError { source, .. } | RestError::ResponseError { source } => {
            transport_error(source)
        }
        RestError::ResponseParseError { source, .. } => {
            let detail = match source.downcast_ref::<serde_json::Error>() {
                Some(j) => json_detail(j),
                None => "unparsable body".into(),
            };
            VaultError::InvalidResponse(format!("{what}: {detail}"))
        }
        RestError::ResponseConversionError { .. } => {
            VaultError::InvalidResponse(format!("{what}: body is not UTF-8"))
        }
        // building the request: messages name the step, never a value
        other => VaultError::InvalidRequest(format!("{what}: {other}")),
    }
}

/// Maps a transport failure. The URL is dropped (it is in the caller's context anyway).
fn transport_error(source: anyhow::Error) -> VaultError {
    let e = match source.downcast::<reqwest::Error>() {
        Ok(e) if e.is_timeout() => return VaultError::Timeout,
        Ok(e) => Box::new(e.without_url()) as Box<dyn std::error::Error + Send + Sync>,
        Err(other) => other.into(),
    };
    let mut msg = e.to_string();
    let mut src = e.source();
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

/// What a serde error may say: the name of a missing field, else its kind and position
/// (never the value it choked on).
fn json_detail(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("missing field") {
        msg
    } else {
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    }
}

/// Parses JSON; the error never contains a value from the body.
pub(crate) fn parse_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, VaultError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(VaultError::InvalidResponse(format!("{what}: empty body")));
    }
    serde_json::from_slice(body)
        .map_err(|e| VaultError::InvalidResponse(format!("{what}: {}", json_detail(&e))))
}

fn mask(text: String, secret: Option<&str>) -> String {
    // Belt and braces: Vault does not echo tokens, but a proxy's message might.
    match secret.filter(|s| s.len() >= 4) {
        Some(s) if text.contains(s) => text.replace(s, "***"),
        _ => text,
    }
}

fn mask_all(errors: Vec<String>, secret: Option<&str>) -> Vec<String> {
    errors.into_iter().map(|e| mask(e, secret)).collect()
}

/// Vault's `errors` of an error body. A body that is not Vault's `{"errors":[…]}` (a proxy's
/// error page) is summed up as its first 200 characters, after `secret` (the token sent) is
/// masked. Success bodies (where passwords and tokens live) are never kept.
fn error_strings(body: &[u8], secret: Option<&str>) -> Vec<String> {
    #[derive(Deserialize)]
    struct ErrBody {
        #[serde(default)]
        errors: Option<Vec<String>>,
    }
    match serde_json::from_slice::<ErrBody>(body) {
        Ok(b) => mask_all(b.errors.unwrap_or_default(), secret),
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => Vec::new(),
        Err(_) => {
            let text = mask(String::from_utf8_lossy(body).into_owned(), secret);
            let text: String = text.chars().take(200).collect();
            vec![format!("non-JSON body: {}", text.trim())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rustify_and_vaultrs_errors_lose_their_bodies() {
        let body = r#"{"data":{"username":"u","password":"hunter2"}}"#;
        let parse = serde_json::from_str::<u32>(body).unwrap_err();
        let cases = [
            from_rest_error(
                RestError::ServerResponseError {
                    code: 400,
                    content: Some(r#"{"errors":["bad request"]}"#.into()),
                },
                "creds",
                None,
            ),
            from_rest_error(
                RestError::ResponseParseError {
                    source: parse.into(),
                    content: Some(body.into()),
                },
                "creds",
                None,
            ),
            from_client_error(
                ClientError::JsonParseError {
                    source: serde_json::from_str::<Vec<u32>>(r#"["hunter2"]"#).unwrap_err(),
                },
                "kv read",
                None,
            ),
            from_client_error(
                ClientError::APIError {
                    code: 400,
                    errors: vec!["bad token s.hunter2".into()],
                },
                "renew",
                Some(&VaultToken::new("s.hunter2")),
            ),
        ];
        for e in cases {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
