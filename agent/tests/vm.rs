//! A real guest: qemu (TCG) boots Debian's 6.12 cloud kernel with an
//! initramfs whose `/init` is `guest-agent`; the host reaches the agent over
//! virtio-vsock through `vhost-device-vsock`'s hybrid-vsock unix socket,
//! exactly as a Firecracker or Cloud Hypervisor host reaches a Kata guest.
//!
//! The guest has no network but qemu's user-mode network with
//! `restrict=on`: it reaches the host's registry and dev KBS only through
//! two explicit `guestfwd` forwards at 10.0.2.100. The host configures the
//! guest's interface the Kata way (UpdateInterface, UpdateRoutes), then the
//! guest pulls busybox from the registry and runs it, attests (sample TEE)
//! to dev-kbs for the KEK of an encrypted image and runs that, and powers
//! off on DestroySandbox (qemu exits).
//!
//! Needs root, `qemu-system-x86_64`, `vhost-device-vsock` 0.3.0
//! (`scripts/install-deps.sh` installs it), apt access for the kernel .deb
//! (cached under /var/cache/sealpod/vm). Skips only when qemu cannot run.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent::client::{AgentClient, ConnectOptions};
use integration_tests::agent::{initdata_toml, sample_launch_config, workspace_bin};
use integration_tests::images::{BusyboxInRegistry, MOTD};
use integration_tests::kbs::{DevKbs, DevKbsOptions};
use integration_tests::registry::Registry;
use serde_json::{json, Value};

/// Where `scripts/install-deps.sh` installs vhost-device-vsock.
const VHOST_DEVICE_VSOCK: &str =
    "/var/cache/sealpod/vhost-device-vsock-0.3.0/bin/vhost-device-vsock";
/// The guest's view of the host (qemu user net `guestfwd` address).
const HOST_IN_GUEST: &str = "10.0.2.100";
/// The KBS resource holding the KEK of the encrypted image.
const KEK_ID: &str = "default/key/1";
/// Bound for the boot (qemu start to the first answered `check`).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one agentctl command (a pull under TCG included).
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for qemu to exit after DestroySandbox.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Why the VM test cannot run here at all (then it is skipped).
fn qemu_unusable() -> Option<String> {
    match Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("qemu-system-x86_64 --version failed: {s}")),
        Err(e) => Some(format!("qemu-system-x86_64 not runnable: {e}")),
    }
}

/// A child in its own process group, killed (the whole group) on drop.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { name, child }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        eprintln!("vm test: {} stopped", self.name);
    }
}

/// The running VM: vhost-device-vsock, qemu and their files.
struct Vm {
    // Field order = drop order: qemu first, then the vsock device.
    qemu: Proc,
    _vhost: Proc,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Vm {
    fn uds(&self) -> PathBuf {
        self.dir.path().join("vm.vsock")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// `agentctl --hybrid-vsock --timeout SECS` with `args`, bounded.
    fn agentctl(&self, timeout_secs: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentctl"));
        cmd.arg("--addr")
            .arg(format!("unix://{}", self.uds().display()))
            .arg("--hybrid-vsock")
            .args(["--timeout", &timeout_secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_bounded(&mut cmd, CMD_TIMEOUT)
    }

    /// `agentctl` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.agentctl(60, args);
        assert!(
            out.status.success(),
            "agentctl {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn call(&self, method: &str, req: Value) -> Value {
        let out = self.ok(&["call", method, &req.to_string()]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{method} answered non-JSON {out:?}: {e}"))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- guest console ({:.1} s after qemu start) ----\n{}\n---- end of console ----",
                self.started.elapsed().as_secs_f64(),
                self.console()
            );
        }
    }
}

/// Runs `cmd`, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} took longer than {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds (or takes from the cache) the guest kernel and initramfs.
fn build_guest() -> (PathBuf, PathBuf, String) {
    let out = run_bounded(
        Command::new(repo_root().join("scripts/vm/build-guest.sh"))
            .arg("--agent")
            .arg(env!("CARGO_BIN_EXE_guest-agent"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/vm/build-guest.sh failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(String::from))
            .unwrap_or_else(|| panic!("build-guest printed no {k}=: {stdout}"))
    };
    (get("KERNEL").into(), get("INITRD").into(), get("KVER"))
}

fn port_of(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Starts vhost-device-vsock and qemu; the guest reaches `registry_port`
/// and `kbs_port` of the host's loopback at 10.0.2.100:5000 and :8080.
/// Writes the VM's initdata (KBS URL as the guest sees it, the pod policy) as a
/// disk image in `dir`, the Kata way; returns the image and the sample TEE's
/// launch field for it (hex), the stand-in for SNP HOST_DATA / TDX MRCONFIGID.
fn initdata_disk(dir: &Path) -> (PathBuf, String) {
    let toml = initdata_toml(&format!("http://{HOST_IN_GUEST}:8080"), &[]);
    let image = dir.join("initdata.img");
    std::fs::write(
        &image,
        attestation::initdata::device_image(toml.as_bytes()).expect("initdata image"),
    )
    .expect("write initdata image");
    (image, sample_launch_config(&toml))
}

fn boot(kernel: &Path, initrd: &Path, registry_port: u16, kbs_port: u16) -> Vm {
    let dir = tempfile::Builder::new()
        .prefix("sealpod-vm-")
        .tempdir()
        .expect("temp dir");
    let (initdata, launch_config) = initdata_disk(dir.path());
    let vhu = dir.path().join("vhu.sock");
    let uds = dir.path().join("vm.vsock");
    assert!(
        Path::new(VHOST_DEVICE_VSOCK).is_file(),
        "{VHOST_DEVICE_VSOCK} is missing: run scripts/install-deps.sh (it installs vhost-device-vsock 0.3.0)"
    );
    let vhost_log = std::fs::File::create(dir.path().join("vhost.log")).expect("log");
    let vhost = Proc::spawn(
        "vhost-device-vsock",
        Command::new(VHOST_DEVICE_VSOCK)
            .args(["--guest-cid", "3", "--socket"])
            .arg(&vhu)
            .arg("--uds-path")
            .arg(&uds)
            .stdin(Stdio::null())
            .stdout(vhost_log.try_clone().expect("log"))
            .stderr(vhost_log),
    );
    let t = Instant::now();
    while !vhu.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "vhost-device-vsock did not create {}",
            vhu.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let fwd = |guest_port: u16, host_port: u16| {
        format!(
            "guestfwd=tcp:{HOST_IN_GUEST}:{guest_port}-cmd:socat STDIO TCP:127.0.0.1:{host_port}"
        )
    };
    let netdev = format!(
        "user,id=n0,restrict=on,{},{}",
        fwd(5000, registry_port),
        fwd(8080, kbs_port)
    );
    // Words the kernel does not know and without a dot become init's
    // environment: the sample TEE's launch field reaches the agent that way.
    let append = format!(
        "console=ttyS0 quiet panic=-1 agent.log=info agent.tee=sample \
         agent.image_insecure_registries={HOST_IN_GUEST}:5000 \
         SEALPOD_SAMPLE_LAUNCH_CONFIG={launch_config}"
    );
    let qemu_log = std::fs::File::create(dir.path().join("qemu.log")).expect("log");
    let started = Instant::now();
    let qemu = Proc::spawn(
        "qemu",
        Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35,memory-backend=mem0",
                "-accel",
                "tcg",
                "-cpu",
                "max",
            ])
            .args(["-m", "1G", "-smp", "2", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            .args(["-object", "memory-backend-memfd,id=mem0,size=1G,share=on"])
            .arg("-chardev")
            .arg(format!("socket,id=vc0,path={}", vhu.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vc0"])
            .args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                initdata.display()
            ))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &append])
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone().expect("log"))
            .stderr(qemu_log),
    );
    Vm {
        qemu,
        _vhost: vhost,
        dir,
        started,
    }
}

/// Images in a registry on 127.0.0.1: plain busybox and busybox encrypted
/// for the KBS key `KEK_ID`.
struct Images {
    registry: Registry,
    kek: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn images() -> Images {
    let BusyboxInRegistry {
        registry,
        layout,
        dir,
    } = BusyboxInRegistry::start("vm/busybox:plain");
    let kek: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
    let kek_file = dir.path().join("kek");
    std::fs::write(&kek_file, &kek).expect("write kek");
    let out = run_bounded(
        Command::new(workspace_bin("image-rs"))
            .arg("copy")
            .arg(layout.skopeo_ref("latest"))
            .arg(format!("docker://{}/vm/busybox:kbs", registry.addr()))
            .arg("--encryption-key")
            .arg(format!("provider:kbs:///{KEK_ID}={}", kek_file.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "image-rs copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Images {
        registry,
        kek,
        _dir: dir,
    }
}

/// Health.Check round trips over one hybrid-vsock connection: p50, p99.
fn check_latency(uds: &Path, n: usize) -> (Duration, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = AgentClient::connect(&ConnectOptions {
            addr: format!("unix://{}", uds.display()).parse().expect("addr"),
            hybrid_vsock_port: Some(1024),
            timeout: Some(Duration::from_secs(10)),
        })
        .await
        .expect("connect over hybrid vsock");
        let req = json!({});
        for _ in 0..10 {
            client
                .call_json("grpc.Health/Check", &req)
                .await
                .expect("check");
        }
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            client
                .call_json("grpc.Health/Check", &req)
                .await
                .expect("check");
            lat.push(t.elapsed());
        }
        lat.sort();
        (lat[n / 2], lat[n * 99 / 100])
    })
}

#[test]
fn guest_agent_as_init_of_a_qemu_vm_over_vsock() {
    if let Some(why) = qemu_unusable() {
        eprintln!("SKIPPED: the VM test needs qemu-system-x86_64: {why}");
        return;
    }
    let t0 = Instant::now();
    let (kernel, initrd, kver) = build_guest();
    eprintln!(
        "vm test: guest kernel {kver} ({:.1} s to build or fetch the guest)",
        t0.elapsed().as_secs_f64()
    );
    let images = images();
    let kbs = DevKbs::start(&workspace_bin("dev-kbs"), DevKbsOptions::default());
    kbs.put_resource(KEK_ID, &images.kek);

    let mut vm = boot(&kernel, &initrd, images.registry.port(), port_of(kbs.url()));
    // Boot: wait until the agent answers over vsock.
    loop {
        if let Some(status) = vm.qemu.exited() {
            panic!(
                "qemu exited during boot: {status}\n{}",
                std::fs::read_to_string(vm.dir.path().join("qemu.log")).unwrap_or_default()
            );
        }
        let out = vm.agentctl(2, &["check"]);
        if out.status.success() {
            break;
        }
        assert!(
            vm.started.elapsed() < BOOT_TIMEOUT,
            "the agent did not answer check within {BOOT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let boot_to_check = vm.started.elapsed();
    eprintln!(
        "vm test: boot to first check: {:.2} s",
        boot_to_check.as_secs_f64()
    );

    // Initdata came in on its disk, matched the launch field, and its
    // policy guards the agent.
    let console = vm.console();
    assert!(
        console.contains("initdata matches the TEE's launch measurement"),
        "{console}"
    );
    assert!(
        console.contains("agent policy loaded from initdata"),
        "{console}"
    );

    let details = vm.call("GetGuestDetails", json!({"mem_block_size": true}));
    assert_eq!(details["agent_details"]["init_daemon"], true, "{details}");

    let (p50, p99) = check_latency(&vm.uds(), 200);
    eprintln!("vm test: 200 checks over vsock: p50 {p50:?} p99 {p99:?}");

    // The network, the Kata way: the host tells the guest its address and routes.
    let iface = vm.call(
        "UpdateInterface",
        json!({"interface": {"name": "eth0", "hwAddr": "52:54:00:12:34:56", "mtu": 1500,
            "IPAddresses": [{"family": "v4", "address": "10.0.2.15", "mask": "24"}]}}),
    );
    assert_eq!(iface["name"], "eth0", "{iface}");
    assert!(
        iface["IPAddresses"].to_string().contains("10.0.2.15"),
        "{iface}"
    );
    let routes = vm.call(
        "UpdateRoutes",
        json!({"routes": {"Routes": [{"dest": "default", "gateway": "10.0.2.2", "device": "eth0"}]}}),
    );
    assert!(routes.to_string().contains("10.0.2.2"), "{routes}");

    vm.call(
        "CreateSandbox",
        json!({"hostname": "sealpod-vm", "sandbox_id": "vm-test"}),
    );

    // busybox pulled BY THE GUEST from the host's registry, through guestfwd.
    let plain = format!("{HOST_IN_GUEST}:5000/vm/busybox:plain");
    let t = Instant::now();
    let out = vm.ok(&[
        "run",
        &plain,
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/motd; echo ran-in-the-vm",
    ]);
    let busybox_time = t.elapsed();
    assert!(
        out.contains(MOTD.trim()) && out.contains("ran-in-the-vm"),
        "{out}"
    );
    eprintln!(
        "vm test: busybox pulled and run in the guest: {:.2} s",
        busybox_time.as_secs_f64()
    );

    // The encrypted image: the guest attests (sample TEE) to dev-kbs for the KEK.
    let encrypted = format!("{HOST_IN_GUEST}:5000/vm/busybox:kbs");
    let t = Instant::now();
    let out = vm.ok(&["run", &encrypted, "--", "/bin/cat", "/etc/motd"]);
    assert!(out.contains(MOTD.trim()), "{out}");
    eprintln!(
        "vm test: KBS-encrypted image run in the guest: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        kbs.log().contains("released"),
        "the KBS released no key:\n{}",
        kbs.log()
    );

    // The initdata policy refuses exec.
    let out = vm.agentctl(30, &["exec", "some-container", "--", "/bin/sh"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ExecProcessRequest"),
        "exec was not refused by the initdata policy: {err}"
    );

    // DestroySandbox powers the VM off: qemu exits.
    vm.call("DestroySandbox", json!({}));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = vm.qemu.exited() {
            break s;
        }
        assert!(
            t.elapsed() < POWER_OFF_TIMEOUT,
            "qemu still runs {POWER_OFF_TIMEOUT:?} after DestroySandbox"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "qemu exit status {status}");
    assert!(
        vm.console().contains("reboot: Power down"),
        "no power down on the console"
    );
    let mut summary = std::io::stderr();
    let _ = writeln!(
        summary,
        "vm test summary: kernel {kver}; boot to check {:.2} s; check p50 {p50:?} p99 {p99:?}; busybox {:.2} s; \
         power off {:.2} s after DestroySandbox; whole test {:.1} s",
        boot_to_check.as_secs_f64(),
        busybox_time.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
