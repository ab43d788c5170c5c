//! The vfolder status lifecycle: the status values and the one table of legal transitions.
//!
//! This module is the single source of truth in Rust. The database enforces the same table
//! with a trigger (seeded from [`TRANSITIONS`] in the migrations); a test compares the two so
//! they cannot drift apart. Writing the status a row already has is always accepted as an
//! idempotent no-op and is therefore not listed as a transition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The status of a vfolder row, stored as text (`varchar(64)`) with exactly these spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Live folder: mountable and listed.
    Ready,
    /// Another service runs a storage operation on it (not this controller's business).
    Performing,
    /// Another service is cloning it (not this controller's business).
    Cloning,
    /// In the trash bin: not mountable, restorable.
    DeletePending,
    /// Being removed from the filesystem by the controller.
    DeleteOngoing,
    /// The files are gone; only the row remains until the history retention removes it.
    DeleteComplete,
    /// Removal failed permanently; an operator must look at it.
    DeleteError,
}

/// Every status, in lifecycle order.
pub const ALL: [Status; 7] = [
    Status::Ready,
    Status::Performing,
    Status::Cloning,
    Status::DeletePending,
    Status::DeleteOngoing,
    Status::DeleteComplete,
    Status::DeleteError,
];

/// The legal status transitions `(from, to)`. Anything not listed here (and not a no-op
/// write of the same status) is rejected, by this crate and by the database trigger.
pub const TRANSITIONS: [(Status, Status); 11] = [
    (Status::Ready, Status::Performing),
    (Status::Performing, Status::Ready),
    (Status::Ready, Status::Cloning),
    (Status::Cloning, Status::Ready),
    // Move to the trash bin, and restore from it.
    (Status::Ready, Status::DeletePending),
    (Status::DeletePending, Status::Ready),
    // Purge from the trash (admin or the trash timer), and the audited force-delete.
    (Status::DeletePending, Status::DeleteOngoing),
    (Status::Ready, Status::DeleteOngoing),
    // Outcomes of a removal, and the operator's retry.
    (Status::DeleteOngoing, Status::DeleteComplete),
    (Status::DeleteOngoing, Status::DeleteError),
    (Status::DeleteError, Status::DeleteOngoing),
];

impl Status {
    /// The exact text stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Performing => "performing",
            Status::Cloning => "cloning",
            Status::DeletePending => "delete-pending",
            Status::DeleteOngoing => "delete-ongoing",
            Status::DeleteComplete => "delete-complete",
            Status::DeleteError => "delete-error",
        }
    }

    /// The enum-style name (`DELETE_PENDING`), accepted by the parser for callers that use
    /// the reference platform's Python enum names.
    pub fn enum_name(self) -> String {
        self.as_str().replace('-', "_").to_ascii_uppercase()
    }

    /// Whether `self → to` is allowed. A write of the same status is allowed (a no-op).
    pub fn can_transition_to(self, to: Status) -> bool {
        self == to || TRANSITIONS.contains(&(self, to))
    }

    /// Checks `self → to`, returning the typed error that names both statuses.
    pub fn transition_to(self, to: Status) -> Result<(), IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Live folders: the normal list (ready and the in-progress storage statuses).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Ready | Status::Performing | Status::Cloning)
    }

    /// Folders shown in the trash bin.
    pub fn is_in_trash(self) -> bool {
        matches!(self, Status::DeletePending | Status::DeleteOngoing)
    }

    /// Whether a row entering this status can need the controller's work: `delete-ongoing`
    /// (a removal), `delete-pending` (a trash move on `trash = "move"` volumes) and `ready`
    /// (a restore from such a trash). The claim queries select exactly these statuses; the
    /// wake-up filter lets only changes into them wake the loop.
    pub fn creates_work(self) -> bool {
        matches!(
            self,
            Status::DeleteOngoing | Status::DeletePending | Status::Ready
        )
    }

    /// The deletion lifecycle: the statuses this controller owns on an adopted table, where
    /// every other status belongs to the platform that created the table.
    pub fn is_deletion(self) -> bool {
        matches!(
            self,
            Status::DeletePending
                | Status::DeleteOngoing
                | Status::DeleteComplete
                | Status::DeleteError
        )
    }

    /// A deletion not yet finished: in the trash, being removed, or failed. These sets drain
    /// (the trash timer empties the trash, removals end, an operator retries or restores a
    /// failure), so they stay bounded by the retention and the removal rate. `delete-complete`
    /// is history: it grows with `history_retention` (without bound at `never`, and with
    /// whatever history an adopted table brought), as the live statuses grow with the platform.
    pub fn is_unfinished_deletion(self) -> bool {
        self.is_deletion() && self != Status::DeleteComplete
    }

    /// The status a legacy spelling of the reference platform stands for, as the platform
    /// meant it: `deleted-complete` was its *trash* in 24.03–25.x (the data is still on disk
    /// and restorable), so it is `delete-pending`, never `delete-complete`, which would
    /// orphan the data; `purge-ongoing` is `delete-ongoing`.
    pub fn from_legacy(text: &str) -> Option<Status> {
        LEGACY_SPELLINGS
            .iter()
            .find(|(legacy, _)| *legacy == text)
            .map(|(_, status)| *status)
    }
}

/// The reference platform's legacy status spellings and what they mean (see
/// [`Status::from_legacy`]). The migrations and the PostgreSQL trigger apply the same map.
pub const LEGACY_SPELLINGS: [(&str, Status); 2] = [
    ("deleted-complete", Status::DeletePending),
    ("purge-ongoing", Status::DeleteOngoing),
];

/// Transitions accepted only on an adopted table, because the platform writes them: its
/// "delete forever" of a folder whose files are already gone (`delete-complete`) starts a
/// removal again, which finds nothing and completes at once; its storage-failure event
/// marks a trashed folder `delete-error` (it only updates rows in `delete-pending`), which
/// leaves the data for an operator.
pub const ADOPTED_TRANSITIONS: [(Status, Status); 2] = [
    (Status::DeleteComplete, Status::DeleteOngoing),
    (Status::DeletePending, Status::DeleteError),
];

/// Who created the `vfolders` table, which decides the rules the database enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// The controller created the table: the strict lifecycle, list-shaped history and the
    /// name-reuse index hold.
    Own,
    /// The reference platform created the table and keeps writing to it: the controller is
    /// a guest that owns only the deletion lifecycle.
    Adopted,
}

impl SchemaMode {
    /// The text stored in `vfolder_controller_meta.mode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SchemaMode::Own => "own",
            SchemaMode::Adopted => "adopted",
        }
    }

    /// Whether the database accepts a status write `from → to` (texts as stored). The
    /// trigger enforces exactly this; a test compares the two over every pair.
    ///
    /// - The same status: always (a no-op).
    /// - Own table: only [`TRANSITIONS`] between known statuses.
    /// - Adopted table: anything between statuses outside the deletion lifecycle (the
    ///   platform's business: `ready`, `mounted`, `error`, values added later), and into,
    ///   out of or within the deletion lifecycle only [`TRANSITIONS`] and
    ///   [`ADOPTED_TRANSITIONS`], so `ready -> delete-complete` or `delete-ongoing -> ready`
    ///   stay impossible whoever writes them.
    ///
    /// Legacy spellings are normalised before the check (see [`Status::from_legacy`]).
    pub fn allows(self, from: &RowStatus, to: &RowStatus) -> bool {
        let (from, to) = (from.normalized(), to.normalized());
        if from == to {
            return true;
        }
        let pair = match (from.known(), to.known()) {
            (Some(f), Some(t)) => Some((f, t)),
            _ => None,
        };
        let listed = |table: &[(Status, Status)]| pair.is_some_and(|p| table.contains(&p));
        match self {
            SchemaMode::Own => listed(&TRANSITIONS),
            SchemaMode::Adopted => {
                let deletion = |s: &RowStatus| s.known().is_some_and(Status::is_deletion);
                (!deletion(&from) && !deletion(&to))
                    || listed(&TRANSITIONS)
                    || listed(&ADOPTED_TRANSITIONS)
            }
        }
    }
}

/// A row's status as stored. On an adopted table the platform also writes statuses this
/// controller does not own (`mounted`, `error`, values added later): they are `Foreign`,
/// shown exactly as stored, never written by the controller, and count as live (listed,
/// never removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowStatus {
    /// One of the lifecycle's statuses, stored in its canonical spelling.
    Known(Status),
    /// Any other stored text, kept as it is.
    Foreign(String),
}

impl RowStatus {
    /// Reads a stored text. Only the exact canonical spelling is [`RowStatus::Known`]: a
    /// stored `DELETE_ONGOING` is shown as what it is, never passed off as
    /// `delete-ongoing` (the claim and the timers would not see it).
    pub fn from_stored(text: &str) -> RowStatus {
        ALL.into_iter()
            .find(|s| s.as_str() == text)
            .map_or_else(|| RowStatus::Foreign(text.to_owned()), RowStatus::Known)
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            RowStatus::Known(s) => s.as_str(),
            RowStatus::Foreign(text) => text,
        }
    }

    /// The lifecycle status, unless the value is foreign.
    pub fn known(&self) -> Option<Status> {
        match self {
            RowStatus::Known(s) => Some(*s),
            RowStatus::Foreign(_) => None,
        }
    }

    /// Live folders (the normal list): the lifecycle's live statuses and every foreign one.
    pub fn is_live(&self) -> bool {
        self.known().is_none_or(Status::is_live)
    }

    /// The value with a legacy spelling replaced by the status it stands for.
    fn normalized(&self) -> RowStatus {
        match self {
            RowStatus::Foreign(text) => {
                Status::from_legacy(text).map_or_else(|| self.clone(), RowStatus::Known)
            }
            known => known.clone(),
        }
    }
}

impl From<Status> for RowStatus {
    fn from(s: Status) -> Self {
        RowStatus::Known(s)
    }
}

impl PartialEq<Status> for RowStatus {
    fn eq(&self, other: &Status) -> bool {
        self.known() == Some(*other)
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that is neither a stored spelling nor an enum name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown vfolder status {0:?} (expected one of: ready, performing, cloning, delete-pending, delete-ongoing, delete-complete, delete-error)"
)]
pub struct UnknownStatus(pub String);

/// A transition that is not in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal status transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The row's current status.
    pub from: Status,
    /// The requested status.
    pub to: Status,
}

impl FromStr for Status {
    type Err = UnknownStatus;

    /// Accepts the stored spelling (`delete-pending`) or the enum name (`DELETE_PENDING`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|st| st.as_str() == s || st.enum_name() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_both_spellings() {
        for st in ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
            assert_eq!(st.enum_name().parse::<Status>(), Ok(st));
        }
        assert_eq!(
            "DELETE_PENDING".parse::<Status>(),
            Ok(Status::DeletePending)
        );
    }

    #[test]
    fn unknown_and_legacy_spellings_are_rejected_with_the_value() {
        for bad in ["deleted-complete", "Ready", "delete_pending", "", " ready"] {
            let err = bad.parse::<Status>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn same_status_is_a_no_op_and_table_is_enforced() {
        for from in ALL {
            for to in ALL {
                let listed = TRANSITIONS.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), listed || from == to);
            }
        }
        let err = Status::DeleteComplete
            .transition_to(Status::Ready)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal status transition delete-complete -> ready"
        );
    }

    #[test]
    fn legacy_spellings_mean_what_the_platform_meant() {
        assert_eq!(
            Status::from_legacy("deleted-complete"),
            Some(Status::DeletePending)
        );
        assert_eq!(
            Status::from_legacy("purge-ongoing"),
            Some(Status::DeleteOngoing)
        );
        assert_eq!(Status::from_legacy("delete-complete"), None);
    }

    #[test]
    fn stored_text_is_known_only_in_its_canonical_spelling() {
        assert_eq!(
            RowStatus::from_stored("delete-ongoing"),
            Status::DeleteOngoing
        );
        for foreign in ["DELETE_ONGOING", "mounted", "error", ""] {
            let st = RowStatus::from_stored(foreign);
            assert_eq!(st, RowStatus::Foreign(foreign.to_owned()));
            assert_eq!(st.as_str(), foreign);
            assert!(st.is_live());
        }
    }

    #[test]
    fn an_adopted_table_accepts_the_platform_and_guards_the_deletion_lifecycle() {
        let st = |t: &str| RowStatus::from_stored(t);
        let adopted = SchemaMode::Adopted;
        for (from, to) in [
            ("mounted", "ready"),
            ("ready", "mounted"),
            ("error", "ready"),
            ("ready", "error"),
            ("performing", "mounted"),
            ("something-new", "ready"),
            ("delete-complete", "delete-ongoing"),
            ("ready", "delete-pending"),
            ("delete-pending", "ready"),
            ("ready", "deleted-complete"),
            ("delete-pending", "purge-ongoing"),
        ] {
            assert!(adopted.allows(&st(from), &st(to)), "{from} -> {to}");
        }
        for (from, to) in [
            ("ready", "delete-complete"),
            ("delete-ongoing", "ready"),
            ("mounted", "delete-ongoing"),
            ("delete-pending", "error"),
            ("delete-complete", "delete-pending"),
            ("delete-error", "ready"),
        ] {
            assert!(!adopted.allows(&st(from), &st(to)), "{from} -> {to}");
        }
        assert!(!SchemaMode::Own.allows(&st("mounted"), &st("ready")));
        assert!(!SchemaMode::Own.allows(&st("delete-complete"), &st("delete-ongoing")));
        for (from, to) in TRANSITIONS {
            assert!(SchemaMode::Own.allows(&from.into(), &to.into()));
            assert!(adopted.allows(&from.into(), &to.into()));
        }
    }

    #[test]
    fn only_statuses_that_can_make_a_row_due_create_work() {
        let waking: Vec<_> = ALL.into_iter().filter(|s| s.creates_work()).collect();
        assert_eq!(
            waking,
            [Status::Ready, Status::DeletePending, Status::DeleteOngoing]
        );
    }

    #[test]
    fn views_partition_the_statuses() {
        let live: Vec<_> = ALL.into_iter().filter(|s| s.is_live()).collect();
        let trash: Vec<_> = ALL.into_iter().filter(|s| s.is_in_trash()).collect();
        assert_eq!(live, [Status::Ready, Status::Performing, Status::Cloning]);
        assert_eq!(trash, [Status::DeletePending, Status::DeleteOngoing]);
    }

    #[test]
    fn every_deletion_but_the_completed_one_is_unfinished() {
        let unfinished: Vec<_> = ALL
            .into_iter()
            .filter(|s| s.is_unfinished_deletion())
            .collect();
        assert_eq!(
            unfinished,
            [
                Status::DeletePending,
                Status::DeleteOngoing,
                Status::DeleteError
            ]
        );
    }
}
