//! The mutations of [`RemoteStore`]: each one script run, declared beside the Rust that fills
//! it (`save.rs`, `delete.rs`, `rate.rs`, `progress.rs`; how in `script.rs`), its answer turned
//! into an [`Outcome`] or a refusal here.

use redis::{ErrorKind, FromRedisValue, ServerErrorKind};

use super::delete::By;
use super::script::Script;
use super::{RemoteStore, MAY_HAVE_BEEN_STORED};
use crate::room::change::{Mutation, Outcome};
use crate::room::StoreError;
use crate::room::{now_millis, RoomName};

impl RemoteStore {
    /// Applies a mutation atomically on the server.
    pub async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        self.apply(mutation).await.map_err(|e| match e {
            StoreError::Unavailable { message, cause }
                if !message.starts_with(MAY_HAVE_BEEN_STORED) =>
            {
                StoreError::Unavailable {
                    message: format!("the change was not stored: {message}"),
                    cause,
                }
            }
            e => e,
        })
    }

    async fn apply(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        match mutation {
            Mutation::Save {
                room,
                expected_revision,
            } => self.save(&room, expected_revision, now_millis()).await,
            Mutation::Delete {
                name,
                expected_revision,
            } => self.delete(&name, expected_revision).await,
            Mutation::AddRating {
                name,
                media_id,
                user_name,
                rating,
                timestamp,
            } => {
                self.add_rating(name, &media_id, &user_name, rating.as_str(), timestamp)
                    .await
            }
            Mutation::SetProgress {
                name,
                user_name,
                progress,
            } => self.set_progress(name, &user_name, progress).await,
            Mutation::DeleteCreatedBefore { created_before } => {
                let count = self.delete_below(By::Created, created_before).await?;
                Ok(Outcome::DeletedMany { count })
            }
            Mutation::Expire { idle_since } => {
                let count = self.delete_below(By::Changed, idle_since).await?;
                Ok(Outcome::DeletedMany { count })
            }
        }
    }

    /// Runs a script on the five keys of room `name`; returns its status and number.
    pub(super) async fn run(
        &self,
        name: &RoomName,
        script: impl Script,
    ) -> Result<(String, u64), StoreError> {
        let (status, value): (String, String) = self.invoke(name.as_str(), script).await?;
        let value = value.parse().unwrap_or(0);
        Ok((status, value))
    }

    /// Runs a script on the five keys of room `name`; returns its answer.
    pub(super) async fn invoke<T: FromRedisValue, S: Script>(
        &self,
        name: &str,
        script: S,
    ) -> Result<T, StoreError> {
        let command = script.command(&self.inner.keys, name);
        self.before_change().await;
        let mut c = self.connection();
        let answer = match command.query_async(&mut c).await {
            // Redis restarted and forgot its scripts: load it and send the same command again.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                S::script()
                    .load_async(&mut c)
                    .await
                    .map_err(|e| self.failed(e))?;
                command.query_async(&mut c).await
            }
            answer => answer,
        };
        if answer.is_ok() {
            self.answered();
        }
        answer.map_err(|e| self.failed_change(e))
    }
}
