//! Secret values (tokens, passwords) whose `Debug`/`Display` never show the value.
//!
//! The value is reachable only through an explicit `expose()`, so it cannot end up in a log line
//! or an error message by accident. Neither type implements `Serialize`: code that must write a
//! secret somewhere (the KV bookkeeping entry, the pod env) exposes it on purpose.

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Secret<String> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Vault token (`hvs.…`, `s.…`). `Debug`/`Display` show only `VaultToken(***)`; use the
/// token's accessor to identify it in logs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VaultToken(String);

impl VaultToken {
    pub fn new(token: impl Into<String>) -> Self {
        VaultToken(token.into())
    }

    /// The token itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for VaultToken {
    fn from(value: String) -> Self {
        VaultToken(value)
    }
}

impl From<&str> for VaultToken {
    fn from(value: &str) -> Self {
        VaultToken(value.to_string())
    }
}

impl fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultToken(***)")
    }
}

impl fmt::Display for VaultToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for VaultToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(VaultToken)
    }
}

impl<'de> serde::Deserialize<'de> for Secret<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let t = VaultToken::new("hvs.supersecret");
        assert_eq!(format!("{t:?}"), "VaultToken(***)");
        assert_eq!(format!("{t}"), "***");
        assert_eq!(t.expose(), "hvs.supersecret");
        let s: Secret<String> = "pa55word".into();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "pa55word");
        // nested in derived Debug
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            t: VaultToken,
            s: Secret<String>,
        }
        let h = format!("{:?}", Holder { t, s });
        assert!(!h.contains("supersecret") && !h.contains("pa55word"), "{h}");
    }

    #[test]
    fn deserialises_from_a_string() {
        let t: VaultToken = serde_json::from_str("\"s.abc\"").unwrap();
        assert_eq!(t.expose(), "s.abc");
        let s: Secret<String> = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(s.expose(), "pw");
    }
}
