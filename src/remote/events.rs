//! The `watch` side of the Redis backend: one subscription per daemon to `<prefix>events`,
//! fanned out to this daemon's watchers.
//!
//! The scripts publish each event inside the change's own `EVAL`, so Redis delivers the events
//! of one room in revision order to every subscriber, whichever daemon made the change. When
//! the subscription drops (Redis restarted, connection lost), events may have been missed:
//! every current watcher is sent [`RemoteEvent::Lost`] (it tells its client `overflow`), and the
//! task subscribes again with a growing pause. The subscription is pinged every few seconds, so
//! a connection that died silently (no FIN, e.g. a network partition) is noticed too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::Client;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One message from the subscription.
#[derive(Debug, Clone)]
pub enum RemoteEvent {
    /// An event line (ending in `\n`) about `room`.
    Change { room: Arc<str>, line: Bytes },
    /// A watcher's fence (see [`super::RemoteStore::subscribe`]): every change acknowledged
    /// before that watch started was delivered before it.
    Fence(Arc<str>),
    /// The subscription was lost; events may be missing.
    Lost,
}

const MAX_PAUSE: Duration = Duration::from_secs(2);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscription is pinged, and how long a ping may take.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Keeps the subscription up until `stop` is cancelled. `commands` is the connection every
/// other command goes through (see [`wake`]).
pub async fn run(
    client: Client,
    mut commands: ConnectionManager,
    channel: String,
    url: String,
    events: broadcast::Sender<RemoteEvent>,
    subscribed: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = tokio::time::timeout(SUBSCRIBE_TIMEOUT, attempt) => attempt,
        };
        let pubsub = match attempt {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                if !warned {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!("cannot subscribe to change events at Redis {url} ({why}); watch is unavailable until it answers, retrying");
                    warned = true;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        if warned {
            tracing::info!("subscribed to change events at Redis {url} again");
        }
        warned = false;
        pause = Duration::from_millis(50);
        wake(&mut commands).await;
        subscribed.store(true, Ordering::Release);
        let (mut sink, mut messages) = pubsub.split();
        // A connection cut without a FIN (a network partition) would look idle forever: ping it.
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = messages.next() => message,
                _ = keepalive.tick() => {
                    // The connection for commands too: one that Redis closed while idle (its
                    // `timeout`, `CLIENT KILL`) is then found by this ping, not by a request,
                    // and an idle one is not closed by a `timeout` of more than 5 s.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        redis::cmd("PING").query_async::<redis::Value>(&mut commands),
                    )
                    .await;
                    let pong = tokio::time::timeout(KEEPALIVE, sink.ping::<redis::Value>()).await;
                    match pong {
                        Ok(Ok(_)) => continue,
                        _ => break,
                    }
                }
            };
            let Some(message) = message else { break };
            // Every change of every daemon arrives here; unread, it costs nothing more. A watcher
            // subscribes to `events` before it publishes its fence, so none misses its own.
            if events.receiver_count() == 0 {
                continue;
            }
            if let Some(event) = parse(message.get_payload_bytes()) {
                // No receivers is fine: nobody watches.
                let _ = events.send(event);
            }
        }
        subscribed.store(false, Ordering::Release);
        let _ = events.send(RemoteEvent::Lost);
        tracing::warn!("lost the subscription to change events at Redis {url}; watchers were told overflow; subscribing again");
    }
}

/// Makes sure the connection for commands works before the subscription counts as up.
///
/// When Redis restarts, this connection notices at once (it is always reading); the one for
/// commands learns it only from the next command it sends, which fails with a broken pipe and
/// makes it reconnect. That command was a user's: after every Redis restart each daemon's
/// first swipe answered `storage` "the change may have been stored" although Redis was back
/// (found by an outside probe). A `PING` now takes that failure instead: it is tried until one
/// is answered, for at most 4 s.
async fn wake(commands: &mut ConnectionManager) {
    for _ in 0..4 {
        let pong = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<redis::Value>(commands),
        )
        .await;
        if matches!(pong, Ok(Ok(_))) {
            return;
        }
    }
}

/// The message of a fence.
pub fn fence_message(token: &str) -> String {
    serde_json::json!({ "fence": token }).to_string()
}

/// An event line as the scripts publish it (without the newline), or a fence.
fn parse(payload: &[u8]) -> Option<RemoteEvent> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow, rename = "roomName")]
        room_name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        fence: Option<std::borrow::Cow<'a, str>>,
    }
    let named: Named = serde_json::from_slice(payload).ok()?;
    if let Some(token) = named.fence {
        return Some(RemoteEvent::Fence(token.as_ref().into()));
    }
    let room = named.room_name?;
    let mut line = Vec::with_capacity(payload.len() + 1);
    line.extend_from_slice(payload);
    line.push(b'\n');
    Some(RemoteEvent::Change {
        room: room.as_ref().into(),
        line: Bytes::from(line),
    })
}
