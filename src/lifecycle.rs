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
    fn views_partition_the_statuses() {
        let live: Vec<_> = ALL.into_iter().filter(|s| s.is_live()).collect();
        let trash: Vec<_> = ALL.into_iter().filter(|s| s.is_in_trash()).collect();
        assert_eq!(live, [Status::Ready, Status::Performing, Status::Cloning]);
        assert_eq!(trash, [Status::DeletePending, Status::DeleteOngoing]);
    }
}
