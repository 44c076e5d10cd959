//! `kernel-config`: list, merge and check Sealpod's guest kernel config fragments.
//! A thin command line over the `kernel_config` library.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kernel_config::{running, Config, FragmentSet};

const AFTER_HELP: &str = "\
Examples:
  kernel-config list
  kernel-config merge --features base,vsock,container,snp > guest.config
      (then, in a kernel tree: scripts/kconfig/merge_config.sh -m .config guest.config
       && make olddefconfig)
  kernel-config check --config .config --features base,vsock,container,snp
  kernel-config check --running --format json

Features: fragment names, comma-separated; 'default' = every fragment not marked
optional, 'all' = every fragment. Each fragment's requirements are added.

Exit status: 0 = ok (check: nothing failed), 1 = a check failed or an error occurred,
2 = bad command line.";

/// Sealpod guest kernel config fragments: list them, merge them into one .config
/// fragment, and check a kernel config (a file or the running kernel) against them.
#[derive(Debug, Parser)]
#[command(name = "kernel-config", version, after_help = AFTER_HELP)]
struct Cli {
    /// Read fragments (NAME.config files) from DIR instead of the ones built into
    /// this binary.
    #[arg(long, global = true, value_name = "DIR")]
    fragments_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the fragments (features): name, whether default, what they are for.
    List {
        /// Also list each fragment's options with their reasons.
        #[arg(long)]
        options: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Merge fragments into one .config fragment for the kernel's merge_config.sh.
    ///
    /// Writes the merged fragment (with every option's reasons as comments) to stdout
    /// or --output. Fails, listing them, if two fragments want an option in
    /// incompatible ways (e.g. one needs =y, another forbids it).
    Merge {
        /// Features to merge, comma-separated [default: default].
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        features: Vec<String>,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a kernel config (a file or the running kernel) against fragments.
    ///
    /// Reports every required option that is missing, has the wrong value or is a
    /// module where built-in is needed, and every forbidden option that is set, each
    /// with its fragment and reason; exits 1 on any of these. An option absent from a
    /// kernel older than its min-kernel marker is reported as "too new for this
    /// kernel", a warning (a failure with --strict).
    Check {
        #[command(flatten)]
        source: Source,
        /// Features to check, comma-separated [default: default].
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        features: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Text output: also list the options that are fine.
        #[arg(long)]
        all: bool,
        /// Treat warnings (options too new for this kernel) as failures.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// The kernel config to check: a .config, or a gzip'd one such as config.gz.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the running kernel: /proc/config.gz, else /boot/config-$(uname -r).
    #[arg(long)]
    running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Human-readable text.
    Text,
    /// JSON (one document on stdout).
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kernel-config: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_fragments(dir: Option<&PathBuf>) -> Result<FragmentSet> {
    match dir {
        None => Ok(FragmentSet::embedded()),
        Some(d) => FragmentSet::from_dir(d)
            .with_context(|| format!("loading fragments from --fragments-dir {}", d.display())),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let fragments = load_fragments(cli.fragments_dir.as_ref())?;
    match cli.command {
        Command::List { options, format } => {
            list(&fragments, options, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { features, output } => {
            let merged = kernel_config::merge_features(&fragments, &features)
                .context("merging fragments")?;
            let text = merged.to_fragment_text();
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => write_stdout(&text)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            source,
            features,
            format,
            all,
            strict,
        } => {
            let (config, name) = match source.config {
                Some(path) => (Config::read(&path)?, path.display().to_string()),
                None => {
                    let rc = running::read_running_config()?;
                    (rc.config, rc.source.display().to_string())
                }
            };
            let report = kernel_config::check_config(&config, &fragments, &features, &name)
                .context("checking the config")?;
            match format {
                Format::Text => write_stdout(&report.to_text(all))?,
                Format::Json => write_stdout(&(report.to_json() + "\n"))?,
            }
            let failed = !report.ok || (strict && report.summary.warnings > 0);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn list(fragments: &FragmentSet, options: bool, format: Format) -> Result<()> {
    if format == Format::Json {
        let list: Vec<serde_json::Value> = fragments
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "default": f.default,
                    "requires": f.requires,
                    "summary": f.summary(),
                    "description": f.description,
                    "options": f.options.iter().map(|o| serde_json::json!({
                        "option": format!("CONFIG_{}", o.symbol),
                        "value": o.value,
                        "accepted": o.accept,
                        "min_kernel": o.min_kernel,
                        "reason": o.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return write_stdout(&(serde_json::to_string_pretty(&list)? + "\n"));
    }
    let width = fragments.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in fragments.iter() {
        let mut notes = Vec::new();
        if !f.default {
            notes.push("optional".to_string());
        }
        if !f.requires.is_empty() {
            notes.push(format!("requires {}", f.requires.join(", ")));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        out.push_str(&format!(
            "{:width$}  {:>2} options  {}{notes}\n",
            f.name,
            f.options.len(),
            f.summary()
        ));
        if options {
            for o in &f.options {
                let mut line = o.value.config_line(&o.symbol);
                if o.accept.len() > 1 {
                    let acc: Vec<String> = o.accept.iter().map(ToString::to_string).collect();
                    line.push_str(&format!("  (accept {})", acc.join(", ")));
                }
                if let Some(v) = o.min_kernel {
                    line.push_str(&format!("  (min-kernel {v})"));
                }
                out.push_str(&format!("    {line}\n        {}\n", o.reason));
            }
        }
    }
    out.push_str(&format!(
        "\ndefault features: {}\n",
        fragments.default_features().join(",")
    ));
    write_stdout(&out)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
