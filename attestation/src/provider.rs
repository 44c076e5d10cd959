//! image-rs's [`KeyProvider`] over the KBS: the key-encryption key named by
//! an encrypted layer's `kbs:///repo/type/tag` key id is released by the KBS
//! only after the guest attested, so an image encrypted for a KBS key can be
//! decrypted only inside a guest the KBS's policy accepts.

use std::sync::Arc;

use image_rs::ocicrypt::provider::{KekFuture, KeyProvider, ProviderError, ResourceUri};

use crate::kbs::KbsClient;

/// A [`KeyProvider`] that fetches KEKs from the KBS through a shared
/// [`KbsClient`] (so all layers of all pulls share one attested session).
#[derive(Debug, Clone)]
pub struct KbsKeyProvider {
    client: Arc<KbsClient>,
}

impl KbsKeyProvider {
    /// A provider using `client`.
    pub fn new(client: Arc<KbsClient>) -> Self {
        KbsKeyProvider { client }
    }
}

impl KeyProvider for KbsKeyProvider {
    fn get_kek<'a>(&'a self, kid: &'a str) -> KekFuture<'a> {
        Box::pin(async move {
            let uri = ResourceUri::parse(kid)?;
            self.client
                .get_resource(&uri)
                .await
                .map_err(|e| ProviderError::Kek {
                    kid: uri.to_string(),
                    reason: e.to_string(),
                })
        })
    }
}
