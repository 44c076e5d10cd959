//! Intel TDX attester. PLACEHOLDER being written; see the issue.

use super::{Attester, AttesterError, TeeDevices};
use crate::tee::Tee;

/// TDX evidence (configfs-tsm).
#[derive(Debug)]
pub struct TdxAttester {}

impl TdxAttester {
    /// Whether the TDX guest driver is present.
    pub fn present(d: &TeeDevices) -> bool {
        d.tdx_guest.exists()
    }

    /// Opens the device.
    pub fn open(d: &TeeDevices) -> Result<Self, AttesterError> {
        Err(AttesterError::Unavailable {
            tee: Tee::Tdx,
            reason: format!("{} not supported yet", d.tdx_guest.display()),
        })
    }
}

impl Attester for TdxAttester {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }
    fn evidence(&self, _rd: &[u8]) -> Result<serde_json::Value, AttesterError> {
        Err(AttesterError::Unavailable {
            tee: Tee::Tdx,
            reason: "not built".into(),
        })
    }
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        Ok(None)
    }
}
