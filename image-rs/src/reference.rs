//! Image references: `[registry/]name[:tag][@digest]` with Docker's defaulting
//! rules (`docker.io`, `library/`, `latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

/// The registry Docker Hub names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry as written (`docker.io` for Hub), with port if any.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) to talk to: Hub's API host for `docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given (or defaulted to `latest`).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any. A pinned digest is verified against the
    /// manifest the registry returns.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// pinned (tags are mutable, digests are not), else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// True for registries on the loopback interface, where plain HTTP is
    /// acceptable without asking.
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") || host.starts_with("127.")
    }

    /// The same reference pinned to `digest` (keeps the tag for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// Host part of `host[:port]`, handling bracketed IPv6.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_digit() || ch.is_ascii_lowercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.chars().take(300).collect(),
            reason: reason.to_string(),
        };
        if input.is_empty() || input.len() > 1024 {
            return Err(bad("empty or longer than 1024 bytes"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "invalid tag (letters, digits, '_', '.', '-', at most 128)",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(bad("invalid registry host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad(
                "invalid repository name (lowercase letters, digits and separators '.', '_', '__', '-')",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1.0").repository(), "user/app");
        assert_eq!(p("docker.io/busybox").repository(), "library/busybox");
    }

    #[test]
    fn registry_with_port_and_digest() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("127.0.0.1:5000/a/b:v1@{d}"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_selector(), d);
        assert!(r.is_loopback());
        let r = p(&format!("localhost/x@{d}"));
        assert_eq!((r.registry(), r.tag()), ("localhost", None));
        let r = p("localhost:5000/x");
        assert_eq!((r.registry(), r.tag()), ("localhost:5000", Some("latest")));
        assert!(!p("quay.io/x/y").is_loopback());
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "a/b:",
            "a/b:bad tag",
            "a/b@sha256:123",
            "-a/b",
            "a/b/../c",
            "host.io/a/..",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }
}
