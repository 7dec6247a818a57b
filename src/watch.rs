//! `watch`: a connection that carries change events instead of responses (PROTOCOL.md section 3).
//!
//! The actor broadcasts every committed change after answering its writer (with Redis: the
//! daemon's subscription relays what every daemon publishes, see [`crate::remote`]); a watcher
//! forwards the ones it asked for, in commit order (so per room, in revision order). The
//! broadcast buffer is bounded and never blocks the actor: a watcher that falls behind it, or
//! whose socket stays full for `STALL_LIMIT` (5 s), or whose daemon lost its Redis subscription, is
//! sent `overflow` (when possible) and disconnected.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::protocol::codec::LineCodec;
use crate::protocol::{error_line, RequestId, Response};
use crate::room::RoomName;
use crate::rooms::{Received, Rooms};
use crate::service::store_error;
use crate::store::apply::Change;

/// How long one event may wait for a watcher's socket before the watcher is dropped.
const STALL_LIMIT: Duration = Duration::from_secs(5);

const OVERFLOW: &[u8] = b"{\"event\":\"overflow\"}\n";

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

/// Acknowledges the `watch` request, then forwards events until the client closes, falls
/// behind, or the daemon stops.
pub async fn stream_events(
    mut out: BufWriter<OwnedWriteHalf>,
    mut input: FramedRead<OwnedReadHalf, LineCodec>,
    rooms: &Rooms,
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
    shutdown: CancellationToken,
) {
    // Subscribe before acknowledging, so no change committed after the `ok` is missed.
    let (mut events, ack) = match rooms.subscribe().await {
        Ok(events) => (events, Response::ok(&id).finish()),
        Err(e) => {
            let line = error_line(&id, &store_error(e));
            let _ = tokio::time::timeout(STALL_LIMIT, async {
                let _ = out.write_all(&line).await;
                let _ = out.flush().await;
            })
            .await;
            return;
        }
    };
    let wanted: Option<HashSet<String>> =
        room_names.map(|names| names.into_iter().map(|n| n.as_str().to_owned()).collect());
    let wanted = |room: &str| wanted.as_ref().is_none_or(|w| w.contains(room));
    if out.write_all(&ack).await.is_err() || out.flush().await.is_err() {
        return;
    }
    let mut unflushed = false;
    loop {
        // Flush once nothing more is waiting, whether the last event was sent or filtered out.
        if unflushed && events.is_empty() {
            match tokio::time::timeout(STALL_LIMIT, out.flush()).await {
                Ok(Ok(())) => unflushed = false,
                _ => return,
            }
        }
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            // Lines sent after `watch` are ignored; the end of input ends the watch.
            line = input.next() => match line {
                Some(Ok(_)) => continue,
                _ => return,
            },
            received = events.recv(wanted) => received,
        };
        let line = match received {
            Received::Line(line) => line,
            Received::Skipped => continue,
            Received::Overflow { missed } => {
                match missed {
                    Some(missed) => {
                        tracing::info!("a watcher fell {missed} events behind; disconnecting it")
                    }
                    None => {
                        tracing::info!("events may have been missed; telling a watcher overflow")
                    }
                }
                let _ = tokio::time::timeout(STALL_LIMIT, async {
                    let _ = out.write_all(OVERFLOW).await;
                    let _ = out.flush().await;
                })
                .await;
                return;
            }
            Received::Closed => return,
        };
        let sent = tokio::time::timeout(STALL_LIMIT, out.write_all(&line)).await;
        match sent {
            Ok(Ok(())) => unflushed = true,
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("a watcher stopped reading for {STALL_LIMIT:?}; disconnecting it");
                return;
            }
        }
    }
}
