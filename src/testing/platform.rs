//! Access to the local real platform (PostgreSQL, OpenBao, etcd, kube-apiserver) started by
//! `platform/vdbi-platform up`. The platform writes `.platform/env` (KEY=VALUE lines); tests read it
//! through [`Platform::get`]. A test that needs the platform and does not find it panics with a
//! message saying how to start it: it never silently passes or skips.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Key/value view of `.platform/env`.
#[derive(Clone, Debug)]
pub struct Platform {
    vars: BTreeMap<String, String>,
    pub env_file: PathBuf,
}

impl Platform {
    /// Location of the env file: `$VDBI_PLATFORM_ENV`, else `<repo>/.platform/env`.
    pub fn env_file() -> PathBuf {
        if let Ok(p) = std::env::var("VDBI_PLATFORM_ENV") {
            return PathBuf::from(p);
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".platform/env")
    }

    /// Loads the platform description or panics with instructions.
    pub fn get() -> Platform {
        let env_file = Self::env_file();
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "the local platform is not running ({}: {e}); start it with `platform/vdbi-platform up`",
                env_file.display()
            )
        });
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
        Platform { vars, env_file }
    }

    /// A required variable of the platform env file.
    pub fn var(&self, key: &str) -> String {
        self.vars.get(key).cloned().unwrap_or_else(|| {
            panic!(
                "{} has no {key}; re-run `platform/vdbi-platform up`",
                self.env_file.display()
            )
        })
    }

    pub fn try_var(&self, key: &str) -> Option<String> {
        self.vars.get(key).cloned()
    }
}
