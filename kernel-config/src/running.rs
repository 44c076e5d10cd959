//! The running kernel's config: `/proc/config.gz` (kernels built with
//! `IKCONFIG_PROC`, as the `base` fragment asks) or `/boot/config-$(uname -r)`
//! (distribution kernels). This is what `guest-agent` checks at start-up.

use std::path::{Path, PathBuf};

use crate::config::{Config, ReadConfigError};
use crate::version::KernelVersion;

/// Where the running kernel's config is looked for.
pub const PROC_CONFIG: &str = "/proc/config.gz";
/// Directory of distribution kernel configs (`config-<release>`).
pub const BOOT_DIR: &str = "/boot";
/// The running kernel's release (what `uname -r` prints).
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Why the running kernel's config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    /// Neither `/proc/config.gz` nor `/boot/config-<release>` exists.
    #[error(
        "the running kernel's config is not available: tried {}. Build the kernel with \
         CONFIG_IKCONFIG_PROC=y (the base fragment does), install its /boot/config file, \
         or pass --config FILE",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    NotFound {
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// A config file exists but could not be read or parsed.
    #[error(transparent)]
    Read(#[from] ReadConfigError),
}

/// The running kernel's config and where it was read from.
#[derive(Debug, Clone)]
pub struct RunningConfig {
    /// The parsed config (its kernel version from the header, else from the release).
    pub config: Config,
    /// The file it came from.
    pub source: PathBuf,
    /// The kernel release (`uname -r`), if readable.
    pub release: Option<String>,
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> std::io::Result<String> {
    Ok(std::fs::read_to_string(OSRELEASE)?.trim().to_string())
}

/// Reads the running kernel's config from `/proc/config.gz`, else
/// `/boot/config-$(uname -r)`.
pub fn read_running_config() -> Result<RunningConfig, RunningError> {
    read_running_config_from(
        Path::new(PROC_CONFIG),
        Path::new(BOOT_DIR),
        kernel_release().ok().as_deref(),
    )
}

/// [`read_running_config`] with the paths and release given, so it can be tested.
pub fn read_running_config_from(
    proc_config: &Path,
    boot_dir: &Path,
    release: Option<&str>,
) -> Result<RunningConfig, RunningError> {
    let mut tried = vec![proc_config.to_path_buf()];
    let mut candidates = vec![proc_config.to_path_buf()];
    if let Some(r) = release {
        let boot = boot_dir.join(format!("config-{r}"));
        tried.push(boot.clone());
        candidates.push(boot);
    } else {
        tried.push(boot_dir.join("config-<release: /proc/sys/kernel/osrelease unreadable>"));
    }
    for path in candidates {
        if !path.exists() {
            continue;
        }
        let mut config = Config::read(&path)?;
        if config.kernel_version().is_none() {
            config.set_kernel_version(release.and_then(KernelVersion::from_release));
        }
        return Ok(RunningConfig {
            config,
            source: path,
            release: release.map(String::from),
        });
    }
    Err(RunningError::NotFound { tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;
    use std::io::Write;

    #[test]
    fn prefers_proc_config_gz_then_boot() {
        let dir = tempfile::tempdir().unwrap();
        let proc_gz = dir.path().join("config.gz");
        let boot = dir.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        std::fs::write(
            boot.join("config-6.1.0-28-amd64"),
            "# Linux/x86 6.1.119 Kernel Configuration\nCONFIG_FROM_BOOT=y\n",
        )
        .unwrap();

        // No /proc/config.gz: the /boot file of the running release.
        let rc = read_running_config_from(&proc_gz, &boot, Some("6.1.0-28-amd64")).unwrap();
        assert_eq!(rc.source, boot.join("config-6.1.0-28-amd64"));
        assert_eq!(rc.config.get("FROM_BOOT"), Some(&Value::Yes));
        assert_eq!(rc.config.kernel_version().unwrap().to_string(), "6.1.119");

        // /proc/config.gz wins; it has no header here, so the release gives the version.
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&proc_gz).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(b"CONFIG_FROM_PROC=y\n# CONFIG_DEVMEM is not set\n")
            .unwrap();
        enc.finish().unwrap();
        let rc = read_running_config_from(&proc_gz, &boot, Some("6.12.117+deb12-amd64")).unwrap();
        assert_eq!(rc.source, proc_gz);
        assert_eq!(rc.config.get("FROM_PROC"), Some(&Value::Yes));
        assert_eq!(rc.config.get("DEVMEM"), Some(&Value::No));
        assert_eq!(rc.config.kernel_version().unwrap().to_string(), "6.12.117");
    }

    #[test]
    fn says_what_it_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            read_running_config_from(&dir.path().join("config.gz"), dir.path(), Some("9.9.9"))
                .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("config.gz") && text.contains("config-9.9.9"),
            "{text}"
        );
        assert!(text.contains("IKCONFIG_PROC"), "{text}");
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let proc_gz = dir.path().join("config.gz");
        std::fs::write(&proc_gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read_running_config_from(&proc_gz, dir.path(), None).unwrap_err();
        assert!(matches!(err, RunningError::Read(_)), "{err}");
    }
}
