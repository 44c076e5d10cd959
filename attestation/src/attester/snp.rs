//! AMD SEV-SNP attester.
//!
//! The report comes from the `sev-guest` driver: through the
//! `SNP_GET_EXT_REPORT` ioctl on `/dev/sev-guest` (what the reference
//! attestation agent uses, with the certificate table the host supplies),
//! or through configfs-tsm with provider `sev_guest` when the device node is
//! absent. Either way the evidence is
//! `{"attestation_report": <report>, "cert_chain": [<entry>...] | null}` with
//! the report and the entries serialized by the `sev` crate's serde, the
//! exact types Trustee's SNP verifier deserializes (its pinned virtee/sev
//! revision, 7.1.0 + 2 commits, has the same `AttestationReport` and
//! `CertTableEntry` definitions as sev 8.0.0 used here).
//!
//! Layout (SEV-SNP firmware ABI, `ATTESTATION_REPORT`, 1184 bytes):
//! `REPORT_DATA` at 0x50 (64 bytes), `HOST_DATA` at 0xC0 (32 bytes, set by
//! the host at launch: the initdata digest).

use std::fs::File;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::{CertTableEntry, CertType};
use sev::parser::ByteParser as _;
use tracing::{debug, warn};

use super::tsm::{Tsm, TsmRequest, PROVIDER_SEV};
use super::{pad_report_data, Attester, AttesterError, TeeDevices, REPORT_DATA_LEN};
use crate::tee::Tee;

/// Size of the attestation report.
pub const REPORT_LEN: usize = 1184;
/// Offset of `REPORT_DATA` in the report.
pub const REPORT_DATA_OFFSET: usize = 0x50;
/// Offset of `HOST_DATA` in the report.
pub const HOST_DATA_OFFSET: usize = 0xC0;
/// Size of `HOST_DATA`: what initdata's digest is truncated/padded to.
pub const HOST_DATA_LEN: usize = 32;
/// The VMPL reports are requested for: Trustee's verifier accepts only 0.
pub const VMPL: u32 = 0;

/// The evidence, field for field what Trustee's verifier deserializes
/// (`deps/verifier/src/snp/mod.rs` `SnpEvidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnpEvidence {
    /// The report, serialized by the `sev` crate.
    pub attestation_report: AttestationReport,
    /// The host-provided certificates (VCEK/VLEK, ASK, ARK), or `null` to
    /// let the verifier fetch the VCEK from AMD's KDS.
    pub cert_chain: Option<Vec<CertTableEntry>>,
}

/// Where reports come from.
#[derive(Debug)]
enum ReportSource {
    /// `/dev/sev-guest`, opened once.
    Device { path: PathBuf, file: File },
    /// configfs-tsm with provider `sev_guest`.
    Tsm(Tsm),
}

/// SEV-SNP evidence from the `sev-guest` driver.
#[derive(Debug)]
pub struct SnpAttester {
    source: ReportSource,
}

impl SnpAttester {
    /// Whether this is an SEV-SNP guest: the `sev-guest` platform device or
    /// its device node exists, or configfs-tsm's provider is `sev_guest`.
    pub fn present(d: &TeeDevices) -> bool {
        d.sev_guest.exists()
            || d.sev_guest_sysfs.exists()
            || Tsm::new(&d.tsm_report)
                .provider()
                .is_ok_and(|p| p == PROVIDER_SEV)
    }

    /// Opens `/dev/sev-guest`, or else configfs-tsm if its provider is
    /// `sev_guest`.
    pub fn open(d: &TeeDevices) -> Result<Self, AttesterError> {
        if d.sev_guest.exists() {
            let file = File::open(&d.sev_guest).map_err(|e| AttesterError::Unavailable {
                tee: Tee::Snp,
                reason: format!("opening {}: {e}", d.sev_guest.display()),
            })?;
            debug!("SEV-SNP reports through {}", d.sev_guest.display());
            return Ok(SnpAttester {
                source: ReportSource::Device {
                    path: d.sev_guest.clone(),
                    file,
                },
            });
        }
        let tsm = Tsm::new(&d.tsm_report);
        match tsm.provider() {
            Ok(p) if p == PROVIDER_SEV => {
                debug!("SEV-SNP reports through configfs-tsm at {}", tsm.dir().display());
                Ok(SnpAttester {
                    source: ReportSource::Tsm(tsm),
                })
            }
            Ok(p) => Err(AttesterError::Unavailable {
                tee: Tee::Snp,
                reason: format!(
                    "{} does not exist and the configfs-tsm provider is {p:?}, not {PROVIDER_SEV:?}",
                    d.sev_guest.display()
                ),
            }),
            Err(e) => Err(AttesterError::Unavailable {
                tee: Tee::Snp,
                reason: format!(
                    "{} does not exist{} and configfs-tsm cannot be used ({e}); is the sev-guest driver loaded?",
                    d.sev_guest.display(),
                    if d.sev_guest_sysfs.exists() {
                        format!(" (though {} does)", d.sev_guest_sysfs.display())
                    } else {
                        String::new()
                    }
                ),
            }),
        }
    }

    /// A fresh report binding `report_data` (64 bytes), and the certificate
    /// table if the host supplies one (raw, kernel GUID-table format).
    fn raw_report(
        &self,
        report_data: &[u8; REPORT_DATA_LEN],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), AttesterError> {
        match &self.source {
            ReportSource::Device { path, file } => ioctl::get_ext_report(file, report_data, VMPL)
                .map_err(|reason| AttesterError::Report {
                    tee: Tee::Snp,
                    reason: format!("{}: {reason}", path.display()),
                }),
            ReportSource::Tsm(tsm) => {
                let r = tsm
                    .report(
                        PROVIDER_SEV,
                        &TsmRequest {
                            inblob: report_data,
                            privlevel: Some(VMPL),
                            auxblob: true,
                        },
                    )
                    .map_err(|error| AttesterError::Tsm {
                        tee: Tee::Snp,
                        error,
                    })?;
                Ok((r.outblob, r.auxblob))
            }
        }
    }
}

impl Attester for SnpAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    /// `{"attestation_report": ..., "cert_chain": [...] | null}` over a
    /// fresh report whose `REPORT_DATA` is `report_data` zero-padded.
    fn evidence(&self, report_data: &[u8]) -> Result<serde_json::Value, AttesterError> {
        let padded = pad_report_data(report_data)?;
        let (report, certs) = self.raw_report(&padded)?;
        let evidence = evidence_from_parts(&report, certs.as_deref())?;
        if evidence.attestation_report.report_data != padded {
            return Err(report_err(format!(
                "the report carries REPORT_DATA {} instead of the requested {}",
                hex::encode(evidence.attestation_report.report_data),
                hex::encode(padded)
            )));
        }
        serde_json::to_value(&evidence)
            .map_err(|e| report_err(format!("serializing the evidence: {e}")))
    }

    /// `HOST_DATA` (32 bytes) of a fresh report.
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        let (report, _) = self.raw_report(&[0u8; REPORT_DATA_LEN])?;
        Ok(Some(host_data(&report)?.to_vec()))
    }
}

fn report_err(reason: String) -> AttesterError {
    AttesterError::Report {
        tee: Tee::Snp,
        reason,
    }
}

/// The first [`REPORT_LEN`] bytes of `report`, checked for length.
fn report_bytes(report: &[u8]) -> Result<&[u8], AttesterError> {
    report.get(..REPORT_LEN).ok_or_else(|| {
        report_err(format!(
            "the attestation report is {} bytes, expected at least {REPORT_LEN}",
            report.len()
        ))
    })
}

/// `HOST_DATA` of a raw report (offset 0xC0, 32 bytes).
pub fn host_data(report: &[u8]) -> Result<[u8; HOST_DATA_LEN], AttesterError> {
    let report = report_bytes(report)?;
    let mut out = [0u8; HOST_DATA_LEN];
    out.copy_from_slice(&report[HOST_DATA_OFFSET..HOST_DATA_OFFSET + HOST_DATA_LEN]);
    Ok(out)
}

/// `REPORT_DATA` of a raw report (offset 0x50, 64 bytes).
pub fn report_data(report: &[u8]) -> Result<[u8; REPORT_DATA_LEN], AttesterError> {
    let report = report_bytes(report)?;
    let mut out = [0u8; REPORT_DATA_LEN];
    out.copy_from_slice(&report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + REPORT_DATA_LEN]);
    Ok(out)
}

/// The evidence for a raw report and an optional raw certificate table
/// (kernel GUID-table format, as from `SNP_GET_EXT_REPORT` or configfs-tsm's
/// `auxblob`). An empty table becomes `null`.
pub fn evidence_from_parts(
    report: &[u8],
    cert_table: Option<&[u8]>,
) -> Result<SnpEvidence, AttesterError> {
    let bytes = report_bytes(report)?;
    let attestation_report = AttestationReport::from_bytes(bytes)
        .map_err(|e| report_err(format!("parsing the attestation report: {e}")))?;
    let cert_chain = match cert_table {
        None => None,
        Some(table) => {
            let entries = parse_cert_table(table).map_err(report_err)?;
            (!entries.is_empty()).then_some(entries)
        }
    };
    Ok(SnpEvidence {
        attestation_report,
        cert_chain,
    })
}

/// Size of a certificate table entry: GUID (16), offset (u32), length (u32).
const CERT_ENTRY_LEN: usize = 24;

/// Parses the certificate table (GHCB spec, `SNP_GUEST_REQUEST` extended:
/// entries `{guid[16], offset u32 LE, length u32 LE}` ended by an all-zero
/// entry, offsets relative to the table start). Every offset and length is
/// checked against the buffer; sorted as the reference agent sorts them.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, String> {
    if table.iter().all(|&b| b == 0) {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let raw = table
            .get(pos..pos + CERT_ENTRY_LEN)
            .ok_or_else(|| format!("certificate table: entry {} runs past the {} byte buffer without a terminating zero entry", entries.len(), table.len()))?;
        let guid: [u8; 16] = raw[..16]
            .try_into()
            .map_err(|_| "certificate table: short GUID".to_string())?;
        if guid == [0u8; 16] {
            break;
        }
        let offset = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]) as usize;
        let length = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]) as usize;
        let data = offset
            .checked_add(length)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| {
                format!(
                    "certificate table: entry {} ({}) points at bytes {offset}..+{length}, outside the {} byte buffer",
                    entries.len(),
                    uuid_text(&guid),
                    table.len()
                )
            })?;
        let cert_type = CertType::from_bytes(&guid).map_err(|e| {
            format!(
                "certificate table: entry {} GUID {}: {e}",
                entries.len(),
                uuid_text(&guid)
            )
        })?;
        entries.push(CertTableEntry::new(cert_type, data.to_vec()));
        pos += CERT_ENTRY_LEN;
    }
    entries.sort();
    Ok(entries)
}

fn uuid_text(guid: &[u8; 16]) -> String {
    let h = hex::encode(guid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Offset of the report in `MSG_REPORT_RSP` (after status, size, reserved).
const RESPONSE_REPORT_OFFSET: usize = 0x20;

/// The report out of the firmware's `MSG_REPORT_RSP` (`snp_report_resp`):
/// `status` u32, `report_size` u32, 24 reserved bytes, the report.
fn parse_report_response(resp: &[u8]) -> Result<Vec<u8>, String> {
    let word = |at: usize| -> Result<u32, String> {
        resp.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("the response is only {} bytes", resp.len()))
    };
    let status = word(0)?;
    if status != 0 {
        return Err(format!(
            "the firmware answered status {status:#x} (0x16: invalid parameters, e.g. a VMPL below the guest's)"
        ));
    }
    let size = word(4)? as usize;
    if size < REPORT_LEN {
        return Err(format!(
            "the firmware reported a {size} byte report, expected at least {REPORT_LEN}"
        ));
    }
    resp.get(RESPONSE_REPORT_OFFSET..RESPONSE_REPORT_OFFSET + size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format!(
                "the firmware reported a {size} byte report, more than the {} byte response holds",
                resp.len()
            )
        })
}

/// The `sev-guest` ioctls (`include/uapi/linux/sev-guest.h`).
mod ioctl {
    use std::fs::File;
    use std::io;
    use std::mem::size_of;
    use std::os::fd::AsRawFd as _;

    use super::{parse_report_response, warn, REPORT_DATA_LEN};

    /// `struct snp_report_req`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ReportReq {
        user_data: [u8; REPORT_DATA_LEN],
        vmpl: u32,
        rsvd: [u8; 28],
    }

    /// `struct snp_ext_report_req`.
    #[repr(C)]
    struct ExtReportReq {
        data: ReportReq,
        certs_address: u64,
        certs_len: u32,
    }

    /// Size of `struct snp_report_resp`.
    const RESP_LEN: usize = 4000;

    /// `struct snp_report_resp`.
    #[repr(C)]
    struct ReportResp {
        data: [u8; RESP_LEN],
    }

    /// `struct snp_guest_request_ioctl`.
    #[repr(C)]
    struct GuestRequest {
        msg_version: u8,
        req_data: u64,
        resp_data: u64,
        /// bits 63..32: VMM error, bits 31..0: firmware error.
        exitinfo2: u64,
    }

    // The kernel copies exactly these sizes in and out.
    const _: () = assert!(size_of::<ReportReq>() == 96);
    const _: () = assert!(size_of::<ExtReportReq>() == 112);
    const _: () = assert!(size_of::<ReportResp>() == RESP_LEN);
    const _: () = assert!(size_of::<GuestRequest>() == 32);

    /// `_IOWR('S', nr, struct snp_guest_request_ioctl)`.
    const fn iowr(nr: u64) -> u64 {
        (3 << 30) | ((size_of::<GuestRequest>() as u64) << 16) | ((b'S' as u64) << 8) | nr
    }
    /// `SNP_GET_REPORT`.
    const SNP_GET_REPORT: u64 = iowr(0x0);
    /// `SNP_GET_EXT_REPORT`.
    const SNP_GET_EXT_REPORT: u64 = iowr(0x2);
    const _: () = assert!(SNP_GET_REPORT == 0xc020_5300);
    const _: () = assert!(SNP_GET_EXT_REPORT == 0xc020_5302);

    /// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the certificate buffer is too small.
    const VMM_ERR_INVALID_LEN: u32 = 1;
    /// The certificate buffer: `SEV_FW_BLOB_MAX_SIZE`, the most the kernel
    /// accepts (page aligned, as it requires).
    const CERTS_BUF_LEN: usize = 0x4000;
    /// Message version of the guest request.
    const MSG_VERSION: u8 = 1;

    fn failed(what: &str, os: io::Error, exitinfo2: u64) -> String {
        format!(
            "{what} failed: {os} (firmware error {:#x}, VMM error {:#x})",
            exitinfo2 & 0xffff_ffff,
            exitinfo2 >> 32
        )
    }

    /// One guest request; `Err((os error, exitinfo2))` on failure.
    ///
    /// # Safety
    ///
    /// `req` must point to the request structure `request` expects
    /// (`ReportReq` for `SNP_GET_REPORT`, `ExtReportReq` for
    /// `SNP_GET_EXT_REPORT`), valid for reads and writes for the call, and
    /// for `SNP_GET_EXT_REPORT` its `certs_address` must point to
    /// `certs_len` writable bytes (or be 0 with `certs_len` 0).
    unsafe fn guest_request(
        file: &File,
        request: u64,
        req: *mut u8,
        resp: &mut ReportResp,
    ) -> Result<(), (io::Error, u64)> {
        let mut arg = GuestRequest {
            msg_version: MSG_VERSION,
            req_data: req as u64,
            resp_data: resp as *mut ReportResp as u64,
            exitinfo2: 0,
        };
        // SAFETY: `file` is an open descriptor for the duration of the call;
        // `arg` is a live `snp_guest_request_ioctl` of the exact size the
        // request number encodes; `resp_data` points to a live, exclusively
        // borrowed 4000-byte `snp_report_resp`; the caller guarantees
        // `req_data` (and the certificate buffer it may name) as documented.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                request as libc::Ioctl,
                &mut arg as *mut GuestRequest,
            )
        };
        if rc < 0 {
            return Err((io::Error::last_os_error(), arg.exitinfo2));
        }
        Ok(())
    }

    /// `SNP_GET_REPORT`: the report alone.
    fn get_report(
        file: &File,
        report_data: &[u8; REPORT_DATA_LEN],
        vmpl: u32,
    ) -> Result<Vec<u8>, String> {
        let mut req = ReportReq {
            user_data: *report_data,
            vmpl,
            rsvd: [0; 28],
        };
        let mut resp = Box::new(ReportResp {
            data: [0; RESP_LEN],
        });
        // SAFETY: `req` is a live `snp_report_req`, what SNP_GET_REPORT reads.
        unsafe {
            guest_request(
                file,
                SNP_GET_REPORT,
                &mut req as *mut ReportReq as *mut u8,
                &mut resp,
            )
        }
        .map_err(|(os, info)| failed("SNP_GET_REPORT", os, info))?;
        parse_report_response(&resp.data)
    }

    /// `SNP_GET_EXT_REPORT`: the report and the host's certificate table
    /// (`None` when the host supplies none). Falls back to the plain report
    /// when the host's certificates exceed what the kernel can pass.
    pub(super) fn get_ext_report(
        file: &File,
        report_data: &[u8; REPORT_DATA_LEN],
        vmpl: u32,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let mut certs = vec![0u8; CERTS_BUF_LEN];
        let mut req = ExtReportReq {
            data: ReportReq {
                user_data: *report_data,
                vmpl,
                rsvd: [0; 28],
            },
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: CERTS_BUF_LEN as u32,
        };
        let mut resp = Box::new(ReportResp {
            data: [0; RESP_LEN],
        });
        // SAFETY: `req` is a live `snp_ext_report_req` whose `certs_address`
        // points to `certs`, a live buffer of exactly `certs_len` bytes not
        // otherwise borrowed during the call.
        let result = unsafe {
            guest_request(
                file,
                SNP_GET_EXT_REPORT,
                &mut req as *mut ExtReportReq as *mut u8,
                &mut resp,
            )
        };
        match result {
            Ok(()) => {
                let report = parse_report_response(&resp.data)?;
                let certs = certs.iter().any(|&b| b != 0).then_some(certs);
                Ok((report, certs))
            }
            Err((_, info)) if (info >> 32) as u32 == VMM_ERR_INVALID_LEN => {
                warn!(
                    "the host's SEV-SNP certificates need {} bytes, more than the kernel passes ({CERTS_BUF_LEN}); sending the report without them (the verifier fetches the VCEK itself)",
                    req.certs_len
                );
                Ok((get_report(file, report_data, vmpl)?, None))
            }
            Err((os, info)) => Err(failed("SNP_GET_EXT_REPORT", os, info)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tsm::fake::{leftover_entries, FakeTsm};
    use super::*;
    use crate::attester::tsm::TsmError;

    const HOST_DATA: [u8; HOST_DATA_LEN] = [0xa5; HOST_DATA_LEN];

    /// A version-3 report with a valid layout (Milan: family 0x19, model
    /// 0x01), `report_data` at 0x50 and `host_data` at 0xC0.
    fn build_report(report_data: &[u8; 64], host_data: &[u8; 32]) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes()); // VERSION
        r[0x04..0x08].copy_from_slice(&1u32.to_le_bytes()); // GUEST_SVN
        r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes()); // POLICY
        r[0x30..0x34].copy_from_slice(&VMPL.to_le_bytes()); // VMPL
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // SIGNATURE_ALGO (ECDSA P-384)
                                                            // CURRENT_TCB (Milan layout): bootloader, tee, reserved x4, snp, microcode
        r[0x38..0x40].copy_from_slice(&[3, 0, 0, 0, 0, 0, 8, 115]);
        r[0x40..0x48].copy_from_slice(&1u64.to_le_bytes()); // PLATFORM_INFO
        r[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&[0x11; 48]); // MEASUREMENT
        r[HOST_DATA_OFFSET..HOST_DATA_OFFSET + 32].copy_from_slice(host_data);
        r[0x140..0x160].copy_from_slice(&[0x22; 32]); // REPORT_ID
        r[0x180..0x188].copy_from_slice(&[3, 0, 0, 0, 0, 0, 8, 115]); // REPORTED_TCB
        r[0x188] = 0x19; // CPUID_FAM_ID
        r[0x189] = 0x01; // CPUID_MOD_ID
        r[0x18A] = 0x01; // CPUID_STEP
        r[0x1A0..0x1E0].copy_from_slice(&[0x33; 64]); // CHIP_ID
        r[0x1E0..0x1E8].copy_from_slice(&[3, 0, 0, 0, 0, 0, 8, 115]); // COMMITTED_TCB
        r[0x1E8..0x1EB].copy_from_slice(&[21, 55, 1]); // CURRENT build, minor, major
        r[0x1EC..0x1EF].copy_from_slice(&[21, 55, 1]); // COMMITTED build, minor, major
        r[0x1F0..0x1F8].copy_from_slice(&[3, 0, 0, 0, 0, 0, 8, 115]); // LAUNCH_TCB
        r[0x2A0..0x2A0 + 72].copy_from_slice(&[0x44; 72]); // SIGNATURE R
        r[0x2E8..0x2E8 + 72].copy_from_slice(&[0x55; 72]); // SIGNATURE S
        r
    }

    /// A certificate table with the given (GUID, data) entries.
    fn build_cert_table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let header = (entries.len() + 1) * CERT_ENTRY_LEN;
        let mut table = vec![0u8; header];
        let mut data = Vec::new();
        for (i, (guid, bytes)) in entries.iter().enumerate() {
            let at = i * CERT_ENTRY_LEN;
            table[at..at + 16].copy_from_slice(guid);
            let offset = u32::try_from(header + data.len()).unwrap();
            table[at + 16..at + 20].copy_from_slice(&offset.to_le_bytes());
            table[at + 20..at + 24]
                .copy_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
            data.extend_from_slice(bytes);
        }
        table.extend_from_slice(&data);
        table.resize(4096, 0);
        table
    }

    fn guid(s: &str) -> [u8; 16] {
        hex::decode(s.replace('-', "")).unwrap().try_into().unwrap()
    }

    const ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
    const ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
    const VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";

    /// The deserializer Trustee runs on SNP evidence.
    fn trustee_parse(v: serde_json::Value) -> SnpEvidence {
        #[derive(Deserialize)]
        struct TrusteeSnpEvidence {
            attestation_report: AttestationReport,
            cert_chain: Option<Vec<CertTableEntry>>,
        }
        let e: TrusteeSnpEvidence = serde_json::from_value(v).unwrap();
        SnpEvidence {
            attestation_report: e.attestation_report,
            cert_chain: e.cert_chain,
        }
    }

    #[test]
    fn report_layout_and_field_extraction() {
        let mut rd = [0u8; 64];
        rd[..48].copy_from_slice(&[0x77; 48]);
        let raw = build_report(&rd, &HOST_DATA);
        assert_eq!(report_data(&raw).unwrap(), rd);
        assert_eq!(host_data(&raw).unwrap(), HOST_DATA);
        let parsed = AttestationReport::from_bytes(&raw).unwrap();
        assert_eq!(parsed.version, 3);
        assert_eq!(parsed.vmpl, 0);
        assert_eq!(parsed.report_data, rd);
        assert_eq!(parsed.host_data, HOST_DATA);
        assert_eq!(parsed.cpuid_fam_id, Some(0x19));
        assert!(host_data(&raw[..100]).is_err());
        assert!(evidence_from_parts(&raw[..1000], None).is_err());
    }

    #[test]
    fn evidence_json_round_trips_through_trustees_deserializer() {
        let rd = pad_report_data(&[0x5a; 48]).unwrap();
        let raw = build_report(&rd, &HOST_DATA);
        let table = build_cert_table(&[
            (guid(VCEK), b"vcek-der"),
            (guid(ARK), b"ark-der"),
            (guid(ASK), b"ask-der"),
        ]);
        let ev = evidence_from_parts(&raw, Some(&table)).unwrap();
        let json = serde_json::to_value(&ev).unwrap();

        // Exactly the two top-level keys Trustee's SnpEvidence has.
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["attestation_report", "cert_chain"]);

        let back = trustee_parse(json.clone());
        assert_eq!(back, ev);
        assert_eq!(
            back.attestation_report,
            AttestationReport::from_bytes(&raw).unwrap()
        );
        assert_eq!(back.attestation_report.report_data, rd);
        assert_eq!(back.attestation_report.host_data, HOST_DATA);
        assert_eq!(json["attestation_report"]["version"], 3);
        assert_eq!(json["attestation_report"]["vmpl"], 0);
        let certs = back.cert_chain.unwrap();
        let types: Vec<_> = certs.iter().map(|c| c.cert_type.clone()).collect();
        // Sorted as the reference agent sorts them.
        assert_eq!(types, [CertType::ARK, CertType::VCEK, CertType::ASK]);
        assert_eq!(json["cert_chain"][1]["cert_type"], "VCEK");
        assert_eq!(certs[1].data, b"vcek-der");

        // No certificates -> null, as the verifier expects.
        let none = serde_json::to_value(evidence_from_parts(&raw, None).unwrap()).unwrap();
        assert!(none["cert_chain"].is_null());
        let empty =
            serde_json::to_value(evidence_from_parts(&raw, Some(&[0u8; 4096])).unwrap()).unwrap();
        assert!(empty["cert_chain"].is_null());
    }

    /// The `attestation_report` of Trustee's end-to-end SNP evidence
    /// (`attestation-service/tests/e2e/evidence.json`, produced by the
    /// reference attester on real hardware), with its certificate cut short.
    const TRUSTEE_EVIDENCE: &str = r#"{"attestation_report":{"version":3,"guest_svn":0,"policy":196608,"family_id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"image_id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"vmpl":0,"sig_algo":1,"current_tcb":{"fmc":null,"bootloader":10,"tee":0,"snp":23,"microcode":25},"plat_info":37,"key_info":0,"report_data":[126,115,32,136,150,0,199,172,19,58,234,123,137,108,81,244,16,38,0,41,130,41,42,115,105,85,151,150,153,156,27,249,41,238,243,255,35,196,110,133,143,11,25,130,249,169,43,23,197,27,87,141,149,140,222,107,12,146,151,143,21,12,249,176],"measurement":[106,101,25,215,87,230,140,46,147,156,157,187,188,24,40,73,142,141,227,93,39,102,221,5,241,162,204,165,5,157,12,244,174,98,163,109,117,200,55,151,77,213,11,49,85,6,231,62],"host_data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"id_key_digest":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"author_key_digest":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"report_id":[179,76,185,7,163,26,210,55,190,176,46,253,35,106,185,137,154,125,221,102,255,91,238,210,99,103,101,24,58,132,228,79],"report_id_ma":[255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255],"reported_tcb":{"fmc":null,"bootloader":10,"tee":0,"snp":23,"microcode":25},"cpuid_fam_id":25,"cpuid_mod_id":160,"cpuid_step":2,"chip_id":[55,28,85,214,209,92,181,15,22,220,49,211,154,36,227,0,202,170,191,244,67,30,132,17,17,66,155,115,236,69,173,103,234,110,104,127,250,231,191,132,181,74,93,14,109,121,179,239,111,240,189,139,76,255,148,194,22,58,245,197,222,135,24,232],"committed_tcb":{"fmc":null,"bootloader":10,"tee":0,"snp":23,"microcode":25},"current":{"major":1,"minor":55,"build":40},"committed":{"major":1,"minor":55,"build":40},"launch_tcb":{"fmc":null,"bootloader":10,"tee":0,"snp":23,"microcode":25},"signature":{"r":[248,74,221,9,211,39,47,115,10,249,79,232,6,112,133,133,29,158,58,203,207,248,39,38,21,145,24,97,151,142,235,128,83,73,228,220,146,130,185,89,162,249,59,163,198,225,35,136,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"s":[7,173,67,13,27,164,154,7,113,68,136,246,245,225,83,241,42,213,236,80,43,135,182,69,30,189,171,105,14,44,141,55,61,180,94,177,164,105,103,229,150,246,38,41,120,221,127,110,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}},"cert_chain":[{"cert_type":"VCEK","data":[48,130,5,63]}]}"#;

    /// Every key path of a JSON value (arrays contribute their elements'
    /// paths, not their indices).
    fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = format!("{prefix}/{k}");
                    out.push(p.clone());
                    key_paths(v, &p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for v in a {
                    key_paths(v, prefix, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn our_json_has_the_shape_of_trustees_own_evidence() {
        let theirs: serde_json::Value = serde_json::from_str(TRUSTEE_EVIDENCE).unwrap();
        // Our deserializer accepts what the reference attester produced...
        let parsed = trustee_parse(theirs.clone());
        assert_eq!(parsed.attestation_report.version, 3);
        assert_eq!(parsed.attestation_report.report_data[..2], [126, 115]);
        assert_eq!(parsed.cert_chain.unwrap()[0].cert_type, CertType::VCEK);

        // ...and what we produce has the same keys (plus the v5 mitigation
        // vectors, null for v3 reports, which an older sev omitted).
        let raw = build_report(&[1; 64], &HOST_DATA);
        let table = build_cert_table(&[(guid(VCEK), b"x")]);
        let ours = serde_json::to_value(evidence_from_parts(&raw, Some(&table)).unwrap()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        key_paths(&theirs, "", &mut a);
        key_paths(&ours, "", &mut b);
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        let extra: Vec<_> = b.iter().filter(|k| !a.contains(k)).cloned().collect();
        let missing: Vec<_> = a.iter().filter(|k| !b.contains(k)).cloned().collect();
        assert!(
            missing.is_empty(),
            "keys Trustee's evidence has and ours lacks: {missing:?}"
        );
        assert_eq!(
            extra,
            [
                "/attestation_report/current_mit_vector",
                "/attestation_report/launch_mit_vector"
            ]
        );
        assert!(ours["attestation_report"]["launch_mit_vector"].is_null());
    }

    #[test]
    fn hostile_cert_tables_are_rejected_not_panicked_on() {
        // Offset past the end.
        let mut t = build_cert_table(&[(guid(VCEK), b"abc")]);
        t[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_cert_table(&t).unwrap_err().contains("outside"));
        // Length overflowing.
        let mut t = build_cert_table(&[(guid(VCEK), b"abc")]);
        t[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_cert_table(&t).is_err());
        // No terminator.
        let mut t = vec![0x11u8; 30];
        t[16..24].copy_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]); // bytes 0..4: in range
        assert!(parse_cert_table(&t).unwrap_err().contains("terminating"));
        // Unknown GUIDs are kept as "other" certificates.
        let other = build_cert_table(&[(guid("01234567-89ab-cdef-0123-456789abcdef"), b"o")]);
        let e = parse_cert_table(&other).unwrap();
        assert!(matches!(e[0].cert_type, CertType::OTHER(_)));
        // An unparsable report is an error, not a panic.
        let mut raw = build_report(&[0; 64], &HOST_DATA);
        raw[0x188] = 0x42; // unknown CPU family
        assert!(evidence_from_parts(&raw, None).is_err());
    }

    #[test]
    fn firmware_response_parsing() {
        let report = build_report(&[9; 64], &HOST_DATA);
        let mut resp = vec![0u8; 4000];
        resp[4..8].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
        resp[0x20..0x20 + REPORT_LEN].copy_from_slice(&report);
        assert_eq!(parse_report_response(&resp).unwrap(), report);
        let mut bad = resp.clone();
        bad[0..4].copy_from_slice(&0x16u32.to_le_bytes());
        assert!(parse_report_response(&bad).unwrap_err().contains("0x16"));
        let mut big = resp.clone();
        big[4..8].copy_from_slice(&5000u32.to_le_bytes());
        assert!(parse_report_response(&big).is_err());
        let mut small = resp;
        small[4..8].copy_from_slice(&100u32.to_le_bytes());
        assert!(parse_report_response(&small).is_err());
        assert!(parse_report_response(&[0; 3]).is_err());
    }

    fn fake_snp() -> FakeTsm {
        FakeTsm::new(
            PROVIDER_SEV,
            Box::new(|inblob: &[u8]| {
                let rd: [u8; 64] = inblob.try_into().unwrap_or([0xff; 64]);
                build_report(&rd, &HOST_DATA)
            }),
        )
    }

    #[test]
    fn evidence_through_configfs_tsm() {
        let dir = tempfile::tempdir().unwrap();
        let table = build_cert_table(&[(guid(VCEK), b"vcek")]);
        let fake = Arc::new(fake_snp().with_auxblob(table));
        let att = SnpAttester {
            source: ReportSource::Tsm(Tsm::with_fs(dir.path(), fake.clone())),
        };
        assert_eq!(att.tee(), Tee::Snp);
        let rd = [0x3c; 48];
        let json = att.evidence(&rd).unwrap();
        let ev = trustee_parse(json);
        assert_eq!(
            ev.attestation_report.report_data,
            pad_report_data(&rd).unwrap()
        );
        assert_eq!(ev.cert_chain.unwrap()[0].data, b"vcek");
        // VMPL 0 was asked for.
        assert_eq!(*fake.privlevels.lock().unwrap(), vec!["0\n".to_string()]);
        assert_eq!(att.launch_config().unwrap(), Some(HOST_DATA.to_vec()));
        assert!(att.evidence(&[0u8; 65]).is_err());
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_report_over_other_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeTsm::new(
            PROVIDER_SEV,
            Box::new(|_: &[u8]| build_report(&[0xee; 64], &HOST_DATA)),
        );
        let att = SnpAttester {
            source: ReportSource::Tsm(Tsm::with_fs(dir.path(), Arc::new(fake))),
        };
        let err = att.evidence(&[1; 64]).unwrap_err();
        assert!(
            err.to_string().contains("instead of the requested"),
            "{err}"
        );
    }

    #[test]
    fn a_generation_race_surfaces_as_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(fake_snp().with_races(100));
        let att = SnpAttester {
            source: ReportSource::Tsm(Tsm::with_fs(dir.path(), fake)),
        };
        let err = att.evidence(&[1; 64]).unwrap_err();
        assert!(
            matches!(
                err,
                AttesterError::Tsm {
                    tee: Tee::Snp,
                    error: TsmError::GenerationRace { .. }
                }
            ),
            "{err}"
        );
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn open_without_a_driver_explains() {
        let dir = PathBuf::from("/nonexistent/sealpod-test");
        let d = TeeDevices {
            sev_guest: dir.join("sev-guest"),
            sev_guest_sysfs: dir.join("sysfs"),
            tdx_guest: dir.join("tdx_guest"),
            tsm_report: dir.join("tsm/report"),
            ccel: dir.join("CCEL"),
        };
        assert!(!SnpAttester::present(&d));
        let err = SnpAttester::open(&d).unwrap_err();
        assert!(
            matches!(err, AttesterError::Unavailable { tee: Tee::Snp, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sev-guest"), "{err}");
    }
}
