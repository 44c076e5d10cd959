//! Initdata: the pod's measured configuration (Trustee `kbs/docs/initdata.md`).
//!
//! The host hands the guest a TOML document (`version = "0.1.0"`,
//! `algorithm = "sha256" | "sha384" | "sha512"`, a `[data]` table of
//! string values such as `aa.toml`, `cdh.toml`, `policy.rego`) and sets a
//! launch-bound TEE field to its digest: hash(algorithm) over the exact TOML
//! bytes, zero-padded or truncated to the field (SNP `HOST_DATA`, TDX
//! `MRCONFIGID`, ...). The host cannot change the document afterwards
//! without the TEE's signed evidence showing it, so the guest checks the
//! field against the document it received ([`check_binding`]) before
//! trusting anything in it, and the KBS sees the same plaintext in the
//! attestation request ([`InitData::to_payload`]).
//!
//! Delivery: a disk whose first 8 bytes are `initdata`, then the u64 LE
//! length of a gzip stream of the TOML ([`find_device`],
//! [`InitData::from_device`]); or the pod annotation
//! `io.katacontainers.config.hypervisor.cc_init_data` = base64(gzip(TOML))
//! ([`InitData::from_annotation`]); or a plain file ([`InitData::from_file`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::read::GzDecoder;
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tracing::{debug, info, warn};

use crate::attester::{snp, tdx, Attester, AttesterError};
use crate::kbs::protocol::InitDataPayload;
use crate::tee::Tee;

/// The only initdata version there is.
pub const VERSION: &str = "0.1.0";
/// The pod annotation carrying base64(gzip(TOML)).
pub const ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";
/// The first 8 bytes of an initdata disk.
pub const DEVICE_MAGIC: &[u8; 8] = b"initdata";
/// Size of the disk header: magic, then the u64 LE length of the gzip data.
pub const DEVICE_HEADER_LEN: usize = 16;
/// Most gzip bytes accepted (disk or annotation).
pub const MAX_COMPRESSED: u64 = 1 << 20;
/// Most TOML bytes accepted (after decompression, or from a file).
pub const MAX_TOML: u64 = 4 << 20;
/// `[data]` key of the attestation agent's configuration.
pub const AA_CONFIG_KEY: &str = "aa.toml";
/// `[data]` key of the confidential data hub's configuration.
pub const CDH_CONFIG_KEY: &str = "cdh.toml";
/// `[data]` key of the agent policy.
pub const POLICY_KEY: &str = "policy.rego";

/// Why initdata could not be read, parsed or verified.
#[derive(Debug, thiserror::Error)]
pub enum InitDataError {
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The disk does not start with `initdata`.
    #[error("{what} does not start with the initdata magic \"initdata\" (found {found:?})")]
    BadMagic {
        /// Where.
        what: String,
        /// The first bytes, escaped.
        found: String,
    },
    /// The disk ends before the data it announces.
    #[error("{what} is truncated: its {part} needs {expected} bytes, only {got} are there")]
    Truncated {
        /// Where.
        what: String,
        /// `"header"` or `"gzip data"`.
        part: &'static str,
        /// Bytes needed.
        expected: u64,
        /// Bytes found.
        got: u64,
    },
    /// Over a size cap.
    #[error("{what} exceeds the {limit} byte limit")]
    TooLarge {
        /// What, with its size when known.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// Nothing there.
    #[error("{what} is empty")]
    Empty {
        /// What.
        what: String,
    },
    /// Not gzip, or a corrupt stream.
    #[error("{what} is not valid gzip: {source}")]
    BadGzip {
        /// What.
        what: String,
        /// The decoder's error.
        source: io::Error,
    },
    /// The annotation is not base64.
    #[error("{what} is not valid base64: {source}")]
    BadBase64 {
        /// What.
        what: String,
        /// The decoder's error.
        source: base64::DecodeError,
    },
    /// The document is not UTF-8.
    #[error("{what} is not UTF-8 text: {source}")]
    NotUtf8 {
        /// What.
        what: String,
        /// The decoder's error.
        source: std::str::Utf8Error,
    },
    /// Not an initdata TOML document.
    #[error("{what} is not a valid initdata document (TOML with version, algorithm and a [data] table of strings): {source}")]
    Toml {
        /// What.
        what: String,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// A version other than 0.1.0.
    #[error("{what} has version {found:?}; only \"{VERSION}\" is supported")]
    UnsupportedVersion {
        /// What.
        what: String,
        /// The version found.
        found: String,
    },
    /// An unknown digest algorithm.
    #[error("{what} has algorithm {found:?}; supported: sha256, sha384, sha512")]
    UnsupportedAlgorithm {
        /// What.
        what: String,
        /// The algorithm found.
        found: String,
    },
    /// An embedded configuration (`aa.toml`, `cdh.toml`) is not TOML.
    #[error("initdata [data] entry {key:?} is not valid TOML: {source}")]
    EmbeddedConfig {
        /// The `[data]` key.
        key: &'static str,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The TEE's launch-bound field could not be read.
    #[error("checking the initdata binding: {0}")]
    Attester(#[from] AttesterError),
    /// The TEE was launched with other initdata.
    #[error("the initdata from {origin} is not what this {tee} guest was launched with: {field} should be {expected} (the {algorithm} digest of the initdata, zero-padded/truncated to {len} bytes) but the TEE reports {found}; the host changed the initdata, or launched the guest without it")]
    Mismatch {
        /// Where the initdata came from.
        origin: String,
        /// The TEE.
        tee: Tee,
        /// The field's name.
        field: &'static str,
        /// The document's algorithm.
        algorithm: DigestAlgorithm,
        /// The field's size.
        len: usize,
        /// The expected field, hex.
        expected: String,
        /// The field the TEE reports, hex.
        found: String,
    },
}

/// The hash over the TOML bytes, named by the document's `algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl DigestAlgorithm {
    /// The name used in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DigestAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(DigestAlgorithm::Sha256),
            "sha384" => Ok(DigestAlgorithm::Sha384),
            "sha512" => Ok(DigestAlgorithm::Sha512),
            other => Err(format!("unsupported initdata algorithm {other:?}")),
        }
    }
}

/// A TEE's launch-bound field that carries the initdata digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchField {
    /// Its name in the TEE's documentation.
    pub name: &'static str,
    /// Its size: the digest is zero-padded or truncated to it.
    pub len: usize,
}

/// The field initdata is bound to on `tee`, `None` where there is none.
/// The one place these sizes are listed.
pub fn launch_field(tee: Tee) -> Option<LaunchField> {
    let (name, len) = match tee {
        Tee::Snp => ("HOST_DATA", snp::HOST_DATA_LEN),
        Tee::Tdx => ("MRCONFIGID", tdx::MRCONFIGID_LEN),
        Tee::Sample => ("the sample launch config", 64),
        Tee::Sgx => ("CONFIGID", 64),
        Tee::Cca => ("the realm personalization value", 64),
        Tee::Se => ("user_data", 256),
        Tee::AzSnpVtpm
        | Tee::AzTdxVtpm
        | Tee::Csv
        | Tee::Tpm
        | Tee::Sampledevice
        | Tee::Hygondcu
        | Tee::Nvidia
        | Tee::NvidiaDpu => return None,
    };
    Some(LaunchField { name, len })
}

/// The document's fields (the digest covers the raw bytes, not these).
#[derive(Deserialize)]
struct Document {
    version: String,
    algorithm: String,
    data: BTreeMap<String, String>,
}

/// A parsed, digested initdata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    origin: String,
    toml: String,
    algorithm: DigestAlgorithm,
    data: BTreeMap<String, String>,
    digest: Vec<u8>,
}

/// Where the KBS is, as the initdata's `aa.toml` or `cdh.toml` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsConfig {
    /// The KBS URL.
    pub url: String,
    /// The KBS's certificate (PEM), for HTTPS with a private CA.
    pub cert: Option<String>,
    /// The `[data]` entry it came from (`aa.toml` or `cdh.toml`).
    pub from: &'static str,
}

#[derive(Deserialize)]
struct AaConfig {
    token_configs: Option<AaTokenConfigs>,
}

#[derive(Deserialize)]
struct AaTokenConfigs {
    kbs: Option<AaKbs>,
}

#[derive(Deserialize)]
struct AaKbs {
    url: Option<String>,
    cert: Option<String>,
}

#[derive(Deserialize)]
struct CdhConfig {
    kbc: Option<CdhKbc>,
}

#[derive(Deserialize)]
struct CdhKbc {
    url: Option<String>,
    kbs_cert: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Whether `len` exceeds `limit`.
fn over(len: usize, limit: u64) -> bool {
    u64::try_from(len).map_or(true, |l| l > limit)
}

/// Decompresses gzip `data`, refusing more than [`MAX_TOML`] bytes out.
fn gunzip(data: &[u8], what: &str) -> Result<Vec<u8>, InitDataError> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .take(MAX_TOML + 1)
        .read_to_end(&mut out)
        .map_err(|source| InitDataError::BadGzip {
            what: what.to_string(),
            source,
        })?;
    if over(out.len(), MAX_TOML) {
        return Err(InitDataError::TooLarge {
            what: format!("the decompressed initdata from {what}"),
            limit: MAX_TOML,
        });
    }
    Ok(out)
}

/// Reads into `buf` until it is full or the input ends; the count read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Sector size an initdata disk image is padded to.
const DEVICE_SECTOR: usize = 512;

/// The initdata disk image for `toml` (the host side of
/// [`InitData::from_device`]): magic, little-endian length, the gzip of the
/// document, zero padded to whole sectors. What a VMM attaches as a
/// read-only virtio-blk disk.
pub fn device_image(toml: &[u8]) -> Result<Vec<u8>, InitDataError> {
    use flate2::write::GzEncoder;
    use std::io::Write as _;
    let io_err = |source| InitDataError::Io {
        what: "compressing initdata".into(),
        source,
    };
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(toml).map_err(io_err)?;
    let gz = enc.finish().map_err(io_err)?;
    let mut image = DEVICE_MAGIC.to_vec();
    image.extend_from_slice(&(gz.len() as u64).to_le_bytes());
    image.extend_from_slice(&gz);
    image.resize(image.len().div_ceil(DEVICE_SECTOR) * DEVICE_SECTOR, 0);
    Ok(image)
}

/// The TOML bytes of an initdata disk image read from `r`.
fn read_disk(mut r: impl Read, what: &str) -> Result<Vec<u8>, InitDataError> {
    let io_err = |source| InitDataError::Io {
        what: format!("reading {what}"),
        source,
    };
    let mut header = [0u8; DEVICE_HEADER_LEN];
    let got = read_up_to(&mut r, &mut header).map_err(io_err)?;
    let magic_got = got.min(DEVICE_MAGIC.len());
    if got == 0 || header[..magic_got] != DEVICE_MAGIC[..magic_got] {
        return Err(InitDataError::BadMagic {
            what: what.to_string(),
            found: header[..magic_got].escape_ascii().to_string(),
        });
    }
    if got < DEVICE_HEADER_LEN {
        return Err(InitDataError::Truncated {
            what: what.to_string(),
            part: "header",
            expected: DEVICE_HEADER_LEN as u64,
            got: got as u64,
        });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[8..]);
    let len = u64::from_le_bytes(len_bytes);
    if len == 0 {
        return Err(InitDataError::Empty {
            what: format!("the gzip data on {what}"),
        });
    }
    if len > MAX_COMPRESSED {
        return Err(InitDataError::TooLarge {
            what: format!("the gzip data on {what} ({len} bytes announced)"),
            limit: MAX_COMPRESSED,
        });
    }
    let mut gz = Vec::new();
    r.take(len).read_to_end(&mut gz).map_err(io_err)?;
    if (gz.len() as u64) < len {
        return Err(InitDataError::Truncated {
            what: what.to_string(),
            part: "gzip data",
            expected: len,
            got: gz.len() as u64,
        });
    }
    gunzip(&gz, what)
}

impl InitData {
    /// Parses and digests the TOML document `toml` (its exact bytes are
    /// what the digest covers); `origin` says where it came from, for
    /// messages.
    pub fn parse(toml: &[u8], origin: &str) -> Result<Self, InitDataError> {
        let what = || format!("the initdata from {origin}");
        if over(toml.len(), MAX_TOML) {
            return Err(InitDataError::TooLarge {
                what: format!("{} ({} bytes)", what(), toml.len()),
                limit: MAX_TOML,
            });
        }
        let text = std::str::from_utf8(toml).map_err(|source| InitDataError::NotUtf8 {
            what: what(),
            source,
        })?;
        let doc: Document = toml::from_str(text).map_err(|source| InitDataError::Toml {
            what: what(),
            source,
        })?;
        if doc.version != VERSION {
            return Err(InitDataError::UnsupportedVersion {
                what: what(),
                found: doc.version,
            });
        }
        let algorithm: DigestAlgorithm =
            doc.algorithm
                .parse()
                .map_err(|_| InitDataError::UnsupportedAlgorithm {
                    what: what(),
                    found: doc.algorithm.clone(),
                })?;
        let digest = algorithm.digest(toml);
        debug!(
            "initdata from {origin}: {algorithm} {}, keys {:?}",
            hex::encode(&digest),
            doc.data.keys().collect::<Vec<_>>()
        );
        Ok(InitData {
            origin: origin.to_string(),
            toml: text.to_string(),
            algorithm,
            data: doc.data,
            digest,
        })
    }

    /// Reads the TOML document at `path`.
    pub fn from_file(path: &Path) -> Result<Self, InitDataError> {
        let what = format!("initdata file {}", path.display());
        let file = File::open(path).map_err(|source| InitDataError::Io {
            what: format!("opening {what}"),
            source,
        })?;
        let mut toml = Vec::new();
        file.take(MAX_TOML + 1)
            .read_to_end(&mut toml)
            .map_err(|source| InitDataError::Io {
                what: format!("reading {what}"),
                source,
            })?;
        if over(toml.len(), MAX_TOML) {
            return Err(InitDataError::TooLarge {
                what,
                limit: MAX_TOML,
            });
        }
        Self::parse(&toml, &path.display().to_string())
    }

    /// Reads an initdata disk (block device or image file): `initdata`,
    /// u64 LE length, gzip(TOML).
    pub fn from_device(path: &Path) -> Result<Self, InitDataError> {
        let what = format!("initdata device {}", path.display());
        let file = File::open(path).map_err(|source| InitDataError::Io {
            what: format!("opening {what}"),
            source,
        })?;
        let toml = read_disk(file, &what)?;
        Self::parse(&toml, &path.display().to_string())
    }

    /// Decodes the value of the [`ANNOTATION`] pod annotation:
    /// base64(gzip(TOML)).
    pub fn from_annotation(value: &str) -> Result<Self, InitDataError> {
        let what = format!("the {ANNOTATION} annotation");
        let value = value.trim();
        if value.is_empty() {
            return Err(InitDataError::Empty { what });
        }
        // base64 is 4/3 of the bytes it encodes.
        if over(value.len(), MAX_COMPRESSED / 3 * 4 + 4) {
            return Err(InitDataError::TooLarge {
                what: format!("{what} ({} base64 characters)", value.len()),
                limit: MAX_COMPRESSED / 3 * 4 + 4,
            });
        }
        let gz = STANDARD
            .decode(value)
            .map_err(|source| InitDataError::BadBase64 {
                what: what.clone(),
                source,
            })?;
        let toml = gunzip(&gz, &what)?;
        Self::parse(&toml, &what)
    }

    /// Where the document came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The document, exactly as measured.
    pub fn toml(&self) -> &str {
        &self.toml
    }

    /// The digest algorithm the document names.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// hash(algorithm) over the document's bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The digest zero-padded or truncated to `len` bytes: what a TEE
    /// field of that size must hold.
    pub fn expected_field(&self, len: usize) -> Vec<u8> {
        let mut field = self.digest.clone();
        field.resize(len, 0);
        field
    }

    /// What `tee`'s launch-bound field must hold, `None` if it has none.
    pub fn expected_field_for(&self, tee: Tee) -> Option<Vec<u8>> {
        launch_field(tee).map(|f| self.expected_field(f.len))
    }

    /// A `[data]` value.
    pub fn data(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// Every `[data]` entry.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// The agent policy (`policy.rego`), if any.
    pub fn policy_rego(&self) -> Option<&str> {
        self.data(POLICY_KEY)
    }

    /// The KBS the guest must use: `[token_configs.kbs] url` (+ `cert`) of
    /// `aa.toml`, else `[kbc] url` (+ `kbs_cert`) of `cdh.toml`; `None` if
    /// neither names one.
    pub fn kbs_config(&self) -> Result<Option<KbsConfig>, InitDataError> {
        if let Some(aa) = self.data(AA_CONFIG_KEY) {
            let cfg: AaConfig =
                toml::from_str(aa).map_err(|source| InitDataError::EmbeddedConfig {
                    key: AA_CONFIG_KEY,
                    source,
                })?;
            if let Some(kbs) = cfg.token_configs.and_then(|t| t.kbs) {
                if let Some(url) = non_empty(kbs.url) {
                    return Ok(Some(KbsConfig {
                        url,
                        cert: non_empty(kbs.cert),
                        from: AA_CONFIG_KEY,
                    }));
                }
            }
        }
        if let Some(cdh) = self.data(CDH_CONFIG_KEY) {
            let cfg: CdhConfig =
                toml::from_str(cdh).map_err(|source| InitDataError::EmbeddedConfig {
                    key: CDH_CONFIG_KEY,
                    source,
                })?;
            if let Some(kbc) = cfg.kbc {
                if let Some(url) = non_empty(kbc.url) {
                    return Ok(Some(KbsConfig {
                        url,
                        cert: non_empty(kbc.kbs_cert),
                        from: CDH_CONFIG_KEY,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The attestation request's `init-data`: the document in plaintext,
    /// for the KBS to check against the evidence and show to its policy.
    pub fn to_payload(&self) -> InitDataPayload {
        InitDataPayload {
            format: "toml".to_string(),
            body: self.toml.clone(),
        }
    }
}

/// The first disk under `dev_dir` (`vd*`, `sd*`, block devices or image
/// files) that starts with the initdata magic, sorted by name.
pub fn find_device(dev_dir: &Path) -> Result<Option<PathBuf>, InitDataError> {
    let entries = std::fs::read_dir(dev_dir).map_err(|source| InitDataError::Io {
        what: format!("listing {} for an initdata disk", dev_dir.display()),
        source,
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("vd") || name.starts_with("sd")
        })
        .map(|e| e.path())
        .collect();
    candidates.sort();
    for path in candidates {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !(meta.file_type().is_block_device() || meta.is_file()) {
            continue;
        }
        let mut magic = [0u8; 8];
        match File::open(&path).and_then(|mut f| f.read_exact(&mut magic)) {
            Ok(()) if &magic == DEVICE_MAGIC => {
                info!("initdata disk: {}", path.display());
                return Ok(Some(path));
            }
            Ok(()) => {}
            Err(e) => debug!("initdata: skipping {}: {e}", path.display()),
        }
    }
    Ok(None)
}

/// The outcome of [`check_binding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The TEE's launch-bound field holds the initdata digest.
    Bound,
    /// This TEE has no such field: the initdata is not protected by the
    /// TEE (the KBS still sees it in the attestation request).
    Unsupported,
}

/// Checks that the TEE was launched with this initdata: its launch-bound
/// field must hold the digest, padded or truncated to the field's size.
pub fn check_binding(
    attester: &dyn Attester,
    initdata: &InitData,
) -> Result<Binding, InitDataError> {
    let tee = attester.tee();
    let Some(found) = attester.launch_config()? else {
        warn!(
            "the {tee} TEE has no launch-bound field for initdata: the initdata from {} is NOT bound to the evidence",
            initdata.origin
        );
        return Ok(Binding::Unsupported);
    };
    let field = launch_field(tee).unwrap_or(LaunchField {
        name: "the launch config",
        len: found.len(),
    });
    let expected = initdata.expected_field(field.len);
    if expected != found {
        return Err(InitDataError::Mismatch {
            origin: initdata.origin.clone(),
            tee,
            field: field.name,
            algorithm: initdata.algorithm,
            len: field.len,
            expected: hex::encode(expected),
            found: hex::encode(found),
        });
    }
    info!(
        "initdata from {} is bound to the {tee} TEE's launch field ({})",
        initdata.origin, field.name
    );
    Ok(Binding::Bound)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::attester::sample::SampleAttester;

    /// The fixed document of the digest vectors; `ALG` is replaced by the
    /// algorithm.
    const TEMPLATE: &str = r#"version = "0.1.0"
algorithm = "ALG"

[data]
"aa.toml" = '''
[token_configs]
[token_configs.kbs]
url = "http://10.0.2.2:8080"
'''
"policy.rego" = '''
package agent_policy

default AllowRequestsFailingPolicy := true
'''
"#;

    // `sha256sum`, `sha384sum`, `sha512sum` of TEMPLATE with ALG replaced
    // (221 bytes for sha384), computed in the shell.
    const SHA256: &str = "a15382ae297dd9d41983c84655fd885278e6567a586c74fcca5804890d58ede9";
    const SHA384: &str = "8049c60efe96b83e3ac9457b0c81ba5a68e69223c495d6a0a95c50c0aa95abc35835505d3547430033a3ab43fd89ff6a";
    const SHA512: &str = "f3f8bc030aa1f9d7ceb2b51b9f48d703df533878052317e7a5a74a5413bdc3b68a7d71dc16ffa0a5fd352d6ffb866e09d98b0a4c49677b74adef3896216123e6";

    /// `gzip -9cn small.toml | base64 -w0` for
    /// `version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"policy.rego" = "package agent_policy"\n`,
    /// whose `sha256sum` is ANNOTATION_SHA256.
    const ANNOTATION_VALUE: &str = "H4sIAAAAAAACAytLLSrOzM9TsFVQMtAz1DNQ4krMSc8vyizJyAWJFWckGpmaKXFxRackliTGcikV5OdkJlfqFaWm5yuBFBQkJmcnpqcqAHFeSTxEVokLAOtBc9RWAAAA";
    const ANNOTATION_SHA256: &str =
        "ec432606698641f33d970e8ba0655ec98ee420d10078c18ba13c18c0753d4f5c";

    fn doc(alg: &str) -> String {
        TEMPLATE.replace("ALG", alg)
    }

    fn parse(alg: &str) -> InitData {
        InitData::parse(doc(alg).as_bytes(), "test").unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn disk(gz: &[u8], len: u64) -> Vec<u8> {
        let mut d = DEVICE_MAGIC.to_vec();
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(gz);
        d
    }

    #[test]
    fn device_image_round_trips() {
        let toml = doc("sha384");
        let image = device_image(toml.as_bytes()).unwrap();
        assert_eq!(image.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vdb"), &image).unwrap();
        let back = InitData::from_device(&dir.path().join("vdb")).unwrap();
        assert_eq!(back.toml(), toml);
        assert_eq!(back.digest(), parse("sha384").digest());
    }

    #[test]
    fn digests_match_independent_vectors() {
        assert_eq!(doc("sha384").len(), 221);
        for (alg, want) in [("sha256", SHA256), ("sha384", SHA384), ("sha512", SHA512)] {
            let init = parse(alg);
            assert_eq!(init.algorithm().as_str(), alg);
            assert_eq!(hex::encode(init.digest()), want, "{alg}");
            assert_eq!(init.toml(), doc(alg));
        }
    }

    #[test]
    fn field_padding_and_truncation() {
        let s256 = parse("sha256");
        let s384 = parse("sha384");
        let s512 = parse("sha512");
        // SNP HOST_DATA: 32 bytes.
        assert_eq!(
            hex::encode(s256.expected_field_for(Tee::Snp).unwrap()),
            SHA256
        );
        assert_eq!(
            hex::encode(s384.expected_field_for(Tee::Snp).unwrap()),
            &SHA384[..64]
        );
        // TDX MRCONFIGID: 48 bytes.
        assert_eq!(
            hex::encode(s256.expected_field_for(Tee::Tdx).unwrap()),
            format!("{SHA256}{}", "00".repeat(16))
        );
        assert_eq!(
            hex::encode(s384.expected_field_for(Tee::Tdx).unwrap()),
            SHA384
        );
        assert_eq!(
            hex::encode(s512.expected_field_for(Tee::Tdx).unwrap()),
            &SHA512[..96]
        );
        // Sample: 64 bytes.
        assert_eq!(
            hex::encode(s512.expected_field_for(Tee::Sample).unwrap()),
            SHA512
        );
        assert_eq!(s384.expected_field(64)[48..], [0u8; 16], "zero padding");
        assert_eq!(s384.expected_field_for(Tee::AzSnpVtpm), None);
        assert_eq!(launch_field(Tee::Snp).unwrap().len, 32);
        assert_eq!(launch_field(Tee::Tdx).unwrap().len, 48);
        assert_eq!(launch_field(Tee::Sample).unwrap().len, 64);
    }

    /// An attester reporting a fixed launch field, as an SNP guest would.
    #[derive(Debug)]
    struct FixedField(Tee, Option<Vec<u8>>);

    impl Attester for FixedField {
        fn tee(&self) -> Tee {
            self.0
        }
        fn evidence(&self, _: &[u8]) -> Result<serde_json::Value, AttesterError> {
            Ok(serde_json::Value::Null)
        }
        fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
            Ok(self.1.clone())
        }
    }

    #[test]
    fn binding_check() {
        let init = parse("sha384");
        let sample = SampleAttester::new(Some(init.expected_field(64)));
        assert_eq!(check_binding(&sample, &init).unwrap(), Binding::Bound);
        let snp = FixedField(Tee::Snp, Some(hex::decode(&SHA384[..64]).unwrap()));
        assert_eq!(check_binding(&snp, &init).unwrap(), Binding::Bound);

        let none = SampleAttester::new(None);
        assert_eq!(check_binding(&none, &init).unwrap(), Binding::Unsupported);

        let wrong = FixedField(Tee::Tdx, Some(vec![0xab; 48]));
        let err = check_binding(&wrong, &init).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, InitDataError::Mismatch { .. }), "{msg}");
        assert!(msg.contains(SHA384), "expected hex in {msg}");
        assert!(msg.contains(&"ab".repeat(48)), "found hex in {msg}");
        assert!(
            msg.contains("MRCONFIGID") && msg.contains("sha384"),
            "{msg}"
        );

        // A TEE field of the wrong size never matches.
        let short = FixedField(Tee::Snp, Some(init.expected_field(16)));
        assert!(check_binding(&short, &init).is_err());
    }

    #[test]
    fn block_device_format() {
        let dir = tempfile::tempdir().unwrap();
        let toml = doc("sha512");
        let gz = gzip(toml.as_bytes());
        let mut image = disk(&gz, gz.len() as u64);
        image.resize(image.len() + 4096, 0); // the rest of the disk
        std::fs::write(dir.path().join("vdb"), &image).unwrap();
        std::fs::write(dir.path().join("sda"), b"not initdata, just a disk").unwrap();
        std::fs::write(dir.path().join("nvme0n1"), &image).unwrap(); // not scanned
        std::fs::write(dir.path().join("vda"), b"short").unwrap();

        let found = find_device(dir.path()).unwrap().unwrap();
        assert_eq!(found, dir.path().join("vdb"));
        let init = InitData::from_device(&found).unwrap();
        assert_eq!(hex::encode(init.digest()), SHA512);
        assert_eq!(init.toml(), toml);

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(find_device(empty.path()).unwrap(), None);
        assert!(find_device(&empty.path().join("missing")).is_err());
    }

    fn device_err(bytes: &[u8]) -> InitDataError {
        read_disk(bytes, "test disk")
            .and_then(|t| InitData::parse(&t, "test disk"))
            .unwrap_err()
    }

    #[test]
    fn hostile_devices() {
        let gz = gzip(doc("sha256").as_bytes());

        let e = device_err(b"notinitdata.....");
        assert!(matches!(e, InitDataError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("notinitd"), "{e}");
        assert!(matches!(device_err(b""), InitDataError::BadMagic { .. }));

        let e = device_err(b"initdata\x01\x02");
        assert!(
            matches!(e, InitDataError::Truncated { part: "header", .. }),
            "{e}"
        );

        let e = device_err(&disk(&gz, u64::MAX));
        assert!(matches!(e, InitDataError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("18446744073709551615"), "{e}");

        let e = device_err(&disk(&gz, gz.len() as u64 + 10));
        assert!(
            matches!(e, InitDataError::Truncated { part: "gzip data", got, .. } if got == gz.len() as u64),
            "{e}"
        );

        let e = device_err(&disk(&[], 0));
        assert!(matches!(e, InitDataError::Empty { .. }), "{e}");

        let junk = b"this is not gzip at all";
        let e = device_err(&disk(junk, junk.len() as u64));
        assert!(matches!(e, InitDataError::BadGzip { .. }), "{e}");

        // A corrupt stream (truncated gzip).
        let cut = &gz[..gz.len() / 2];
        let e = device_err(&disk(cut, cut.len() as u64));
        assert!(matches!(e, InitDataError::BadGzip { .. }), "{e}");

        // A gzip bomb: small compressed, over the decompressed cap.
        let bomb = gzip(&vec![b'#'; (MAX_TOML + 10) as usize]);
        assert!(bomb.len() < MAX_COMPRESSED as usize);
        let e = device_err(&disk(&bomb, bomb.len() as u64));
        assert!(matches!(e, InitDataError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn hostile_documents() {
        let p = |s: &str| InitData::parse(s.as_bytes(), "test").unwrap_err();

        let e = p(&doc("sha256").replace("0.1.0", "0.2.0"));
        assert!(
            matches!(e, InitDataError::UnsupportedVersion { ref found, .. } if found == "0.2.0"),
            "{e}"
        );
        let e = p(&doc("md5"));
        assert!(
            matches!(e, InitDataError::UnsupportedAlgorithm { ref found, .. } if found == "md5"),
            "{e}"
        );
        let e = p("version = \"0.1.0\"\nalgorithm = \"sha256\"\n");
        assert!(matches!(e, InitDataError::Toml { .. }), "{e}");
        assert!(e.to_string().contains("data"), "{e}");
        let e = p("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nn = 1\n");
        assert!(matches!(e, InitDataError::Toml { .. }), "{e}");
        let e = p("this is = = not toml");
        assert!(matches!(e, InitDataError::Toml { .. }), "{e}");
        let e = InitData::parse(b"version = \"0.1.0\"\xff\xfe", "test").unwrap_err();
        assert!(matches!(e, InitDataError::NotUtf8 { .. }), "{e}");
        let huge = vec![b' '; (MAX_TOML + 1) as usize];
        assert!(matches!(
            InitData::parse(&huge, "test").unwrap_err(),
            InitDataError::TooLarge { .. }
        ));
    }

    #[test]
    fn annotation_vector_and_errors() {
        let init = InitData::from_annotation(ANNOTATION_VALUE).unwrap();
        assert_eq!(hex::encode(init.digest()), ANNOTATION_SHA256);
        assert_eq!(init.policy_rego(), Some("package agent_policy"));
        assert!(init.origin().contains(ANNOTATION));

        // Round trip through our own encoder too.
        let toml = doc("sha384");
        let value = STANDARD.encode(gzip(toml.as_bytes()));
        assert_eq!(
            hex::encode(InitData::from_annotation(&value).unwrap().digest()),
            SHA384
        );

        assert!(matches!(
            InitData::from_annotation("  ").unwrap_err(),
            InitDataError::Empty { .. }
        ));
        assert!(matches!(
            InitData::from_annotation("!!!not base64!!!").unwrap_err(),
            InitDataError::BadBase64 { .. }
        ));
        assert!(matches!(
            InitData::from_annotation(&STANDARD.encode(b"plain text")).unwrap_err(),
            InitDataError::BadGzip { .. }
        ));
        let long = "A".repeat(2 << 20);
        assert!(matches!(
            InitData::from_annotation(&long).unwrap_err(),
            InitDataError::TooLarge { .. }
        ));
    }

    #[test]
    fn from_file_and_accessors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initdata.toml");
        std::fs::write(&path, doc("sha384")).unwrap();
        let init = InitData::from_file(&path).unwrap();
        assert_eq!(hex::encode(init.digest()), SHA384);
        assert_eq!(
            init.policy_rego(),
            Some("package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n")
        );
        assert_eq!(init.data("missing"), None);
        assert_eq!(init.entries().len(), 2);
        let payload = init.to_payload();
        assert_eq!(payload.format, "toml");
        assert_eq!(payload.body, doc("sha384"));
        let e = InitData::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    fn with_data(entries: &[(&str, &str)]) -> InitData {
        let mut t = String::from("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n");
        for (k, v) in entries {
            t.push_str(&format!("{k:?} = '''\n{v}'''\n"));
        }
        InitData::parse(t.as_bytes(), "test").unwrap()
    }

    #[test]
    fn kbs_url_from_aa_or_cdh() {
        let aa = with_data(&[(
            AA_CONFIG_KEY,
            "[token_configs.kbs]\nurl = \"https://kbs.example:8080\"\ncert = \"-----BEGIN CERTIFICATE-----\"\n",
        )]);
        assert_eq!(
            aa.kbs_config().unwrap(),
            Some(KbsConfig {
                url: "https://kbs.example:8080".into(),
                cert: Some("-----BEGIN CERTIFICATE-----".into()),
                from: AA_CONFIG_KEY,
            })
        );

        let cdh = with_data(&[
            (AA_CONFIG_KEY, "[token_configs.coco_as]\nurl = \"http://as\"\n"),
            (
                CDH_CONFIG_KEY,
                "socket = 'unix:///run/confidential-containers/cdh.sock'\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:8080\"\n",
            ),
        ]);
        assert_eq!(
            cdh.kbs_config().unwrap(),
            Some(KbsConfig {
                url: "http://10.0.2.2:8080".into(),
                cert: None,
                from: CDH_CONFIG_KEY,
            })
        );

        let offline = with_data(&[(CDH_CONFIG_KEY, "[kbc]\nname = \"offline_fs_kbc\"\n")]);
        assert_eq!(offline.kbs_config().unwrap(), None);
        assert_eq!(with_data(&[]).kbs_config().unwrap(), None);

        let broken = with_data(&[(AA_CONFIG_KEY, "[token_configs\n")]);
        let e = broken.kbs_config().unwrap_err();
        assert!(
            matches!(e, InitDataError::EmbeddedConfig { key: "aa.toml", .. }),
            "{e}"
        );
    }
}
