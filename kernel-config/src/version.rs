//! Kernel versions: the `# min-kernel: 6.7` markers of fragments and the version a
//! `.config` (or the running kernel) was made for, so that a symbol newer than the
//! kernel is reported as "too new" rather than as missing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A kernel version `MAJOR.MINOR[.PATCH]`. `6.7` and `6.7.0` compare equal; a missing
/// patch level is kept only so that markers print as they were written.
#[derive(Debug, Clone, Copy)]
pub struct KernelVersion {
    /// `6` in `6.12.117`.
    pub major: u32,
    /// `12` in `6.12.117`.
    pub minor: u32,
    /// `117` in `6.12.117`; `None` for `6.12`.
    pub patch: Option<u32>,
}

/// Why a version string was refused: markers must be exactly `X.Y` or `X.Y.Z`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kernel version {0:?}: expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 6.7")]
pub struct VersionError(pub String);

impl KernelVersion {
    /// A version from its parts, for callers and tests that know them.
    pub fn new(major: u32, minor: u32, patch: Option<u32>) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// Reads the version at the start of a kernel release string such as
    /// `6.1.0-28-amd64`, `6.12.117+deb12-cloud-amd64` or `6.7-rc1`: the leading
    /// dotted numbers, ignoring whatever suffix the distribution added.
    pub fn from_release(release: &str) -> Option<Self> {
        let numeric_end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        let mut parts = release[..numeric_end]
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = match parts.next() {
            Some(p) => Some(p?),
            None => None,
        };
        Some(KernelVersion::new(major, minor, patch))
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch.unwrap_or(0))
    }
}

impl FromStr for KernelVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError(s.to_string());
        let parts: Vec<&str> = s.trim().split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(err());
        }
        let num = |p: &str| -> Result<u32, VersionError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        Ok(KernelVersion {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: parts.get(2).map(|p| num(p)).transpose()?,
        })
    }
}

impl PartialEq for KernelVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for KernelVersion {}

impl PartialOrd for KernelVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KernelVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers_strictly() {
        assert_eq!(
            "6.7".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(6, 7, None)
        );
        assert_eq!(
            "5.19.3".parse::<KernelVersion>().unwrap(),
            KernelVersion::new(5, 19, Some(3))
        );
        for bad in ["6", "6.", "6.x", "v6.7", "6.7.1.2", "", "6.7-rc1"] {
            assert!(bad.parse::<KernelVersion>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_release_strings() {
        let v = KernelVersion::from_release("6.12.117+deb12-cloud-amd64").unwrap();
        assert_eq!(v, KernelVersion::new(6, 12, Some(117)));
        let v = KernelVersion::from_release("6.1.0-28-amd64").unwrap();
        assert_eq!(v.to_string(), "6.1.0");
        let v = KernelVersion::from_release("6.7-rc1").unwrap();
        assert_eq!(v.to_string(), "6.7");
        assert!(KernelVersion::from_release("linux").is_none());
    }

    #[test]
    fn orders_numerically_and_ignores_missing_patch() {
        let v = |s: &str| s.parse::<KernelVersion>().unwrap();
        assert!(v("6.1") < v("6.7"));
        assert!(v("6.12") > v("6.7"));
        assert!(v("6.7.0") == v("6.7"));
        assert!(v("6.6.60") < v("6.7"));
        assert_eq!(v("6.11").max(v("6.7")), v("6.11"));
    }
}
