//! A pod's directory: its volumes materialized (Secret and ConfigMap files written, emptyDir
//! directories made) and each container's mounts as `exec-pod --mounts` arguments. Removed
//! when the pod is gone.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::spec::{PodMount, PodVolume, PodVolumeSource};
use crate::commands::exec_pod::{MountArg, MountSource};

/// The gateway's own directories for pods: `tidegate-{pid}-{random}` in the temp directory
/// and in `/dev/shm`, created fresh (never reused) with mode 0700, removed on drop.
pub(crate) struct PodBase {
    work: PathBuf,
    files: PathBuf,
}

impl PodBase {
    pub(crate) fn create() -> io::Result<Self> {
        let name = format!(
            "tidegate-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let work = std::env::temp_dir().join(&name);
        // Not recursive: fails if the name exists, so nobody else can have prepared it.
        fs::DirBuilder::new().mode(0o700).create(&work)?;
        let shm = Path::new("/dev/shm");
        let files = if shm.is_dir() {
            shm.join(&name)
        } else {
            work.join("files")
        };
        if let Err(error) = fs::DirBuilder::new().mode(0o700).create(&files) {
            let _ = fs::remove_dir(&work);
            return Err(error);
        }
        Ok(Self { work, files })
    }

    /// Removes both directories and everything in them.
    pub(crate) fn remove(&self) {
        for dir in [&self.files, &self.work] {
            if let Err(error) = fs::remove_dir_all(dir)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), %error, "Could not remove the pods' directory.");
            }
        }
    }
}

impl Drop for PodBase {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The directory of one pod, deleted on drop.
pub(crate) struct PodDir {
    /// Where emptyDir volumes and the private root live.
    work: PathBuf,
    /// Where file volumes are written (in memory when `/dev/shm` exists).
    files: PathBuf,
}

impl PodDir {
    /// Creates the pod's directories under `base` and writes its volumes. `name` is unique
    /// per gateway.
    pub(crate) fn create(base: &PodBase, name: &str, volumes: &[PodVolume]) -> io::Result<Self> {
        let work = base.work.join(name);
        let files = base.files.join(name);
        fs::DirBuilder::new().mode(0o700).create(&work)?;
        fs::DirBuilder::new().mode(0o700).create(&files)?;
        let dir = Self { work, files };
        for volume in volumes {
            dir.write_volume(volume)?;
        }
        Ok(dir)
    }

    /// The working directory for `exec-pod` (`TIDEGATE_POD_DIR`).
    pub(crate) fn work(&self) -> &Path {
        &self.work
    }

    fn volume_path(&self, volume: &PodVolume) -> PathBuf {
        match &volume.source {
            PodVolumeSource::Files(_) => self.files.join(&volume.name),
            PodVolumeSource::EmptyDir => self.work.join("volumes").join(&volume.name),
            PodVolumeSource::HostPath(path) => path.clone(),
        }
    }

    fn write_volume(&self, volume: &PodVolume) -> io::Result<()> {
        let root = self.volume_path(volume);
        match &volume.source {
            PodVolumeSource::Files(files) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&root)?;
                for (path, data, mode) in files {
                    // Validation allows only relative paths of plain names; never trust that here.
                    let plain = Path::new(path)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                    if !plain || path.is_empty() {
                        return Err(io::Error::other(format!(
                            "volume {:?}: file path {path:?} leaves the volume",
                            volume.name
                        )));
                    }
                    let file = root.join(path);
                    if let Some(parent) = file.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(parent)?;
                    }
                    fs::write(&file, data)?;
                    fs::set_permissions(&file, fs::Permissions::from_mode(*mode))?;
                }
            }
            PodVolumeSource::EmptyDir => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o777)
                    .create(&root)?;
            }
            PodVolumeSource::HostPath(_) => {}
        }
        Ok(())
    }

    /// `mounts` as `exec-pod` arguments; an error names a mount whose volume or `subPath`
    /// is missing.
    pub(crate) fn mount_args(
        &self,
        mounts: &[PodMount],
        volumes: &[PodVolume],
    ) -> Result<Vec<MountArg>, String> {
        mounts
            .iter()
            .map(|mount| {
                let volume = volumes
                    .iter()
                    .find(|v| v.name == mount.volume)
                    .ok_or_else(|| format!("no volume {:?}", mount.volume))?;
                let mut source = self.volume_path(volume);
                if let Some(sub) = &mount.sub_path {
                    source = source.join(sub);
                    if !source.exists() && matches!(volume.source, PodVolumeSource::HostPath(_)) {
                        // Never create anything in the machine's own directories.
                        return Err(format!(
                            "subPath {sub:?} does not exist in hostPath volume {:?}",
                            volume.name
                        ));
                    }
                    if !source.exists() {
                        // Kubernetes creates a missing subPath as a directory.
                        fs::create_dir_all(&source).map_err(|e| {
                            format!("subPath {sub:?} of volume {:?}: {e}", mount.volume)
                        })?;
                    }
                }
                Ok(MountArg {
                    target: mount.target.clone(),
                    what: MountSource::Bind(source),
                    read_only: mount.read_only,
                })
            })
            .collect()
    }
}

impl Drop for PodDir {
    fn drop(&mut self) {
        for dir in [&self.files, &self.work] {
            if let Err(error) = fs::remove_dir_all(dir)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), %error, "Could not remove a pod's directory.");
            }
        }
    }
}

/// Removes the pod directories of gateways that are gone (`tidegate-{pid}` whose process no
/// longer exists), such as those left by a `kill -9`.
pub(crate) fn remove_stale() {
    for base in [Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()] {
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            // `tidegate-{pid}-{32 hex digits}`, as `PodBase::create` names them.
            let Some((pid, random)) = name
                .to_str()
                .and_then(|n| n.strip_prefix("tidegate-"))
                .and_then(|rest| rest.split_once('-'))
            else {
                continue;
            };
            let ours = !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && random.len() == 32
                && random.bytes().all(|b| b.is_ascii_hexdigit());
            if !ours {
                continue;
            }
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            if let Err(error) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), %error, "Could not remove a stale pod directory.");
            }
        }
    }
}
