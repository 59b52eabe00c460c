//! The mount plan: a policy and a few host facts in, the ordered [`Step`]s that build the sandbox root out.

use std::path::Path;

use nix::mount::MsFlags;

use super::Step;
use crate::policy::Policy;

/// Device nodes bound from the host; nothing else exists in the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Top-level names that are symlinks into `/usr` on merged-/usr hosts.
const USR_LINKS: &[&str] = &["bin", "lib", "lib64", "sbin"];
/// Host files and directories shared read-only when present.
const HOST_ETC_DIRS: &[&str] = &["/etc/fonts", "/etc/ssl/certs"];
/// Host files copied (following symlinks) when present.
const HOST_ETC_COPIES: &[&str] = &["/etc/ld.so.cache", "/etc/localtime"];

/// What the plan needs to know about the host, gathered once so [`plan`] stays pure.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostFacts {
    /// Which of [`USR_LINKS`] exist as symlinks (merged /usr) and which as real directories.
    pub(crate) usr_links: Vec<(&'static str, bool)>,
    /// Which of [`HOST_ETC_DIRS`] and [`HOST_ETC_COPIES`] exist.
    pub(crate) present: Vec<&'static str>,
}

impl HostFacts {
    pub(crate) fn probe() -> Self {
        let usr_links = USR_LINKS
            .iter()
            .filter_map(|name| {
                let meta = std::fs::symlink_metadata(Path::new("/").join(name)).ok()?;
                Some((*name, meta.file_type().is_symlink()))
            })
            .collect();
        let present = HOST_ETC_DIRS.iter().chain(HOST_ETC_COPIES).copied().filter(|p| Path::new(p).exists()).collect();
        Self { usr_links, present }
    }
}

/// The ordered steps that build `policy`'s root.
pub(crate) fn plan(policy: &Policy, host: &HostFacts) -> Vec<Step> {
    let root = &policy.root_dir;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    let inside_path = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let rw = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let (uid, gid) = (policy.uid, policy.gid);
    let mut steps = vec![
        Step::MakePrivate,
        Step::Tmpfs { target: root.clone(), options: "size=16m,mode=0755".into(), flags: rw },
        Step::Bind { source: "/usr".into(), target: inside("usr"), flags: ro },
    ];
    for (name, is_link) in &host.usr_links {
        let source = Path::new("/").join(name);
        steps.push(if *is_link {
            Step::Symlink { to: Path::new("usr").join(name), link: inside(name) }
        } else {
            Step::Bind { source, target: inside(name), flags: ro }
        });
    }
    steps.push(Step::Mkdir { path: inside("etc") });
    for dir in HOST_ETC_DIRS.iter().filter(|d| host.present.contains(d)) {
        steps.push(Step::Bind { source: dir.into(), target: inside(dir), flags: ro });
    }
    for (file, contents) in etc_files(policy) {
        steps.push(Step::WriteFile { path: inside(file), contents });
    }
    for file in HOST_ETC_COPIES.iter().filter(|f| host.present.contains(f)) {
        steps.push(Step::Copy { source: file.into(), target: inside(file) });
    }
    steps.push(Step::Proc { target: inside("proc") });
    steps.push(Step::Tmpfs {
        target: inside("dev"),
        options: "size=64k,mode=0755".into(),
        // nodev here is fine: the device nodes are binds, and a bind mount does not have it.
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    });
    for dev in DEVICES {
        steps.push(Step::Bind {
            source: Path::new("/dev").join(dev),
            target: inside("dev").join(dev),
            flags: MsFlags::MS_NOSUID,
        });
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink { to: to.into(), link: inside("dev").join(link) });
    }
    let t = &policy.tmpfs;
    for (target, options) in [
        ("dev/shm", format!("size={},mode=1777", t.dev_shm)),
        ("tmp", format!("size={},mode=1777", t.tmp)),
        ("sandbox", format!("size={},mode=0700,uid={uid},gid={gid}", t.sandbox)),
    ] {
        steps.push(Step::Tmpfs { target: inside(target), options, flags: rw });
    }
    for dir in &policy.owned_dirs {
        steps.push(Step::OwnedDir { path: inside_path(&dir.path), mode: dir.mode, uid, gid });
    }
    for bind in &policy.ro_binds {
        steps.push(Step::Bind { source: bind.source.clone(), target: inside_path(&bind.target), flags: ro });
    }
    for bind in &policy.rw_binds {
        steps.push(Step::Bind { source: bind.source.clone(), target: inside_path(&bind.target), flags: rw });
    }
    steps.push(Step::PivotRoot { new_root: root.clone() });
    steps.push(Step::RemountReadOnly {
        target: "/dev".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    });
    steps.push(Step::RemountReadOnly { target: "/".into(), flags: rw });
    steps
}

/// The generated `/etc` files: just enough identity and name resolution for Python and its libraries.
fn etc_files(policy: &Policy) -> Vec<(&'static str, String)> {
    let (uid, gid, name) = (policy.uid, policy.gid, &policy.name);
    vec![
        (
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:sandbox:/sandbox:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("etc/group", format!("root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n")),
        ("etc/hosts", format!("127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")),
        ("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::builder("sbx-7")
            .identity(20_001, 20_002)
            .root_dir("/run/roots/sbx-7")
            .argv(["/usr/bin/python3"])
            .ro_bind("/opt/py", "/opt/py")
            .rw_bind("/var/sessions/sbx-7", "/run/kernel")
            .owned_dir("/tmp/.cfg", 0o755)
            .owned_dir("/tmp/.cfg/secret", 0o700)
            .build()
            .unwrap()
    }

    fn host() -> HostFacts {
        HostFacts {
            usr_links: vec![("bin", true), ("lib64", true)],
            present: vec!["/etc/ssl/certs", "/etc/ld.so.cache"],
        }
    }

    fn position(steps: &[Step], pred: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(pred).expect("step missing")
    }

    /// The order that makes the root safe: private first, root tmpfs before anything in it, pivot after every
    /// mount, and the read-only remount of / last.
    #[test]
    fn plan_order() {
        let steps = plan(&policy(), &host());
        assert_eq!(steps[0], Step::MakePrivate);
        assert!(matches!(&steps[1], Step::Tmpfs { target, .. } if target == Path::new("/run/roots/sbx-7")));
        let pivot = position(&steps, |s| matches!(s, Step::PivotRoot { .. }));
        let session =
            position(&steps, |s| matches!(s, Step::Bind { source, .. } if source == Path::new("/var/sessions/sbx-7")));
        let tmp = position(&steps, |s| matches!(s, Step::Tmpfs { target, .. } if target.ends_with("tmp")));
        assert!(tmp < session && session < pivot);
        assert_eq!(
            steps.last(),
            Some(&Step::RemountReadOnly { target: "/".into(), flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV })
        );
        // Owned directories on their tmpfs, in the policy's order (parents first), for the payload's user.
        let cfg = position(&steps, |s| matches!(s, Step::OwnedDir { path, .. } if path.ends_with("tmp/.cfg")));
        assert_eq!(
            steps[cfg..cfg + 2],
            [
                Step::OwnedDir { path: "/run/roots/sbx-7/tmp/.cfg".into(), mode: 0o755, uid: 20_001, gid: 20_002 },
                Step::OwnedDir {
                    path: "/run/roots/sbx-7/tmp/.cfg/secret".into(),
                    mode: 0o700,
                    uid: 20_001,
                    gid: 20_002
                },
            ]
        );
        assert!(tmp < cfg && cfg < pivot);
        let dev = position(&steps, |s| matches!(s, Step::Tmpfs { target, .. } if target.ends_with("dev")));
        let shm = position(&steps, |s| matches!(s, Step::Tmpfs { target, .. } if target.ends_with("dev/shm")));
        assert!(dev < shm, "/dev/shm must be mounted on the /dev tmpfs, not under it");
    }

    /// /usr and caller binds are read-only nosuid nodev; the session dir is writable; absent host files are skipped.
    #[test]
    fn plan_binds_and_files() {
        let steps = plan(&policy(), &host());
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        assert!(steps.contains(&Step::Bind {
            source: "/usr".into(),
            target: "/run/roots/sbx-7/usr".into(),
            flags: ro
        }));
        assert!(steps.contains(&Step::Bind {
            source: "/opt/py".into(),
            target: "/run/roots/sbx-7/opt/py".into(),
            flags: ro
        }));
        assert!(steps.contains(&Step::Bind {
            source: "/var/sessions/sbx-7".into(),
            target: "/run/roots/sbx-7/run/kernel".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        }));
        assert!(steps.contains(&Step::Symlink { to: "usr/lib64".into(), link: "/run/roots/sbx-7/lib64".into() }));
        assert!(!steps.iter().any(|s| matches!(s, Step::Bind { source, .. } if source == Path::new("/etc/fonts"))));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Copy { source, .. } if source == Path::new("/etc/ld.so.cache"))));
        let sandbox = steps.iter().find_map(|s| match s {
            Step::Tmpfs { target, options, .. } if target.ends_with("sandbox") => Some(options.clone()),
            _ => None,
        });
        assert_eq!(sandbox.unwrap(), format!("size={},mode=0700,uid=20001,gid=20002", 256u64 << 20));
        let devices =
            steps.iter().filter(|s| matches!(s, Step::Bind { source, .. } if source.starts_with("/dev"))).count();
        assert_eq!(devices, DEVICES.len());
    }

    /// The passwd entry gives the payload a name and HOME=/sandbox: without it the kernel dies at start.
    #[test]
    fn passwd_has_the_payload_user() {
        let files = etc_files(&policy());
        let passwd = &files.iter().find(|(f, _)| *f == "etc/passwd").unwrap().1;
        assert!(passwd.contains("sandbox:x:20001:20002:sandbox:/sandbox:/bin/sh\n"));
        let hosts = &files.iter().find(|(f, _)| *f == "etc/hosts").unwrap().1;
        assert!(hosts.contains("localhost sbx-7"));
    }
}
