//! The errors of the room layer, each with the `Display` text a client or an operator reads.
//!
//! [`RoomError`]: a room that is not valid, naming the field path. [`StoreError`]: why a change
//! or a read of the rooms did not happen, whichever storage was asked (the local store or
//! Redis). A refusal's text is the protocol's message; a storage failure's text is for logs and
//! for the operator (its message, then its cause), and the protocol sends the message and the
//! cause apart (`service::store_error`).

use super::{quoted, Revision, RoomName};

/// Why a room is invalid: the field path and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {expected}")]
pub struct RoomError {
    pub path: String,
    pub expected: String,
}

/// Why the rooms' storage did not do what was asked; in every case nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The mutation was refused (conflict, not found).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The backend failed. `cause` is the underlying error's text (an OS error).
    #[error("{}", with_cause(message, cause))]
    Storage {
        message: String,
        cause: Option<String>,
    },
    /// The storage could not be asked (Redis unreachable or refusing). The message is whole: it
    /// says what failed, where, and what to do.
    #[error("{}", with_cause(message, cause))]
    Unavailable {
        message: String,
        cause: Option<String>,
    },
    /// The actor has stopped: the daemon is shutting down.
    #[error("the daemon is stopping; the request was not executed")]
    Stopped,
}

/// The message, then the cause unless the message already ends with it (a `StorageError`'s
/// text names its OS error, which is also its cause).
fn with_cause(message: &str, cause: &Option<String>) -> String {
    match cause {
        Some(cause) if !message.ends_with(cause.as_str()) => format!("{message}: {cause}"),
        _ => message.to_owned(),
    }
}

impl StoreError {
    /// The underlying error's text, where there is one (kept apart from the message).
    pub fn cause(&self) -> Option<&str> {
        match self {
            StoreError::Storage { cause, .. } | StoreError::Unavailable { cause, .. } => {
                cause.as_deref()
            }
            StoreError::Refused(_) | StoreError::Stopped => None,
        }
    }
}

/// The message for a room that does not exist, for a [`Refusal::NotFound`] and for a name no
/// room can have (the protocol answers both alike).
pub fn no_such_room(name: &str) -> String {
    format!("room {} does not exist", quoted(name))
}

/// Why a mutation was refused; nothing changed. The text is the protocol's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `expectedRevision` did not match; carries the current revision (0 = absent).
    #[error("expectedRevision does not match: the room is at revision {current}")]
    Conflict { current: Revision },
    /// The room does not exist.
    #[error("{}", no_such_room(.name.as_str()))]
    NotFound { name: RoomName },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomName;

    /// A refusal's and a stop's texts are the protocol's messages; a storage failure's names
    /// its cause once (logs, `migrate`).
    #[test]
    fn store_errors_read_as_text() {
        let name = RoomName::new("movie \"night\"").unwrap();
        let cases = [
            (
                StoreError::Refused(Refusal::Conflict { current: 7 }),
                "expectedRevision does not match: the room is at revision 7",
            ),
            (
                StoreError::Refused(Refusal::NotFound { name }),
                r#"room "movie \"night\"" does not exist"#,
            ),
            (
                StoreError::Storage {
                    message: "could not fsync /data/.journal".into(),
                    cause: Some("Input/output error (os error 5)".into()),
                },
                "could not fsync /data/.journal: Input/output error (os error 5)",
            ),
            (
                StoreError::Unavailable {
                    message: "Redis at redis://127.0.0.1/ is unreachable".into(),
                    cause: Some("connection refused".into()),
                },
                "Redis at redis://127.0.0.1/ is unreachable: connection refused",
            ),
            (
                StoreError::Storage {
                    message: "cannot read /data: No such file or directory (os error 2)".into(),
                    cause: Some("No such file or directory (os error 2)".into()),
                },
                "cannot read /data: No such file or directory (os error 2)",
            ),
            (
                StoreError::Stopped,
                "the daemon is stopping; the request was not executed",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
        let failed = StoreError::Storage {
            message: "m".into(),
            cause: Some("c".into()),
        };
        assert_eq!(failed.cause(), Some("c"));
        assert_eq!(StoreError::Stopped.cause(), None);
        let long = "x".repeat(300);
        assert!(no_such_room(&long).ends_with("... (300 bytes) does not exist"));
    }

    #[test]
    fn room_errors_name_the_path_first() {
        let e = RoomError {
            path: "ratings[\"m\"][0][1]".into(),
            expected: "expected \"like\" or \"dislike\"".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"ratings["m"][0][1]: expected "like" or "dislike""#
        );
    }
}
