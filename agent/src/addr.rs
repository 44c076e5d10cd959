//! Listen and connect addresses: `unix:///path`, `unix://@abstract`,
//! `vsock://CID:PORT` (`-1` = any CID), as Kata spells them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// `VMADDR_CID_ANY`: listen on every CID (written `-1` in addresses).
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// Where the agent listens or the client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// A unix socket at a filesystem path.
    Unix(PathBuf),
    /// A unix socket in the abstract namespace (no file; `@name`).
    UnixAbstract(String),
    /// An AF_VSOCK address, the production transport between host and guest.
    Vsock {
        /// Context id; [`VSOCK_CID_ANY`] for a listener on every CID.
        cid: u32,
        /// Port (Kata's default is 1024).
        port: u32,
    },
}

/// Why an address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// Neither `unix://` nor `vsock://`.
    #[error(
        "address {0:?} has no supported scheme: use unix:///path, unix://@name or vsock://CID:PORT"
    )]
    Scheme(String),
    /// `unix://` or `unix://@` with nothing after it.
    #[error("address {0:?} names no socket")]
    EmptyUnix(String),
    /// A vsock address that is not `CID:PORT` with numbers.
    #[error("vsock address {0:?} is not CID:PORT (CID a number or -1, PORT a number)")]
    Vsock(String),
}

impl ServerAddr {
    /// Kata's default listen address, `vsock://-1:1024`.
    pub const fn default_vsock() -> Self {
        ServerAddr::Vsock {
            cid: VSOCK_CID_ANY,
            port: 1024,
        }
    }
}

impl Default for ServerAddr {
    fn default() -> Self {
        Self::default_vsock()
    }
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("unix://") {
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() {
                    return Err(AddrError::EmptyUnix(s.to_string()));
                }
                return Ok(ServerAddr::UnixAbstract(name.to_string()));
            }
            if rest.is_empty() {
                return Err(AddrError::EmptyUnix(s.to_string()));
            }
            return Ok(ServerAddr::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("vsock://") {
            let bad = || AddrError::Vsock(s.to_string());
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            let cid = match cid.trim() {
                "-1" => VSOCK_CID_ANY,
                c => c.parse().map_err(|_| bad())?,
            };
            let port = port.trim().parse().map_err(|_| bad())?;
            return Ok(ServerAddr::Vsock { cid, port });
        }
        Err(AddrError::Scheme(s.to_string()))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ServerAddr::UnixAbstract(n) => write!(f, "unix://@{n}"),
            ServerAddr::Vsock { cid, port } if *cid == VSOCK_CID_ANY => {
                write!(f, "vsock://-1:{port}")
            }
            ServerAddr::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms_and_prints_them_back() {
        for (s, want) in [
            (
                "unix:///run/agent.sock",
                ServerAddr::Unix("/run/agent.sock".into()),
            ),
            (
                "unix://@/tmp/foo.socket",
                ServerAddr::UnixAbstract("/tmp/foo.socket".into()),
            ),
            ("vsock://-1:1024", ServerAddr::default_vsock()),
            ("vsock://3:5000", ServerAddr::Vsock { cid: 3, port: 5000 }),
        ] {
            let got: ServerAddr = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string(), s);
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        for s in [
            "",
            "tcp://1.2.3.4:80",
            "unix://",
            "unix://@",
            "vsock://1024",
            "vsock://x:1",
            "vsock://1:y",
            "vsock://-2:1",
            "/run/agent.sock",
        ] {
            assert!(s.parse::<ServerAddr>().is_err(), "{s:?} accepted");
        }
    }
}
