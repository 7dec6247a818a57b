//! The mutations of [`RemoteStore`]: each one script run ([`super::scripts`]), its arguments
//! built here (the room split into hash fields, the event's fixed parts pre-encoded), its answer
//! turned into an [`Outcome`] or a refusal.

use super::{layout, room_name, RemoteStore};
use crate::room::change::{Mutation, Outcome, Refusal};
use crate::room::prepare::PreparedRoom;
use crate::room::StoreError;
use crate::room::{now_millis, EpochMillis, Revision, RoomName};
use redis::AsyncCommands;

impl RemoteStore {
    /// Applies a mutation atomically on the server.
    pub async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        self.apply(mutation).await.map_err(|e| match e {
            StoreError::Unavailable { message, cause } => StoreError::Unavailable {
                message: format!("the change was not stored: {message}"),
                cause,
            },
            e => e,
        })
    }

    async fn apply(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        let now = now_millis();
        match mutation {
            Mutation::Save {
                room,
                expected_revision,
            } => self.save(&room, expected_revision, now).await,
            Mutation::Delete {
                name,
                expected_revision,
            } => {
                let (status, value) = self
                    .run(
                        &self.inner.scripts.delete,
                        &name,
                        vec![
                            name.as_str().as_bytes().to_vec(),
                            expected(expected_revision),
                            self.inner.keys.channel().into_bytes(),
                            deleted_event(&name),
                        ],
                    )
                    .await?;
                match status.as_str() {
                    "ok" => Ok(Outcome::Deleted {
                        deleted: value == 1,
                    }),
                    _ => Err(StoreError::Refused(Refusal::Conflict { current: value })),
                }
            }
            Mutation::AddRating {
                name,
                media_id,
                user_name,
                rating,
                timestamp,
            } => {
                let entry = serde_json::json!([user_name, rating.as_str(), timestamp]).to_string();
                let tail = format!(
                    ",\"mediaId\":{},\"userName\":{},\"rating\":\"{}\",\"timestamp\":{timestamp}}}",
                    quote(&media_id),
                    quote(&user_name),
                    rating.as_str()
                );
                let (status, revision) = self
                    .run(
                        &self.inner.scripts.add_rating,
                        &name,
                        vec![
                            name.as_str().as_bytes().to_vec(),
                            media_id.into_bytes(),
                            user_name.into_bytes(),
                            entry.into_bytes(),
                            now.to_string().into_bytes(),
                            self.inner.keys.channel().into_bytes(),
                            event_head("rated", &name),
                            tail.into_bytes(),
                        ],
                    )
                    .await?;
                match status.as_str() {
                    "ok" => Ok(Outcome::Rated {
                        revision,
                        added: true,
                    }),
                    "same" => Ok(Outcome::Rated {
                        revision,
                        added: false,
                    }),
                    _ => Err(StoreError::Refused(Refusal::NotFound { name })),
                }
            }
            Mutation::SetProgress {
                name,
                user_name,
                progress,
            } => {
                let tail = format!(
                    ",\"userName\":{},\"progress\":{progress}}}",
                    quote(&user_name)
                );
                let (status, revision) = self
                    .run(
                        &self.inner.scripts.set_progress,
                        &name,
                        vec![
                            name.as_str().as_bytes().to_vec(),
                            user_name.into_bytes(),
                            progress.to_string().into_bytes(),
                            now.to_string().into_bytes(),
                            self.inner.keys.channel().into_bytes(),
                            event_head("progress", &name),
                            tail.into_bytes(),
                        ],
                    )
                    .await?;
                match status.as_str() {
                    "ok" => Ok(Outcome::Progressed { revision }),
                    _ => Err(StoreError::Refused(Refusal::NotFound { name })),
                }
            }
            Mutation::DeleteCreatedBefore { created_before } => {
                let count = self.delete_below(4, created_before).await?;
                Ok(Outcome::DeletedMany { count })
            }
            Mutation::Expire { idle_since } => {
                let count = self.delete_below(3, idle_since).await?;
                Ok(Outcome::DeletedMany { count })
            }
        }
    }

    async fn save(
        &self,
        room: &PreparedRoom,
        expected_revision: Option<Revision>,
        now: EpochMillis,
    ) -> Result<Outcome, StoreError> {
        let name = &room.name;
        let mut args = vec![
            name.as_str().as_bytes().to_vec(),
            expected(expected_revision),
            now.to_string().into_bytes(),
            room.facts.created_at.to_string().into_bytes(),
            self.inner.keys.channel().into_bytes(),
            event_head("saved", name),
        ];
        for (field, value) in layout::split(room, now).fields {
            args.push(field);
            args.push(value);
        }
        let (status, value) = self.run(&self.inner.scripts.save, name, args).await?;
        match status.as_str() {
            "ok" => Ok(Outcome::Saved { revision: value }),
            _ => Err(StoreError::Refused(Refusal::Conflict { current: value })),
        }
    }

    /// Writes a room with a given revision and times, as `migrate` copies it.
    pub async fn restore(
        &self,
        room: &PreparedRoom,
        revision: Revision,
        updated_at: EpochMillis,
    ) -> Result<(), StoreError> {
        let name = &room.name;
        let mut args = vec![
            name.as_str().as_bytes().to_vec(),
            revision.to_string().into_bytes(),
            updated_at.to_string().into_bytes(),
            room.facts.created_at.to_string().into_bytes(),
        ];
        for (field, value) in layout::split(room, updated_at).fields {
            args.push(field);
            args.push(value);
        }
        self.run(&self.inner.scripts.restore, name, args)
            .await
            .map(drop)
    }

    /// Deletes every room whose score in `changed` (set 3) or `created` (set 4) is below
    /// `bound`, each checked again inside the script.
    async fn delete_below(&self, set: u8, bound: EpochMillis) -> Result<u64, StoreError> {
        let key = match set {
            3 => self.inner.keys.changed(),
            _ => self.inner.keys.created(),
        };
        let mut c = self.connection();
        let mut count = 0;
        loop {
            let below = format!("({bound}");
            let names = self
                .page("ZRANGEBYSCORE", &key, b"-inf", below.as_bytes())
                .await?;
            if names.is_empty() {
                return Ok(count);
            }
            let mut deleted_here = 0;
            for raw in names {
                let Some(name) = room_name(&raw) else {
                    // Not a name a daemon would write; drop it from the set so it is not seen again.
                    let _: Result<i64, _> = c.zrem(&key, &raw).await;
                    continue;
                };
                let (_, deleted) = self
                    .run(
                        &self.inner.scripts.delete_if_below,
                        &name,
                        vec![
                            name.as_str().as_bytes().to_vec(),
                            set.to_string().into_bytes(),
                            bound.to_string().into_bytes(),
                            self.inner.keys.channel().into_bytes(),
                            deleted_event(&name),
                        ],
                    )
                    .await?;
                deleted_here += deleted;
            }
            count += deleted_here;
            if deleted_here == 0 {
                // Every candidate was saved again meanwhile; what is left is not below `bound`.
                return Ok(count);
            }
        }
    }

    /// Runs a script on the four keys of room `name`; returns its status and number.
    async fn run(
        &self,
        script: &::redis::Script,
        name: &RoomName,
        args: Vec<Vec<u8>>,
    ) -> Result<(String, u64), StoreError> {
        let keys = &self.inner.keys;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.room(name.as_str()))
            .key(keys.index())
            .key(keys.changed())
            .key(keys.created());
        for arg in args {
            invocation.arg(arg);
        }
        let mut c = self.connection();
        let (status, value): (String, String) = invocation
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        let value = value.parse().unwrap_or(0);
        Ok((status, value))
    }
}

fn expected(revision: Option<Revision>) -> Vec<u8> {
    revision
        .map(|r| r.to_string())
        .unwrap_or_default()
        .into_bytes()
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// The event line up to and including `"revision":`; the script adds the number.
fn event_head(event: &str, name: &RoomName) -> Vec<u8> {
    format!(
        "{{\"event\":\"{event}\",\"roomName\":{},\"revision\":",
        quote(name.as_str())
    )
    .into_bytes()
}

fn deleted_event(name: &RoomName) -> Vec<u8> {
    format!(
        "{{\"event\":\"deleted\",\"roomName\":{}}}",
        quote(name.as_str())
    )
    .into_bytes()
}
