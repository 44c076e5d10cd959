//! The one "verifier" dev-kbs has: the `sample` TEE's, which checks only
//! that the evidence is bound to the session. Sample evidence is signed by
//! nothing, so passing this check proves nothing about the guest; it only
//! proves that whoever sent it chose this nonce and this key.

use attestation::canon::{runtime_data_digest, HashAlgorithm};
use attestation::kbs::protocol::Attestation;
use attestation::tee_key::public_key_from_jwk;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The report data field size: an unpadded digest may also arrive
/// zero-padded to this, as hardware TEEs carry it.
const REPORT_DATA_LEN: usize = 64;

/// Why the evidence was refused (logged; the client only sees the generic
/// "Attest failed", like with a real KBS).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `runtime-data.nonce` is not the session's.
    #[error("the nonce in the handshake session is different from the client side")]
    Nonce,
    /// Device evidence was sent; dev-kbs has no verifier for it.
    #[error("additional (device) evidence is not supported by dev-kbs")]
    AdditionalEvidence,
    /// `primary_evidence` is not `{"svn","report_data"}`.
    #[error("sample evidence: {0}")]
    Evidence(String),
    /// `report_data` does not commit to this nonce and key.
    #[error("REPORT_DATA is different from that in Sample Quote")]
    Binding,
    /// `tee-pubkey` is not a key the resource can be encrypted to.
    #[error("{0}")]
    TeeKey(#[from] attestation::tee_key::TeeKeyError),
    /// `init-data` is not TOML.
    #[error("init-data: {0}")]
    InitData(String),
}

/// The sample evidence fields Trustee's sample verifier reads.
#[derive(Debug, Deserialize)]
struct SampleEvidence {
    svn: String,
    report_data: String,
    #[serde(default)]
    init_data: Option<String>,
}

/// Checks `att` against the session's `nonce` and returns the
/// `ear.veraison.annotated-evidence` object for the token.
pub fn verify_sample(att: &Attestation, nonce: &str) -> Result<Value, VerifyError> {
    let rd = &att.runtime_data;
    if rd.nonce != nonce {
        return Err(VerifyError::Nonce);
    }
    let additional = att.tee_evidence.additional_evidence.as_str();
    if !additional.is_empty() {
        return Err(VerifyError::AdditionalEvidence);
    }
    let evidence: SampleEvidence =
        serde_json::from_value(att.tee_evidence.primary_evidence.clone())
            .map_err(|e| VerifyError::Evidence(e.to_string()))?;
    let report_data = STANDARD
        .decode(&evidence.report_data)
        .map_err(|_| VerifyError::Evidence("report_data is not base64".into()))?;
    // The protocol's default hash (no `selected-hash-algorithm` offered).
    let digest = runtime_data_digest(HashAlgorithm::Sha384, &rd.nonce, &rd.tee_pubkey, additional);
    if !binds(&report_data, &digest) {
        return Err(VerifyError::Binding);
    }
    public_key_from_jwk(&rd.tee_pubkey)?;

    let mut sample = Map::new();
    sample.insert("svn".into(), json!(evidence.svn));
    sample.insert("report_data".into(), json!(evidence.report_data));
    if let Some(init) = evidence.init_data {
        sample.insert("init_data".into(), json!(init));
    }
    let mut annotated = Map::new();
    annotated.insert("sample".into(), Value::Object(sample));
    annotated.insert("report_data".into(), json!(evidence.report_data));
    annotated.insert(
        "runtime_data_claims".into(),
        json!({"additional-evidence": additional, "nonce": rd.nonce, "tee-pubkey": rd.tee_pubkey}),
    );
    if let Some(init) = &att.init_data {
        if !init.format.eq_ignore_ascii_case("toml") {
            return Err(VerifyError::InitData(format!(
                "unsupported format {:?}",
                init.format
            )));
        }
        let table: toml::Table = toml::from_str(&init.body)
            .map_err(|e| VerifyError::InitData(e.message().to_string()))?;
        annotated.insert(
            "init_data_claims".into(),
            toml_to_json(toml::Value::Table(table)),
        );
    }
    Ok(Value::Object(annotated))
}

/// Whether `report_data` is `digest`, as is or zero-padded to 64 bytes.
fn binds(report_data: &[u8], digest: &[u8]) -> bool {
    if report_data == digest {
        return true;
    }
    report_data.len() == REPORT_DATA_LEN
        && report_data.starts_with(digest)
        && report_data[digest.len()..].iter().all(|&b| b == 0)
}

/// TOML to JSON, with dates as their TOML text.
fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation::kbs::protocol::{CompositeEvidence, InitDataPayload, RuntimeData};
    use attestation::tee_key::{TeeKey, TeeKeyAlgorithm};

    fn attestation(nonce: &str, key: &TeeKey, report_data: &[u8]) -> Attestation {
        Attestation {
            init_data: None,
            runtime_data: RuntimeData {
                nonce: nonce.into(),
                tee_pubkey: key.jwk().clone(),
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: json!({"svn": "1", "report_data": STANDARD.encode(report_data)}),
                additional_evidence: String::new(),
            },
        }
    }

    #[test]
    fn bound_evidence_passes_padded_or_not() {
        let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
        let digest = runtime_data_digest(HashAlgorithm::Sha384, "n", key.jwk(), "");
        let v = verify_sample(&attestation("n", &key, &digest), "n").unwrap();
        assert_eq!(v["sample"]["svn"], "1");
        assert_eq!(v["runtime_data_claims"]["tee-pubkey"], *key.jwk());
        let mut padded = digest.clone();
        padded.resize(64, 0);
        assert!(verify_sample(&attestation("n", &key, &padded), "n").is_ok());
    }

    #[test]
    fn unbound_evidence_fails() {
        let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
        let digest = runtime_data_digest(HashAlgorithm::Sha384, "n", key.jwk(), "");
        assert!(matches!(
            verify_sample(&attestation("n", &key, &digest), "other"),
            Err(VerifyError::Nonce)
        ));
        let sha256 = runtime_data_digest(HashAlgorithm::Sha256, "n", key.jwk(), "");
        assert!(matches!(
            verify_sample(&attestation("n", &key, &sha256), "n"),
            Err(VerifyError::Binding)
        ));
        let mut padded = digest.clone();
        padded.resize(64, 1);
        assert!(verify_sample(&attestation("n", &key, &padded), "n").is_err());
        let mut att = attestation("n", &key, &digest);
        att.tee_evidence.primary_evidence = json!({"svn": 1});
        assert!(matches!(
            verify_sample(&att, "n"),
            Err(VerifyError::Evidence(_))
        ));
    }

    #[test]
    fn init_data_becomes_claims() {
        let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
        let digest = runtime_data_digest(HashAlgorithm::Sha384, "n", key.jwk(), "");
        let mut att = attestation("n", &key, &digest);
        att.init_data = Some(InitDataPayload {
            format: "toml".into(),
            body: "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"x\"\nwhen = 1979-05-27T07:32:00Z\n".into(),
        });
        let v = verify_sample(&att, "n").unwrap();
        assert_eq!(v["init_data_claims"]["data"]["policy.rego"], "x");
        assert_eq!(
            v["init_data_claims"]["data"]["when"],
            "1979-05-27T07:32:00Z"
        );
        att.init_data = Some(InitDataPayload {
            format: "toml".into(),
            body: "not = = toml".into(),
        });
        assert!(matches!(
            verify_sample(&att, "n"),
            Err(VerifyError::InitData(_))
        ));
        // Deep nesting is an error, not a stack overflow.
        att.init_data = Some(InitDataPayload {
            format: "toml".into(),
            body: format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        });
        assert!(verify_sample(&att, "n").is_err());
    }
}
