//! Intel TDX attester.
//!
//! Quotes come from configfs-tsm (provider `tdx_guest`, Linux >= 6.7): the
//! kernel turns the TD report into a quote through the host's quote
//! generation service. The evidence is what Trustee's TDX verifier
//! deserializes (`deps/verifier/src/tdx/mod.rs` `TdxEvidence`):
//! `{"cc_eventlog": <base64 CCEL table data> | null, "quote": <base64 quote>}`.
//!
//! Quote layout (Intel TDX DCAP quote v4, and v5 whose body is preceded by
//! a 2-byte body type and a 4-byte body size; the same offsets Trustee's
//! `intel_dcap/quote.rs` reads): a 48-byte header, then the TD report body
//! with `MRCONFIGID` at body offset 184 (48 bytes) and `REPORTDATA` at body
//! offset 520 (64 bytes). For v4: `MRCONFIGID` at 232, `REPORTDATA` at 568.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::tsm::{Tsm, TsmRequest, PROVIDER_TDX};
use super::{pad_report_data, Attester, AttesterError, TeeDevices, REPORT_DATA_LEN};
use crate::tee::Tee;

/// Size of the quote header.
pub const QUOTE_HEADER_LEN: usize = 48;
/// `tee_type` of TDX quotes.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Size of the TDX 1.0 TD report body (TDX 1.5 bodies are longer; the
/// fields read here are at the same offsets in both).
pub const TD_REPORT_BODY_LEN: usize = 584;
/// Offset of `MRCONFIGID` in the TD report body.
pub const MRCONFIGID_BODY_OFFSET: usize = 184;
/// Size of `MRCONFIGID`: what initdata's digest is truncated/padded to.
pub const MRCONFIGID_LEN: usize = 48;
/// Offset of `REPORTDATA` in the TD report body.
pub const REPORT_DATA_BODY_OFFSET: usize = 520;
/// The most CCEL bytes read (the log area is normally 64 KiB to a few MiB).
const CCEL_READ_LIMIT: usize = 16 << 20;

/// The evidence, field for field what Trustee's verifier deserializes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxEvidence {
    /// Base64 of the CC event log ACPI table data, for RTMR replay.
    pub cc_eventlog: Option<String>,
    /// Base64 of the quote.
    pub quote: String,
}

/// The fields of a TD quote the guest needs, located but not verified.
#[derive(Debug, Clone, Copy)]
pub struct TdQuote<'a> {
    bytes: &'a [u8],
    version: u16,
    body: usize,
}

impl<'a> TdQuote<'a> {
    /// Locates the TD report body of a v4 or v5 TDX quote, checking that
    /// the quote is long enough for it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let u16_at = |at: usize| {
            bytes
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let short = || format!("the quote is only {} bytes", bytes.len());
        let version = u16_at(0).ok_or_else(short)?;
        let tee_type = u32_at(4).ok_or_else(short)?;
        if tee_type != TEE_TYPE_TDX {
            return Err(format!(
                "the quote's tee_type is {tee_type:#x}, not TDX ({TEE_TYPE_TDX:#x})"
            ));
        }
        let body = match version {
            4 => QUOTE_HEADER_LEN,
            5 => {
                let body_type = u16_at(QUOTE_HEADER_LEN).ok_or_else(short)?;
                if !matches!(body_type, 2 | 3) {
                    return Err(format!(
                        "quote v5 body type {body_type} is not a TD report (2: TDX 1.0, 3: TDX 1.5)"
                    ));
                }
                QUOTE_HEADER_LEN + 2 + 4
            }
            v => return Err(format!("unsupported quote version {v} (expected 4 or 5)")),
        };
        if bytes.len() < body + TD_REPORT_BODY_LEN {
            return Err(format!(
                "the quote is {} bytes, too short for a v{version} TD report body ending at {}",
                bytes.len(),
                body + TD_REPORT_BODY_LEN
            ));
        }
        Ok(TdQuote {
            bytes,
            version,
            body,
        })
    }

    /// The quote version (4 or 5).
    pub fn version(&self) -> u16 {
        self.version
    }

    fn field<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        // In range: `parse` checked the whole body is present.
        if let Some(src) = self.bytes.get(self.body + offset..self.body + offset + N) {
            out.copy_from_slice(src);
        }
        out
    }

    /// `MRCONFIGID`: set by the host at launch (the initdata digest).
    pub fn mr_config_id(&self) -> [u8; MRCONFIGID_LEN] {
        self.field(MRCONFIGID_BODY_OFFSET)
    }

    /// `REPORTDATA`: what the quote binds.
    pub fn report_data(&self) -> [u8; REPORT_DATA_LEN] {
        self.field(REPORT_DATA_BODY_OFFSET)
    }
}

/// TDX evidence through configfs-tsm.
#[derive(Debug)]
pub struct TdxAttester {
    tsm: Tsm,
    ccel: PathBuf,
}

impl TdxAttester {
    /// Whether this is a TDX guest: configfs-tsm's provider is `tdx_guest`,
    /// or the TDX guest device exists.
    pub fn present(d: &TeeDevices) -> bool {
        d.tdx_guest.exists()
            || Tsm::new(&d.tsm_report)
                .provider()
                .is_ok_and(|p| p == PROVIDER_TDX)
    }

    /// Checks that configfs-tsm is there with provider `tdx_guest`.
    pub fn open(d: &TeeDevices) -> Result<Self, AttesterError> {
        let tsm = Tsm::new(&d.tsm_report);
        match tsm.provider() {
            Ok(p) if p == PROVIDER_TDX => Ok(TdxAttester {
                tsm,
                ccel: d.ccel.clone(),
            }),
            Ok(p) => Err(AttesterError::Unavailable {
                tee: Tee::Tdx,
                reason: format!("the configfs-tsm provider is {p:?}, not {PROVIDER_TDX:?}"),
            }),
            Err(e) => Err(AttesterError::Unavailable {
                tee: Tee::Tdx,
                reason: format!(
                    "TDX quotes come from configfs-tsm, which cannot be used{}: {e}",
                    if d.tdx_guest.exists() {
                        format!(" (though {} exists)", d.tdx_guest.display())
                    } else {
                        String::new()
                    }
                ),
            }),
        }
    }

    /// A fresh quote binding `report_data` (64 bytes).
    fn quote(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Vec<u8>, AttesterError> {
        let r = self
            .tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: report_data,
                    privlevel: None,
                    auxblob: false,
                },
            )
            .map_err(|error| AttesterError::Tsm {
                tee: Tee::Tdx,
                error,
            })?;
        Ok(r.outblob)
    }
}

fn report_err(reason: String) -> AttesterError {
    AttesterError::Report {
        tee: Tee::Tdx,
        reason,
    }
}

/// The CC event log table data, `None` if the firmware published none.
fn read_ccel(path: &Path) -> Result<Option<Vec<u8>>, AttesterError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            warn!(
                "no CC event log at {}: the verifier cannot replay the RTMRs",
                path.display()
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(report_err(format!(
                "opening the CC event log {}: {e}",
                path.display()
            )))
        }
    };
    let mut data = Vec::new();
    file.take(CCEL_READ_LIMIT as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| report_err(format!("reading the CC event log {}: {e}", path.display())))?;
    if data.len() > CCEL_READ_LIMIT {
        return Err(report_err(format!(
            "the CC event log {} is larger than {CCEL_READ_LIMIT} bytes",
            path.display()
        )));
    }
    debug!("CC event log: {} bytes from {}", data.len(), path.display());
    Ok((!data.is_empty()).then_some(data))
}

impl Attester for TdxAttester {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    /// `{"cc_eventlog": ..., "quote": ...}` over a fresh quote whose
    /// `REPORTDATA` is `report_data` zero-padded.
    fn evidence(&self, report_data: &[u8]) -> Result<serde_json::Value, AttesterError> {
        let padded = pad_report_data(report_data)?;
        let quote = self.quote(&padded)?;
        let parsed = TdQuote::parse(&quote).map_err(report_err)?;
        if parsed.report_data() != padded {
            return Err(report_err(format!(
                "the quote carries REPORTDATA {} instead of the requested {}",
                hex::encode(parsed.report_data()),
                hex::encode(padded)
            )));
        }
        let evidence = TdxEvidence {
            cc_eventlog: read_ccel(&self.ccel)?.map(|d| STANDARD.encode(d)),
            quote: STANDARD.encode(&quote),
        };
        serde_json::to_value(&evidence)
            .map_err(|e| report_err(format!("serializing the evidence: {e}")))
    }

    /// `MRCONFIGID` (48 bytes) of a fresh quote.
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        let quote = self.quote(&[0u8; REPORT_DATA_LEN])?;
        let parsed = TdQuote::parse(&quote).map_err(report_err)?;
        Ok(Some(parsed.mr_config_id().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tsm::fake::{leftover_entries, FakeTsm};
    use super::*;
    use crate::attester::tsm::TsmError;

    const MRCONFIGID: [u8; MRCONFIGID_LEN] = [0xc3; MRCONFIGID_LEN];

    /// A TDX quote v4 byte layout: header (version 4, att_key_type 2 =
    /// ECDSA P-256, tee_type 0x81), the TD report body, and a stand-in for
    /// the signature data.
    fn build_quote_v4(report_data: &[u8; 64], mr_config_id: &[u8; 48]) -> Vec<u8> {
        let mut q = vec![0u8; QUOTE_HEADER_LEN + TD_REPORT_BODY_LEN];
        q[0..2].copy_from_slice(&4u16.to_le_bytes());
        q[2..4].copy_from_slice(&2u16.to_le_bytes());
        q[4..8].copy_from_slice(&TEE_TYPE_TDX.to_le_bytes());
        q[12..28].copy_from_slice(&[0x93; 16]); // QE vendor id
        let body = QUOTE_HEADER_LEN;
        q[body + 136..body + 184].copy_from_slice(&[0x0d; 48]); // MRTD
                                                                // Absolute offsets of a v4 quote, spelled out.
        q[232..280].copy_from_slice(mr_config_id);
        q[280..328].copy_from_slice(&[0x0e; 48]); // MROWNER
        q[568..632].copy_from_slice(report_data);
        q.extend_from_slice(&[0x10, 0, 0, 0]); // signature data length
        q.extend_from_slice(&[0x5e; 16]);
        q
    }

    #[test]
    fn quote_v4_field_extraction() {
        let rd = [0x61; 64];
        let q = build_quote_v4(&rd, &MRCONFIGID);
        let p = TdQuote::parse(&q).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.report_data(), rd);
        assert_eq!(p.mr_config_id(), MRCONFIGID);
        assert_eq!(QUOTE_HEADER_LEN + MRCONFIGID_BODY_OFFSET, 232);
        assert_eq!(QUOTE_HEADER_LEN + REPORT_DATA_BODY_OFFSET, 568);
    }

    #[test]
    fn quote_v5_and_bad_quotes() {
        let rd = [0x62; 64];
        let v4 = build_quote_v4(&rd, &MRCONFIGID);
        // v5: the same body behind a 2-byte type (2: TDX 1.0) and 4-byte size.
        let mut v5 = v4[..QUOTE_HEADER_LEN].to_vec();
        v5[0..2].copy_from_slice(&5u16.to_le_bytes());
        v5.extend_from_slice(&2u16.to_le_bytes());
        v5.extend_from_slice(&(TD_REPORT_BODY_LEN as u32).to_le_bytes());
        v5.extend_from_slice(&v4[QUOTE_HEADER_LEN..]);
        let p = TdQuote::parse(&v5).unwrap();
        assert_eq!(
            (p.version(), p.report_data(), p.mr_config_id()),
            (5, rd, MRCONFIGID)
        );

        assert!(TdQuote::parse(&v4[..600])
            .unwrap_err()
            .contains("too short"));
        assert!(TdQuote::parse(&v4[..3]).is_err());
        assert!(TdQuote::parse(&[]).is_err());
        let mut sgx = v4.clone();
        sgx[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert!(TdQuote::parse(&sgx).unwrap_err().contains("tee_type"));
        let mut v3 = v4.clone();
        v3[0..2].copy_from_slice(&3u16.to_le_bytes());
        assert!(TdQuote::parse(&v3).unwrap_err().contains("version 3"));
        let mut bad_type = v5;
        bad_type[48..50].copy_from_slice(&9u16.to_le_bytes());
        assert!(TdQuote::parse(&bad_type).is_err());
    }

    fn attester(fake: FakeTsm, ccel: PathBuf) -> (tempfile::TempDir, TdxAttester, Arc<FakeTsm>) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(fake);
        let tsm = Tsm::with_fs(dir.path(), fake.clone());
        (dir, TdxAttester { tsm, ccel }, fake)
    }

    fn fake_tdx() -> FakeTsm {
        FakeTsm::new(
            PROVIDER_TDX,
            Box::new(|inblob: &[u8]| {
                let rd: [u8; 64] = inblob.try_into().unwrap_or([0xff; 64]);
                build_quote_v4(&rd, &MRCONFIGID)
            }),
        )
    }

    /// The deserializer Trustee runs on TDX evidence.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TrusteeTdxEvidence {
        cc_eventlog: Option<String>,
        quote: String,
    }

    #[test]
    fn evidence_through_configfs_tsm_with_and_without_ccel() {
        let files = tempfile::tempdir().unwrap();
        let ccel = files.path().join("CCEL");
        std::fs::write(&ccel, b"TCG event log bytes").unwrap();
        let (dir, att, fake) = attester(fake_tdx(), ccel.clone());
        assert_eq!(att.tee(), Tee::Tdx);

        let rd = [0x4d; 48];
        let json = att.evidence(&rd).unwrap();
        let ev: TrusteeTdxEvidence = serde_json::from_value(json).unwrap();
        let quote = STANDARD.decode(ev.quote).unwrap();
        let p = TdQuote::parse(&quote).unwrap();
        assert_eq!(p.report_data(), pad_report_data(&rd).unwrap());
        assert_eq!(
            STANDARD.decode(ev.cc_eventlog.unwrap()).unwrap(),
            b"TCG event log bytes"
        );
        assert_eq!(
            fake.inblobs.lock().unwrap()[0],
            pad_report_data(&rd).unwrap()
        );
        // TDX has no privlevel.
        assert!(fake.privlevels.lock().unwrap().is_empty());

        assert_eq!(att.launch_config().unwrap(), Some(MRCONFIGID.to_vec()));

        std::fs::remove_file(&ccel).unwrap();
        let json = att.evidence(&rd).unwrap();
        assert!(json["cc_eventlog"].is_null(), "{json}");
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_race_and_a_wrong_quote_are_errors() {
        let (dir, att, _) = attester(fake_tdx().with_races(100), PathBuf::from("/nonexistent"));
        let err = att.evidence(&[1; 64]).unwrap_err();
        assert!(
            matches!(
                err,
                AttesterError::Tsm {
                    tee: Tee::Tdx,
                    error: TsmError::GenerationRace { .. }
                }
            ),
            "{err}"
        );
        assert!(leftover_entries(dir.path()).is_empty());

        let other = FakeTsm::new(
            PROVIDER_TDX,
            Box::new(|_: &[u8]| build_quote_v4(&[0xee; 64], &MRCONFIGID)),
        );
        let (_dir, att, _) = attester(other, PathBuf::from("/nonexistent"));
        let err = att.evidence(&[1; 64]).unwrap_err();
        assert!(
            err.to_string().contains("instead of the requested"),
            "{err}"
        );

        let garbage = FakeTsm::new(PROVIDER_TDX, Box::new(|_: &[u8]| vec![4, 0, 2, 0]));
        let (_dir, att, _) = attester(garbage, PathBuf::from("/nonexistent"));
        assert!(att.launch_config().is_err());
    }

    #[test]
    fn open_without_configfs_tsm_explains() {
        let dir = PathBuf::from("/nonexistent/sealpod-test");
        let d = TeeDevices {
            sev_guest: dir.join("sev-guest"),
            sev_guest_sysfs: dir.join("sysfs"),
            tdx_guest: dir.join("tdx_guest"),
            tsm_report: dir.join("tsm/report"),
            ccel: dir.join("CCEL"),
        };
        assert!(!TdxAttester::present(&d));
        let err = TdxAttester::open(&d).unwrap_err();
        assert!(
            matches!(err, AttesterError::Unavailable { tee: Tee::Tdx, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("configfs-tsm"), "{err}");
    }
}
