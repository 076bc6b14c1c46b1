//! What each local failure means to the queue: file-system errors and bad units as error classes.

use std::io;

use noroshi_channel_core::{DeliveryError, ErrorClass};

/// The class of a file-system failure while publishing.
///
/// A full disk, a busy file or an interrupted call may clear by themselves: retry. A
/// damaged entry index (`InvalidData`) or a path that is not a directory will not, but an
/// operator can fix either, so they are retried too rather than failing the announcement
/// for good; the error message says what to fix. Nothing here is `Auth` or `Quota`: the
/// website has no credentials and no budget.
pub(crate) fn io_class(kind: io::ErrorKind) -> ErrorClass {
    match kind {
        io::ErrorKind::InvalidInput => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

pub(crate) fn io_error(what: &str, e: &io::Error) -> DeliveryError {
    DeliveryError::new(io_class(e.kind()), format!("{what}: {e}"))
}

/// A queued unit that is not a page unit (written by another version, or edited by hand):
/// retrying cannot help.
pub(crate) fn bad_unit(detail: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::permanent(format!("the website unit is malformed: {detail}"))
}
