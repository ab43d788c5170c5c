//! Where a folder lives on its volume.
//!
//! `<scope>/<id[0:2]>/<id[2:4]>/<id[4:]>` relative to the volume root, where `id` is the
//! folder uuid as 32 lowercase hex digits and `scope` is the quota scope uuid, also as 32 hex
//! digits (absent when the folder has no quota scope). The trash copy of a folder lives at the
//! same relative path under `.trash/`. Every component is produced from a parsed uuid, so no
//! component can be `..`, contain `/` or be empty; `quota_scope_id` is parsed strictly and
//! anything unexpected is a permanent [`Error::BadScope`].

use std::path::PathBuf;

use uuid::Uuid;

use super::Error;

/// The directory under the volume root that holds trashed folders (`trash = "move"`).
pub const TRASH_DIR: &str = ".trash";

/// The identity of a folder, as read from its `vfolders` row.
#[derive(Clone, Copy, Debug)]
pub struct FolderRef<'a> {
    /// `vfolders.id`.
    pub id: Uuid,
    /// `vfolders.host`: which volume the folder is on.
    pub host: &'a str,
    /// `vfolders.quota_scope_id`: `user:<uuid>`, `project:<uuid>` or NULL.
    pub quota_scope_id: Option<&'a str>,
}

/// The path components of a folder below the volume root (or below `.trash`): the optional
/// scope directory, the two fan-out directories and the folder's own directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The quota scope directory, 32 hex digits, if any.
    pub scope: Option<String>,
    /// `id[0:2]`, `id[2:4]`.
    pub fanout: [String; 2],
    /// `id[4:]`.
    pub leaf: String,
}

impl Layout {
    /// Computes the layout of `folder`, validating its quota scope.
    pub fn of(folder: &FolderRef<'_>) -> Result<Layout, Error> {
        let scope = folder
            .quota_scope_id
            .map(|value| parse_scope(value).ok_or_else(|| bad_scope(folder, value)))
            .transpose()?;
        let id = folder.id.simple().to_string();
        Ok(Layout {
            scope: scope.map(|u| u.simple().to_string()),
            fanout: [id[0..2].to_owned(), id[2..4].to_owned()],
            leaf: id[4..].to_owned(),
        })
    }

    /// The directories from the base (volume root or trash dir) down to the folder's parent.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.scope
            .iter()
            .map(String::as_str)
            .chain(self.fanout.iter().map(String::as_str))
    }

    /// The path relative to the volume root, under `.trash` when `trash` is set.
    pub fn relative(&self, trash: bool) -> PathBuf {
        let mut p = PathBuf::new();
        if trash {
            p.push(TRASH_DIR);
        }
        for c in self.parents() {
            p.push(c);
        }
        p.push(&self.leaf);
        p
    }
}

/// Parses `user:<uuid>` or `project:<uuid>` and nothing else.
fn parse_scope(value: &str) -> Option<Uuid> {
    let (kind, id) = value.split_once(':')?;
    if kind != "user" && kind != "project" {
        return None;
    }
    // Uuid::parse_str accepts several spellings (braced, urn:, simple); all of them are
    // unambiguous 128-bit values, and the path uses the canonical simple form, so accepting
    // them cannot produce a surprising path. Anything with '/' or '.' fails to parse.
    Uuid::parse_str(id).ok()
}

fn bad_scope(folder: &FolderRef<'_>, value: &str) -> Error {
    Error::BadScope {
        folder: folder.id,
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(scope: Option<&str>) -> FolderRef<'_> {
        FolderRef {
            id: Uuid::parse_str("0123456789abcdef0123456789abcdef").unwrap(),
            host: "p:v",
            quota_scope_id: scope,
        }
    }

    #[test]
    fn paths_follow_the_fanout_layout_with_and_without_scope() {
        let l = Layout::of(&folder(Some("user:fedcba98-7654-3210-fedc-ba9876543210"))).unwrap();
        assert_eq!(
            l.relative(false),
            PathBuf::from("fedcba9876543210fedcba9876543210/01/23/456789abcdef0123456789abcdef")
        );
        assert_eq!(
            l.relative(true),
            PathBuf::from(
                ".trash/fedcba9876543210fedcba9876543210/01/23/456789abcdef0123456789abcdef"
            )
        );
        let l = Layout::of(&folder(None)).unwrap();
        assert_eq!(
            l.relative(false),
            PathBuf::from("01/23/456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn scope_is_parsed_strictly() {
        for bad in [
            "",
            "..",
            "/",
            "user:",
            "user:..",
            "user:../../etc",
            "group:fedcba98-7654-3210-fedc-ba9876543210",
            "user:fedcba98-7654-3210-fedc-ba9876543210:x",
            "user:fedcba98-7654-3210-fedc-ba9876543210/..",
            "fedcba98-7654-3210-fedc-ba9876543210",
        ] {
            let err = Layout::of(&folder(Some(bad))).unwrap_err();
            assert_eq!(err.kind(), "bad-scope", "{bad:?}");
            assert!(!err.is_transient());
            let msg = err.to_string();
            assert!(msg.contains("0123456789abcdef0123456789abcdef"), "{msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
        assert!(
            Layout::of(&folder(Some(
                "project:fedcba98-7654-3210-fedc-ba9876543210"
            )))
            .is_ok()
        );
    }
}
