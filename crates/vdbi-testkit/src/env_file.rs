//! The env files the platform scripts write for the tests (`KEY=value` lines, optionally
//! `export`ed and quoted): the platform's, the containerd node's and the kubelet node's.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) struct EnvFile {
    pub(crate) path: PathBuf,
    pub(crate) vars: BTreeMap<String, String>,
}

impl EnvFile {
    /// `$var` when set, else `<repo>/<default>`.
    pub(crate) fn locate(var: &str, default: &str) -> PathBuf {
        std::env::var(var)
            .map(PathBuf::from)
            .unwrap_or_else(|_| crate::repo_root().join(default))
    }

    /// Reads `path`; panics with `"<what> is not running (<path>: <error>); <how to start it>"`
    /// (tests never skip).
    pub(crate) fn load(path: PathBuf, what: &str, how: &str) -> EnvFile {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{what} is not running ({}: {e}); {how}", path.display()));
        EnvFile {
            vars: parse(&text),
            path,
        }
    }
}

fn parse(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim_matches('"').trim_matches('\'');
            vars.insert(k.to_string(), v.to_string());
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments_exports_and_quotes() {
        let vars = super::parse("# c\n\nexport A=\"x=1\"\nB='y'\nC=z\n");
        assert_eq!(vars["A"], "x=1");
        assert_eq!(vars["B"], "y");
        assert_eq!(vars["C"], "z");
        assert_eq!(vars.len(), 3);
    }
}
