//! A real `docker-registry` (distribution 2.8.2) on 127.0.0.1, one per test.
//!
//! Each [`Registry`] owns a temp dir (config, storage, log, TLS material, htpasswd file)
//! and a child process; dropping it kills the process and removes the dir, so tests can run
//! in parallel and clean up even when they panic.
//!
//! Facts checked against distribution 2.8.2 on Debian 12:
//! - `auth.htpasswd` works over plain HTTP: `GET /v2/` answers `401` with
//!   `Www-Authenticate: Basic realm="..."` and `200` with the right Basic credentials
//!   (no TLS needed, unlike what older docs suggest).
//! - Blobs can be uploaded under `sha512:` digests (`PUT ...?digest=sha512:...`) and served
//!   back by that digest, and an OCI manifest referencing them can be PUT *by tag*; a
//!   manifest PUT *by a `sha512:` digest* is refused (`DIGEST_INVALID`: the registry names
//!   manifests by their sha256).
//! - Blobs are not re-verified when served, so [`Registry::plant_blob`] can make the registry
//!   serve bytes that do not match their digest (hostile-registry tests).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;

/// How long a registry may take to answer its first `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times to retry when another process grabbed the port we picked.
const PORT_ATTEMPTS: usize = 5;

/// How to start a [`Registry`]; the default is plain HTTP without auth.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a server cert for 127.0.0.1/localhost signed by a fresh test CA
    /// (see [`Registry::ca_pem_path`] and [`Registry::cert_dir`]).
    pub tls: bool,
    /// Require HTTP Basic auth with this `(user, password)` (bcrypt htpasswd file).
    pub htpasswd: Option<(String, String)>,
}

/// A running `docker-registry serve` child process with its own storage; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    opts: RegistryOptions,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits (at most ~10 s) until
    /// `GET /v2/` answers; panics with the registry log if it never does.
    pub fn start(opts: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("sealpod-registry-")
            .tempdir()
            .expect("create registry temp dir");
        fs::create_dir(dir.path().join("storage")).expect("create storage dir");
        if opts.tls {
            make_tls_material(dir.path());
        }
        if let Some((user, password)) = &opts.htpasswd {
            let out = cmd::run(Command::new("htpasswd").args(["-Bbn", user, password]));
            fs::write(dir.path().join("htpasswd"), out.stdout).expect("write htpasswd");
        }
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, config_yaml(dir.path(), port, &opts)).expect("write config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("create registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log fd"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry (is it installed?)");
            match wait_ready(&mut child, port, &log_path) {
                Ok(()) => {
                    return Registry {
                        child,
                        port,
                        opts,
                        dir,
                    }
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !log.contains("address already in use") {
                        panic!(
                            "docker-registry did not come up on 127.0.0.1:{port} within {START_TIMEOUT:?}\n--- registry log ---\n{log}"
                        );
                    }
                    last_log = log;
                }
            }
        }
        panic!("docker-registry could not get a free port in {PORT_ATTEMPTS} attempts\n{last_log}")
    }

    /// `127.0.0.1:PORT`, the registry's address (what goes in an image reference).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `("127.0.0.1", PORT)`, for clients that take host and port apart.
    pub fn host_port(&self) -> (&'static str, u16) {
        ("127.0.0.1", self.port)
    }

    /// The TCP port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://...` when TLS is on.
    pub fn base_url(&self) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// Whether this registry serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// The `(user, password)` the registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.opts
            .htpasswd
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// PEM file of the test CA that signed the server cert (TLS registries only), for the
    /// client under test to trust.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.dir.path().join("tls/ca.pem"))
    }

    /// A directory holding the CA as `ca.crt`, the layout skopeo's `--dest-cert-dir` and
    /// containers' `certs.d` expect (TLS registries only).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.dir.path().join("certs"))
    }

    /// The registry's log file (stdout and stderr, access log included).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's log so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Root of the filesystem storage driver (`docker/registry/v2/...` lives under it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest` (`alg:hex`).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = split_digest(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Writes `bytes` straight into storage as blob `digest` of repository `repo`, without
    /// checking that they hash to `digest`: the registry then serves them as that blob
    /// (and accepts manifests referencing it). For tampered-digest tests, which the v2
    /// API cannot produce because it verifies uploads.
    pub fn plant_blob(&self, repo: &str, digest: &str, bytes: &[u8]) {
        let data = self.blob_data_path(digest);
        fs::create_dir_all(data.parent().expect("blob dir")).expect("create blob dir");
        fs::write(&data, bytes).expect("write blob data");
        let (alg, hex) = split_digest(digest);
        let link_dir = self
            .storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_layers")
            .join(alg)
            .join(hex);
        fs::create_dir_all(&link_dir).expect("create layer link dir");
        fs::write(link_dir.join("link"), digest).expect("write layer link");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the registry answers or exits; on failure returns its log.
fn wait_ready(child: &mut Child, port: u16, log_path: &Path) -> Result<(), String> {
    let read_log = || {
        fs::read(log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(exited with {status})\n{}", read_log()));
        }
        // Our own log must say it listens: a probe alone could reach another process
        // that won the race for this port.
        if read_log().contains("listening on") && probe(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(read_log())
}

/// A port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// True once something on `port` answers an HTTP request with a status line. A TLS
/// registry answers plain HTTP with `400`, which is just as good a sign of life.
fn probe(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

fn split_digest(digest: &str) -> (&str, &str) {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("not a digest: {digest}"));
    assert!(hex.len() > 2, "not a digest: {digest}");
    (alg, hex)
}

fn config_yaml(dir: &Path, port: u16, opts: &RegistryOptions) -> String {
    let d = dir.display();
    let mut y = format!(
        r#"version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: "{d}/storage"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: sealpod-integration-test-secret
"#
    );
    if opts.tls {
        y.push_str(&format!(
            "  tls:\n    certificate: \"{d}/tls/server.pem\"\n    key: \"{d}/tls/server.key\"\n"
        ));
    }
    if opts.htpasswd.is_some() {
        y.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: sealpod-test\n    path: \"{d}/htpasswd\"\n"
        ));
    }
    y
}

/// Makes `tls/ca.pem`, `tls/server.{pem,key}` (SAN IP:127.0.0.1, DNS:localhost) and
/// `certs/ca.crt` with the `openssl` CLI.
fn make_tls_material(dir: &Path) {
    let tls = dir.join("tls");
    fs::create_dir(&tls).expect("create tls dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    cmd::run(
        Command::new("openssl")
            .current_dir(&tls)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "7"])
            .args(["-subj", "/CN=sealpod test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    cmd::run(
        Command::new("openssl")
            .current_dir(&tls)
            .args(["req", "-new"])
            .args(ec)
            .args(["-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", "/CN=127.0.0.1"]),
    );
    fs::write(
        tls.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    cmd::run(
        Command::new("openssl")
            .current_dir(&tls)
            .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"])
            .args(["-days", "7", "-extfile", "ext.cnf"]),
    );
    let certs = dir.join("certs");
    fs::create_dir(&certs).expect("create certs dir");
    fs::copy(tls.join("ca.pem"), certs.join("ca.crt")).expect("copy ca.crt");
}
