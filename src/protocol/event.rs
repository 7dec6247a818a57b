//! Change events as `watch` connections receive them (PROTOCOL.md section 3, "watch"): one
//! JSON line per change, encoded here for the rooms this daemon keeps. For rooms kept in Redis
//! the same lines are built by [`crate::remote`] and published by its scripts.

use bytes::Bytes;

use crate::room::change::Change;

/// The event line for a change.
pub fn event_line(change: &Change) -> Bytes {
    let event = match change {
        Change::Put { name, revision, .. } => serde_json::json!({
            "event": "saved", "roomName": name.as_str(), "revision": revision,
        }),
        Change::Rate {
            name,
            revision,
            media_id,
            user_name,
            rating,
            timestamp,
            ..
        } => serde_json::json!({
            "event": "rated", "roomName": name.as_str(), "revision": revision,
            "mediaId": media_id, "userName": user_name, "rating": rating, "timestamp": timestamp,
        }),
        Change::Progress {
            name,
            revision,
            user_name,
            progress,
            ..
        } => serde_json::json!({
            "event": "progress", "roomName": name.as_str(), "revision": revision,
            "userName": user_name, "progress": progress,
        }),
        Change::Delete { name } => {
            serde_json::json!({"event": "deleted", "roomName": name.as_str()})
        }
    };
    let mut line = serde_json::to_vec(&event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
