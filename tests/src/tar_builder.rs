//! Tar layers built byte by byte in memory, including hostile ones no tool would write.
//!
//! [`TarBuilder`] writes GNU-format headers with the names and link names copied in raw
//! (no `..` or absolute-path checks, unlike `tar::Builder`), PAX records for long names and
//! xattrs, whiteouts and opaque markers, device nodes and GNU sparse entries. The free
//! functions at the bottom make the classic attacks; each returns an uncompressed tar
//! (compress it with [`crate::compress`], wrap it with [`crate::raw::RawImage::from_tars`]).

use std::io::Write as _;

use tar::{EntryType, Header};

/// The mtime written into every entry (fixed, so layers are reproducible).
pub const MTIME: u64 = 1_700_000_000;

/// An in-memory tar stream being built entry by entry.
#[derive(Debug, Default)]
pub struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    /// An empty archive.
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    /// A directory entry (`path` gets a trailing `/`).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let p = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        let h = header(EntryType::Directory, &p, mode, 0);
        self.entry(h, &p, None, &[])
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, content: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, content)
    }

    /// A regular file owned by `uid:gid` (mode may carry setuid/setgid/sticky bits).
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        content: &[u8],
    ) -> &mut Self {
        let mut h = header(EntryType::Regular, path, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.entry(h, path, None, content)
    }

    /// A regular file preceded by PAX `SCHILY.xattr.<name>` records (how umoci, GNU tar
    /// and containerd carry xattrs).
    pub fn file_with_xattrs(
        &mut self,
        path: &str,
        mode: u32,
        content: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let recs: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        let recs: Vec<(&str, &[u8])> = recs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.pax(&recs);
        self.file(path, mode, content)
    }

    /// A symlink `path -> target` (target written verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = header(EntryType::Symlink, path, 0o777, 0);
        self.entry(h, path, Some(target), &[])
    }

    /// A hard link `path` to `target` (an archive path, written verbatim).
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = header(EntryType::Link, path, 0o644, 0);
        self.entry(h, path, Some(target), &[])
    }

    /// A fifo.
    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = header(EntryType::Fifo, path, mode, 0);
        self.entry(h, path, None, &[])
    }

    /// A character device node (e.g. 1,3 is /dev/null).
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        let mut h = header(EntryType::Char, path, mode, 0);
        h.set_device_major(major)
            .expect("gnu header has dev fields");
        h.set_device_minor(minor)
            .expect("gnu header has dev fields");
        self.entry(h, path, None, &[])
    }

    /// A block device node.
    pub fn block_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        let mut h = header(EntryType::Block, path, mode, 0);
        h.set_device_major(major)
            .expect("gnu header has dev fields");
        h.set_device_minor(minor)
            .expect("gnu header has dev fields");
        self.entry(h, path, None, &[])
    }

    /// An OCI whiteout for `path` (empty file `dir/.wh.name`).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), 0o644, b"")
    }

    /// An OCI opaque-directory marker `dir/.wh..wh..opq` (umoci never writes one).
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let d = dir.trim_end_matches('/');
        self.file(&format!("{d}/.wh..wh..opq"), 0o644, b"")
    }

    /// A GNU sparse file (type `S`) declaring `declared_size` bytes, of which only `tail`
    /// is stored, at the very end; the rest is a hole. A few hundred bytes of archive can
    /// so claim terabytes.
    pub fn sparse_file(&mut self, path: &str, declared_size: u64, tail: &[u8]) -> &mut Self {
        assert!(
            declared_size >= tail.len() as u64,
            "sparse tail larger than the file"
        );
        let mut h = header(EntryType::GNUSparse, path, 0o644, tail.len() as u64);
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.set_real_size(declared_size);
        gnu.sparse[0].set_offset(declared_size - tail.len() as u64);
        gnu.sparse[0].set_length(tail.len() as u64);
        gnu.set_is_extended(false);
        self.entry(h, path, None, tail)
    }

    /// A PAX extended header (`x`) applying to the next entry, with raw records such as
    /// `("path", b"...")` or `("SCHILY.xattr.user.a", b"v")`.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend(pax_record(k, v));
        }
        let name = "PaxHeaders/entry";
        let h = header(EntryType::XHeader, name, 0o644, body.len() as u64);
        self.raw(h, &body)
    }

    /// Appends `h` (checksum recomputed) and `data` (padded to 512 bytes) as they are: the
    /// escape hatch for any malformed entry a test needs.
    pub fn raw(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().next_multiple_of(512), 0);
        self
    }

    /// The archive so far, without the end-of-archive blocks.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// The finished archive (two zero blocks appended).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn entry(&mut self, mut h: Header, path: &str, link: Option<&str>, data: &[u8]) -> &mut Self {
        let mut recs: Vec<(&str, &[u8])> = Vec::new();
        if path.len() > 100 {
            recs.push(("path", path.as_bytes()));
        }
        if let Some(l) = link {
            if l.len() > 100 {
                recs.push(("linkpath", l.as_bytes()));
            }
            copy_raw(&mut h.as_old_mut().linkname, l.as_bytes());
        }
        if !recs.is_empty() {
            self.pax(&recs);
        }
        self.raw(h, data)
    }
}

/// A GNU header for `path` (name copied raw, truncated at 100 bytes: longer names also
/// get a PAX `path` record from [`TarBuilder`]).
pub fn header(kind: EntryType, path: &str, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    copy_raw(&mut h.as_old_mut().name, path.as_bytes());
    h
}

fn copy_raw(field: &mut [u8; 100], bytes: &[u8]) {
    field.fill(0);
    let n = bytes.len().min(100);
    field[..n].copy_from_slice(&bytes[..n]);
}

/// One PAX record `"<len> key=value\n"`, where `len` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// `../NAME` and `a/../../NAME`: regular files whose paths climb out of the root.
pub fn dotdot_escape(name: &str) -> Vec<u8> {
    TarBuilder::new()
        .file(&format!("../{name}"), 0o644, b"escaped via ..\n")
        .dir("a", 0o755)
        .file(
            &format!("a/../../{name}-2"),
            0o644,
            b"escaped via a/../..\n",
        )
        .finish()
}

/// A file named by the absolute `host_path` (e.g. a path in a temp dir the test watches):
/// it must land at `ROOT/host_path`, never at `host_path` itself.
pub fn absolute_path(host_path: &str) -> Vec<u8> {
    assert!(
        host_path.starts_with('/'),
        "absolute_path wants an absolute path"
    );
    TarBuilder::new()
        .file(host_path, 0o644, b"absolute path entry\n")
        .finish()
}

/// `evil -> target_dir` (absolute symlink) then a file `evil/pwned`: an unpacker that
/// follows the symlink writes `target_dir/pwned` on the host.
pub fn symlink_escape(target_dir: &str) -> Vec<u8> {
    TarBuilder::new()
        .symlink("evil", target_dir)
        .file("evil/pwned", 0o644, b"written through a symlink\n")
        .finish()
}

/// `evil -> ../../../../../..` then `evil/NAME`: the relative flavour of
/// [`symlink_escape`].
pub fn symlink_dotdot_escape(name: &str) -> Vec<u8> {
    TarBuilder::new()
        .symlink("evil", "../../../../../../../..")
        .file(
            &format!("evil/{name}"),
            0o644,
            b"written through a .. symlink\n",
        )
        .finish()
}

/// A hard link `link` to `target` (e.g. `../../etc/passwd` or an absolute host path),
/// then a regular file `link` with new content: an unpacker that makes the link and
/// then writes through it overwrites `target` on the host.
pub fn hardlink_escape(target: &str) -> Vec<u8> {
    TarBuilder::new()
        .hardlink("link", target)
        .file("link", 0o644, b"overwritten through a hard link\n")
        .finish()
}

/// A hard link climbing out of the root: `passwd -> ../../etc/passwd`.
pub fn hardlink_dotdot() -> Vec<u8> {
    TarBuilder::new()
        .hardlink("passwd", "../../etc/passwd")
        .finish()
}

/// A hard link to an absolute path: `passwd -> /etc/passwd`.
pub fn hardlink_absolute() -> Vec<u8> {
    TarBuilder::new().hardlink("passwd", "/etc/passwd").finish()
}

/// A GNU sparse file `sparse` declaring `declared_size` bytes (e.g. 1 TiB) in a tar of a
/// few KiB.
pub fn sparse_huge(declared_size: u64) -> Vec<u8> {
    TarBuilder::new()
        .sparse_file("sparse", declared_size, b"end of a very sparse file\n")
        .finish()
}

/// `count` empty files `f/0`, `f/1`, ...: an entry-count bomb.
pub fn many_entries(count: usize) -> Vec<u8> {
    let mut b = TarBuilder::new();
    b.dir("f", 0o755);
    for i in 0..count {
        b.file(&format!("f/{i}"), 0o644, b"");
    }
    b.finish()
}

/// A gzip-compressed tar with one file `path` of `size` zero bytes, streamed into the
/// compressor (never held uncompressed): 1 GiB of zeros compresses to about 1 MiB.
pub fn gzip_bomb(path: &str, size: u64) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut h = header(EntryType::Regular, path, 0o644, size);
    h.set_cksum();
    enc.write_all(h.as_bytes()).expect("gzip in memory");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size.next_multiple_of(512) + 1024;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).expect("gzip in memory");
        left -= n as u64;
    }
    enc.finish().expect("gzip in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("path", b"abc");
        let s = String::from_utf8(r.clone()).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
    }

    #[test]
    fn tar_crate_reads_what_we_write() {
        let long = "d/".repeat(60) + "file";
        let bytes = TarBuilder::new()
            .dir("d", 0o755)
            .file_owned("d/suid", 0o4755, 1000, 100, b"x")
            .file(&long, 0o644, b"long")
            .symlink("s", "/abs/target")
            .whiteout("d/gone")
            .opaque("d")
            .finish();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((p, e.header().mode().unwrap(), data));
        }
        let names: Vec<&str> = seen.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "d/",
                "d/suid",
                long.as_str(),
                "s",
                "d/.wh.gone",
                "d/.wh..wh..opq"
            ]
        );
        assert_eq!(seen[1].1, 0o4755);
        assert_eq!(seen[2].2, b"long");
    }

    #[test]
    fn hostile_names_are_kept_raw() {
        let bytes = dotdot_escape("x");
        let mut ar = tar::Archive::new(&bytes[..]);
        let first = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*first.path_bytes(), b"../x");
    }

    #[test]
    fn sparse_entry_declares_its_real_size() {
        let bytes = sparse_huge(1 << 40);
        assert!(bytes.len() < 4096);
        let mut ar = tar::Archive::new(&bytes[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), EntryType::GNUSparse);
        assert_eq!(e.size(), 1 << 40);
    }

    #[test]
    fn gzip_bomb_is_small() {
        let gz = gzip_bomb("zeros", 64 << 20);
        assert!(gz.len() < 200 << 10, "{} bytes", gz.len());
    }
}
