//! The generated protocol code in `src/protocols/` is checked in (builds need no
//! protoc and no code generator). This test keeps it honest:
//!
//! - `generated_code_matches_protos` regenerates into a temp dir and fails if
//!   `src/protocols/` differs from what `protos/*.proto` produce;
//! - `regenerate` (ignored) rewrites `src/protocols/` after a `.proto` edit:
//!   `cargo test -p agent --test protos -- --ignored regenerate`.

use std::fs;
use std::path::{Path, PathBuf};

use protobuf::descriptor::field_descriptor_proto::Type;
use protobuf::reflect::{FieldDescriptor, MessageDescriptor, OneofDescriptor};
use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize, ProtobufCustomizeCallback};

/// The inputs, in generation order.
const PROTOS: &[&str] = &[
    "agent.proto",
    "csi.proto",
    "health.proto",
    "oci.proto",
    "types.proto",
];

/// Adds serde derives so requests become policy input JSON with proto field
/// names (the same shape Kata's agent feeds its policy) and agentctl can read
/// requests from JSON.
struct SerdeDerives;

impl ProtobufCustomizeCallback for SerdeDerives {
    fn message(&self, _message: &MessageDescriptor) -> ProtobufCustomize {
        ProtobufCustomize::default()
            .before("#[derive(::serde::Serialize, ::serde::Deserialize)]\n#[serde(default)]")
    }

    fn oneof(&self, _oneof: &OneofDescriptor) -> ProtobufCustomize {
        ProtobufCustomize::default().before("#[derive(::serde::Serialize, ::serde::Deserialize)]")
    }

    fn field(&self, field: &FieldDescriptor) -> ProtobufCustomize {
        let ty = field.proto().type_();
        if ty == Type::TYPE_ENUM && field.is_singular() {
            ProtobufCustomize::default().before(
                "#[serde(serialize_with = \"crate::proto_serde::serialize_enum\", \
                 deserialize_with = \"crate::proto_serde::deserialize_enum\")]",
            )
        } else if ty == Type::TYPE_MESSAGE && field.is_singular() {
            ProtobufCustomize::default().before(
                "#[serde(serialize_with = \"crate::proto_serde::serialize_message_field\", \
                 deserialize_with = \"crate::proto_serde::deserialize_message_field\")]",
            )
        } else {
            ProtobufCustomize::default()
        }
    }

    fn special_field(&self, _message: &MessageDescriptor, _field: &str) -> ProtobufCustomize {
        ProtobufCustomize::default().before("#[serde(skip)]")
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out: &Path) {
    let protos_dir = crate_dir().join("protos");
    fs::create_dir_all(out).expect("create output dir");
    Codegen::new()
        .out_dir(out)
        .inputs(PROTOS.iter().map(|p| protos_dir.join(p)))
        .include(&protos_dir)
        .rust_protobuf()
        .rust_protobuf_customize(
            ProtobufCustomize::default()
                .gen_mod_rs(true)
                .generate_accessors(true),
        )
        .rust_protobuf_customize_callback(SerdeDerives)
        .customize(Customize {
            async_all: true,
            gen_mod: true,
            ..Default::default()
        })
        .run()
        .expect("ttrpc-codegen failed");
}

fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = fs::read_dir(dir)
        .expect("read generated dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read generated file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn generated_code_matches_protos() {
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path());
    let fresh = rust_files(tmp.path());
    let checked_in = rust_files(&crate_dir().join("src/protocols"));
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&fresh),
        names(&checked_in),
        "src/protocols has other files than protos/ generate; run \
         `cargo test -p agent --test protos -- --ignored regenerate`"
    );
    for ((name, want), (_, have)) in fresh.iter().zip(&checked_in) {
        assert!(
            want == have,
            "src/protocols/{name} is stale; run `cargo test -p agent --test protos -- --ignored regenerate`"
        );
    }
}

#[test]
#[ignore = "rewrites src/protocols; run after editing protos/*.proto"]
fn regenerate() {
    let out = crate_dir().join("src/protocols");
    if out.exists() {
        for (name, _) in rust_files(&out) {
            fs::remove_file(out.join(name)).expect("remove stale generated file");
        }
    }
    generate(&out);
}
