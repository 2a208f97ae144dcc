//! Which door coordinates a consumer group: `<dir>/.ottla/groups/<g>.door`.
//!
//! Embedded (directory) members hold byte 0 shared while they are members;
//! the broker holds it exclusively while its coordinator has at least one
//! member in the group. So a group is never coordinated by both at once, and
//! a killed process releases its hold with its descriptors.

use crate::error::Result;
use crate::group::door_path;
use crate::group::ofd::ByteLocks;
use crate::store::Store;

/// The broker's exclusive hold on a group's door; released on drop.
pub struct DoorLock {
    _file: ByteLocks,
}

/// Take the door of `group` for the broker, or `None` if embedded members hold it.
pub fn try_take(store: &Store, group: &str) -> Result<Option<DoorLock>> {
    let file = ByteLocks::open(&door_path(store, group))?;
    Ok(file.try_lock(0, true)?.then_some(DoorLock { _file: file }))
}
