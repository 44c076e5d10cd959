//! Evidence from the TEE the guest runs in.
//!
//! An [`Attester`] produces evidence that binds 64 bytes of `report_data`
//! chosen by the caller (the KBS client puts the hash of the nonce and its
//! ephemeral public key there) in the JSON shape Trustee's verifier for that
//! TEE parses. [`detect`] picks the TEE actually present; it never falls
//! back to the [`sample`] attester on its own: that one proves nothing and is
//! only used when asked for by name.
//!
//! Hardware access (`/dev/sev-guest`, configfs-tsm) sits behind the
//! [`TeeDevices`] paths so that tests run the real code against recorded
//! reports and a fake configfs tree; this machine has no TEE.

pub mod sample;
pub mod snp;
pub mod tdx;
pub mod tsm;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::tee::Tee;

/// Size of the report data every supported TEE binds.
pub const REPORT_DATA_LEN: usize = 64;

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttesterError {
    /// Auto-detection found no TEE.
    #[error("no TEE found (probed: {probed}); this is not a confidential VM, or its guest drivers are not loaded. For development only, ask for the sample TEE explicitly (--tee sample / allow_sample = true): it proves nothing")]
    NoTee {
        /// What was looked at.
        probed: String,
    },
    /// The TEE asked for is not present.
    #[error("the {tee} TEE is not available here: {reason}")]
    Unavailable {
        /// The TEE asked for.
        tee: Tee,
        /// What is missing.
        reason: String,
    },
    /// The device or interface failed while producing a report.
    #[error("getting {tee} evidence: {reason}")]
    Report {
        /// The TEE.
        tee: Tee,
        /// What failed.
        reason: String,
    },
    /// The report data is longer than the TEE's report field.
    #[error("report data of {0} bytes does not fit the {REPORT_DATA_LEN}-byte report field")]
    ReportDataTooLong(usize),
    /// configfs-tsm failed while producing a report (kept typed so callers
    /// and tests can tell a racing writer from a missing driver).
    #[error("getting {tee} evidence through configfs-tsm: {error}")]
    Tsm {
        /// The TEE.
        tee: Tee,
        /// What failed.
        error: tsm::TsmError,
    },
    /// The sample TEE was asked for but not allowed.
    #[error("the sample TEE was requested but is not allowed: it produces evidence that proves nothing; allow it explicitly for development (--tee sample or allow_sample = true)")]
    SampleNotAllowed,
}

/// Which TEE to use: a named one, or whatever is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeChoice {
    /// Detect the TEE present; fail if there is none.
    #[default]
    Auto,
    /// The development TEE (no security).
    Sample,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

impl FromStr for TeeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TeeChoice::Auto),
            "sample" => Ok(TeeChoice::Sample),
            "snp" => Ok(TeeChoice::Snp),
            "tdx" => Ok(TeeChoice::Tdx),
            other => Err(format!(
                "unknown TEE {other:?}; expected auto, sample, snp or tdx"
            )),
        }
    }
}

impl fmt::Display for TeeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TeeChoice::Auto => "auto",
            TeeChoice::Sample => "sample",
            TeeChoice::Snp => "snp",
            TeeChoice::Tdx => "tdx",
        })
    }
}

/// Where the TEE interfaces live. The defaults are the real kernel paths;
/// tests point them at a fake tree.
#[derive(Debug, Clone)]
pub struct TeeDevices {
    /// The SEV-SNP guest device (`/dev/sev-guest`).
    pub sev_guest: PathBuf,
    /// The SEV-SNP guest platform device directory, present when the
    /// driver is loaded (`/sys/devices/platform/sev-guest`).
    pub sev_guest_sysfs: PathBuf,
    /// The TDX guest device (`/dev/tdx_guest`).
    pub tdx_guest: PathBuf,
    /// The configfs-tsm report directory (`/sys/kernel/config/tsm/report`).
    pub tsm_report: PathBuf,
    /// The CC event log ACPI table data (`/sys/firmware/acpi/tables/data/CCEL`),
    /// sent with TDX evidence so the verifier can replay the RTMRs.
    pub ccel: PathBuf,
}

impl Default for TeeDevices {
    fn default() -> Self {
        TeeDevices {
            sev_guest: PathBuf::from("/dev/sev-guest"),
            sev_guest_sysfs: PathBuf::from("/sys/devices/platform/sev-guest"),
            tdx_guest: PathBuf::from("/dev/tdx_guest"),
            tsm_report: PathBuf::from("/sys/kernel/config/tsm/report"),
            ccel: PathBuf::from("/sys/firmware/acpi/tables/data/CCEL"),
        }
    }
}

/// Produces evidence of the TEE the guest runs in.
///
/// The calls are blocking (ioctls, configfs writes that wait for the
/// firmware): async callers run them on a blocking thread.
pub trait Attester: Send + Sync + fmt::Debug {
    /// The TEE, as sent in the KBS `/auth` request.
    fn tee(&self) -> Tee;

    /// Evidence binding `report_data` (the runtime-data digest, at most
    /// [`REPORT_DATA_LEN`] bytes), as the JSON value the KBS expects in
    /// `tee-evidence.primary_evidence`. Hardware attesters zero-pad it to the
    /// 64-byte report field (the verifiers pad the expected value the same
    /// way); the sample TEE carries it as given, as Trustee's sample verifier
    /// compares it byte for byte.
    fn evidence(&self, report_data: &[u8]) -> Result<serde_json::Value, AttesterError>;

    /// The launch-bound configuration field that initdata's digest must
    /// equal (SNP `HOST_DATA`, 32 bytes; TDX `MRCONFIGID`, 48 bytes), read
    /// from a fresh report. `None` when this TEE has no such field.
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError>;
}

/// `report_data` zero-padded to the 64-byte report field.
pub fn pad_report_data(report_data: &[u8]) -> Result<[u8; REPORT_DATA_LEN], AttesterError> {
    if report_data.len() > REPORT_DATA_LEN {
        return Err(AttesterError::ReportDataTooLong(report_data.len()));
    }
    let mut out = [0u8; REPORT_DATA_LEN];
    out[..report_data.len()].copy_from_slice(report_data);
    Ok(out)
}

/// Options for [`detect`].
#[derive(Debug, Clone, Default)]
pub struct AttesterConfig {
    /// The sample TEE may be used (it must also be asked for by name).
    pub allow_sample: bool,
    /// Device paths (real ones by default).
    pub devices: TeeDevices,
    /// What the sample TEE reports as its launch-bound field (the host sets
    /// it, as qemu's `host-data` does for SNP); ignored by real TEEs.
    pub sample_launch_config: Option<Vec<u8>>,
}

/// The attester for `choice`: the named TEE, or with [`TeeChoice::Auto`]
/// the one present (TDX first, then SNP, the reference agent's order). Never
/// the sample TEE unless it is named and allowed.
pub fn detect(
    choice: TeeChoice,
    config: &AttesterConfig,
) -> Result<Box<dyn Attester>, AttesterError> {
    let d = &config.devices;
    match choice {
        TeeChoice::Sample => {
            if !config.allow_sample {
                return Err(AttesterError::SampleNotAllowed);
            }
            Ok(Box::new(sample::SampleAttester::new(
                config.sample_launch_config.clone(),
            )))
        }
        TeeChoice::Snp => Ok(Box::new(snp::SnpAttester::open(d)?)),
        TeeChoice::Tdx => Ok(Box::new(tdx::TdxAttester::open(d)?)),
        TeeChoice::Auto => {
            if tdx::TdxAttester::present(d) {
                return Ok(Box::new(tdx::TdxAttester::open(d)?));
            }
            if snp::SnpAttester::present(d) {
                return Ok(Box::new(snp::SnpAttester::open(d)?));
            }
            Err(AttesterError::NoTee {
                probed: format!(
                    "{} (TDX), {} and {} (SEV-SNP), configfs-tsm at {}",
                    d.tdx_guest.display(),
                    d.sev_guest.display(),
                    d.sev_guest_sysfs.display(),
                    d.tsm_report.display()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> AttesterConfig {
        let dir = PathBuf::from("/nonexistent/sealpod-test");
        AttesterConfig {
            allow_sample: false,
            devices: TeeDevices {
                sev_guest: dir.join("sev-guest"),
                sev_guest_sysfs: dir.join("sysfs-sev-guest"),
                tdx_guest: dir.join("tdx_guest"),
                tsm_report: dir.join("tsm/report"),
                ccel: dir.join("CCEL"),
            },
            sample_launch_config: None,
        }
    }

    #[test]
    fn auto_without_a_tee_fails_and_never_falls_back_to_sample() {
        let mut cfg = nowhere();
        cfg.allow_sample = true;
        let err = detect(TeeChoice::Auto, &cfg).unwrap_err();
        assert!(matches!(err, AttesterError::NoTee { .. }), "{err}");
        assert!(err.to_string().contains("--tee sample"), "{err}");
    }

    #[test]
    fn sample_needs_to_be_allowed() {
        let cfg = nowhere();
        assert!(matches!(
            detect(TeeChoice::Sample, &cfg).unwrap_err(),
            AttesterError::SampleNotAllowed
        ));
        let mut cfg = nowhere();
        cfg.allow_sample = true;
        assert_eq!(detect(TeeChoice::Sample, &cfg).unwrap().tee(), Tee::Sample);
    }

    #[test]
    fn choice_parses() {
        assert_eq!("tdx".parse::<TeeChoice>().unwrap(), TeeChoice::Tdx);
        assert!("sgx".parse::<TeeChoice>().is_err());
    }
}
