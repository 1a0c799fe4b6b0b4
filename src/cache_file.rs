//! The NRI plugin's per-node credential cache file, in vault-db-injector's format so a node can
//! switch in place: `{"version":1,"pods":{"<podUID>":{"<placeholder>":"<value>"}}}`.
//!
//! Written atomically (temporary file 0600 in the same directory, fsync, rename, directory
//! fsync) in a 0700 directory. A corrupt file is set aside (`<name>.corrupt-<unix>`) and the cache
//! starts empty: it is a cache, never a reason to crash.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const VERSION: u32 = 1;

/// Placeholder → value for one pod.
pub type PodValues = HashMap<String, String>;

#[derive(Serialize, Deserialize, Default)]
struct Document {
    version: u32,
    #[serde(default)]
    pods: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheFileError {
    #[error("cannot create cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write cache file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read cache file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet.
    Missing,
    Ok(HashMap<String, PodValues>),
    /// Unreadable content; the file was moved to `set_aside` and the cache starts empty.
    Corrupt {
        reason: String,
        set_aside: Option<PathBuf>,
    },
}

/// Loads the cache file. I/O errors other than "missing" are errors; bad content is `Corrupt`.
pub fn load(path: &Path) -> Result<Loaded, CacheFileError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(CacheFileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let reason = match serde_json::from_slice::<Document>(&bytes) {
        Ok(doc) if doc.version == VERSION => {
            return Ok(Loaded::Ok(
                doc.pods
                    .into_iter()
                    .map(|(uid, m)| (uid, m.into_iter().collect()))
                    .collect(),
            ))
        }
        Ok(doc) => format!("unsupported version {}", doc.version),
        // The serde error names line/column only, never the content.
        Err(e) => format!("invalid JSON at line {} column {}", e.line(), e.column()),
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_extension(format!("corrupt-{stamp}"));
    let set_aside = fs::rename(path, &aside).ok().map(|_| aside);
    Ok(Loaded::Corrupt { reason, set_aside })
}

/// Writes the whole cache atomically with mode 0600 in a 0700 directory.
pub fn save(path: &Path, pods: &HashMap<String, PodValues>) -> Result<(), CacheFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CacheFileError::Dir {
                path: dir.into(),
                source,
            })?;
    }
    let doc = Document {
        version: VERSION,
        pods: pods
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
                )
            })
            .collect(),
    };
    let body = serde_json::to_vec(&doc).expect("cache document serialises");
    let tmp = path.with_extension("tmp");
    let werr = |source| CacheFileError::Write {
        path: path.into(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(&body).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    fs::rename(&tmp, path).map_err(werr)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    // Defence in depth if a pre-existing file had looser permissions.
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HashMap<String, PodValues> {
        HashMap::from([(
            "uid-1".to_string(),
            HashMap::from([("__VDBI_PH_x___".to_string(), "secret".to_string())]),
        )])
    }

    #[test]
    fn round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nri/cache.json");
        save(&path, &sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(!path.with_extension("tmp").exists());
        match load(&path).unwrap() {
            Loaded::Ok(m) => assert_eq!(m, sample()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_go_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        fs::write(&path, r#"{"version":1,"pods":{"u":{"p":"v"}}}"#).unwrap();
        match load(&path).unwrap() {
            Loaded::Ok(m) => assert_eq!(m["u"]["p"], "v"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_file_is_set_aside_without_leaking_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        fs::write(&path, b"{\"version\":1,\"pods\":{\"u\":{\"p\":\"hunter2\"").unwrap();
        match load(&path).unwrap() {
            Loaded::Corrupt { reason, set_aside } => {
                assert!(!reason.contains("hunter2"));
                assert!(set_aside.unwrap().exists());
                assert!(!path.exists());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(&path).unwrap(), Loaded::Missing));
    }

    #[test]
    fn unknown_version_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        fs::write(&path, r#"{"version":2,"pods":{}}"#).unwrap();
        assert!(matches!(load(&path).unwrap(), Loaded::Corrupt { .. }));
    }
}
