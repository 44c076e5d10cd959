//! configfs-tsm attestation reports (Linux >= 6.7, `CONFIG_TSM_REPORTS`;
//! `Documentation/ABI/testing/configfs-tsm-report`).
//!
//! The kernel's vendor-neutral report interface: a report is requested by
//! creating a directory under `/sys/kernel/config/tsm/report`, writing up to
//! 64 bytes to its `inblob` (plus options such as `privlevel`) and reading
//! `outblob` (the TDX quote, the SEV-SNP report) and `auxblob` (the SNP
//! certificate table). `provider` names the TEE driver behind it.
//!
//! Nothing locks an entry between our write and our read, so another
//! process writing into the same entry could make us read a report over
//! *its* data. `generation` counts the writes to an entry: it is read before
//! the first write and again after the blobs, and if it moved by more than
//! our own writes the report is thrown away and requested again on a fresh
//! entry (a bounded number of times). Entries are uniquely named per request
//! and always removed, also on error.
//!
//! The few filesystem operations go through [`TsmFs`] so that tests drive
//! the real request sequence against a fake kernel; [`ConfigFs`] is the real
//! implementation.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};

/// `provider` of the Intel TDX guest driver.
pub const PROVIDER_TDX: &str = "tdx_guest";
/// `provider` of the AMD SEV-SNP guest driver.
pub const PROVIDER_SEV: &str = "sev_guest";
/// Largest `inblob` the kernel accepts (`TSM_INBLOB_MAX`).
pub const INBLOB_MAX: usize = 64;
/// Largest privilege level (`TSM_PRIVLEVEL_MAX`; SEV-SNP VMPL 0..=3).
pub const PRIVLEVEL_MAX: u32 = 3;
/// Most bytes read from a blob. The kernel caps blobs at 32 KiB today; the
/// slack keeps a larger future limit working while a broken file still
/// cannot make us allocate without bound.
pub const BLOB_READ_LIMIT: usize = 1 << 20;
/// Most bytes read from a text attribute (`provider`, `generation`).
const TEXT_READ_LIMIT: usize = 4096;
/// Attempts, each on a fresh entry, before a generation race is reported.
pub const MAX_ATTEMPTS: u32 = 3;
/// Names tried when an entry name is already taken.
const MAX_NAME_TRIES: u32 = 16;

/// Makes entry names unique within the process (the pid makes them unique
/// across processes).
static ENTRY_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a configfs-tsm report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    /// The report directory does not exist.
    #[error("configfs-tsm is not available: {} does not exist (it needs Linux >= 6.7 with CONFIG_TSM_REPORTS and configfs mounted at /sys/kernel/config)", dir.display())]
    NotAvailable {
        /// The report directory looked for.
        dir: PathBuf,
    },
    /// The report entry could not be created.
    #[error("creating the configfs-tsm report entry {}: {source}", path.display())]
    CreateEntry {
        /// The entry.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading or writing an attribute failed.
    #[error("{op} {}: {source}", path.display())]
    Attribute {
        /// `"reading"` or `"writing"`.
        op: &'static str,
        /// The attribute file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `generation` does not hold a number.
    #[error("{} holds {content:?}, not a generation number", path.display())]
    BadGeneration {
        /// The attribute file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The TSM is another TEE's.
    #[error(
        "the configfs-tsm provider is {found:?}, not {expected:?}: this guest runs another TEE"
    )]
    WrongProvider {
        /// The provider asked for.
        expected: String,
        /// The provider present.
        found: String,
    },
    /// The input blob is empty or too long.
    #[error("inblob of {0} bytes: it must be 1 to {INBLOB_MAX} bytes")]
    BadInblob(usize),
    /// The privilege level is out of range.
    #[error("privilege level {0} is above the maximum {PRIVLEVEL_MAX}")]
    BadPrivlevel(u32),
    /// The TSM produced an empty report.
    #[error("{} is empty: the TSM produced no report", path.display())]
    EmptyOutblob {
        /// The attribute file.
        path: PathBuf,
    },
    /// A blob is larger than we read.
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The attribute file.
        path: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// Another writer used our entry between our write and our read.
    #[error("another writer raced on configfs-tsm entry {}: generation went from {before} to {after} where our own writes made it {expected}; the report may carry someone else's data and was discarded (gave up after {attempts} attempt(s), each on a fresh entry)", path.display())]
    GenerationRace {
        /// The entry of the last attempt.
        path: PathBuf,
        /// `generation` before our first write.
        before: u64,
        /// `generation` after reading the blobs.
        after: u64,
        /// What it should have been after our writes alone.
        expected: u64,
        /// Attempts made.
        attempts: u32,
    },
}

/// The filesystem operations a report needs, so tests can put a fake kernel
/// behind them.
pub trait TsmFs: Send + Sync + fmt::Debug {
    /// Creates a report entry (the kernel populates its attributes).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a report entry (configfs `rmdir` takes the attributes too).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Reads an attribute, at most `limit + 1` bytes so that the caller can
    /// tell an oversized one.
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;
    /// Writes an existing attribute in one go (never creates a file).
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
}

/// The real configfs, through plain file operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigFs;

impl TsmFs for ConfigFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)?
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        // No `create`: configfs attributes exist or the TSM lacks them.
        // configfs commits a binary attribute when the file is closed.
        let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
        f.write_all(data)?;
        f.flush()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// What to ask the TSM for.
#[derive(Debug, Clone, Copy)]
pub struct TsmRequest<'a> {
    /// The data the report binds (1 to [`INBLOB_MAX`] bytes).
    pub inblob: &'a [u8],
    /// The privilege level to report for (SEV-SNP VMPL), if any.
    pub privlevel: Option<u32>,
    /// Whether to read `auxblob` too (the SEV-SNP certificate table).
    pub auxblob: bool,
}

/// A report read from configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The provider that produced it (`tdx_guest`, `sev_guest`, ...).
    pub provider: String,
    /// The report (TDX quote, SEV-SNP report).
    pub outblob: Vec<u8>,
    /// The supplemental data, when asked for and non-empty.
    pub auxblob: Option<Vec<u8>>,
    /// How many attempts it took (more than 1 after a generation race).
    pub attempts: u32,
}

/// A configfs-tsm report directory and the filesystem behind it.
#[derive(Debug, Clone)]
pub struct Tsm {
    dir: PathBuf,
    fs: Arc<dyn TsmFs>,
}

/// A report entry, removed when dropped (on every path, errors included).
struct Entry<'a> {
    fs: &'a dyn TsmFs,
    path: PathBuf,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_dir(&self.path) {
            warn!(
                "removing configfs-tsm report entry {}: {e}",
                self.path.display()
            );
        }
    }
}

impl Tsm {
    /// The real configfs-tsm under `dir` (normally
    /// `/sys/kernel/config/tsm/report`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_fs(dir, Arc::new(ConfigFs))
    }

    /// configfs-tsm under `dir` through `fs` (tests pass a fake kernel).
    pub fn with_fs(dir: impl Into<PathBuf>, fs: Arc<dyn TsmFs>) -> Self {
        Tsm {
            dir: dir.into(),
            fs,
        }
    }

    /// The report directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the report directory exists (the kernel has configfs-tsm
    /// and configfs is mounted).
    pub fn available(&self) -> bool {
        self.fs.exists(&self.dir)
    }

    /// The provider behind the interface (`tdx_guest`, `sev_guest`, ...),
    /// read from a throw-away entry: which TEE this guest runs in.
    pub fn provider(&self) -> Result<String, TsmError> {
        let entry = self.create_entry()?;
        self.read_text(&entry.path, "provider")
    }

    /// A report from `provider` binding `request.inblob`, checked against
    /// concurrent writers; retried on a fresh entry up to [`MAX_ATTEMPTS`]
    /// times when one raced.
    pub fn report(&self, provider: &str, request: &TsmRequest<'_>) -> Result<TsmReport, TsmError> {
        if request.inblob.is_empty() || request.inblob.len() > INBLOB_MAX {
            return Err(TsmError::BadInblob(request.inblob.len()));
        }
        if let Some(level) = request.privlevel {
            if level > PRIVLEVEL_MAX {
                return Err(TsmError::BadPrivlevel(level));
            }
        }
        let mut attempt = 1;
        loop {
            match self.report_once(provider, request) {
                Ok(mut report) => {
                    report.attempts = attempt;
                    return Ok(report);
                }
                Err(TsmError::GenerationRace {
                    path,
                    before,
                    after,
                    expected,
                    ..
                }) => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(TsmError::GenerationRace {
                            path,
                            before,
                            after,
                            expected,
                            attempts: attempt,
                        });
                    }
                    warn!(
                        "configfs-tsm entry {} was written by someone else (generation {before} -> {after}, expected {expected}); retrying on a fresh entry",
                        path.display()
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn report_once(&self, provider: &str, request: &TsmRequest<'_>) -> Result<TsmReport, TsmError> {
        let entry = self.create_entry()?;
        let path = entry.path.as_path();
        debug!("configfs-tsm report through {}", path.display());

        let found = self.read_text(path, "provider")?;
        if found != provider {
            return Err(TsmError::WrongProvider {
                expected: provider.to_string(),
                found,
            });
        }

        let before = self.read_generation(path)?;
        let mut writes = 0u64;
        if let Some(level) = request.privlevel {
            self.write_attr(path, "privlevel", format!("{level}\n").as_bytes())?;
            writes += 1;
        }
        self.write_attr(path, "inblob", request.inblob)?;
        writes += 1;

        let outblob = self.read_blob(path, "outblob")?;
        if outblob.is_empty() {
            return Err(TsmError::EmptyOutblob {
                path: path.join("outblob"),
            });
        }
        let auxblob = if request.auxblob {
            match self.read_blob(path, "auxblob") {
                Ok(aux) if aux.is_empty() => None,
                Ok(aux) => Some(aux),
                // The attribute is only there when the TSM has supplemental data.
                Err(TsmError::Attribute { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };

        let after = self.read_generation(path)?;
        let expected = before.saturating_add(writes);
        if after != expected {
            return Err(TsmError::GenerationRace {
                path: path.to_path_buf(),
                before,
                after,
                expected,
                attempts: 1,
            });
        }
        Ok(TsmReport {
            provider: found,
            outblob,
            auxblob,
            attempts: 1,
        })
    }

    fn create_entry(&self) -> Result<Entry<'_>, TsmError> {
        if !self.available() {
            return Err(TsmError::NotAvailable {
                dir: self.dir.clone(),
            });
        }
        let mut last = None;
        for _ in 0..MAX_NAME_TRIES {
            let name = format!(
                "sealpod-{}-{}",
                std::process::id(),
                ENTRY_SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let path = self.dir.join(name);
            match self.fs.create_dir(&path) {
                Ok(()) => {
                    return Ok(Entry {
                        fs: self.fs.as_ref(),
                        path,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(source) => return Err(TsmError::CreateEntry { path, source }),
            }
        }
        let (path, source) = last.unwrap_or_else(|| {
            (
                self.dir.clone(),
                io::Error::new(io::ErrorKind::AlreadyExists, "no free entry name"),
            )
        });
        Err(TsmError::CreateEntry { path, source })
    }

    fn read_attr(&self, entry: &Path, name: &str, limit: usize) -> Result<Vec<u8>, TsmError> {
        let path = entry.join(name);
        let data = self
            .fs
            .read(&path, limit)
            .map_err(|source| TsmError::Attribute {
                op: "reading",
                path: path.clone(),
                source,
            })?;
        if data.len() > limit {
            return Err(TsmError::TooLarge { path, limit });
        }
        Ok(data)
    }

    fn read_blob(&self, entry: &Path, name: &str) -> Result<Vec<u8>, TsmError> {
        self.read_attr(entry, name, BLOB_READ_LIMIT)
    }

    fn read_text(&self, entry: &Path, name: &str) -> Result<String, TsmError> {
        let data = self.read_attr(entry, name, TEXT_READ_LIMIT)?;
        Ok(String::from_utf8_lossy(&data).trim().to_string())
    }

    fn read_generation(&self, entry: &Path) -> Result<u64, TsmError> {
        let text = self.read_text(entry, "generation")?;
        text.parse().map_err(|_| TsmError::BadGeneration {
            path: entry.join("generation"),
            content: text,
        })
    }

    fn write_attr(&self, entry: &Path, name: &str, data: &[u8]) -> Result<(), TsmError> {
        let path = entry.join(name);
        self.fs
            .write(&path, data)
            .map_err(|source| TsmError::Attribute {
                op: "writing",
                path,
                source,
            })
    }
}

/// A fake configfs-tsm for tests: a temporary directory that the real
/// [`ConfigFs`] works on, plus what the kernel does behind the attributes
/// (populating a new entry, counting writes in `generation`, producing
/// `outblob` from `inblob`, and optionally another writer racing).
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// Builds `outblob` from the `inblob` written.
    pub(crate) type MakeOutblob = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

    /// The fake kernel.
    pub(crate) struct FakeTsm {
        real: ConfigFs,
        provider: String,
        make_outblob: MakeOutblob,
        auxblob: Option<Vec<u8>>,
        /// The next this many `outblob` reads see a foreign write first.
        races: Mutex<u32>,
        /// Generation per live entry.
        generations: Mutex<HashMap<PathBuf, u64>>,
        /// Every `inblob` written, in order.
        pub(crate) inblobs: Mutex<Vec<Vec<u8>>>,
        /// Every `privlevel` written, in order.
        pub(crate) privlevels: Mutex<Vec<String>>,
    }

    impl fmt::Debug for FakeTsm {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("FakeTsm")
                .field("provider", &self.provider)
                .finish_non_exhaustive()
        }
    }

    impl FakeTsm {
        /// A TSM named `provider` whose reports are `make_outblob(inblob)`.
        pub(crate) fn new(provider: &str, make_outblob: MakeOutblob) -> Self {
            FakeTsm {
                real: ConfigFs,
                provider: provider.to_string(),
                make_outblob,
                auxblob: None,
                races: Mutex::new(0),
                generations: Mutex::new(HashMap::new()),
                inblobs: Mutex::new(Vec::new()),
                privlevels: Mutex::new(Vec::new()),
            }
        }

        /// Entries get an `auxblob` holding `aux`.
        pub(crate) fn with_auxblob(mut self, aux: Vec<u8>) -> Self {
            self.auxblob = Some(aux);
            self
        }

        /// Another writer races on the next `n` reports.
        pub(crate) fn with_races(self, n: u32) -> Self {
            *self.races.lock().unwrap() = n;
            self
        }

        fn bump(&self, entry: &Path) -> io::Result<()> {
            let mut gens = self.generations.lock().unwrap();
            let g = gens.entry(entry.to_path_buf()).or_insert(0);
            *g += 1;
            std::fs::write(entry.join("generation"), format!("{g}\n"))
        }
    }

    fn split(path: &Path) -> (PathBuf, String) {
        let entry = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (entry, name)
    }

    impl TsmFs for FakeTsm {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.real.create_dir(path)?;
            std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
            std::fs::write(path.join("generation"), "0\n")?;
            std::fs::write(path.join("inblob"), b"")?;
            std::fs::write(path.join("outblob"), b"")?;
            if self.provider == PROVIDER_SEV {
                std::fs::write(path.join("privlevel"), b"")?;
                std::fs::write(path.join("privlevel_floor"), "0\n")?;
            }
            if self.auxblob.is_some() {
                std::fs::write(path.join("auxblob"), b"")?;
            }
            self.generations
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), 0);
            Ok(())
        }

        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            // configfs's rmdir takes the attributes with it.
            for f in std::fs::read_dir(path)? {
                std::fs::remove_file(f?.path())?;
            }
            self.generations.lock().unwrap().remove(path);
            self.real.remove_dir(path)
        }

        fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
            let (entry, name) = split(path);
            match name.as_str() {
                "outblob" => {
                    let mut races = self.races.lock().unwrap();
                    if *races > 0 {
                        // Someone else wrote this entry's inblob in between.
                        *races -= 1;
                        std::fs::write(entry.join("inblob"), [0xeeu8; 64])?;
                        self.bump(&entry)?;
                    }
                    let inblob = std::fs::read(entry.join("inblob"))?;
                    std::fs::write(path, (self.make_outblob)(&inblob))?;
                }
                "auxblob" => {
                    if let Some(aux) = &self.auxblob {
                        std::fs::write(path, aux)?;
                    }
                }
                _ => {}
            }
            self.real.read(path, limit)
        }

        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            self.real.write(path, data)?;
            let (entry, name) = split(path);
            match name.as_str() {
                "inblob" => {
                    if data.len() > INBLOB_MAX {
                        return Err(io::Error::from_raw_os_error(libc::EINVAL));
                    }
                    self.inblobs.lock().unwrap().push(data.to_vec());
                    self.bump(&entry)
                }
                "privlevel" => {
                    self.privlevels
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(data).into_owned());
                    self.bump(&entry)
                }
                _ => Ok(()),
            }
        }

        fn exists(&self, path: &Path) -> bool {
            self.real.exists(path)
        }
    }

    /// The entries left behind under `dir`.
    pub(crate) fn leftover_entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{leftover_entries, FakeTsm};
    use super::*;

    fn echo() -> fake::MakeOutblob {
        Box::new(|inblob: &[u8]| {
            let mut out = b"REPORT:".to_vec();
            out.extend_from_slice(inblob);
            out
        })
    }

    fn setup(fake: FakeTsm) -> (tempfile::TempDir, Tsm, Arc<FakeTsm>) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(fake);
        let tsm = Tsm::with_fs(dir.path(), fake.clone());
        (dir, tsm, fake)
    }

    #[test]
    fn report_end_to_end_and_entry_removed() {
        let (dir, tsm, fake) = setup(FakeTsm::new(PROVIDER_TDX, echo()));
        assert_eq!(tsm.provider().unwrap(), PROVIDER_TDX);
        let inblob = [0x42u8; 64];
        let r = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &inblob,
                    privlevel: None,
                    auxblob: true,
                },
            )
            .unwrap();
        assert_eq!(r.provider, PROVIDER_TDX);
        assert_eq!(&r.outblob[..7], b"REPORT:");
        assert_eq!(&r.outblob[7..], &inblob[..]);
        // No auxblob attribute for this TSM: absent, not an error.
        assert_eq!(r.auxblob, None);
        assert_eq!(r.attempts, 1);
        assert_eq!(*fake.inblobs.lock().unwrap(), vec![inblob.to_vec()]);
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn privlevel_and_auxblob_are_counted_and_read() {
        let fake = FakeTsm::new(PROVIDER_SEV, echo()).with_auxblob(b"certs".to_vec());
        let (dir, tsm, fake) = setup(fake);
        let r = tsm
            .report(
                PROVIDER_SEV,
                &TsmRequest {
                    inblob: &[1, 2, 3],
                    privlevel: Some(0),
                    auxblob: true,
                },
            )
            .unwrap();
        // Two writes (privlevel, inblob): generation 0 -> 2, no race.
        assert_eq!(r.attempts, 1);
        assert_eq!(r.auxblob.as_deref(), Some(&b"certs"[..]));
        assert_eq!(*fake.privlevels.lock().unwrap(), vec!["0\n".to_string()]);
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_racing_writer_is_retried_on_a_fresh_entry() {
        let (dir, tsm, fake) = setup(FakeTsm::new(PROVIDER_TDX, echo()).with_races(1));
        let r = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &[7u8; 64],
                    privlevel: None,
                    auxblob: false,
                },
            )
            .unwrap();
        assert_eq!(r.attempts, 2);
        // The report is over our data, not the racing writer's.
        assert_eq!(&r.outblob[7..], &[7u8; 64][..]);
        assert_eq!(fake.inblobs.lock().unwrap().len(), 2);
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_persistent_race_fails_after_bounded_attempts_and_cleans_up() {
        let (dir, tsm, fake) = setup(FakeTsm::new(PROVIDER_TDX, echo()).with_races(100));
        let err = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &[7u8; 64],
                    privlevel: None,
                    auxblob: false,
                },
            )
            .unwrap_err();
        match &err {
            TsmError::GenerationRace {
                before,
                after,
                expected,
                attempts,
                ..
            } => {
                assert_eq!((*before, *after, *expected), (0, 2, 1));
                assert_eq!(*attempts, MAX_ATTEMPTS);
            }
            other => panic!("expected a generation race, got {other}"),
        }
        assert!(err.to_string().contains("another writer raced"), "{err}");
        assert_eq!(
            fake.inblobs.lock().unwrap().len(),
            usize::try_from(MAX_ATTEMPTS).unwrap()
        );
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn wrong_provider_fails_and_cleans_up() {
        let (dir, tsm, _) = setup(FakeTsm::new(PROVIDER_SEV, echo()));
        let err = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &[0u8; 64],
                    privlevel: None,
                    auxblob: false,
                },
            )
            .unwrap_err();
        assert!(matches!(err, TsmError::WrongProvider { .. }), "{err}");
        assert!(err.to_string().contains("sev_guest"), "{err}");
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_attribute_fails_and_cleans_up() {
        // tdx_guest has no privlevel attribute: writing it must fail (the
        // real write never creates files) and the entry still goes away.
        let (dir, tsm, _) = setup(FakeTsm::new(PROVIDER_TDX, echo()));
        let err = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &[0u8; 64],
                    privlevel: Some(0),
                    auxblob: false,
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, TsmError::Attribute { op: "writing", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("privlevel"), "{err}");
        assert!(leftover_entries(dir.path()).is_empty());
    }

    #[test]
    fn bad_requests_and_missing_interface() {
        let (_dir, tsm, _) = setup(FakeTsm::new(PROVIDER_TDX, echo()));
        let req = |inblob: &'static [u8], privlevel| TsmRequest {
            inblob,
            privlevel,
            auxblob: false,
        };
        assert!(matches!(
            tsm.report(PROVIDER_TDX, &req(&[], None)),
            Err(TsmError::BadInblob(0))
        ));
        assert!(matches!(
            tsm.report(PROVIDER_TDX, &req(&[0u8; 65], None)),
            Err(TsmError::BadInblob(65))
        ));
        assert!(matches!(
            tsm.report(PROVIDER_TDX, &req(&[1], Some(4))),
            Err(TsmError::BadPrivlevel(4))
        ));

        let gone = Tsm::new("/nonexistent/sealpod-test/tsm/report");
        assert!(!gone.available());
        let err = gone.provider().unwrap_err();
        assert!(matches!(err, TsmError::NotAvailable { .. }), "{err}");
        assert!(err.to_string().contains("CONFIG_TSM_REPORTS"), "{err}");
    }

    #[test]
    fn an_empty_outblob_is_an_error() {
        let (dir, tsm, _) = setup(FakeTsm::new(PROVIDER_TDX, Box::new(|_: &[u8]| Vec::new())));
        let err = tsm
            .report(
                PROVIDER_TDX,
                &TsmRequest {
                    inblob: &[1],
                    privlevel: None,
                    auxblob: false,
                },
            )
            .unwrap_err();
        assert!(matches!(err, TsmError::EmptyOutblob { .. }), "{err}");
        assert!(leftover_entries(dir.path()).is_empty());
    }
}
