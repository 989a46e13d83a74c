//! `tidegate exec-pod [--mounts JSON] [--enter PID] -- PROGRAM ARGS…` (hidden): how the local
//! runtime starts a pod's process.
//!
//! Asks the kernel to SIGKILL this process when the gateway dies (even by `kill -9`), then
//! replaces itself with the pod's program; the death signal survives `exec`. So no pod outlives
//! its gateway.
//!
//! With `--mounts`, the program gets its own view of the file system first: a private mount
//! namespace (inside a user namespace when not run as root) whose root is a tmpfs mirroring the
//! machine's `/` through bind mounts, with each volume bound (or a tmpfs mounted) at its
//! `mountPath`. A directory that must hold a mount point but does not exist is created on a
//! tmpfs that mirrors its parent, so nothing is ever written to the machine's own directories.
//! Any failure exits with a message before the program runs: a pod never starts without its
//! files. `--enter PID` runs the program in the file system view of process `PID` instead (exec
//! probes of a container with volumes).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, chdir, chroot, fchdir};
use serde::{Deserialize, Serialize};

/// Exit code when the program cannot be started (as shells use for "not found").
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when the pod's file system view cannot be set up.
pub const EXIT_MOUNTS: u8 = 126;

/// One mount of a pod's file system view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountArg {
    /// Absolute path the program sees.
    pub target: String,
    /// What is mounted there.
    pub what: MountSource,
    /// Read-only.
    pub read_only: bool,
}

/// What a [`MountArg`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A file or directory of this machine, bound.
    Bind(PathBuf),
    /// A fresh memory-backed directory of at most this many bytes.
    Tmpfs(Option<u64>),
}

pub fn run(
    parent: Option<u32>,
    mounts: Option<&str>,
    workdir: Option<&str>,
    enter: Option<u32>,
    argv: &[String],
) -> ExitCode {
    let Some(program) = argv.first() else {
        eprintln!("exec-pod: no program given");
        return ExitCode::from(EXIT_NOT_FOUND);
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("exec-pod: cannot tie the pod to the gateway: {e}");
    }
    // The gateway may have died between fork and prctl; then the signal never comes.
    if let Some(parent) = parent
        && nix::unistd::getppid().as_raw() != i32::try_from(parent).unwrap_or(-1)
    {
        return ExitCode::from(EXIT_NOT_FOUND);
    }
    let view = match (mounts, enter) {
        (Some(json), _) => match serde_json::from_str::<Vec<MountArg>>(json) {
            Ok(mounts) => private_view(&mounts, workdir),
            Err(e) => Err(format!("invalid --mounts: {e}")),
        },
        (None, Some(pid)) => enter_view(pid, workdir),
        (None, None) => Ok(()),
    };
    if let Err(error) = view {
        eprintln!("exec-pod: cannot set up the pod's volumes: {error}");
        return ExitCode::from(EXIT_MOUNTS);
    }
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let (Ok(args), Ok(file)) = (args, CString::new(program.as_bytes())) else {
        eprintln!("exec-pod: arguments must not contain NUL bytes");
        return ExitCode::from(EXIT_NOT_FOUND);
    };
    // Only returns on failure.
    let error = nix::unistd::execvp(&file, &args).err();
    eprintln!(
        "exec-pod: cannot run {program}: {}",
        error.map_or_else(String::new, |e| e.desc().to_owned())
    );
    ExitCode::from(EXIT_NOT_FOUND)
}

/// Joins the mount namespace and root of process `pid`, keeping the working directory's path.
fn enter_view(pid: u32, workdir: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let cwd = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
    // A pod started without root owns its mount namespace through its user namespace: join
    // that first.
    let user = format!("/proc/{pid}/ns/user");
    let theirs = fs::metadata(&user).map_err(|e| format!("pod {pid}: {e}"))?;
    let ours = fs::metadata("/proc/self/ns/user").map_err(|e| format!("own namespace: {e}"))?;
    if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
        let file = fs::File::open(&user).map_err(|e| format!("pod {pid}: {e}"))?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns user: {e}"))?;
    }
    let ns =
        fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|e| format!("pod {pid}: {e}"))?;
    let root =
        fs::File::open(format!("/proc/{pid}/root")).map_err(|e| format!("pod {pid}: {e}"))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns: {e}"))?;
    fchdir(root.as_fd()).map_err(|e| format!("fchdir: {e}"))?;
    chroot(".").map_err(|e| format!("chroot: {e}"))?;
    enter_workdir(workdir, &cwd)
}

/// A private mount namespace with `mounts` in place, entered by `chroot`.
fn private_view(mounts: &[MountArg], workdir: Option<&str>) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
    let (uid, gid) = (Uid::current(), Gid::current());
    let flags = if uid.is_root() {
        CloneFlags::CLONE_NEWNS
    } else {
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUSER
    };
    unshare(flags).map_err(|e| {
        format!(
            "this machine does not let tidegate create a private mount namespace ({e}); run \
             the gateway as root or allow unprivileged user namespaces \
             (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
        )
    })?;
    if !uid.is_root() {
        // Keep our own ids inside the user namespace.
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", &format!("{gid} {gid} 1"))?;
    }
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .map_err(|e| format!("make / private: {e}"))?;
    let base = std::env::var_os("TIDEGATE_POD_DIR")
        .map(PathBuf::from)
        .ok_or("TIDEGATE_POD_DIR is not set")?;
    let root = base.join("root");
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut view = View {
        base,
        root: root.clone(),
        ours: HashSet::new(),
        stages: 0,
    };
    view.tmpfs(&root, None)?;
    view.mirror(Path::new("/"), &root)?;
    view.ours.insert(root.clone());
    let mut sorted: Vec<&MountArg> = mounts.iter().collect();
    sorted.sort_by_key(|m| m.target.matches('/').count());
    for m in sorted {
        view.place(m)?;
    }
    chdir(&root).map_err(|e| format!("chdir: {e}"))?;
    chroot(".").map_err(|e| format!("chroot: {e}"))?;
    enter_workdir(workdir, &cwd)
}

struct View {
    /// The pod's directory (for staging tmpfs mounts).
    base: PathBuf,
    /// The new root being assembled.
    root: PathBuf,
    /// Directories on tmpfs mounts of ours, where new entries may be created.
    ours: HashSet<PathBuf>,
    stages: usize,
}

impl View {
    fn tmpfs(&self, at: &Path, size: Option<u64>) -> Result<(), String> {
        let options = match size {
            Some(bytes) => format!("mode=0755,size={bytes}"),
            None => "mode=0755".to_owned(),
        };
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("tmpfs at {}: {e}", at.display()))
    }

    /// Recreates the entries of `from` inside `into`: directories and files bound, symbolic
    /// links copied.
    fn mirror(&self, from: &Path, into: &Path) -> Result<(), String> {
        let entries = fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
        for entry in entries.flatten() {
            let source = entry.path();
            let target = into.join(entry.file_name());
            let Ok(meta) = fs::symlink_metadata(&source) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(link) = fs::read_link(&source) {
                    symlink(&link, &target).map_err(|e| format!("{}: {e}", target.display()))?;
                }
                continue;
            }
            if meta.is_dir() {
                fs::create_dir(&target).map_err(|e| format!("{}: {e}", target.display()))?;
            } else {
                fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
            }
            bind(&source, &target, true)?;
        }
        Ok(())
    }

    /// Makes `path` (inside the new root) exist, as a directory or a file.
    fn ensure(&mut self, path: &Path, dir: bool) -> Result<(), String> {
        if fs::symlink_metadata(path).is_ok() {
            return Ok(());
        }
        let parent = path
            .parent()
            .ok_or_else(|| format!("{} has no parent", path.display()))?;
        self.ensure(parent, true)?;
        if !self.ours.contains(parent) {
            self.stages += 1;
            let stage = self.base.join(format!("stage-{}", self.stages));
            fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
            self.tmpfs(&stage, None)?;
            self.mirror(parent, &stage)?;
            mount::<Path, Path, str, str>(Some(&stage), parent, None, MsFlags::MS_MOVE, None)
                .map_err(|e| format!("move onto {}: {e}", parent.display()))?;
            self.ours.insert(parent.to_owned());
        }
        let made = if dir {
            fs::create_dir(path)
        } else {
            fs::File::create(path).map(drop)
        };
        made.map_err(|e| format!("{}: {e}", path.display()))?;
        if dir {
            self.ours.insert(path.to_owned());
        }
        Ok(())
    }

    /// `path` as seen from inside the new root: symbolic links on the way (such as
    /// `/var/run` → `/run`) are followed within the root, never out of it.
    fn in_root(&self, path: &str) -> Result<PathBuf, String> {
        use std::collections::VecDeque;
        use std::ffi::OsString;
        use std::path::Component;
        let mut parts: VecDeque<OsString> = Path::new(path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut current = self.root.clone();
        let mut links = 0;
        while let Some(part) = parts.pop_front() {
            if part == ".." {
                if current != self.root {
                    current.pop();
                }
                continue;
            }
            let next = current.join(&part);
            let is_link = fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                current = next;
                continue;
            }
            links += 1;
            if links > 40 {
                return Err(format!("mount path {path}: too many symbolic links"));
            }
            let link = fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
            if link.is_absolute() {
                current = self.root.clone();
            }
            for c in link.components().rev() {
                match c {
                    Component::Normal(n) => parts.push_front(n.to_owned()),
                    Component::ParentDir => parts.push_front("..".into()),
                    _ => {}
                }
            }
        }
        Ok(current)
    }

    fn place(&mut self, m: &MountArg) -> Result<(), String> {
        if Path::new(&m.target)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("mount path {} leaves the root", m.target));
        }
        let target = self.in_root(&m.target)?;
        match &m.what {
            MountSource::Bind(source) => {
                let dir = fs::metadata(source)
                    .map_err(|e| format!("{}: {e}", source.display()))?
                    .is_dir();
                self.ensure(&target, dir)?;
                bind(source, &target, dir)?;
            }
            MountSource::Tmpfs(size) => {
                self.ensure(&target, true)?;
                self.tmpfs(&target, *size)?;
            }
        }
        // Something mounted here hides what we created below it.
        self.ours.retain(|p| !p.starts_with(&target));
        if matches!(m.what, MountSource::Tmpfs(_)) {
            self.ours.insert(target.clone());
        }
        if m.read_only {
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            // Inside a user namespace the source's nosuid/nodev/noexec/atime flags are locked:
            // a remount must repeat them or the kernel refuses it.
            if let Ok(stat) = nix::sys::statvfs::statvfs(&target) {
                use nix::sys::statvfs::FsFlags;
                for (has, keep) in [
                    (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                    (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                    (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                    (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                    (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                    (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
                ] {
                    if stat.flags().contains(has) {
                        flags |= keep;
                    }
                }
            }
            mount::<str, Path, str, str>(None, &target, None, flags, None)
                .map_err(|e| format!("read-only {}: {e}", m.target))?;
        }
        Ok(())
    }
}

/// After the `chroot`: `workingDir` when given (it must exist in the view), else the
/// launcher's own directory (or `/` when the view has no such path).
fn enter_workdir(workdir: Option<&str>, cwd: &Path) -> Result<(), String> {
    match workdir {
        Some(dir) => chdir(dir).map_err(|e| format!("workingDir {dir}: {e}")),
        None => chdir(cwd)
            .or_else(|_| chdir("/"))
            .map_err(|e| format!("chdir: {e}")),
    }
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), String> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount::<Path, Path, str, str>(Some(source), target, None, flags, None)
        .map_err(|e| format!("bind {} at {}: {e}", source.display(), target.display()))
}

fn write(path: &str, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{path}: {e}"))
}
