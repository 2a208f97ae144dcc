//! Which door coordinates a consumer group: `<dir>/.ottla/groups/<g>.door`.
//!
//! Embedded (directory) members hold byte 0 shared while they are members;
//! the broker holds it exclusively while its coordinator has at least one
//! member in the group. So a group is never coordinated by both at once, and
//! a killed process releases its hold with its descriptors.

use crate::consumer::file_safe;
use crate::error::Result;
use crate::log::lockfile::LockFile;
use crate::store::Store;

/// The broker's exclusive hold on a group's door; released on drop.
pub struct DoorLock {
    _file: LockFile,
}

/// Take the door of `group` for the broker, or `None` if embedded members hold it.
pub fn try_take(store: &Store, group: &str) -> Result<Option<DoorLock>> {
    let path = store
        .groups_dir()
        .join(format!("{}.door", file_safe(group)));
    let file = LockFile::open(&path)?;
    Ok(file
        .try_hold_exclusive()?
        .then_some(DoorLock { _file: file }))
}
