//! TEE names as the KBS protocol spells them (kbs-types' `Tee`, lowercase).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TEE kind, serialized as the KBS expects it in `/auth`'s `tee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// Intel SGX.
    Sgx,
    /// Azure SEV-SNP behind a vTPM.
    AzSnpVtpm,
    /// Azure TDX behind a vTPM.
    AzTdxVtpm,
    /// Arm CCA.
    Cca,
    /// Hygon CSV.
    Csv,
    /// IBM Secure Execution.
    Se,
    /// A TPM.
    Tpm,
    /// The development TEE: evidence that proves nothing.
    Sample,
    /// The development device TEE.
    Sampledevice,
    /// Hygon DCU (a device TEE).
    Hygondcu,
    /// NVIDIA GPU (a device TEE).
    Nvidia,
    /// NVIDIA DPU (a device TEE).
    NvidiaDpu,
}

impl Tee {
    /// The wire name (`"snp"`, `"tdx"`, `"sample"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
            Tee::Sgx => "sgx",
            Tee::AzSnpVtpm => "az-snp-vtpm",
            Tee::AzTdxVtpm => "az-tdx-vtpm",
            Tee::Cca => "cca",
            Tee::Csv => "csv",
            Tee::Se => "se",
            Tee::Tpm => "tpm",
            Tee::Sample => "sample",
            Tee::Sampledevice => "sampledevice",
            Tee::Hygondcu => "hygondcu",
            Tee::Nvidia => "nvidia",
            Tee::NvidiaDpu => "nvidia-dpu",
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tee {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown TEE {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for t in [
            Tee::Snp,
            Tee::Tdx,
            Tee::AzSnpVtpm,
            Tee::Sample,
            Tee::Sampledevice,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(t.as_str().parse::<Tee>().unwrap(), t);
        }
        assert!("no-such-tee".parse::<Tee>().is_err());
    }
}
