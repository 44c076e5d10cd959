//! KBS client errors: which step failed, and the KBS's own RFC 7807 error
//! kind and detail when it sent one.

use std::fmt;

use crate::attester::AttesterError;
use crate::tee_key::TeeKeyError;

/// A step of the exchange with the KBS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST /kbs/v0/auth` (challenge).
    Auth,
    /// Producing the TEE evidence.
    Evidence,
    /// `POST /kbs/v0/attest`.
    Attest,
    /// `GET /kbs/v0/resource/...`.
    Resource,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Auth => "auth (challenge)",
            Step::Evidence => "evidence",
            Step::Attest => "attest",
            Step::Resource => "resource",
        })
    }
}

/// Why talking to the KBS failed. Never carries a token, a key or a
/// resource's bytes.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The configuration is unusable (URL, CA file).
    #[error("KBS client configuration: {0}")]
    Config(String),
    /// The KBS could not be reached (after the retries).
    #[error("KBS {step} at {url}: {reason} (after {attempts} attempt{s}); is the KBS running and reachable from the guest?", s = if *.attempts == 1 { "" } else { "s" })]
    Transport {
        /// The step.
        step: Step,
        /// The URL requested.
        url: String,
        /// What failed.
        reason: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The KBS answered with an error.
    #[error("KBS {step} at {url}: HTTP {status}, {kind}: {detail}{}", hint(.kind, .detail))]
    Kbs {
        /// The step.
        step: Step,
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// The error kind from the body's `type` (e.g. `PolicyDeny`), or
        /// `unknown` when the body was not an RFC 7807 error.
        kind: String,
        /// The body's `detail`, or the start of the body.
        detail: String,
    },
    /// The KBS answered 200 with something that is not the protocol.
    #[error("KBS {step} at {url}: unexpected response: {reason}")]
    Protocol {
        /// The step.
        step: Step,
        /// The URL requested.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The TEE could not produce evidence.
    #[error("KBS attestation: producing evidence: {0}")]
    Evidence(#[from] AttesterError),
    /// The ephemeral key could not be made.
    #[error("KBS attestation: {0}")]
    TeeKey(#[from] TeeKeyError),
    /// The resource JWE could not be opened with the session key.
    #[error("KBS resource {resource}: decrypting the response: {reason}")]
    Decrypt {
        /// The resource path.
        resource: String,
        /// Why.
        reason: String,
    },
}

impl KbsError {
    /// The KBS error kind (`PolicyDeny`, `TokenNotFound`, ...) if the KBS
    /// sent one.
    pub fn kbs_kind(&self) -> Option<&str> {
        match self {
            KbsError::Kbs { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Option<Step> {
        match self {
            KbsError::Transport { step, .. }
            | KbsError::Kbs { step, .. }
            | KbsError::Protocol { step, .. } => Some(*step),
            KbsError::Evidence(_) | KbsError::TeeKey(_) => Some(Step::Evidence),
            KbsError::Decrypt { .. } => Some(Step::Resource),
            KbsError::Config(_) => None,
        }
    }
}

fn hint(kind: &str, detail: &str) -> &'static str {
    match kind {
        "PolicyDeny" => "; the KBS resource policy refuses this guest or resource (default policies refuse the sample TEE)",
        "PluginInternalError" => "; the resource does not exist on the KBS (or its path is not repository/type/tag)",
        "TokenNotFound" | "TokenVerifierError" => "; the KBS does not accept this session or token",
        "AttestationError" if detail.contains("Version Mismatch") => {
            "; the KBS speaks another protocol version than this client (0.4.0)"
        }
        "AttestationError" => "; the KBS did not accept the evidence (its log says why)",
        _ => "",
    }
}
