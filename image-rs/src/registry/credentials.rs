//! Registry credentials: explicit username/password and the auth files of
//! docker (`~/.docker/config.json`) and containers (`auth.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroize::Zeroizing;

use crate::error::Error;

/// A username and password for one registry. The password is zeroized on drop
/// and never printed.
#[derive(Clone)]
pub struct Login {
    /// User name.
    pub username: String,
    /// Password or identity token.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Login {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// Where credentials come from, looked up per registry (and repository).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Used for every registry when set (`--username` + `--password-stdin`).
    pub explicit: Option<Login>,
    /// Entries of an auth file, keyed `host` or `host/namespace/...`.
    entries: HashMap<String, Login>,
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Normalizes auth-file keys: `https://index.docker.io/v1/` -> `docker.io`,
/// `https://host/` -> `host`.
fn normalize_key(k: &str) -> String {
    let k = k
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => k.to_string(),
    }
}

impl Credentials {
    /// No credentials: anonymous access only.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Loads a docker `config.json` or containers `auth.json`.
    pub fn from_auth_file(path: &Path) -> Result<Self, Error> {
        let mut c = Credentials::default();
        c.merge_auth_file(path)?;
        Ok(c)
    }

    /// The default auth files, in containers' order of precedence:
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. Missing files
    /// are skipped; unreadable ones are errors.
    pub fn from_default_files() -> Result<Self, Error> {
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(p.into());
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push(Path::new(&d).join("containers/auth.json"));
        }
        match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => files.push(Path::new(&d).join("config.json")),
            None => {
                if let Some(h) = std::env::var_os("HOME") {
                    files.push(Path::new(&h).join(".docker/config.json"));
                }
            }
        }
        let mut c = Credentials::default();
        // Lowest precedence first: later files do not override earlier ones.
        for f in files.iter().rev() {
            if f.exists() {
                c.merge_auth_file(f)?;
            }
        }
        Ok(c)
    }

    fn merge_auth_file(&mut self, path: &Path) -> Result<(), Error> {
        let bad = |reason: String| Error::Config(format!("auth file {}: {reason}", path.display()));
        let text =
            Zeroizing::new(std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?);
        let file: AuthFile =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        for (key, e) in file.auths {
            let login = if let Some(a) = e.auth.filter(|a| !a.is_empty()) {
                let raw = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|_| bad(format!("entry {key:?}: \"auth\" is not base64")))?,
                );
                let s = std::str::from_utf8(&raw)
                    .map_err(|_| bad(format!("entry {key:?}: \"auth\" is not UTF-8")))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| bad(format!("entry {key:?}: \"auth\" is not user:password")))?;
                Login {
                    username: u.to_string(),
                    password: Zeroizing::new(p.to_string()),
                }
            } else if let (Some(u), Some(p)) = (e.username, e.password.or(e.identitytoken)) {
                Login {
                    username: u,
                    password: Zeroizing::new(p),
                }
            } else {
                continue; // e.g. credHelpers-only entries
            };
            self.entries.insert(normalize_key(&key), login);
        }
        Ok(())
    }

    /// The login for `registry` and `repository`: explicit first, then the
    /// most specific auth-file key (`host/ns/repo` beats `host/ns` beats `host`).
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Login> {
        if let Some(l) = &self.explicit {
            return Some(l);
        }
        let full = format!("{}/{}", normalize_key(registry), repository);
        let mut key = full.as_str();
        loop {
            if let Some(l) = self.entries.get(key) {
                return Some(l);
            }
            match key.rfind('/') {
                Some(i) => key = &key[..i],
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_and_containers_formats() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                "127.0.0.1:5000":{{"username":"bob","password":"pw"}},
                "127.0.0.1:5000/team/app":{{"auth":"{b64}"}}}}}}"#
            ),
        )
        .unwrap();
        let c = Credentials::from_auth_file(&f).unwrap();
        assert_eq!(
            c.lookup("docker.io", "library/busybox").unwrap().username,
            "alice"
        );
        assert_eq!(
            c.lookup("127.0.0.1:5000", "other/x").unwrap().username,
            "bob"
        );
        assert_eq!(
            c.lookup("127.0.0.1:5000", "team/app").unwrap().username,
            "alice"
        );
        assert!(c.lookup("quay.io", "x").is_none());
        assert!(!format!("{:?}", c).contains("s3cret"));
    }

    #[test]
    fn bad_auth_file_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("a.json");
        std::fs::write(&f, r#"{"auths":{"h":{"auth":"!!!"}}}"#).unwrap();
        let e = Credentials::from_auth_file(&f).unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
        assert!(Credentials::from_auth_file(&t.path().join("missing")).is_err());
    }
}
