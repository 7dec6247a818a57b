//! Room passwords: optional Argon2id hashing at rest, and checking a password against a room.
//!
//! With `passwordHashing: argon2`, a password in a saved room is replaced by its Argon2id PHC
//! string (one that already is such a string is kept). Checking accepts both forms, so a
//! directory may hold rooms saved before hashing was turned on. Hashing is deliberately slow, so
//! it runs on the blocking pool, never on the storage actor or a connection's event loop.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde_json::Value;

use crate::protocol::{ErrorCode, ErrorReply};
use crate::room::body::RoomBody;
use crate::room::prepare::PreparedRoom;
use crate::room::RoomDoc;

fn is_phc(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// The room with its plain-text password (if any) replaced by its Argon2id hash.
pub async fn hash_prepared(room: PreparedRoom) -> Result<PreparedRoom, ErrorReply> {
    let needs_hash = room.facts.password.as_deref().is_some_and(|p| !is_phc(p));
    if !needs_hash {
        return Ok(room);
    }
    let mut doc = RoomDoc::new();
    if let Some(plain) = &room.facts.password {
        doc.insert("password".to_owned(), Value::String(plain.clone()));
    }
    hash_in_room(&mut doc).await?;
    // Only the password changes: the room is edited as text, so its numbers stay as written.
    let mut body = RoomBody::parse(&room.encoded).unwrap_or_default();
    if let Some(hash) = doc.get("password") {
        body.set_field("password", hash);
    }
    PreparedRoom::from_json(&body.to_compact())
        .map_err(|e| ErrorReply::new(ErrorCode::InvalidRoom, e.to_string()))
}

/// Replaces a plain-text `password` in `doc` by its Argon2id hash.
pub async fn hash_in_room(doc: &mut RoomDoc) -> Result<(), ErrorReply> {
    let Some(Value::String(plain)) = doc.get("password") else {
        return Ok(());
    };
    if plain.is_empty() || is_phc(plain) {
        return Ok(());
    }
    let plain = plain.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(plain.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await;
    match hashed {
        Ok(Ok(hash)) => {
            doc.insert("password".to_owned(), Value::String(hash));
            Ok(())
        }
        Ok(Err(e)) => Err(
            ErrorReply::new(ErrorCode::Storage, "could not hash the password")
                .with_cause(e.to_string()),
        ),
        Err(e) => Err(
            ErrorReply::new(ErrorCode::Storage, "could not hash the password")
                .with_cause(e.to_string()),
        ),
    }
}

/// True if `candidate` is the password `stored` (plain text or an Argon2 PHC string).
pub async fn verify(stored: &str, candidate: &str) -> bool {
    if !is_phc(stored) {
        return constant_time_eq(stored.as_bytes(), candidate.as_bytes());
    }
    let (stored, candidate) = (stored.to_owned(), candidate.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &hash)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Compares without stopping at the first difference, so timing does not leak a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_once_and_verifies_both_forms() {
        let mut doc = RoomDoc::new();
        doc.insert("password".into(), "secret".into());
        hash_in_room(&mut doc).await.unwrap();
        let hash = doc["password"].as_str().unwrap().to_owned();
        assert!(hash.starts_with("$argon2id$"));
        hash_in_room(&mut doc).await.unwrap();
        assert_eq!(doc["password"], hash.as_str(), "a hash is not hashed again");
        assert!(verify(&hash, "secret").await);
        assert!(!verify(&hash, "Secret").await);
        assert!(verify("plain", "plain").await);
        assert!(!verify("plain", "plai").await);
    }
}
