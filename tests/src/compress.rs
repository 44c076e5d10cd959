//! Layer compression for fixtures: gzip (flate2), zstd (the `zstd` CLI, to keep the C
//! library out of this crate's build) or none, and detection by magic bytes.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use crate::cmd;
use crate::layout::{
    DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd frame(s).
    Zstd,
}

impl Compression {
    /// Guesses the compression of `bytes` from their magic number.
    pub fn detect(bytes: &[u8]) -> Compression {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// The Docker layer media type, if Docker has one (it has none for zstd).
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(DOCKER_LAYER_TAR),
            Compression::Gzip => Some(DOCKER_LAYER_GZIP),
            Compression::Zstd => None,
        }
    }
}

/// Compresses `data` with `c`.
pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => gzip(data),
        Compression::Zstd => zstd_cli(&["-q", "-c", "-3"], data),
    }
}

/// Decompresses `data`, whose compression is detected from its magic number.
pub fn decompress(data: &[u8]) -> Vec<u8> {
    match Compression::detect(data) {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gunzip layer");
            out
        }
        Compression::Zstd => zstd_cli(&["-q", "-d", "-c"], data),
    }
}

/// gzip of `data` at the default level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

fn zstd_cli(args: &[&str], input: &[u8]) -> Vec<u8> {
    // Feed stdin through a temp file so a large input cannot deadlock against stdout.
    let mut tmp = tempfile::tempfile().expect("temp file for zstd input");
    tmp.write_all(input).expect("write zstd input");
    std::io::Seek::rewind(&mut tmp).expect("rewind zstd input");
    cmd::run(
        Command::new("zstd")
            .args(args)
            .stdin(Stdio::from(tmp))
            .stdout(Stdio::piped()),
    )
    .stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = b"hello layer".repeat(100);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let z = compress(&data, c);
            assert_eq!(Compression::detect(&z), c);
            assert_eq!(decompress(&z), data);
        }
    }
}
