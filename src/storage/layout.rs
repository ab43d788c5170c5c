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

/// What one directory name means at a given depth of the layout (the inverse of
/// [`Layout::of`], for walking a volume). Only the spellings `Layout::of` produces are
/// accepted: lowercase hex of the exact length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Component {
    /// 32 hex digits: a quota scope directory.
    Scope(Uuid),
    /// 2 hex digits: a fan-out directory (`id[0:2]` or `id[2:4]`).
    Fanout([u8; 2]),
    /// 28 hex digits: a folder's own directory (`id[4:]`).
    Leaf([u8; 28]),
}

impl Component {
    /// Parses one name; `None` for anything the layout never produces.
    pub fn parse(name: &[u8]) -> Option<Component> {
        if !name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        match name.len() {
            32 => std::str::from_utf8(name)
                .ok()
                .and_then(|s| Uuid::try_parse(s).ok())
                .map(Component::Scope),
            2 => Some(Component::Fanout([name[0], name[1]])),
            28 => {
                let mut leaf = [0u8; 28];
                leaf.copy_from_slice(name);
                Some(Component::Leaf(leaf))
            }
            _ => None,
        }
    }
}

/// The folder id spelled by the two fan-out names and the leaf name.
pub(crate) fn id_from_parts(fanout: [[u8; 2]; 2], leaf: &[u8; 28]) -> Option<Uuid> {
    let mut hex = Vec::with_capacity(32);
    hex.extend_from_slice(&fanout[0]);
    hex.extend_from_slice(&fanout[1]);
    hex.extend_from_slice(leaf);
    std::str::from_utf8(&hex)
        .ok()
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// A `quota_scope_id` whose layout path is the directory of `scope`. The kind (`user` or
/// `project`) is not part of the path, so a folder found on disk, whose row (if any) is
/// unknown, is addressed as `user:<scope>`: [`Layout::of`] gives it the very path it was
/// found at.
pub(crate) fn scope_ref(scope: Uuid) -> String {
    format!("user:{}", scope.hyphenated())
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
    fn components_parse_exactly_what_the_layout_produces() {
        let f = folder(Some("project:fedcba98-7654-3210-fedc-ba9876543210"));
        let l = Layout::of(&f).unwrap();
        let scope = Component::parse(l.scope.as_deref().unwrap().as_bytes());
        let Some(Component::Scope(scope)) = scope else {
            panic!("{scope:?}")
        };
        let fan: Vec<[u8; 2]> = l
            .fanout
            .iter()
            .map(|c| match Component::parse(c.as_bytes()) {
                Some(Component::Fanout(f)) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        let Some(Component::Leaf(leaf)) = Component::parse(l.leaf.as_bytes()) else {
            panic!()
        };
        assert_eq!(id_from_parts([fan[0], fan[1]], &leaf), Some(f.id));
        let back = scope_ref(scope);
        let again = FolderRef {
            quota_scope_id: Some(&back),
            ..f
        };
        assert_eq!(Layout::of(&again).unwrap(), l);
        for bad in [
            "AB",
            "0g",
            "0",
            "abc",
            "lost+found",
            "..",
            "01234567890123456789012345678",
        ] {
            assert_eq!(Component::parse(bad.as_bytes()), None, "{bad}");
        }
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
