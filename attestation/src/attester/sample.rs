//! The sample TEE: development only. Its "evidence" is the report data in
//! clear, signed by nothing, so any process can forge it; a KBS must never
//! release real secrets to it (Trustee's default resource policy refuses
//! it). It exists so the whole flow can run on machines without a TEE.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;
use tracing::warn;

use super::{Attester, AttesterError, REPORT_DATA_LEN};
use crate::tee::Tee;

/// The security version the sample TEE claims.
const SAMPLE_SVN: &str = "1";

/// The development attester. Logs a warning every time it is used.
#[derive(Debug, Clone)]
pub struct SampleAttester {
    launch_config: Option<Vec<u8>>,
}

impl SampleAttester {
    /// A sample attester whose launch-bound field (what initdata is checked
    /// against) is `launch_config`, as the host would set it.
    pub fn new(launch_config: Option<Vec<u8>>) -> Self {
        warn!("using the SAMPLE TEE: its evidence proves nothing; development only");
        SampleAttester { launch_config }
    }
}

impl Attester for SampleAttester {
    fn tee(&self) -> Tee {
        Tee::Sample
    }

    /// `{"svn":"1","report_data":"<base64>"}` (+ `"init_data"` when a launch
    /// config is set), as Trustee's sample verifier parses it.
    fn evidence(&self, report_data: &[u8]) -> Result<serde_json::Value, AttesterError> {
        if report_data.len() > REPORT_DATA_LEN {
            return Err(AttesterError::ReportDataTooLong(report_data.len()));
        }
        warn!("producing SAMPLE TEE evidence: it proves nothing");
        let mut ev = json!({
            "svn": SAMPLE_SVN,
            "report_data": STANDARD.encode(report_data),
        });
        if let Some(lc) = &self.launch_config {
            ev["init_data"] = json!(hex::encode(lc));
        }
        Ok(ev)
    }

    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        Ok(self.launch_config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_carries_the_report_data() {
        let rd = [7u8; 48];
        let ev = SampleAttester::new(None).evidence(&rd).unwrap();
        assert_eq!(ev["svn"], "1");
        assert_eq!(
            STANDARD
                .decode(ev["report_data"].as_str().unwrap())
                .unwrap(),
            rd.to_vec()
        );
        assert!(ev.get("init_data").is_none());
        let with = SampleAttester::new(Some(vec![0xab; 4]))
            .evidence(&rd)
            .unwrap();
        assert_eq!(with["init_data"], "abababab");
        assert!(SampleAttester::new(None).evidence(&[0u8; 65]).is_err());
    }
}
