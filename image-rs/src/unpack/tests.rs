//! Unit tests of the unpacker and the flat merge with hand-made (and hostile)
//! archives. Run as root (CI does): ownership, whiteouts and trusted xattrs
//! need it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Builds tar archives byte by byte, so tests can write names that the `tar`
/// crate's builder (rightly) refuses.
#[derive(Default)]
struct TarBuf(Vec<u8>);

fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{:0width$o}", v, width = n);
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

impl TarBuf {
    fn raw(
        &mut self,
        name: &[u8],
        kind: u8,
        mode: u32,
        uid: u64,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], uid);
        octal(&mut h[116..124], uid);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
        self
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), b'0', mode, 0, b"", data)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'5', 0o755, 0, b"", b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'2', 0o777, 0, target.as_bytes(), b"")
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'1', 0o644, 0, target.as_bytes(), b"")
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            // "LEN key=value\n" where LEN counts itself.
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + 1;
            while format!("{len}").len() + body_len != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.raw(b"././@PaxHeader", b'x', 0o644, 0, b"", &data)
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend(std::iter::repeat_n(0, 1024));
        v
    }
}

fn unpack_into(dir: &Path, tar: &[u8], limits: Limits) -> Result<UnpackStats, UnpackError> {
    LayerUnpacker::new(dir, limits)?.unpack(tar).map(|(s, _)| s)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn unpacks_files_links_modes_owners_and_xattrs() {
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .dir("bin")
        .file("bin/tool", 0o4755, b"#!/bin/sh\n")
        .symlink("bin/sh", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("uid", b"4242"),
            ("gid", b"4243"),
        ])
        .file("data", 0o640, b"payload")
        .raw(b"fifo", b'6', 0o600, 0, b"", b"")
        .file("./nested/deep/file", 0o600, b"x") // parents created on demand
        .finish();
    let stats = unpack_into(t.path(), &tar, Limits::default()).unwrap();
    assert_eq!(stats.bytes, 10 + 7 + 1);
    let p = t.path();
    let tool = std::fs::metadata(p.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        tool.ino(),
        std::fs::metadata(p.join("bin/tool2")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(p.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert!(std::fs::metadata(p.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(std::fs::read(p.join("nested/deep/file")).unwrap(), b"x");
    let data = std::fs::metadata(p.join("data")).unwrap();
    assert_eq!(data.permissions().mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!((data.uid(), data.gid()), (4242, 4243));
        let mut v = [0u8; 16];
        let n = rfs::getxattr(p.join("data"), "user.note", &mut v[..]);
        if let Ok(n) = n {
            assert_eq!(&v[..n], b"hello");
        }
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        eprintln!("skipped: creating overlay whiteouts needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .dir("etc")
        .file("etc/.wh.passwd", 0o644, b"")
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/new", 0o644, b"n")
        .finish();
    unpack_into(t.path(), &tar, Limits::default()).unwrap();
    let wh = std::fs::symlink_metadata(t.path().join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut v = [0u8; 4];
    let n = rfs::getxattr(t.path().join("var/cache"), OVERLAY_OPAQUE_XATTR, &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(t.path().join("var/cache/new").exists());
}

#[test]
fn whiteouts_below_a_replaced_directory_are_moot() {
    // umoci writes a directory replaced by a file or a symlink as the new entry
    // followed by whiteouts *below* it (`d`, then `d/.wh.sub`). The whiteouts name
    // lower-layer paths already hidden by `d`: nothing to do, and never through
    // the symlink (that would delete `target/sub` or fail on a dangling link).
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .file("dir2file", 0o644, b"now a file")
        .file("dir2file/.wh.sub", 0o644, b"")
        .symlink("dangling", "in-a-lower-layer")
        .file("dangling/.wh.sub", 0o644, b"")
        .dir("target")
        .symlink("dir2link", "target")
        .file("dir2link/.wh.sub", 0o644, b"")
        .file("dir2link/.wh..wh..opq", 0o644, b"")
        .finish();
    unpack_into(t.path(), &tar, Limits::default()).unwrap();
    let p = t.path();
    assert_eq!(std::fs::read(p.join("dir2file")).unwrap(), b"now a file");
    assert!(std::fs::symlink_metadata(p.join("dangling"))
        .unwrap()
        .is_symlink());
    assert_eq!(
        std::fs::read_dir(p.join("target")).unwrap().count(),
        0,
        "a whiteout was made through the symlink"
    );
    if is_root() {
        let mut v = [0u8; 4];
        assert!(
            rfs::getxattr(p.join("target"), OVERLAY_OPAQUE_XATTR, &mut v[..]).is_err(),
            "opaque marker set through the symlink"
        );
    }
}

fn assert_hostile(tar: &[u8], what: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let err = unpack_into(&root, tar, Limits::default()).expect_err(what);
    let msg = err.to_string();
    assert!(
        msg.contains("hostile")
            || msg.contains("limit")
            || msg.contains("hard link")
            || msg.contains("symlink"),
        "{what}: {msg}"
    );
    // Nothing next to the root.
    let siblings: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(siblings.len(), 1, "{what}: wrote beside the root");
    t
}

#[test]
fn refuses_traversal_absolute_and_escaping_links() {
    assert_hostile(
        &TarBuf::default().file("../escape", 0o644, b"x").finish(),
        "dotdot",
    );
    assert_hostile(
        &TarBuf::default()
            .file("a/../../escape", 0o644, b"x")
            .finish(),
        "inner dotdot",
    );
    assert_hostile(
        &TarBuf::default().file("/abs", 0o644, b"x").finish(),
        "absolute",
    );
    assert_hostile(
        &TarBuf::default().hardlink("h", "../../etc/passwd").finish(),
        "hardlink dotdot",
    );
    assert_hostile(
        &TarBuf::default().hardlink("h", "/etc/passwd").finish(),
        "hardlink absolute",
    );
    assert_hostile(
        &TarBuf::default().hardlink("h", "missing").finish(),
        "hardlink to nothing",
    );
    assert_hostile(
        &TarBuf::default().dir("d").hardlink("h", "d").finish(),
        "hardlink to dir",
    );
}

#[test]
fn symlinks_cannot_lead_writes_outside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap();
    // The symlink resolves inside the root, where its target does not exist:
    // the write fails with a clear error instead of landing outside.
    let t = assert_hostile(
        &TarBuf::default()
            .symlink("evil", target)
            .file("evil/pwned", 0o644, b"x")
            .finish(),
        "write through an escaping symlink",
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "write escaped through a symlink"
    );
    drop(t);
    // When the symlink's target exists inside the root, the write lands there.
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .dir(target.trim_start_matches('/'))
        .symlink("evil", target)
        .file("evil/pwned", 0o644, b"x")
        .symlink("up", "../../../../../../..")
        .file("up/pwned2", 0o644, b"y")
        .finish();
    unpack_into(t.path(), &tar, Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "write escaped through a symlink"
    );
    let inside = t.path().join(target.trim_start_matches('/')).join("pwned");
    assert_eq!(std::fs::read(&inside).unwrap(), b"x");
    assert_eq!(std::fs::read(t.path().join("pwned2")).unwrap(), b"y");
    // A hard link to a symlink links the symlink, never its target.
    let t2 = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .symlink("l", "/etc/passwd")
        .hardlink("h", "l")
        .finish();
    unpack_into(t2.path(), &tar, Limits::default()).unwrap();
    assert!(std::fs::symlink_metadata(t2.path().join("h"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn limits_stop_bombs() {
    let big = vec![0u8; 10_000];
    let tar = TarBuf::default()
        .file("a", 0o644, &big)
        .file("b", 0o644, &big)
        .finish();
    let t = tempfile::tempdir().unwrap();
    let lim = Limits {
        max_layer_bytes: 15_000,
        ..Limits::default()
    };
    let e = unpack_into(t.path(), &tar, lim).unwrap_err().to_string();
    assert!(e.contains("unpacked layer size"), "{e}");

    let mut tb = TarBuf::default();
    for i in 0..20 {
        tb.file(&format!("f{i}"), 0o644, b"");
    }
    let t = tempfile::tempdir().unwrap();
    let lim = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let e = unpack_into(t.path(), &tb.finish(), lim)
        .unwrap_err()
        .to_string();
    assert!(e.contains("entry count"), "{e}");

    // A GNU long name of 2 MiB would be buffered whole by the parser.
    let long = vec![b'a'; 2 << 20];
    let tar = TarBuf::default()
        .raw(b"././@LongLink", b'L', 0o644, 0, b"", &long)
        .file("x", 0o644, b"")
        .finish();
    let t = tempfile::tempdir().unwrap();
    let e = unpack_into(t.path(), &tar, Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata"), "{e}");

    let name = "d/".repeat(3000);
    let tar = TarBuf::default()
        .pax(&[("path", name.as_bytes())])
        .file("x", 0o644, b"")
        .finish();
    let t = tempfile::tempdir().unwrap();
    let e = unpack_into(t.path(), &tar, Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("path length"), "{e}");
}

#[test]
fn devices_and_overlay_xattrs_from_layers_are_not_trusted() {
    let t = tempfile::tempdir().unwrap();
    let mut tb = TarBuf::default();
    tb.raw(b"dev/sda", b'4', 0o600, 0, b"", b"");
    tb.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]);
    tb.dir("d");
    let stats = unpack_into(t.path(), &tb.finish(), Limits::default()).unwrap();
    assert_eq!(stats.skipped_devices, 1);
    assert!(!t.path().join("dev/sda").exists());
    let mut v = [0u8; 4];
    assert!(rfs::getxattr(t.path().join("d"), OVERLAY_OPAQUE_XATTR, &mut v[..]).is_err());
    // A char device 0/0 is a whiteout in disguise: refused even when allowed.
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .raw(b"fake", b'3', 0o600, 0, b"", b"")
        .finish();
    let lim = Limits {
        allow_devices: true,
        ..Limits::default()
    };
    assert!(unpack_into(t.path(), &tar, lim).is_err());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuf::default()
        .dir("x")
        .file("x/inner", 0o644, b"1")
        .file("x", 0o644, b"now a file")
        .file("y", 0o644, b"first")
        .dir("y")
        .file("z", 0o644, b"old")
        .file("z", 0o600, b"new")
        .finish();
    unpack_into(t.path(), &tar, Limits::default()).unwrap();
    assert_eq!(std::fs::read(t.path().join("x")).unwrap(), b"now a file");
    assert!(t.path().join("y").is_dir());
    assert_eq!(std::fs::read(t.path().join("z")).unwrap(), b"new");
}

#[test]
fn truncated_archive_is_an_error() {
    let mut tar = TarBuf::default().file("a", 0o644, &[7u8; 5000]).finish();
    tar.truncate(2000);
    let t = tempfile::tempdir().unwrap();
    assert!(unpack_into(t.path(), &tar, Limits::default()).is_err());
}

#[test]
fn flat_merge_applies_whiteouts_opaque_dirs_and_replacements() {
    if !is_root() {
        eprintln!("skipped: overlay-format layers need root");
        return;
    }
    let l1 = tempfile::tempdir().unwrap();
    let l2 = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tar1 = TarBuf::default()
        .file("etc/passwd", 0o644, b"root")
        .file("etc/keep", 0o644, b"k")
        .file("cache/old1", 0o644, b"1")
        .file("cache/sub/old2", 0o644, b"2")
        .file("replaced/inner", 0o644, b"i")
        .file("bin/b", 0o755, b"bb")
        .hardlink("bin/b2", "bin/b")
        .finish();
    let tar2 = TarBuf::default()
        .file("etc/.wh.passwd", 0o644, b"")
        .dir("cache")
        .file("cache/.wh..wh..opq", 0o644, b"")
        .file("cache/new", 0o644, b"n")
        .file("replaced", 0o600, b"file now")
        .finish();
    unpack_into(l1.path(), &tar1, Limits::default()).unwrap();
    unpack_into(l2.path(), &tar2, Limits::default()).unwrap();
    merge::merge_layer(l1.path(), out.path(), &[]).unwrap();
    merge::merge_layer(l2.path(), out.path(), &[]).unwrap();
    let o = out.path();
    assert!(!o.join("etc/passwd").exists());
    assert_eq!(std::fs::read(o.join("etc/keep")).unwrap(), b"k");
    let mut cache: Vec<_> = std::fs::read_dir(o.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    cache.sort();
    assert_eq!(cache, vec!["new"]);
    assert_eq!(std::fs::read(o.join("replaced")).unwrap(), b"file now");
    let b = std::fs::metadata(o.join("bin/b")).unwrap();
    assert_eq!(b.ino(), std::fs::metadata(o.join("bin/b2")).unwrap().ino());
    assert_ne!(
        b.ino(),
        std::fs::metadata(l1.path().join("bin/b")).unwrap().ino(),
        "rootfs shares an inode with the store"
    );
    // The opaque marker itself is not copied into the flat tree.
    let mut v = [0u8; 4];
    assert!(rfs::getxattr(o.join("cache"), OVERLAY_OPAQUE_XATTR, &mut v[..]).is_err());
}
