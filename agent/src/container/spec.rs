//! The container's OCI runtime config (`config.json`): converted from the
//! request's protobuf `Spec` (Kata's `oci.proto`, field for field), then
//! completed from the image config where the request left things empty, as
//! containerd does for a guest-pulled image whose config the host never saw.
//!
//! The result is plain JSON so the bundle can be written without a second
//! model of the spec; libcontainer parses and validates it when it creates
//! the container.

use serde_json::{json, Map, Value};

use crate::protocols::oci;

/// The OCI runtime spec version written when the request gives none.
const DEFAULT_OCI_VERSION: &str = "1.1.0";
/// `PATH` given to a process whose environment has none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an image config contributes to a process (the `config` object of
/// the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`K=V`).
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User` (`uid`, `uid:gid`, `name`, `name:group`).
    pub user: String,
}

impl ImageDefaults {
    /// Reads the `config` object of an OCI/Docker image config JSON; absent
    /// fields stay empty.
    pub fn from_image_config(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("the image config is not JSON: {e}"))?;
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let strings = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(ImageDefaults {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
        })
    }
}

/// Converts the request's spec to `config.json`, with `root.path` set to
/// `rootfs` (the agent decides where the rootfs is, never the host).
pub fn to_oci_config(spec: &oci::Spec, rootfs: &str) -> Value {
    let mut out = Map::new();
    out.insert(
        "ociVersion".into(),
        json!(if spec.Version.is_empty() {
            DEFAULT_OCI_VERSION
        } else {
            &spec.Version
        }),
    );
    out.insert(
        "process".into(),
        process(spec.Process.as_ref().unwrap_or_default()),
    );
    out.insert(
        "root".into(),
        json!({"path": rootfs, "readonly": spec.Root.as_ref().is_some_and(|r| r.Readonly)}),
    );
    if !spec.Hostname.is_empty() {
        out.insert("hostname".into(), json!(spec.Hostname));
    }
    out.insert(
        "mounts".into(),
        Value::Array(
            spec.Mounts
                .iter()
                .map(|m| json!({"destination": m.destination, "source": m.source, "type": m.type_, "options": m.options}))
                .collect(),
        ),
    );
    if !spec.Annotations.is_empty() {
        out.insert("annotations".into(), json!(spec.Annotations));
    }
    out.insert(
        "linux".into(),
        linux(spec.Linux.as_ref().unwrap_or_default()),
    );
    Value::Object(out)
}

fn process(p: &oci::Process) -> Value {
    let mut out = Map::new();
    out.insert("terminal".into(), json!(p.Terminal));
    if let Some(b) = p.ConsoleSize.as_ref() {
        out.insert(
            "consoleSize".into(),
            json!({"height": b.Height, "width": b.Width}),
        );
    }
    let u = p.User.as_ref().unwrap_or_default();
    let mut user = json!({"uid": u.UID, "gid": u.GID});
    if !u.AdditionalGids.is_empty() {
        user["additionalGids"] = json!(u.AdditionalGids);
    }
    if !u.Username.is_empty() {
        user["username"] = json!(u.Username);
    }
    out.insert("user".into(), user);
    out.insert("args".into(), json!(p.Args));
    out.insert("env".into(), json!(p.Env));
    out.insert(
        "cwd".into(),
        json!(if p.Cwd.is_empty() { "/" } else { &p.Cwd }),
    );
    if let Some(c) = p.Capabilities.as_ref() {
        out.insert(
            "capabilities".into(),
            json!({"bounding": c.Bounding, "effective": c.Effective, "inheritable": c.Inheritable,
                   "permitted": c.Permitted, "ambient": c.Ambient}),
        );
    }
    if !p.Rlimits.is_empty() {
        out.insert(
            "rlimits".into(),
            Value::Array(
                p.Rlimits
                    .iter()
                    .map(|r| json!({"type": r.Type, "hard": r.Hard, "soft": r.Soft}))
                    .collect(),
            ),
        );
    }
    out.insert("noNewPrivileges".into(), json!(p.NoNewPrivileges));
    if p.OOMScoreAdj != 0 {
        out.insert("oomScoreAdj".into(), json!(p.OOMScoreAdj));
    }
    if !p.ApparmorProfile.is_empty() {
        out.insert("apparmorProfile".into(), json!(p.ApparmorProfile));
    }
    if !p.SelinuxLabel.is_empty() {
        out.insert("selinuxLabel".into(), json!(p.SelinuxLabel));
    }
    Value::Object(out)
}

fn linux(l: &oci::Linux) -> Value {
    let mut out = Map::new();
    let ids = |m: &[oci::LinuxIDMapping]| -> Value {
        Value::Array(
            m.iter()
                .map(|i| json!({"containerID": i.ContainerID, "hostID": i.HostID, "size": i.Size}))
                .collect(),
        )
    };
    if !l.UIDMappings.is_empty() {
        out.insert("uidMappings".into(), ids(&l.UIDMappings));
    }
    if !l.GIDMappings.is_empty() {
        out.insert("gidMappings".into(), ids(&l.GIDMappings));
    }
    if !l.Sysctl.is_empty() {
        out.insert("sysctl".into(), json!(l.Sysctl));
    }
    if let Some(r) = l.Resources.as_ref() {
        out.insert("resources".into(), resources(r));
    }
    if !l.CgroupsPath.is_empty() {
        out.insert("cgroupsPath".into(), json!(l.CgroupsPath));
    }
    out.insert(
        "namespaces".into(),
        Value::Array(
            l.Namespaces
                .iter()
                .map(|n| {
                    let mut ns = json!({"type": n.Type});
                    if !n.Path.is_empty() {
                        ns["path"] = json!(n.Path);
                    }
                    ns
                })
                .collect(),
        ),
    );
    if !l.Devices.is_empty() {
        out.insert(
            "devices".into(),
            Value::Array(
                l.Devices
                    .iter()
                    .map(|d| {
                        json!({"path": d.Path, "type": d.Type, "major": d.Major, "minor": d.Minor,
                                    "fileMode": d.FileMode, "uid": d.UID, "gid": d.GID})
                    })
                    .collect(),
            ),
        );
    }
    if !l.RootfsPropagation.is_empty() {
        out.insert("rootfsPropagation".into(), json!(l.RootfsPropagation));
    }
    if !l.MaskedPaths.is_empty() {
        out.insert("maskedPaths".into(), json!(l.MaskedPaths));
    }
    if !l.ReadonlyPaths.is_empty() {
        out.insert("readonlyPaths".into(), json!(l.ReadonlyPaths));
    }
    Value::Object(out)
}

/// The OCI JSON of the request's resources (for UpdateContainer).
pub fn resources(r: &oci::LinuxResources) -> Value {
    let mut out = Map::new();
    if !r.Devices.is_empty() {
        out.insert(
            "devices".into(),
            Value::Array(
                r.Devices
                    .iter()
                    .map(|d| {
                        let mut v = json!({"allow": d.Allow, "access": d.Access});
                        if !d.Type.is_empty() {
                            v["type"] = json!(d.Type);
                        }
                        if d.Major >= 0 && !(d.Major == 0 && d.Minor == 0 && d.Type.is_empty()) {
                            v["major"] = json!(d.Major);
                            v["minor"] = json!(d.Minor);
                        }
                        v
                    })
                    .collect(),
            ),
        );
    }
    if let Some(m) = r.Memory.as_ref() {
        let mut v = Map::new();
        for (k, x) in [
            ("limit", m.Limit),
            ("reservation", m.Reservation),
            ("swap", m.Swap),
        ] {
            if x != 0 {
                v.insert(k.into(), json!(x));
            }
        }
        if m.DisableOOMKiller {
            v.insert("disableOOMKiller".into(), json!(true));
        }
        out.insert("memory".into(), Value::Object(v));
    }
    if let Some(c) = r.CPU.as_ref() {
        let mut v = Map::new();
        if c.Shares != 0 {
            v.insert("shares".into(), json!(c.Shares));
        }
        if c.Quota != 0 {
            v.insert("quota".into(), json!(c.Quota));
        }
        if c.Period != 0 {
            v.insert("period".into(), json!(c.Period));
        }
        if !c.Cpus.is_empty() {
            v.insert("cpus".into(), json!(c.Cpus));
        }
        if !c.Mems.is_empty() {
            v.insert("mems".into(), json!(c.Mems));
        }
        out.insert("cpu".into(), Value::Object(v));
    }
    if let Some(p) = r.Pids.as_ref() {
        if p.Limit != 0 {
            out.insert("pids".into(), json!({"limit": p.Limit}));
        }
    }
    Value::Object(out)
}

/// Fills what the request left empty from the image, as containerd does:
/// no args -> `Entrypoint + Cmd`; the image's environment first, the
/// request's entries override it by name; no cwd -> `WorkingDir`; root user
/// with no name and an image `User` -> that user (resolved by the caller
/// against the rootfs, see [`resolve_user`]). A `PATH` is always present.
pub fn apply_image_defaults(config: &mut Value, image: &ImageDefaults, user: Option<(u32, u32)>) {
    let process = &mut config["process"];
    let args_empty = process["args"].as_array().is_none_or(Vec::is_empty);
    if args_empty {
        let args: Vec<&String> = image.entrypoint.iter().chain(image.cmd.iter()).collect();
        process["args"] = json!(args);
    }
    let request_env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut env: Vec<String> = Vec::new();
    for e in image.env.iter().chain(request_env.iter()) {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    process["env"] = json!(env);
    let cwd = process["cwd"].as_str().unwrap_or("/");
    if (cwd.is_empty() || cwd == "/") && !image.working_dir.is_empty() {
        process["cwd"] = json!(image.working_dir);
    }
    let is_default_user = process["user"]["uid"] == 0
        && process["user"]["gid"] == 0
        && process["user"].get("username").is_none();
    if let (true, Some((uid, gid))) = (is_default_user, user) {
        process["user"]["uid"] = json!(uid);
        process["user"]["gid"] = json!(gid);
    }
}

/// Resolves an image `User` (`uid`, `uid:gid`, `name`, `name:group`)
/// against the rootfs's `/etc/passwd` and `/etc/group` contents. `None` for
/// an empty user; an error for a name that is not there.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Option<(u32, u32)>, String> {
    if user.is_empty() {
        return Ok(None);
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |file: &str, name: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(name))
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid))
                .and_then(|f| f.get(3).and_then(|x| x.parse().ok()))
                .unwrap_or(0);
            (uid, gid)
        }
        Err(_) => {
            let f = entry(passwd, u)
                .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
            let uid = f
                .get(2)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| format!("bad passwd entry for {u:?}"))?;
            let gid = f
                .get(3)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| format!("bad passwd entry for {u:?}"))?;
            (uid, gid)
        }
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)
                .and_then(|f| f.get(2).and_then(|x| x.parse().ok()))
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok(Some((uid, gid)))
}

/// What `runc spec` gives a container and a request may leave out: the
/// PID/IPC/UTS/mount namespaces (the network namespace is the sandbox's, as
/// in Kata), the standard mounts, a minimal capability set, masked and
/// read-only kernel paths. Only fills what is absent; and always puts the
/// cgroup under the agent's own `/sealpod/` parent.
pub fn fill_runtime_defaults(config: &mut Value, id: &str) {
    let linux = &mut config["linux"];
    if linux["namespaces"].as_array().is_none_or(Vec::is_empty) {
        linux["namespaces"] =
            json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    }
    if linux.get("maskedPaths").is_none() {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ]);
    }
    if linux.get("readonlyPaths").is_none() {
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    // The host does not choose where in the guest's cgroup tree a container
    // goes: one agent-owned parent, one leaf per container.
    linux["cgroupsPath"] = json!(format!("/{}", super::stats::container_cgroup(id)));
    if config["mounts"].as_array().is_none_or(Vec::is_empty) {
        config["mounts"] = json!([
            {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ]);
    }
    let process = &mut config["process"];
    if process.get("capabilities").is_none() {
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    }
    if process.get("rlimits").is_none() {
        process["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(args: &[&str], env: &[&str]) -> oci::Spec {
        let mut p = oci::Process::new();
        p.Args = args.iter().map(|s| s.to_string()).collect();
        p.Env = env.iter().map(|s| s.to_string()).collect();
        let mut s = oci::Spec::new();
        s.Process = protobuf::MessageField::some(p);
        s
    }

    #[test]
    fn conversion_uses_oci_names_and_our_rootfs() {
        let mut s = spec_with(&["/bin/true"], &[]);
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = "pid".into();
        let mut l = oci::Linux::new();
        l.Namespaces.push(ns);
        l.CgroupsPath = "/sealpod/c1".into();
        s.Linux = protobuf::MessageField::some(l);
        let mut root = oci::Root::new();
        root.Path = "/host/says/here".into();
        s.Root = protobuf::MessageField::some(root);
        let c = to_oci_config(&s, "/run/sealpod/containers/c1/rootfs");
        assert_eq!(c["root"]["path"], "/run/sealpod/containers/c1/rootfs");
        assert_eq!(c["process"]["args"], json!(["/bin/true"]));
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "pid"}]));
        assert_eq!(c["linux"]["cgroupsPath"], "/sealpod/c1");
        assert_eq!(c["ociVersion"], DEFAULT_OCI_VERSION);
    }

    #[test]
    fn image_fills_what_the_request_left_empty() {
        let image = ImageDefaults {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
            working_dir: "/work".into(),
            user: String::new(),
        };
        let mut c = to_oci_config(&spec_with(&[], &["B=request"]), "/r");
        apply_image_defaults(&mut c, &image, Some((1000, 100)));
        assert_eq!(c["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(
            c["process"]["env"],
            json!(["PATH=/bin", "A=image", "B=request"])
        );
        assert_eq!(c["process"]["cwd"], "/work");
        assert_eq!(c["process"]["user"]["uid"], 1000);

        // The request's own args and a set user win.
        let mut s = spec_with(&["/bin/ls"], &[]);
        let mut p = s.Process.take().unwrap();
        let mut u = oci::User::new();
        u.UID = 5;
        p.User = protobuf::MessageField::some(u);
        s.Process = protobuf::MessageField::some(p);
        let mut c = to_oci_config(&s, "/r");
        apply_image_defaults(&mut c, &image, Some((1000, 100)));
        assert_eq!(c["process"]["args"], json!(["/bin/ls"]));
        assert_eq!(c["process"]["user"]["uid"], 5);
        // No PATH anywhere: a default one.
        let mut c = to_oci_config(&spec_with(&["x"], &[]), "/r");
        apply_image_defaults(&mut c, &ImageDefaults::default(), None);
        assert_eq!(c["process"]["env"][0], DEFAULT_PATH);
    }

    #[test]
    fn users_resolve_against_the_image() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";
        assert_eq!(resolve_user("", passwd, group).unwrap(), None);
        assert_eq!(
            resolve_user("app", passwd, group).unwrap(),
            Some((1000, 1001))
        );
        assert_eq!(
            resolve_user("app:staff", passwd, group).unwrap(),
            Some((1000, 50))
        );
        assert_eq!(
            resolve_user("1000", passwd, group).unwrap(),
            Some((1000, 1001))
        );
        assert_eq!(resolve_user("42:7", passwd, group).unwrap(), Some((42, 7)));
        assert!(resolve_user("ghost", passwd, group).is_err());
        assert!(resolve_user("app:ghosts", passwd, group).is_err());
    }

    #[test]
    fn image_config_is_read() {
        let d = ImageDefaults::from_image_config(
            br#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"/w","User":"1:2"}}"#,
        )
        .unwrap();
        assert_eq!(d.cmd, vec!["sh"]);
        assert_eq!(d.user, "1:2");
        assert!(ImageDefaults::from_image_config(b"nope").is_err());
    }
}
