//! NRI-mode placeholders: `__VDBI_PH_` + 64 lowercase hex + `___` (77 characters). The hex is an
//! opaque nonce from the OS CSPRNG; it encodes nothing. Placeholders are resolved to credentials
//! only through the pod's env names and annotations, on the node, by the NRI plugin.

use rand::TryRngCore;
use std::collections::HashMap;

pub const PREFIX: &str = "__VDBI_PH_";
pub const SUFFIX: &str = "___";
pub const HEX_LEN: usize = 64;
pub const LEN: usize = PREFIX.len() + HEX_LEN + SUFFIX.len();

/// A fresh placeholder from the operating system's CSPRNG.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    format!("{PREFIX}{}{SUFFIX}", hex::encode(bytes))
}

/// True when `s` is exactly one well-formed placeholder.
pub fn is_placeholder(s: &str) -> bool {
    s.len() == LEN
        && s.starts_with(PREFIX)
        && s.ends_with(SUFFIX)
        && s[PREFIX.len()..PREFIX.len() + HEX_LEN]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `s` contains the placeholder prefix anywhere (well-formed or not).
pub fn contains_marker(s: &str) -> bool {
    s.contains(PREFIX)
}

/// Every well-formed placeholder occurring in `s`, in order.
pub fn find_all(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = s[from..].find(PREFIX) {
        let start = from + pos;
        if let Some(candidate) = s.get(start..start + LEN) {
            if is_placeholder(candidate) {
                out.push(candidate);
                from = start + LEN;
                continue;
            }
        }
        from = start + PREFIX.len();
    }
    out
}

/// Replaces every well-formed placeholder of `s` found in `values`. Unknown placeholders are left
/// as they are (the caller's residual check refuses the result).
pub fn substitute(s: &str, values: &HashMap<String, String>) -> String {
    if !s.contains(PREFIX) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(PREFIX) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        match tail.get(..LEN).filter(|c| is_placeholder(c)) {
            Some(ph) => {
                match values.get(ph) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(ph),
                }
                rest = &tail[LEN..];
            }
            None => {
                out.push_str(PREFIX);
                rest = &tail[PREFIX.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_placeholders_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 77);
        assert!(is_placeholder(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn recognition_is_exact() {
        let p = generate();
        assert!(!is_placeholder(&p.to_uppercase()));
        assert!(!is_placeholder(&p[..76]));
        assert!(!is_placeholder(&format!("{p}x")));
        let bad_hex = format!("{PREFIX}{}{SUFFIX}", "g".repeat(64));
        assert!(!is_placeholder(&bad_hex));
    }

    #[test]
    fn substitutes_inside_uris_and_leaves_unknown() {
        let u = generate();
        let p = generate();
        let unknown = generate();
        let map = HashMap::from([
            (u.clone(), "alice".to_string()),
            (p.clone(), "s3cr%40".to_string()),
        ]);
        let uri = format!("postgres://{u}:{p}@db:5432/app?x={unknown}");
        let out = substitute(&uri, &map);
        assert_eq!(
            out,
            format!("postgres://alice:s3cr%40@db:5432/app?x={unknown}")
        );
        assert_eq!(
            find_all(&uri),
            vec![u.as_str(), p.as_str(), unknown.as_str()]
        );
    }

    #[test]
    fn malformed_markers_are_kept() {
        let map = HashMap::new();
        let s = "a __VDBI_PH_short___ b __VDBI_PH_";
        assert_eq!(substitute(s, &map), s);
        assert!(find_all(s).is_empty());
        assert!(contains_marker(s));
    }
}
