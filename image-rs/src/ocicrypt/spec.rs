//! Names fixed by the ocicrypt format: annotation keys, media types and the
//! one layer cipher, so the rest of the code never spells them out.

/// Annotation holding the JWE-wrapped private options (standard base64 of a
/// JWE JSON serialization; several wrappings are joined with `,`).
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";

/// Prefix shared by every key-wrapping annotation (`jwe`, `pkcs7`, `pgp`,
/// `pkcs11`, `provider.<name>`), used to tell "encrypted for a scheme we do not
/// implement" from "not encrypted".
pub const ANNOTATION_KEYS_PREFIX: &str = "org.opencontainers.image.enc.keys.";

/// Prefix of key-provider annotations; the rest of the key is the provider
/// name (Confidential Containers uses [`COCO_PROVIDER_NAME`]).
pub const ANNOTATION_PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";

/// The key-provider name Confidential Containers images carry.
pub const COCO_PROVIDER_NAME: &str = "attestation-agent";

/// Annotation holding the public options (cipher name and HMAC), standard
/// base64 of JSON.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";

/// The only layer cipher ocicrypt defines: AES-256-CTR, HMAC-SHA256 over the
/// ciphertext.
pub const CIPHER_AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";

/// Suffix that marks an encrypted layer media type.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// Uncompressed OCI layer.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip OCI layer.
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd OCI layer.
pub const LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Uncompressed non-distributable OCI layer.
pub const LAYER_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// gzip non-distributable OCI layer.
pub const LAYER_ND_TAR_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// zstd non-distributable OCI layer.
pub const LAYER_ND_TAR_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Encrypted uncompressed OCI layer.
pub const LAYER_TAR_ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+encrypted";
/// Encrypted gzip OCI layer (what skopeo writes for a gzip source).
pub const LAYER_TAR_GZIP_ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
/// Encrypted zstd OCI layer.
pub const LAYER_TAR_ZSTD_ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+zstd+encrypted";
/// Encrypted uncompressed non-distributable OCI layer.
pub const LAYER_ND_TAR_ENCRYPTED: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+encrypted";
/// Encrypted gzip non-distributable OCI layer.
pub const LAYER_ND_TAR_GZIP_ENCRYPTED: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip+encrypted";
/// Encrypted zstd non-distributable OCI layer.
pub const LAYER_ND_TAR_ZSTD_ENCRYPTED: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd+encrypted";

/// The layer media types we encrypt (and whose `+encrypted` forms we decrypt).
const ENCRYPTABLE: [&str; 6] = [
    LAYER_TAR,
    LAYER_TAR_GZIP,
    LAYER_TAR_ZSTD,
    LAYER_ND_TAR,
    LAYER_ND_TAR_GZIP,
    LAYER_ND_TAR_ZSTD,
];

/// Whether a layer media type says the blob is ocicrypt-encrypted. Any
/// `+encrypted` suffix counts, so an encrypted type we do not know is refused
/// later rather than applied as if it were plain.
pub fn is_encrypted(media_type: &str) -> bool {
    media_type.ends_with(ENCRYPTED_SUFFIX)
}

/// The media type of the blob inside an encrypted layer: the `+encrypted`
/// suffix stripped (a type without the suffix is returned unchanged). The
/// caller still classifies the result (compression, foreign layers).
pub fn decrypted_media_type(media_type: &str) -> &str {
    media_type
        .strip_suffix(ENCRYPTED_SUFFIX)
        .unwrap_or(media_type)
}

/// The media type an encrypted copy of a layer gets, the way
/// containers/image computes it: only OCI layer types can be encrypted
/// (Docker schema 2 has no encrypted types, so convert the manifest to OCI
/// first), and a type that is already encrypted is refused.
pub fn encrypted_media_type(media_type: &str) -> Result<String, MediaTypeError> {
    if is_encrypted(media_type) {
        return Err(MediaTypeError::AlreadyEncrypted(media_type.to_string()));
    }
    if ENCRYPTABLE.contains(&media_type) {
        Ok(format!("{media_type}{ENCRYPTED_SUFFIX}"))
    } else {
        Err(MediaTypeError::NotEncryptable(media_type.to_string()))
    }
}

/// Why a media type cannot be given the `+encrypted` suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaTypeError {
    /// Encrypting twice is not part of the format.
    #[error("encrypting a layer of media type {0:?}: it is already encrypted; encrypt the plain image instead")]
    AlreadyEncrypted(String),
    /// Not an OCI layer type.
    #[error("encrypting a layer of media type {0:?}: only OCI layer types (tar, tar+gzip, tar+zstd and their non-distributable forms) can be encrypted; convert the image to OCI first (skopeo copy --format oci)")]
    NotEncryptable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_round_trip() {
        for mt in ENCRYPTABLE {
            let enc = encrypted_media_type(mt).unwrap();
            assert!(is_encrypted(&enc), "{enc}");
            assert!(!is_encrypted(mt));
            assert_eq!(decrypted_media_type(&enc), mt);
        }
        assert_eq!(
            encrypted_media_type(LAYER_TAR_GZIP).unwrap(),
            LAYER_TAR_GZIP_ENCRYPTED
        );
        assert_eq!(
            decrypted_media_type(LAYER_ND_TAR_ZSTD_ENCRYPTED),
            LAYER_ND_TAR_ZSTD
        );
        assert_eq!(decrypted_media_type(LAYER_TAR), LAYER_TAR);
    }

    #[test]
    fn refuses_docker_and_double_encryption() {
        assert!(matches!(
            encrypted_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Err(MediaTypeError::NotEncryptable(_))
        ));
        assert!(matches!(
            encrypted_media_type(LAYER_TAR_ENCRYPTED),
            Err(MediaTypeError::AlreadyEncrypted(_))
        ));
    }
}
