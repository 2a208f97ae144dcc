//! A group's coordinator claim: who coordinates a consumer group, embedded
//! members or this broker (`<dir>/.ottla/groups/<g>.door`, a name kept for
//! the directories already written).
//!
//! Embedded (directory) members hold byte 0 shared while they are members;
//! the broker holds it exclusively while its coordinator has at least one
//! member in the group. So a group is never coordinated by both at once, and
//! a killed process releases its hold with its descriptors.

use ottla_client::group::claim_path;
use ottla_storage::error::Result;
use ottla_storage::ofd::ByteLocks;
use ottla_storage::store::Store;

/// The broker's exclusive hold on a group's claim; released on drop.
pub struct CoordinatorClaim {
    _file: ByteLocks,
}

/// Take the claim on `group` for the broker, or `None` if embedded members hold it.
pub fn try_claim(store: &Store, group: &str) -> Result<Option<CoordinatorClaim>> {
    let file = ByteLocks::open(&claim_path(store, group))?;
    Ok(file
        .try_lock(0, true)?
        .then_some(CoordinatorClaim { _file: file }))
}
