//! `storage::Error`: what went wrong, where (folder id and path relative to the volume
//! root), and whether retrying later can help.
//!
//! The classification is the contract with the controller: a transient error is retried
//! with backoff (the volume may come back, the network filesystem may recover), a permanent
//! one sends the folder to `delete-error` for a human. When in doubt an errno is transient,
//! because the controller caps attempts anyway and a wrongly permanent error strands a folder.
//!
//! A third class is neither the folder's nor the volume's: the process itself ran out of
//! descriptors or memory (`EMFILE`, `ENFILE`, `ENOMEM`; see
//! [`Error::is_resource_exhaustion`]). The controller hands such a folder back untouched.

use std::fmt;
use std::path::PathBuf;

use rustix::io::Errno;
use uuid::Uuid;

/// An error from the storage layer. Every variant names the folder when one is involved
/// and paths are relative to the volume root (the volume is named by the caller's context).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No volume is configured for this host string (permanent).
    #[error("no volume is configured for host {host:?}")]
    UnknownVolume {
        /// The `vfolders.host` value.
        host: String,
    },
    /// The volume is missing, not mounted or lacks its marker file (transient: it may come back).
    #[error("volume {host} not available: {reason}")]
    VolumeUnavailable {
        /// The volume's host string.
        host: String,
        /// Why it is not trusted.
        reason: String,
    },
    /// The folder's `quota_scope_id` is not `user:<uuid>` or `project:<uuid>` (permanent).
    #[error("folder {}: invalid quota_scope_id {value:?} (expected user:<uuid> or project:<uuid>)", folder.simple())]
    BadScope {
        /// The folder.
        folder: Uuid,
        /// The offending value.
        value: String,
    },
    /// A component of the folder's path is a symlink or not a directory (permanent): the
    /// path would lead somewhere other than the volume's own directory tree.
    #[error("{}unsafe path {}: {reason}", FolderPrefix(*folder), path.display())]
    UnsafePath {
        /// The folder, when known.
        folder: Option<Uuid>,
        /// The offending path, relative to the volume root.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another filesystem is mounted inside the tree being removed (permanent: it is left
    /// alone, and so is everything above it).
    #[error("{}a filesystem is mounted at {} inside the tree; it was not entered", FolderPrefix(*folder), path.display())]
    MountInsideTree {
        /// The folder, when known.
        folder: Option<Uuid>,
        /// The mount point, relative to the volume root.
        path: PathBuf,
    },
    /// A directory was moved away while it was being removed, so its parent could not be
    /// proven (transient: the next attempt starts again from the top).
    #[error("{}directory {} was moved during removal", FolderPrefix(*folder), path.display())]
    TreeChanged {
        /// The folder, when known.
        folder: Option<Uuid>,
        /// The directory, relative to the volume root.
        path: PathBuf,
    },
    /// Both the live and the trash copy of a folder exist, so moving one onto the other
    /// would destroy data (permanent).
    #[error("folder {}: both {} and {} exist", folder.simple(), from.display(), to.display())]
    Conflict {
        /// The folder.
        folder: Uuid,
        /// The source path, relative to the volume root.
        from: PathBuf,
        /// The destination path, relative to the volume root.
        to: PathBuf,
    },
    /// A system call failed; classified by its errno.
    #[error("{}{op} {}: {source}", FolderPrefix(*folder), path.display())]
    Io {
        /// The folder, when known.
        folder: Option<Uuid>,
        /// The operation (`unlink`, `open`, `rmdir`, `rename`, ...).
        op: &'static str,
        /// The path, relative to the volume root.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
}

/// Formats `folder <id>: ` when the folder is known, nothing otherwise.
struct FolderPrefix(Option<Uuid>);

impl fmt::Display for FolderPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "folder {}: ", id.simple()),
            None => Ok(()),
        }
    }
}

impl Error {
    /// Whether retrying later may succeed. Transient: volume unavailable, a tree changed
    /// under us, EIO, ESTALE, ENOTCONN, EAGAIN, EBUSY and any errno not known to be
    /// permanent. Permanent: unknown volume, bad scope, unsafe path, mount inside the
    /// tree, conflict, EPERM/EACCES (e.g. an immutable file), EROFS and path-shape errnos.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::VolumeUnavailable { .. } | Error::TreeChanged { .. } => true,
            Error::UnknownVolume { .. }
            | Error::BadScope { .. }
            | Error::UnsafePath { .. }
            | Error::MountInsideTree { .. }
            | Error::Conflict { .. } => false,
            Error::Io { source, .. } => !is_permanent_errno(*source),
        }
    }

    /// Whether the process (or the system) is out of descriptors or memory: `EMFILE`,
    /// `ENFILE` or `ENOMEM` from any system call. That is the process's own transient
    /// condition; it says nothing about the folder or the volume, so it must count neither
    /// as a folder's attempt nor as a volume outage.
    pub fn is_resource_exhaustion(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_exhaustion_errno(*source))
    }

    /// A short, bounded label for metrics: one of `unknown-volume`, `volume-unavailable`,
    /// `bad-scope`, `unsafe-path`, `mount-inside-tree`, `tree-changed`, `conflict`,
    /// `permission`, `read-only`, `stale`, `resource-exhausted`, `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownVolume { .. } => "unknown-volume",
            Error::VolumeUnavailable { .. } => "volume-unavailable",
            Error::BadScope { .. } => "bad-scope",
            Error::UnsafePath { .. } => "unsafe-path",
            Error::MountInsideTree { .. } => "mount-inside-tree",
            Error::TreeChanged { .. } => "tree-changed",
            Error::Conflict { .. } => "conflict",
            Error::Io { source, .. } => match *source {
                Errno::PERM | Errno::ACCESS => "permission",
                Errno::ROFS => "read-only",
                Errno::STALE => "stale",
                e if is_exhaustion_errno(e) => "resource-exhausted",
                _ => "io",
            },
        }
    }

    /// The folder this error is about, when known.
    pub fn folder(&self) -> Option<Uuid> {
        match self {
            Error::UnknownVolume { .. } | Error::VolumeUnavailable { .. } => None,
            Error::BadScope { folder, .. } | Error::Conflict { folder, .. } => Some(*folder),
            Error::UnsafePath { folder, .. }
            | Error::MountInsideTree { folder, .. }
            | Error::TreeChanged { folder, .. }
            | Error::Io { folder, .. } => *folder,
        }
    }
}

/// Errnos that mean the process or the system ran short of descriptors or memory.
pub(crate) fn is_exhaustion_errno(errno: Errno) -> bool {
    matches!(errno, Errno::MFILE | Errno::NFILE | Errno::NOMEM)
}

/// Errnos that retrying cannot fix: permissions (immutable files), read-only filesystems,
/// and errors that mean the path has the wrong shape.
fn is_permanent_errno(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::PERM
            | Errno::ACCESS
            | Errno::ROFS
            | Errno::XDEV
            | Errno::LOOP
            | Errno::NOTDIR
            | Errno::NAMETOOLONG
            | Errno::INVAL
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: Errno) -> Error {
        Error::Io {
            folder: None,
            op: "unlink",
            path: PathBuf::from("x"),
            source: errno,
        }
    }

    #[test]
    fn errnos_are_classified_as_the_controller_expects() {
        for e in [
            Errno::IO,
            Errno::STALE,
            Errno::NOTCONN,
            Errno::AGAIN,
            Errno::BUSY,
        ] {
            assert!(io(e).is_transient(), "{e:?}");
        }
        for e in [Errno::PERM, Errno::ACCESS, Errno::ROFS] {
            assert!(!io(e).is_transient(), "{e:?}");
        }
        assert_eq!(io(Errno::PERM).kind(), "permission");
        assert_eq!(io(Errno::ROFS).kind(), "read-only");
        assert_eq!(io(Errno::STALE).kind(), "stale");
        assert_eq!(io(Errno::IO).kind(), "io");
    }

    #[test]
    fn running_out_of_descriptors_or_memory_is_the_process_own_condition() {
        for e in [Errno::MFILE, Errno::NFILE, Errno::NOMEM] {
            assert!(io(e).is_resource_exhaustion(), "{e:?}");
            assert!(io(e).is_transient(), "{e:?}");
            assert_eq!(io(e).kind(), "resource-exhausted");
        }
        for e in [Errno::IO, Errno::STALE, Errno::ACCESS] {
            assert!(!io(e).is_resource_exhaustion(), "{e:?}");
        }
        let volume = Error::VolumeUnavailable {
            host: "h".into(),
            reason: "gone".into(),
        };
        assert!(!volume.is_resource_exhaustion());
    }

    #[test]
    fn messages_name_the_folder_and_the_relative_path() {
        let id = Uuid::from_u128(0xab);
        let e = Error::MountInsideTree {
            folder: Some(id),
            path: PathBuf::from("a/b/c"),
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&id.simple().to_string()) && msg.contains("a/b/c"),
            "{msg}"
        );
        assert!(!e.is_transient());
    }
}
