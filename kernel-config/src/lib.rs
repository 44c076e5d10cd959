//! Guest kernel config fragments for Sealpod, and the code to merge them and to check a
//! kernel config against them.
//!
//! A confidential guest only works on a kernel built with the right options (vsock,
//! overlayfs, the SNP/TDX guest drivers and configfs-tsm reports, dm-verity, cgroups
//! and namespaces) and should carry as little else as possible. Each feature's
//! options live in a *fragment*: a plain `.config` fragment file under
//! `kernel-config/fragments/`, one per feature, every option with the reason it is
//! there. The fragments are built into this crate ([`fragment::EMBEDDED`]).
//!
//! ```no_run
//! // In guest-agent at start-up: warn about a kernel that lacks what the agent needs.
//! let report = kernel_config::check_running(&["base", "vsock", "container"])?;
//! for r in report.failures() {
//!     eprintln!("kernel: {} {} ({})", r.option, r.message, r.reason);
//! }
//! # Ok::<(), kernel_config::Error>(())
//! ```
//!
//! # Fragment syntax
//!
//! A fragment file `NAME.config` is valid input for the kernel's
//! `scripts/kconfig/merge_config.sh` as it is; the comments carry the extra meaning:
//!
//! ```text
//! # AMD SEV-SNP guest: encrypted memory and attestation reports.   <- header: description,
//! # requires: base                                                  <- other features merged first
//! # default: yes                                                    <- "no": optional feature
//!                                                                   <- blank line ends the header
//! # /dev/sev-guest: SNP attestation reports.                        <- reason (required)
//! # min-kernel: 5.19                                                <- first kernel with the symbol
//! # accept: y, m                                                    <- values that satisfy a check
//! CONFIG_SEV_GUEST=y                                                <- the value merge writes
//!
//! # /dev/mem: raw access to guest memory.
//! # CONFIG_DEVMEM is not set                                        <- must be off
//! ```
//!
//! - The comment lines directly above an option (no blank line between) are its
//!   reason; every option must have one. Comments followed by a blank line are
//!   section titles and are ignored.
//! - Directives are comment lines `# key: value` directly above an option:
//!   `min-kernel: X.Y[.Z]` (the symbol does not exist before that version: on an older
//!   kernel an absent symbol is reported as *too new for this kernel*, a warning, not a
//!   failure) and `accept: y, m` (the full list of accepted values; it must include
//!   the option's own value; without it only that value is accepted).
//! - Header directives: `requires: a, b` and `default: yes|no`.
//! - Values: `=y`, `=m`, `# CONFIG_X is not set` (or `=n`), `="string"`, `=123`, `=0x1f`.
//!   An option that must be off is satisfied by "is not set" and by an absent symbol.
//! - A comment must not start with `# CONFIG_` unless it is an "is not set" line
//!   (Kconfig and merge_config.sh would read it as an option); write symbol names in
//!   reasons without the prefix.
//!
//! # Modules
//!
//! - [`version`]: kernel versions of markers and configs.
//! - [`config`]: parsing a `.config` or `/proc/config.gz`.
//! - [`fragment`]: parsing fragments, the embedded set, feature lists.
//! - [`merge`](mod@merge): merging fragments, with conflicts reported.
//! - [`check`](mod@check): comparing a config with merged fragments, the [`Report`].
//! - [`running`]: finding the running kernel's config.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod fragment;
pub mod merge;
pub mod running;
pub mod version;

pub use check::{check, OptionResult, Report, Severity, Status};
pub use config::{Config, Value};
pub use fragment::{Fragment, FragmentSet};
pub use merge::{merge, Merged};
pub use version::KernelVersion;

/// Everything that can go wrong in the convenience functions of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fragments could not be loaded, or a feature name is unknown.
    #[error(transparent)]
    Fragment(#[from] fragment::FragmentError),
    /// The requested features conflict.
    #[error(transparent)]
    Merge(#[from] merge::MergeError),
    /// A config file could not be read.
    #[error(transparent)]
    ReadConfig(#[from] config::ReadConfigError),
    /// The running kernel's config could not be found or read.
    #[error(transparent)]
    Running(#[from] running::RunningError),
}

/// Resolves `features` (empty = the default set) in `fragments` and merges them.
pub fn merge_features<S: AsRef<str>>(
    fragments: &FragmentSet,
    features: &[S],
) -> Result<Merged, Error> {
    let resolved = fragments.resolve(features)?;
    Ok(merge(&resolved)?)
}

/// Checks `config` against `features` of `fragments`; `source` names the config in
/// the report.
pub fn check_config<S: AsRef<str>>(
    config: &Config,
    fragments: &FragmentSet,
    features: &[S],
    source: &str,
) -> Result<Report, Error> {
    let merged = merge_features(fragments, features)?;
    Ok(check(config, &merged, source))
}

/// Checks the running kernel against `features` (empty = the default set) of the
/// built-in fragments: what `guest-agent` calls at start-up to warn about a kernel
/// that lacks what it needs. Errors only if the config cannot be found or read, or a
/// feature name is unknown; a kernel that fails the check is an `Ok` report with
/// `ok == false`.
pub fn check_running<S: AsRef<str>>(features: &[S]) -> Result<Report, Error> {
    let running = running::read_running_config()?;
    check_config(
        &running.config,
        &FragmentSet::embedded(),
        features,
        &running.source.display().to_string(),
    )
}
