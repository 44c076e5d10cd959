//! Streaming decompression of layer blobs (gzip, zstd, none).

use std::io::{self, BufReader, Read};

use crate::manifest::Compression;

/// A decompressing reader over a compressed layer stream.
pub enum Decompressor<R: Read> {
    /// Uncompressed tar.
    None(R),
    /// gzip, including multi-member streams (pigz, concatenation).
    Gzip(Box<flate2::read::MultiGzDecoder<R>>),
    /// zstd, all frames.
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decompressor::None(_) => "Decompressor::None",
            Decompressor::Gzip(_) => "Decompressor::Gzip",
            Decompressor::Zstd(_) => "Decompressor::Zstd",
        })
    }
}

impl<R: Read> Decompressor<R> {
    /// Wraps `inner` for `compression`.
    pub fn new(inner: R, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decompressor::None(inner),
            Compression::Gzip => {
                Decompressor::Gzip(Box::new(flate2::read::MultiGzDecoder::new(inner)))
            }
            Compression::Zstd => Decompressor::Zstd(zstd::stream::read::Decoder::with_buffer(
                BufReader::with_capacity(128 * 1024, inner),
            )?),
        })
    }

    /// The compressed reader back (what the decoder had buffered is lost,
    /// which is fine: the caller drains the rest for hashing).
    pub fn into_inner(self) -> R {
        match self {
            Decompressor::None(r) => r,
            Decompressor::Gzip(d) => d.into_inner(),
            Decompressor::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::None(r) => r.read(buf),
            Decompressor::Gzip(d) => d.read(buf),
            Decompressor::Zstd(d) => d.read(buf),
        }
    }
}
