//! Self-tests of the fixture library against the real tools: if these fail, the
//! end-to-end tests built on the fixtures cannot be trusted.

use std::fs;
use std::path::Path;
use std::process::Command;

use integration_tests::compress::{self, Compression};
use integration_tests::fstree::{self, Kind};
use integration_tests::http;
use integration_tests::images::{self, LayerBuilder};
use integration_tests::layout::{self, OciLayout};
use integration_tests::proxy::{Proxy, ProxyOptions, TokenAuth};
use integration_tests::push::{self, ManifestFormat, PushOptions};
use integration_tests::raw::{self, RawBlob, RawImage};
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::{cmd, fsedit, tar_builder};

fn busybox_layout(dir: &Path) -> OciLayout {
    let l = OciLayout::new(dir.join("layout"));
    images::build_busybox(&l, "bb");
    l
}

#[test]
fn busybox_push_and_fetch_through_proxy() {
    let reg = Registry::start(RegistryOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let l = busybox_layout(tmp.path());
    let digest = push::push(&l, "bb", &reg, "test/busybox:v1", PushOptions::default());
    assert_eq!(
        digest,
        l.manifest_digest("bb"),
        "--preserve-digests keeps the digest"
    );

    let proxy = Proxy::start(&reg.addr());
    let r = raw::get_manifest(&proxy.addr(), "test/busybox", "v1", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert_eq!(r.header("Connection"), Some("close"));
    let m = r.json();
    assert_eq!(m["config"]["mediaType"], layout::OCI_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], layout::OCI_LAYER_GZIP);
    assert_eq!(proxy.count("/manifests/v1"), 1);
    let rec = &proxy.requests()[0];
    assert_eq!((rec.method.as_str(), rec.status), ("GET", Some(200)));
    assert!(!rec.has_authorization);

    let cfg = l.config("bb");
    assert_eq!(cfg["config"]["Cmd"][0], "/bin/sh");
    assert!(reg.log().contains("PUT /v2/test/busybox/manifests/v1"));
}

#[test]
fn proxy_drop_after_cuts_a_response_once() {
    let reg = Registry::start(RegistryOptions::default());
    let blob = RawBlob::new(layout::OCI_LAYER_TAR, vec![7u8; 100_000]);
    raw::push_raw_blob(&reg, "cut/me", &blob);
    let proxy = Proxy::start(&reg.addr());
    proxy.drop_after("/blobs/", 1000, 1);

    let err = raw::get_blob(&proxy.addr(), "cut/me", &blob.digest, None).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(err.to_string().contains("1000 of 100000"), "{err}");
    let full = raw::get_blob(&proxy.addr(), "cut/me", &blob.digest, None).unwrap();
    assert_eq!(full.body, blob.bytes);

    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[0].dropped && !reqs[1].dropped);
    assert_eq!(proxy.count(&blob.digest), 2);

    // Range requests pass through and are logged.
    let r = http::request(
        &proxy.addr(),
        "GET",
        &format!("/v2/cut/me/blobs/{}", blob.digest),
        &[("Range", "bytes=10-19")],
        b"",
    )
    .unwrap();
    assert_eq!((r.status, r.body.len()), (206, 10));
    assert_eq!(proxy.requests()[2].range.as_deref(), Some("bytes=10-19"));
}

#[test]
fn proxy_token_auth_challenges_then_accepts_scoped_token() {
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(
        &[tar_builder::TarBuilder::new()
            .file("hello", 0o644, b"hi\n")
            .finish()],
        Compression::Gzip,
    );
    raw::push_raw(&reg, "team/app", "v1", &image);
    raw::push_raw(&reg, "team/other", "v1", &image);
    let proxy = Proxy::start_with(
        &reg.addr(),
        ProxyOptions {
            token_auth: Some(TokenAuth {
                credentials: Some(("alice".into(), "s3cret".into())),
                ..TokenAuth::default()
            }),
        },
    );
    let addr = proxy.addr();

    let r = raw::get_manifest(&addr, "team/app", "v1", None);
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap().to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}\",service=\"test-registry\",scope=\"repository:team/app:pull\"",
            proxy.token_realm()
        )
    );

    let token_path = "/token?service=test-registry&scope=repository%3Ateam%2Fapp%3Apull";
    let bad = http::basic_auth("alice", "wrong");
    let r = http::request(&addr, "GET", token_path, &[("Authorization", &bad)], b"").unwrap();
    assert_eq!(r.status, 401);
    let good = http::basic_auth("alice", "s3cret");
    let r = http::request(&addr, "GET", token_path, &[("Authorization", &good)], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["expires_in"], 300);
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], token.as_str());

    let bearer = format!("Bearer {token}");
    let r = raw::get_manifest(&addr, "team/app", "v1", Some(&bearer));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = raw::get_manifest(&addr, "team/other", "v1", Some(&bearer));
    assert_eq!(r.status, 401, "token is bound to its scope");
    assert!(r
        .header("WWW-Authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let r = http::request(
        &addr,
        "DELETE",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &bearer)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401, "pull-only token");

    let scopes: Vec<String> = proxy
        .requests()
        .into_iter()
        .flat_map(|r| r.scopes)
        .collect();
    assert_eq!(
        scopes,
        ["repository:team/app:pull", "repository:team/app:pull"]
    );
    proxy.revoke_tokens();
    assert_eq!(
        raw::get_manifest(&addr, "team/app", "v1", Some(&bearer)).status,
        401
    );

    // A real client (skopeo, Go's registry client) completes the token dance.
    proxy.clear();
    let tmp = tempfile::tempdir().unwrap();
    cmd::run(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .args(["--src-creds", "alice:s3cret"])
            .arg(format!("docker://{addr}/team/app:v1"))
            .arg(format!("oci:{}:v1", tmp.path().join("pulled").display())),
    );
    let reqs = proxy.requests();
    assert!(
        reqs.iter()
            .any(|r| r.scopes == ["repository:team/app:pull"]),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.path.contains("/blobs/")
            && r.auth_scheme.as_deref() == Some("Bearer")
            && r.status == Some(200)),
        "{reqs:#?}"
    );
}

#[test]
fn htpasswd_works_over_plain_http() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("bob".into(), "pw".into())),
        ..Default::default()
    });
    let r = http::get(&reg.addr(), "/v2/").unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").unwrap().starts_with("Basic "));
    let auth = raw::auth_header(&reg).unwrap();
    let r = http::request(&reg.addr(), "GET", "/v2/", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200);

    let tmp = tempfile::tempdir().unwrap();
    let l = busybox_layout(tmp.path());
    let d = push::push(&l, "bb", &reg, "auth/bb:v1", PushOptions::default());
    let r = raw::get_manifest(&reg.addr(), "auth/bb", "v1", Some(&auth));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
}

#[test]
fn tls_registry_accepts_skopeo_with_test_ca() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("carol".into(), "pw".into())),
    });
    assert!(reg.base_url().starts_with("https://"));
    assert!(reg.ca_pem_path().unwrap().exists());
    let tmp = tempfile::tempdir().unwrap();
    let l = busybox_layout(tmp.path());
    let d = push::push(&l, "bb", &reg, "tls/bb:v1", PushOptions::default());
    let out = cmd::run(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--creds", "carol:pw", "--cert-dir"])
            .arg(reg.cert_dir().unwrap())
            .arg(format!("docker://{}/tls/bb:v1", reg.addr())),
    );
    assert_eq!(layout::sha256_digest(&out.stdout), d);
}

fn media_types(m: &serde_json::Value) -> (String, Vec<String>) {
    let layers = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    (m["mediaType"].as_str().unwrap_or("").to_string(), layers)
}

#[test]
fn push_formats_v2s2_zstd_uncompressed_index_sha512() {
    let reg = Registry::start(RegistryOptions::default());
    let a = reg.addr();
    let tmp = tempfile::tempdir().unwrap();
    let l = busybox_layout(tmp.path());

    push::push(
        &l,
        "bb",
        &reg,
        "f/bb:v2s2",
        PushOptions {
            format: ManifestFormat::DockerV2s2,
            ..Default::default()
        },
    );
    let (mt, layers) = media_types(&raw::get_manifest(&a, "f/bb", "v2s2", None).json());
    assert_eq!(
        (mt.as_str(), layers[0].as_str()),
        (layout::DOCKER_MANIFEST, layout::DOCKER_LAYER_GZIP)
    );

    let zstd = PushOptions {
        compression: Some(Compression::Zstd),
        ..Default::default()
    };
    push::push(&l, "bb", &reg, "f/bb:zstd", zstd);
    let m = raw::get_manifest(&a, "f/bb", "zstd", None).json();
    assert_eq!(media_types(&m).1, [layout::OCI_LAYER_ZSTD]);
    let blob = raw::get_blob(&a, "f/bb", m["layers"][0]["digest"].as_str().unwrap(), None).unwrap();
    assert_eq!(Compression::detect(&blob.body), Compression::Zstd);

    let unc = PushOptions {
        compression: Some(Compression::None),
        ..Default::default()
    };
    push::push(&l, "bb", &reg, "f/bb:unc", unc);
    let m = raw::get_manifest(&a, "f/bb", "unc", None).json();
    assert_eq!(media_types(&m).1, [layout::OCI_LAYER_TAR]);
    // Uncompressed layer digest == diff_id.
    assert_eq!(
        m["layers"][0]["digest"],
        l.config("bb")["rootfs"]["diff_ids"][0]
    );

    let dunc = PushOptions {
        format: ManifestFormat::DockerV2s2,
        compression: Some(Compression::None),
        all: false,
    };
    push::push(&l, "bb", &reg, "f/bb:docker-unc", dunc);
    let (mt, layers) = media_types(&raw::get_manifest(&a, "f/bb", "docker-unc", None).json());
    assert_eq!(
        (mt.as_str(), layers[0].as_str()),
        (layout::DOCKER_MANIFEST, layout::DOCKER_LAYER_TAR)
    );

    let mp = images::make_multiplatform_index(&l, "multi");
    let d = push::push(
        &l,
        "multi",
        &reg,
        "f/multi:v1",
        PushOptions {
            all: true,
            ..Default::default()
        },
    );
    assert_eq!(d, mp.index_digest);
    let idx = raw::get_manifest(&a, "f/multi", "v1", None).json();
    assert_eq!(idx["mediaType"], layout::OCI_INDEX);
    assert_eq!(idx["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v8");
    assert_eq!(
        raw::get_manifest(&a, "f/multi", &mp.arm64_digest, None).status,
        200
    );
    assert_eq!(l.config("multi-arm64")["architecture"], "arm64");

    // sha512: skopeo 1.9.3 refuses, raw v2 calls work.
    let d512 = push::rehash_sha512(&l, "bb", "bb512");
    assert!(d512.starts_with("sha512:"));
    let mut c = Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ])
    .arg(l.skopeo_ref("bb512"))
    .arg(format!("docker://{a}/f/bb:sha512-skopeo"));
    let out = cmd::run_unchecked(&mut c);
    assert!(
        !out.status.success(),
        "skopeo 1.9.3 was expected to fail on sha512 blobs"
    );
    push::push_layout_raw(&l, "bb512", &reg, "f/bb", "sha512");
    let m = raw::get_manifest(&a, "f/bb", "sha512", None).json();
    let ld = m["layers"][0]["digest"].as_str().unwrap();
    assert!(ld.starts_with("sha512:"));
    let blob = raw::get_blob(&a, "f/bb", ld, None).unwrap();
    assert_eq!(
        layout::digest(layout::DigestAlgorithm::Sha512, &blob.body),
        ld
    );
}

#[test]
fn raw_push_serves_hostile_layers_and_tampered_digests() {
    let reg = Registry::start(RegistryOptions::default());
    let tars = vec![
        tar_builder::dotdot_escape("sealpod-escape"),
        tar_builder::symlink_escape("/tmp/sealpod-never"),
        tar_builder::sparse_huge(1 << 40),
    ];
    let mut image = RawImage::from_tars(&tars, Compression::Gzip);
    // Layer 1 is served with other bytes than its digest promises.
    let honest = image.layers[1].clone();
    image.layers[1].bytes = compress::gzip(b"not the promised layer");
    image.layers[2].media_type = "application/x-unknown".into();
    let d = raw::push_raw(&reg, "hostile/img", "v1", &image);
    let m = raw::get_manifest(&reg.addr(), "hostile/img", "v1", None);
    assert_eq!(m.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(m.json()["layers"][2]["mediaType"], "application/x-unknown");
    let served = raw::get_blob(&reg.addr(), "hostile/img", &honest.digest, None).unwrap();
    assert_eq!(served.body, image.layers[1].bytes);
    assert_ne!(layout::sha256_digest(&served.body), honest.digest);

    let bomb = tar_builder::gzip_bomb("zeros", 256 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());

    let tmp = tempfile::tempdir().unwrap();
    let l = OciLayout::init_plain(tmp.path().join("raw"));
    let desc = raw::write_raw_layout(&l, "hostile", &image);
    assert_eq!(desc["digest"], d.as_str());
    assert_eq!(l.read_blob(&honest.digest), image.layers[1].bytes);
}

#[test]
fn fstree_of_umoci_unpack_matches_itself_and_sees_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let l = busybox_layout(tmp.path());
    let mut b = LayerBuilder::new(&l, "bb", "rich");
    b.layer(|r| {
        fsedit::mkdir(r, "data/opq", 0o755)?;
        fsedit::write(r, "data/opq/a", b"a", 0o644)?;
        fsedit::write(r, "etc/gone", b"bye", 0o644)?;
        fsedit::mkdir(r, "dir2file/sub", 0o755)?;
        fsedit::write(r, "dir2file/sub/f", b"f", 0o644)
    })
    .layer(|r| {
        fsedit::remove(r, "etc/gone")?;
        fsedit::remove(r, "data/opq")?;
        fsedit::mkdir(r, "data/opq", 0o700)?;
        fsedit::write(r, "data/opq/c", b"c", 0o644)?;
        fsedit::remove(r, "dir2file")?;
        fsedit::write(r, "dir2file", b"now a file", 0o644)?;
        fsedit::write_owned(r, "usr/bin/suid", b"#!/bin/sh\n", 0o4755, 0, 0)?;
        fsedit::write_owned(r, "srv/owned", b"x", 0o2750, 1234, 5678)?;
        fsedit::set_xattr(&r.join("etc/motd"), "user.sealpod", b"kept")?;
        fsedit::mkfifo(r, "run-fifo", 0o600)?;
        fsedit::hard_link(r, "srv/owned", "srv/owned-hl")?;
        fsedit::symlink(r, "abs-link", "/etc/motd")
    });

    let last = l.manifest("rich")["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let tar = compress::decompress(&l.read_blob(last["digest"].as_str().unwrap()));
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap());
    }
    assert!(names.contains(&"data/opq/.wh.a".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with(".wh..wh..opq")),
        "umoci 0.4.7 writes no opaque marker"
    );
    assert!(names.contains(&"dir2file/.wh.sub".to_string()), "{names:?}");

    let u1 = images::umoci_unpack(&l, "rich", &tmp.path().join("u1"));
    let u2 = images::umoci_unpack(&l, "rich", &tmp.path().join("u2"));
    let (t1, t2) = (fstree::snapshot(&u1), fstree::snapshot(&u2));
    fstree::compare(&t1, &t2).unwrap();

    let e = |p: &str| {
        t1.entries
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("no {p}"))
    };
    assert_eq!(e("usr/bin/suid").mode, 0o4755);
    assert_eq!(
        (e("srv/owned").uid, e("srv/owned").gid, e("srv/owned").mode),
        (1234, 5678, 0o2750)
    );
    assert_eq!(
        e("etc/motd").xattrs.get("user.sealpod").map(Vec::as_slice),
        Some(&b"kept"[..])
    );
    assert_eq!(e("run-fifo").kind, Kind::Fifo);
    assert_eq!(e("dir2file").kind, Kind::File);
    assert_eq!(e("data/opq").mode, 0o700);
    assert!(!t1.entries.contains_key(Path::new("data/opq/a")));
    assert!(!t1.entries.contains_key(Path::new("etc/gone")));
    assert_eq!(
        e("bin/sh").link_target.as_deref(),
        Some(Path::new("busybox"))
    );
    assert!(t1
        .hardlinks
        .iter()
        .any(|s| s.contains(Path::new("bin/busybox-hl"))));
    assert!(t1
        .hardlinks
        .iter()
        .any(|s| s.contains(Path::new("srv/owned-hl"))));

    // A hand-made layer with a real opaque marker and a device node: umoci's unpack
    // honours both, so it stays the reference.
    let tar = tar_builder::TarBuilder::new()
        .dir("data/opq", 0o755)
        .opaque("data/opq")
        .file("data/opq/d", 0o644, b"d")
        .char_dev("dev-null", 1, 3, 0o666)
        .finish();
    images::append_tar_layer(&l, "rich", "opaque", &tar, Compression::None);
    let t3 = fstree::snapshot(&images::umoci_unpack(&l, "opaque", &tmp.path().join("u3")));
    let e3 = |p: &str| {
        t3.entries
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("no {p}"))
    };
    assert!(!t3.entries.contains_key(Path::new("data/opq/c")));
    assert_eq!(e3("data/opq/d").size, 1);
    assert_eq!(
        (e3("dev-null").kind, e3("dev-null").rdev),
        (Kind::CharDev, Some((1, 3)))
    );
    let err = fstree::compare(&t1, &t3).unwrap_err();
    assert!(err.contains("data/opq/c: missing"), "{err}");

    fs::write(u2.join("etc/motd"), b"changed\n").unwrap();
    fsedit::chmod(&u2.join("bin/busybox"), 0o700).unwrap();
    fs::remove_file(u2.join("srv/owned-hl")).unwrap();
    fs::write(u2.join("extra"), b"").unwrap();
    let err = fstree::compare(&t1, &fstree::snapshot(&u2)).unwrap_err();
    for want in [
        "etc/motd: content sha256",
        "etc/motd: size 8 != expected",
        "bin/busybox: mode 0700 != expected 0755",
        "srv/owned-hl: missing",
        "extra: unexpected File",
        "hard-link group missing: {srv/owned, srv/owned-hl}",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
