//! `containers-policy.json(5)`: which signatures an image needs, per scope.
//!
//! ```json
//! {"default": [{"type": "reject"}],
//!  "transports": {"docker": {
//!    "registry.example.com/team": [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign/pub"}],
//!    "registry.example.com/legacy": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/keys/team.gpg"}]}}}
//! ```
//!
//! Parsing is strict: an unknown requirement type, field or key type is an
//! error, never an accept. Only the `docker` transport is meaningful to a
//! guest that pulls from registries; other transports are parsed and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::scope;
use super::SignatureError;
use crate::reference::Reference;

/// Largest policy document read (1 MiB).
pub const MAX_POLICY_SIZE: u64 = 1 << 20;

/// Where a public key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file on the guest's filesystem (`keyPath`).
    Path(PathBuf),
    /// A KBS resource (`keyPath: "kbs:///repo/type/tag"`), resolved through
    /// the verifier's [`crate::ocicrypt::provider::KeyProvider`].
    Kbs(String),
    /// Inline key bytes (`keyData`, base64 in the policy).
    Data(Vec<u8>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Path(p) => write!(f, "{}", p.display()),
            KeySource::Kbs(k) => f.write_str(k),
            KeySource::Data(d) => write!(f, "inline keyData ({} bytes)", d.len()),
        }
    }
}

/// Which docker references a signature may name for the pulled image
/// (`signedIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The signed reference equals the pulled one (tag included).
    MatchExact,
    /// Pulled by digest: same repository; pulled by tag: exact (the default).
    MatchRepoDigestOrExact,
    /// Same repository, any tag.
    MatchRepository,
    /// The signed reference is exactly this one.
    ExactReference(String),
    /// The signed reference is in this repository.
    ExactRepository(String),
    /// The pulled reference with `prefix` replaced by `signed_prefix`, then
    /// `MatchRepoDigestOrExact` (mirrors).
    RemapIdentity {
        /// Prefix of the pulled reference.
        prefix: String,
        /// What the signature names instead.
        signed_prefix: String,
    },
}

/// One policy requirement; every requirement of a scope must be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Accept without looking at signatures.
    InsecureAcceptAnything,
    /// Refuse.
    Reject,
    /// A GPG simple-signing signature by one of these keys (lookaside storage).
    SignedBy {
        /// The keyrings (any key in any of them may sign).
        keys: Vec<KeySource>,
        /// Which references the signature may name.
        identity: SignedIdentity,
    },
    /// A sigstore (cosign) signature by one of these public keys.
    SigstoreSigned {
        /// The public keys (any may sign).
        keys: Vec<KeySource>,
        /// Which references the signature may name.
        identity: SignedIdentity,
    },
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |k: &[KeySource]| {
            k.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Requirement::InsecureAcceptAnything => f.write_str("insecureAcceptAnything"),
            Requirement::Reject => f.write_str("reject"),
            Requirement::SignedBy { keys: k, .. } => {
                write!(f, "signedBy (GPG keys {})", keys(k))
            }
            Requirement::SigstoreSigned { keys: k, .. } => {
                write!(f, "sigstoreSigned (key {})", keys(k))
            }
        }
    }
}

/// A parsed policy. Build with [`SignaturePolicy::from_json`] or
/// [`SignaturePolicy::from_file`]; check images with
/// [`super::SignatureVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

impl SignaturePolicy {
    /// Parses policy JSON (from initdata, a KBS resource or a file's bytes).
    pub fn from_json(bytes: &[u8]) -> Result<Self, SignatureError> {
        Self::parse(bytes, "JSON")
    }

    /// Reads and parses a policy file; relative `keyPath`s stay as written.
    pub fn from_file(path: &Path) -> Result<Self, SignatureError> {
        use std::io::Read as _;
        let origin = path.display().to_string();
        let err = |reason: String| SignatureError::Policy {
            origin: origin.clone(),
            reason,
        };
        let f = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut buf = Vec::new();
        f.take(MAX_POLICY_SIZE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if buf.len() as u64 > MAX_POLICY_SIZE {
            return Err(err(format!("larger than {MAX_POLICY_SIZE} bytes")));
        }
        Self::parse(&buf, &origin)
    }

    /// A policy that accepts everything (what "no policy" means; explicit so
    /// callers must choose it).
    pub fn accept_anything() -> Self {
        SignaturePolicy {
            default: vec![Requirement::InsecureAcceptAnything],
            docker: BTreeMap::new(),
        }
    }

    fn parse(bytes: &[u8], origin: &str) -> Result<Self, SignatureError> {
        let err = |reason: String| SignatureError::Policy {
            origin: origin.to_string(),
            reason,
        };
        if bytes.len() as u64 > MAX_POLICY_SIZE {
            return Err(err(format!("larger than {MAX_POLICY_SIZE} bytes")));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| err("the top level is not a JSON object".into()))?;
        for k in obj.keys() {
            if k != "default" && k != "transports" {
                return Err(err(format!(
                    "unknown top-level field {k:?} (expected default, transports)"
                )));
            }
        }
        let default = parse_requirements(
            obj.get("default")
                .ok_or_else(|| err("no \"default\" requirements".into()))?,
        )
        .map_err(|e| err(format!("default: {e}")))?;
        let mut docker = BTreeMap::new();
        if let Some(t) = obj.get("transports") {
            let t = t
                .as_object()
                .ok_or_else(|| err("transports is not an object".into()))?;
            for (name, scopes) in t {
                let scopes = scopes
                    .as_object()
                    .ok_or_else(|| err(format!("transports.{name} is not an object")))?;
                for (s, reqs) in scopes {
                    let parsed = parse_requirements(reqs)
                        .map_err(|e| err(format!("transports.{name}.{s:?}: {e}")))?;
                    if name == "docker" {
                        scope::validate(s).map_err(|e| err(format!("transports.docker: {e}")))?;
                        docker.insert(s.clone(), parsed);
                    }
                }
            }
        }
        Ok(SignaturePolicy { default, docker })
    }

    /// The requirements for `r` and the scope they came from: the most
    /// specific `transports.docker` scope, then `transports.docker[""]`,
    /// then `default`.
    pub fn requirements_for(&self, r: &Reference) -> (String, &[Requirement]) {
        if let Some(s) = scope::best_match(r, self.docker.keys()) {
            let reqs = &self.docker[&s];
            return (format!("transports.docker[{s:?}]"), reqs);
        }
        if let Some(reqs) = self.docker.get("") {
            return ("transports.docker[\"\"]".into(), reqs);
        }
        ("default".into(), &self.default)
    }
}

fn parse_requirements(v: &Value) -> Result<Vec<Requirement>, String> {
    let arr = v.as_array().ok_or("not a list of requirements")?;
    if arr.is_empty() {
        return Err(
            "an empty requirement list is not allowed (use insecureAcceptAnything or reject)"
                .into(),
        );
    }
    arr.iter()
        .enumerate()
        .map(|(i, r)| parse_requirement(r).map_err(|e| format!("requirement {i}: {e}")))
        .collect()
}

fn only_fields(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown or unsupported field {k:?} (this requirement takes {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{k} is not a string")),
    }
}

fn key_source_path(p: &str) -> Result<KeySource, String> {
    if p.starts_with("kbs://") {
        crate::ocicrypt::provider::ResourceUri::parse(p).map_err(|e| e.to_string())?;
        return Ok(KeySource::Kbs(p.to_string()));
    }
    if p.is_empty() {
        return Err("empty keyPath".into());
    }
    Ok(KeySource::Path(PathBuf::from(p)))
}

fn key_sources(o: &Map<String, Value>) -> Result<Vec<KeySource>, String> {
    let mut out = Vec::new();
    if let Some(p) = str_field(o, "keyPath")? {
        out.push(key_source_path(p)?);
    }
    if let Some(v) = o.get("keyPaths") {
        let a = v.as_array().ok_or("keyPaths is not a list")?;
        for p in a {
            out.push(key_source_path(
                p.as_str().ok_or("keyPaths has a non-string")?,
            )?);
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(d) = str_field(o, "keyData")? {
        out.push(KeySource::Data(
            b64.decode(d).map_err(|_| "keyData is not base64")?,
        ));
    }
    if let Some(v) = o.get("keyDatas") {
        let a = v.as_array().ok_or("keyDatas is not a list")?;
        for d in a {
            let d = d.as_str().ok_or("keyDatas has a non-string")?;
            out.push(KeySource::Data(
                b64.decode(d).map_err(|_| "keyDatas has non-base64")?,
            ));
        }
    }
    match out.len() {
        0 => Err("no key: give exactly one of keyPath, keyPaths, keyData, keyDatas".into()),
        _ if ["keyPath", "keyPaths", "keyData", "keyDatas"]
            .iter()
            .filter(|k| o.contains_key(**k))
            .count()
            > 1 =>
        {
            Err("give exactly one of keyPath, keyPaths, keyData, keyDatas".into())
        }
        _ => Ok(out),
    }
}

fn parse_identity(v: Option<&Value>) -> Result<SignedIdentity, String> {
    let Some(v) = v else {
        return Ok(SignedIdentity::MatchRepoDigestOrExact);
    };
    let o = v.as_object().ok_or("signedIdentity is not an object")?;
    let t = str_field(o, "type")?.ok_or("signedIdentity has no type")?;
    let need = |k: &str| -> Result<String, String> {
        str_field(o, k)?
            .map(str::to_string)
            .ok_or(format!("signedIdentity {t} needs {k}"))
    };
    let check_ref = |s: &str, repo_only: bool| -> Result<(), String> {
        let r: Reference = s.parse().map_err(|e| format!("signedIdentity {t}: {e}"))?;
        if !s.contains('/') && !s.starts_with("localhost") {
            // Refuse short names: the policy must be unambiguous.
            return Err(format!(
                "signedIdentity {t}: {s:?} is not a fully qualified reference"
            ));
        }
        if repo_only
            && (r.digest().is_some() || s.rsplit('/').next().is_some_and(|l| l.contains(':')))
        {
            return Err(format!(
                "signedIdentity {t}: {s:?} must be a repository, without tag or digest"
            ));
        }
        Ok(())
    };
    Ok(match t {
        "matchExact" => {
            only_fields(o, &["type"])?;
            SignedIdentity::MatchExact
        }
        "matchRepoDigestOrExact" => {
            only_fields(o, &["type"])?;
            SignedIdentity::MatchRepoDigestOrExact
        }
        "matchRepository" => {
            only_fields(o, &["type"])?;
            SignedIdentity::MatchRepository
        }
        "exactReference" => {
            only_fields(o, &["type", "dockerReference"])?;
            let s = need("dockerReference")?;
            check_ref(&s, false)?;
            SignedIdentity::ExactReference(s)
        }
        "exactRepository" => {
            only_fields(o, &["type", "dockerRepository"])?;
            let s = need("dockerRepository")?;
            check_ref(&s, true)?;
            SignedIdentity::ExactRepository(s)
        }
        "remapIdentity" => {
            only_fields(o, &["type", "prefix", "signedPrefix"])?;
            let prefix = need("prefix")?;
            let signed_prefix = need("signedPrefix")?;
            for p in [&prefix, &signed_prefix] {
                scope::validate(p).map_err(|e| format!("remapIdentity: {e}"))?;
                if p.is_empty() || p.contains(['@']) || p.starts_with("*.") {
                    return Err(format!(
                        "remapIdentity: prefix {p:?} must be host[/namespace...]"
                    ));
                }
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            }
        }
        other => return Err(format!("unknown signedIdentity type {other:?}")),
    })
}

fn parse_requirement(v: &Value) -> Result<Requirement, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let t = str_field(o, "type")?.ok_or("no type")?;
    match t {
        "insecureAcceptAnything" => {
            only_fields(o, &["type"])?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only_fields(o, &["type"])?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            only_fields(
                o,
                &["type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"],
            )?;
            match str_field(o, "keyType")? {
                Some("GPGKeys") | None => {}
                Some(k) => {
                    return Err(format!(
                        "signedBy keyType {k:?} is not supported (GPGKeys is)"
                    ))
                }
            }
            Ok(Requirement::SignedBy {
                keys: key_sources(o)?,
                identity: parse_identity(o.get("signedIdentity"))?,
            })
        }
        "sigstoreSigned" => {
            if o.contains_key("fulcio") || o.contains_key("rekorPublicKeyPath") || o.contains_key("rekorPublicKeyData") || o.contains_key("pki") {
                return Err("sigstoreSigned with fulcio, rekor or pki is not supported: use keyPath/keyData public keys".into());
            }
            only_fields(
                o,
                &["type", "keyPath", "keyPaths", "keyData", "keyDatas", "signedIdentity"],
            )?;
            Ok(Requirement::SigstoreSigned {
                keys: key_sources(o)?,
                identity: parse_identity(o.get("signedIdentity"))?,
            })
        }
        other => Err(format!(
            "unknown requirement type {other:?} (insecureAcceptAnything, reject, signedBy, sigstoreSigned)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    const POLICY: &str = r#"{
      "default": [{"type": "reject"}],
      "transports": {
        "docker": {
          "reg.example.com": [{"type": "insecureAcceptAnything"}],
          "reg.example.com/team": [{"type": "sigstoreSigned", "keyPath": "/k/team.pub"}],
          "reg.example.com/team/app:v2": [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign/v2",
              "signedIdentity": {"type": "matchRepository"}}],
          "reg.example.com/legacy": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/k/a.gpg", "/k/b.gpg"]}],
          "*.mirror.example": [{"type": "sigstoreSigned", "keyData": "QUJD",
              "signedIdentity": {"type": "remapIdentity", "prefix": "eu.mirror.example/x", "signedPrefix": "reg.example.com/team"}}]
        },
        "oci": {"": [{"type": "insecureAcceptAnything"}]}
      }
    }"#;

    #[test]
    fn scopes_pick_the_most_specific() {
        let p = SignaturePolicy::from_json(POLICY.as_bytes()).unwrap();
        let (s, reqs) = p.requirements_for(&r("reg.example.com/team/app:v2"));
        assert_eq!(s, "transports.docker[\"reg.example.com/team/app:v2\"]");
        assert!(
            matches!(&reqs[0], Requirement::SigstoreSigned { keys, identity: SignedIdentity::MatchRepository } if keys == &[KeySource::Kbs("kbs:///default/cosign/v2".into())])
        );
        let (s, reqs) = p.requirements_for(&r("reg.example.com/team/app:v1"));
        assert_eq!(s, "transports.docker[\"reg.example.com/team\"]");
        assert!(matches!(
            &reqs[0],
            Requirement::SigstoreSigned {
                identity: SignedIdentity::MatchRepoDigestOrExact,
                ..
            }
        ));
        let (s, reqs) = p.requirements_for(&r("reg.example.com/teamx/app:v1"));
        assert_eq!(s, "transports.docker[\"reg.example.com\"]");
        assert_eq!(reqs, &[Requirement::InsecureAcceptAnything]);
        let (s, reqs) = p.requirements_for(&r("reg.example.com/legacy/db@sha256:0000000000000000000000000000000000000000000000000000000000000000"));
        assert_eq!(s, "transports.docker[\"reg.example.com/legacy\"]");
        assert!(matches!(&reqs[0], Requirement::SignedBy { keys, .. } if keys.len() == 2));
        let (s, reqs) = p.requirements_for(&r("eu.mirror.example/x/app:v1"));
        assert_eq!(s, "transports.docker[\"*.mirror.example\"]");
        assert!(
            matches!(&reqs[0], Requirement::SigstoreSigned { keys, .. } if keys == &[KeySource::Data(b"ABC".to_vec())])
        );
        let (s, reqs) = p.requirements_for(&r("other.example.com/app"));
        assert_eq!(s, "default");
        assert_eq!(reqs, &[Requirement::Reject]);
    }

    #[test]
    fn transport_default_scope_beats_global_default() {
        let p = SignaturePolicy::from_json(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        let (s, reqs) = p.requirements_for(&r("a.example/b"));
        assert_eq!(s, "transports.docker[\"\"]");
        assert_eq!(reqs, &[Requirement::InsecureAcceptAnything]);
    }

    #[test]
    fn invalid_policies_are_errors_not_accepts() {
        for bad in [
            "",
            "{",
            "[]",
            "{}",
            r#"{"default": []}"#,
            r#"{"default": [{"type": "insecureAcceptAnything"}], "extra": 1}"#,
            r#"{"default": [{"type": "acceptSomething"}]}"#,
            r#"{"default": [{"type": "reject", "keyPath": "/x"}]}"#,
            r#"{"default": [{"type": "sigstoreSigned"}]}"#,
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/a", "keyData": "QQ=="}]}"#,
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "***"}]}"#,
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "kbs:///x"}]}"#,
            r#"{"default": [{"type": "sigstoreSigned", "fulcio": {}, "keyPath": "/a"}]}"#,
            r#"{"default": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/a"}]}"#,
            r#"{"default": [{"type": "signedBy", "keyPath": "/a", "signedIdentity": {"type": "exactRepository"}}]}"#,
            r#"{"default": [{"type": "signedBy", "keyPath": "/a", "signedIdentity": {"type": "exactRepository", "dockerRepository": "r.io/a:tag"}}]}"#,
            r#"{"default": [{"type": "signedBy", "keyPath": "/a", "signedIdentity": {"type": "nope"}}]}"#,
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"a*b": [{"type": "reject"}]}}}"#,
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"r.io": []}}}"#,
        ] {
            assert!(
                SignaturePolicy::from_json(bad.as_bytes()).is_err(),
                "accepted: {bad}"
            );
        }
        let e = SignaturePolicy::from_file(Path::new("/nonexistent/policy.json")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
