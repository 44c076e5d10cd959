//! Pushing with image-rs's registry client to a real `docker-registry`
//! (anonymous and htpasswd), read back by image-rs and by skopeo.

use std::sync::Arc;

use bytes::Bytes;
use image_rs::registry::Login;
use image_rs::{
    Credentials, Digest, Layout, PullOptions, Puller, Reference, RegistryClient, RegistryConfig,
    Store,
};
use integration_tests::compress::Compression;
use integration_tests::raw::RawImage;
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::tar_builder::TarBuilder;

async fn push_image(client: &RegistryClient, r: &Reference, image: &RawImage) -> Digest {
    for blob in image.layers.iter().chain([&image.config]) {
        let d: Digest = blob.digest.parse().unwrap();
        client
            .push_blob(r, &d, Bytes::from(blob.bytes.clone()))
            .await
            .expect("push blob");
        assert!(
            client.blob_exists(r, &d).await.unwrap(),
            "blob {d} not there after push"
        );
    }
    let m = image.manifest_bytes();
    client
        .push_manifest(
            r,
            r.tag().unwrap(),
            &image.manifest_media_type,
            Bytes::from(m.clone()),
        )
        .await
        .expect("push manifest");
    Digest::of(image_rs::Algorithm::Sha256, &m)
}

fn sample() -> RawImage {
    let tar = TarBuilder::new()
        .file("hello.txt", 0o644, b"pushed by image-rs\n")
        .finish();
    RawImage::from_tars(&[tar], Compression::Gzip)
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_image_pulls_back_identically() {
    let reg = Registry::start(RegistryOptions::default());
    let client = Arc::new(RegistryClient::new(RegistryConfig::default()).unwrap());
    let r: Reference = format!("{}/pushed/app:v1", reg.addr()).parse().unwrap();
    let digest = push_image(&client, &r, &sample()).await;
    // Pushing again is a no-op for blobs (HEAD says present).
    push_image(&client, &r, &sample()).await;

    let t = tempfile::tempdir().unwrap();
    let puller = Puller::new(client, Store::open(t.path().join("store")).unwrap());
    let opts = PullOptions {
        layout: Layout::Flat,
        ..Default::default()
    };
    let rep = puller
        .pull(&r, &t.path().join("rootfs"), &opts)
        .await
        .unwrap();
    assert_eq!(rep.manifest_digest, digest);
    assert_eq!(
        std::fs::read(t.path().join("rootfs/hello.txt")).unwrap(),
        b"pushed by image-rs\n"
    );
    // skopeo (the real peer) reads it too.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{r}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn push_needs_and_uses_credentials() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("pusher".into(), "s3cret".into())),
        ..Default::default()
    });
    let r: Reference = format!("{}/private/app:v1", reg.addr()).parse().unwrap();
    let anon = RegistryClient::new(RegistryConfig::default()).unwrap();
    let blob = sample().layers[0].clone();
    let d: Digest = blob.digest.parse().unwrap();
    let err = anon
        .push_blob(&r, &d, Bytes::from(blob.bytes.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires a login"), "{err}");
    let mut creds = Credentials::anonymous();
    creds.explicit = Some(Login {
        username: "pusher".into(),
        password: zeroize::Zeroizing::new("s3cret".into()),
    });
    let client = RegistryClient::new(RegistryConfig {
        credentials: creds,
        ..RegistryConfig::default()
    })
    .unwrap();
    push_image(&client, &r, &sample()).await;
}
