//! A running development KBS (`dev-kbs`, from the attestation crate) on 127.0.0.1, one
//! per test, with its own resource directory.
//!
//! The binary path is passed in by the caller (a crate's `CARGO_BIN_EXE_dev-kbs`, or a
//! built `target/` path), because this fixture crate cannot depend on the binary. The
//! child is started with `--listen 127.0.0.1:0` (or a given port, to restart on the same
//! address) and the fixture waits for its `listening on <url>` line; dropping the fixture
//! kills the process and removes the directory.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long `dev-kbs` may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a [`DevKbs`].
#[derive(Debug, Clone, Default)]
pub struct DevKbsOptions {
    /// `--policy` (`allow-all`, `deny-sample` or a `.rego` file); allow-all by default.
    pub policy: Option<String>,
    /// `--token-ttl` in seconds.
    pub token_ttl: Option<u64>,
    /// More arguments, appended as given.
    pub extra_args: Vec<String>,
}

/// A running `dev-kbs` child; killed on drop.
#[derive(Debug)]
pub struct DevKbs {
    bin: PathBuf,
    opts: DevKbsOptions,
    child: Option<Child>,
    url: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl DevKbs {
    /// Starts `bin` on a free loopback port with an empty resource directory.
    pub fn start(bin: &Path, opts: DevKbsOptions) -> DevKbs {
        let dir = tempfile::Builder::new()
            .prefix("sealpod-dev-kbs-")
            .tempdir()
            .expect("create dev-kbs temp dir");
        fs::create_dir(dir.path().join("resources")).expect("create resources dir");
        let (child, url, port) = spawn(bin, &opts, dir.path(), 0);
        DevKbs {
            bin: bin.to_path_buf(),
            opts,
            child: Some(child),
            url,
            port,
            dir,
        }
    }

    /// The base URL, `http://127.0.0.1:PORT` (or `https://` when started with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The resource directory (`<repo>/<type>/<tag>` files).
    pub fn resources(&self) -> PathBuf {
        self.dir.path().join("resources")
    }

    /// Writes the resource `repo/type/tag`.
    pub fn put_resource(&self, path: &str, bytes: &[u8]) {
        let file = self.resources().join(path);
        fs::create_dir_all(file.parent().expect("resource path has a parent"))
            .expect("create resource dirs");
        fs::write(&file, bytes).expect("write resource");
    }

    /// Stops the KBS (its sessions are lost) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let (child, url, _) = spawn(&self.bin, &self.opts, self.dir.path(), self.port);
        self.child = Some(child);
        self.url = url;
    }

    /// Stops the KBS; requests then fail to connect.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The KBS log (its stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dev-kbs.log")).unwrap_or_default()
    }
}

impl Drop for DevKbs {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- dev-kbs log ----\n{}---- end of log ----", self.log());
        }
    }
}

fn spawn(bin: &Path, opts: &DevKbsOptions, dir: &Path, port: u16) -> (Child, String, u16) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dev-kbs.log"))
        .expect("create dev-kbs log");
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--resources")
        .arg(dir.join("resources"));
    if let Some(p) = &opts.policy {
        cmd.arg("--policy").arg(p);
    }
    if let Some(t) = opts.token_ttl {
        cmd.arg("--token-ttl").arg(t.to_string());
    }
    cmd.args(&opts.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .unwrap_or_else(|| panic!("dev-kbs printed an address without a port: {url}"));
            (child, url, port)
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(dir.join("dev-kbs.log")).unwrap_or_default();
            panic!("dev-kbs did not print its address within {START_TIMEOUT:?}\n--- log ---\n{log}")
        }
    }
}
