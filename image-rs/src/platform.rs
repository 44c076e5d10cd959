//! Platforms (`os/arch[/variant]`) and how an index entry is chosen.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An OCI platform: what an image in an index is built for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in Go's naming, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8` for arm64 or `v7` for arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine we run on: what a guest can execute.
    pub fn current() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Variant with arm64's implied `v8` made explicit, so `arm64` and
    /// `arm64/v8` compare equal.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an index entry for `candidate` satisfies this wanted platform.
    /// A wanted platform without a variant accepts any variant.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none()
                || self.normalized_variant() == candidate.normalized_variant())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::Config(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let want: Platform = "linux/arm64".parse().unwrap();
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(want.matches(&v8));
        assert!(v8.matches(&want));
        let arm7: Platform = "linux/arm/v7".parse().unwrap();
        let arm6: Platform = "linux/arm/v6".parse().unwrap();
        assert!(!arm7.matches(&arm6));
        assert!(!want.matches(&"linux/amd64".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        assert_eq!(Platform::current().os, "linux");
    }
}
