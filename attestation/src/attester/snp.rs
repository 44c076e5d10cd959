//! AMD SEV-SNP attester. PLACEHOLDER being written; see the issue.

use super::{Attester, AttesterError, TeeDevices};
use crate::tee::Tee;

/// SEV-SNP evidence from `/dev/sev-guest`.
#[derive(Debug)]
pub struct SnpAttester {}

impl SnpAttester {
    /// Whether the SNP guest driver is present.
    pub fn present(d: &TeeDevices) -> bool {
        d.sev_guest.exists() && d.sev_guest_sysfs.exists()
    }

    /// Opens the device.
    pub fn open(d: &TeeDevices) -> Result<Self, AttesterError> {
        Err(AttesterError::Unavailable {
            tee: Tee::Snp,
            reason: format!("{} not supported yet", d.sev_guest.display()),
        })
    }
}

impl Attester for SnpAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }
    fn evidence(&self, _rd: &[u8]) -> Result<serde_json::Value, AttesterError> {
        Err(AttesterError::Unavailable {
            tee: Tee::Snp,
            reason: "not built".into(),
        })
    }
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        Ok(None)
    }
}
