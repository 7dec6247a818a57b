//! The fault sweep over the simulated disk (issue 15): every file-system call of a scripted
//! workload fails in turn, and the backend must heal by itself.
//!
//! The workload runs the store over [`SimFs`] with every background job inline, so its calls
//! come in the same order every run and call `N` is always the same call. One run without
//! faults counts them; then, for each call `N`, each mode (fail call `N` once, fail a burst of
//! [`BURST`] calls from `N`, fail every call from `N` until the fault is cleared), each error
//! (EIO, ENOSPC) and each durability, the workload runs again with that fault and checks:
//!
//! 1. every refusal is a `storage` error naming the directory and carrying the OS error;
//! 2. no `ok` for what is not durable: a power loss during the fault (strict) or after a
//!    `flush` that succeeded (both modes) recovers exactly the rooms the store served;
//! 3. once the fault is cleared, the next writes and a `flush` succeed, with no restart;
//! 4. a power loss then recovers exactly what the store served (nothing a client was told
//!    failed, everything it was told stored), also one that keeps every page ever written
//!    ([`SimFs::power_loss_keeping_failed`]: a refused batch that could not be cut off);
//! 5. a clean stop succeeds, leaves every room file current and no `.tmp-*` file.
//!
//! A start-up that meets the fault may fail (it is retried once the fault is cleared). The run
//! prints how many cases it ran; `SWEEP_STRIDE=N` runs every Nth call index only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::sim::{Fault, SimFs};
use super::FileBackend;
use crate::backend::Backend;
use crate::config::Durability;
use crate::room::change::Mutation;
use crate::room::entry::RoomMap;
use crate::room::prepare::PreparedRoom;
use crate::room::StoreError;
use crate::room::{validate, Rating, RoomName};
use crate::store::{self, ActorThread, StoreHandle};

/// How many consecutive calls a burst fails.
const BURST: u64 = 3;

fn dir() -> PathBuf {
    PathBuf::from("/sim/rooms")
}

fn backend(fs: &SimFs, durability: Durability) -> FileBackend {
    FileBackend::with_fs(Arc::new(fs.clone()), dir(), durability)
        .with_fold_policy(4096, Duration::ZERO)
        .inline()
}

/// A save of room `name` with `padding` bytes of filler (shared with `refused_tests.rs`).
pub(super) fn save(name: &str, padding: usize) -> Mutation {
    let room = validate(json!({
        "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00Z",
        "creatorPlexUserId": "1", "creatorPlexUsername": "john", "padding": "x".repeat(padding)
    }))
    .expect("a valid room");
    Mutation::Save {
        room: Box::new(PreparedRoom::new(room)),
        expected_revision: None,
    }
}

/// The `n`-th rating: media `m<n>` by user `u<n>`.
pub(super) fn rate(name: &str, n: usize) -> Mutation {
    Mutation::AddRating {
        name: RoomName::new(name).expect("a valid name"),
        media_id: format!("m{n}"),
        user_name: format!("u{n}"),
        rating: Rating::Like,
        timestamp: n as u64,
    }
}

fn delete(name: &str) -> Mutation {
    Mutation::Delete {
        name: RoomName::new(name).expect("a valid name"),
        expected_revision: None,
    }
}

/// Room name -> (revision, compact JSON): what a client can see.
type View = Vec<(String, u64, String)>;

fn view_of(rooms: &RoomMap) -> View {
    rooms
        .values()
        .map(|e| {
            let text = String::from_utf8_lossy(e.encoded()).into_owned();
            (e.name.to_string(), e.revision, text)
        })
        .collect()
}

/// What a daemon starting on `fs` now would serve, checking every room file is whole.
fn recover(fs: &SimFs) -> Result<View, String> {
    for (file, bytes) in fs.files(&dir()) {
        if super::names::is_room_file(&file) {
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("room file {file} is torn: {e}"))?;
            validate(value).map_err(|e| format!("room file {file} is invalid: {e}"))?;
        }
    }
    let rooms = backend(fs, Durability::Strict)
        .load()
        .map_err(|e| format!("recovery failed: {e}"))?;
    Ok(view_of(&rooms))
}

/// A power loss now must bring back exactly `served`: one that keeps a random part of what
/// was not synced, and once the disk works again (`healed`), one that keeps every page ever
/// written. While the disk fails, a refused batch it would not let be cut off may still be
/// found; the first write that works makes it harmless.
fn survives_power_loss(
    fs: &SimFs,
    seed: u64,
    served: &View,
    when: &str,
    healed: bool,
) -> Result<(), String> {
    recovers_served(&fs.power_loss(seed), served, when)?;
    if healed {
        let when = format!("{when} (keeping every page written)");
        recovers_served(&fs.power_loss_keeping_failed(), served, &when)?;
    }
    Ok(())
}

fn recovers_served(image: &SimFs, served: &View, when: &str) -> Result<(), String> {
    let recovered = recover(image)?;
    if &recovered != served {
        return Err(format!(
            "{when}: a power loss recovered {} room(s) {:?}, the store served {} {:?}",
            recovered.len(),
            summary(&recovered),
            served.len(),
            summary(served)
        ));
    }
    Ok(())
}

fn summary(view: &View) -> Vec<(String, u64)> {
    view.iter().map(|(n, r, _)| (n.clone(), *r)).collect()
}

/// Where a case's power loss strikes: a call after the fault's first, spread over the next 40
/// by the case, so that crashes land inside the folds and starts that follow a failure.
fn crash_point(case: &Case) -> u64 {
    let mix = case
        .fault
        .from
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(case.seed.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    case.fault.from.saturating_add(1 + (mix >> 33) % 40)
}

/// If the power loss struck during step `n`: a daemon starting on that disk serves (strict)
/// the rooms as they were before the step or after it, and (both modes) starts at all, with
/// every room file whole.
fn crashed_in_between(
    fs: &SimFs,
    strict: bool,
    before: &View,
    after: &View,
    n: usize,
) -> Result<(), String> {
    let Some(image) = fs.take_crash_image() else {
        return Ok(());
    };
    let recovered = recover(&image).map_err(|e| format!("power loss in step {n}: {e}"))?;
    if strict && &recovered != before && &recovered != after {
        return Err(format!(
            "power loss in step {n}: recovered {:?}, served {:?} before it and {:?} after",
            summary(&recovered),
            summary(before),
            summary(after)
        ));
    }
    Ok(())
}

/// A refusal must be `storage`, name the directory and carry the OS error.
fn refusal_is_storage(error: &StoreError) -> Result<(), String> {
    match error {
        StoreError::Storage { message, cause } if message.contains("/sim/rooms") => match cause {
            Some(cause) if !cause.is_empty() => Ok(()),
            _ => Err(format!("a storage error without its OS error: {message}")),
        },
        StoreError::Refused(_) => Ok(()),
        other => Err(format!("not a storage error naming the file: {other:?}")),
    }
}

/// One step of the workload.
enum Step {
    Write(Mutation),
    Tick,
    Flush,
    Reload,
}

struct Case {
    fault: Fault,
    durability: Durability,
    seed: u64,
}

struct Run {
    store: StoreHandle,
    actor: ActorThread,
}

fn start(fs: &SimFs, durability: Durability) -> Result<Run, String> {
    store::start(Box::new(backend(fs, durability)))
        .map(|(store, actor)| Run { store, actor })
        .map_err(|e| e.to_string())
}

/// The disk every case starts from: three rooms in their files, one with a rating.
fn prepared(durability: Durability) -> SimFs {
    let fs = SimFs::default();
    let runtime = runtime();
    let run = start(&fs, durability).expect("a fresh start");
    runtime.block_on(async {
        for name in ["a", "b", "c"] {
            run.store.mutate(save(name, 300)).await.expect("saved");
        }
        run.store.mutate(rate("a", 0)).await.expect("rated");
    });
    drop(run.store);
    run.actor.join().expect("no panic").expect("a clean stop");
    fs.power_loss(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs the workload with `case`'s fault; `Err` says which invariant broke.
fn run_case(base: &SimFs, case: &Case, runtime: &tokio::runtime::Runtime) -> Result<u64, String> {
    let fs = base.power_loss(0);
    fs.set_fault(case.fault);
    fs.crash_at(crash_point(case));
    let strict = case.durability == Durability::Strict;
    let run = match start(&fs, case.durability) {
        Ok(run) => run,
        Err(e) if fs.fault_hit() => {
            fs.clear_fault();
            start(&fs, case.durability).map_err(|again| {
                format!("start refused ({e}), and again after the fault: {again}")
            })?
        }
        Err(e) => return Err(format!("start failed with no fault: {e}")),
    };
    let store = &run.store;
    let served = || view_of(&store.snapshot().rooms);
    let seed = case.seed;
    runtime.block_on(async {
        let script = [
            Step::Write(save("d", 200)),
            Step::Write(rate("a", 1)),
            Step::Write(rate("b", 2)),
            Step::Write(delete("c")),
            Step::Tick,
            Step::Write(save("e", 3000)),
            Step::Write(rate("d", 3)),
            Step::Write(rate("a", 4)),
            Step::Flush,
            Step::Reload,
            Step::Tick,
            Step::Write(rate("a", 5)),
            Step::Write(delete("b")),
            Step::Write(save("f", 100)),
            Step::Tick,
        ];
        for (n, step) in script.into_iter().enumerate() {
            let write = matches!(step, Step::Write(_));
            let before = served();
            let flushed = match step {
                Step::Write(mutation) => store.mutate(mutation).await.map(|_| false),
                Step::Tick => store.tick().await.map(|()| false),
                Step::Flush => store.flush().await.map(|()| true),
                Step::Reload => store.reload().await.map(|_| false),
            };
            if let Err(e) = &flushed {
                refusal_is_storage(e)?;
            }
            crashed_in_between(&fs, strict, &before, &served(), n)?;
            // Strict: a power loss after a fold, a reload or a flush (and after the last
            // write, below) keeps exactly what was served. Relaxed: once a flush said so.
            if (strict && !write) || flushed == Ok(true) {
                let when = format!("after step {n}");
                survives_power_loss(&fs, seed, &served(), &when, false)?;
            }
        }
        fs.clear_fault();

        // Healed with no restart.
        for (n, mutation) in [save("g", 100), rate("a", 6), delete("f")]
            .into_iter()
            .enumerate()
        {
            let before = served();
            if let Err(e) = store.mutate(mutation).await {
                return Err(format!("write {n} after the fault was refused: {e:?}"));
            }
            crashed_in_between(&fs, strict, &before, &served(), 100 + n)?;
            // Before any fold has removed the journals the fault left: the first write that
            // works makes a refused batch harmless.
            let when = format!("after write {n} after the fault (keeping every page written)");
            recovers_served(&fs.power_loss_keeping_failed(), &served(), &when)?;
        }
        store
            .flush()
            .await
            .map_err(|e| format!("flush after the fault: {e:?}"))?;
        let _ = store.tick().await;
        crashed_in_between(&fs, strict, &served(), &served(), 200)?;
        survives_power_loss(&fs, seed, &served(), "after the fault", true)
    })?;
    let last = served();
    drop(run.store);
    run.actor
        .join()
        .map_err(|_| "the actor panicked".to_string())?
        .map_err(|e| format!("the clean stop failed: {e}"))?;
    crashed_in_between(&fs, strict, &last, &last, usize::MAX)?;
    let files = fs.files(&dir());
    if let Some((tmp, _)) = files.iter().find(|(f, _)| f.starts_with(".tmp-")) {
        return Err(format!("{tmp} left after a clean stop"));
    }
    for (name, _, text) in &last {
        let file = super::names::file_name(&RoomName::new(name).map_err(|e| e.to_string())?);
        let bytes = files
            .iter()
            .find(|(f, _)| *f == file)
            .map(|(_, b)| b)
            .ok_or_else(|| format!("no file {file} after a clean stop"))?;
        let on_disk: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let served: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if on_disk != served {
            return Err(format!("{file} is not current after a clean stop"));
        }
    }
    survives_power_loss(&fs, seed, &last, "after the clean stop", true)?;
    Ok(fs.calls())
}

/// How many calls the workload makes when nothing fails.
fn calls_without_faults(base: &SimFs, durability: Durability) -> u64 {
    let case = Case {
        fault: Fault {
            from: u64::MAX,
            count: Some(1),
            errno: libc::EIO,
        },
        durability,
        seed: 0,
    };
    run_case(base, &case, &runtime()).expect("the workload passes without faults")
}

fn sweep(durability: Durability) {
    let stride: u64 = std::env::var("SWEEP_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let base = prepared(durability);
    let calls = calls_without_faults(&base, durability);
    let runtime = runtime();
    let (mut cases, mut failures) = (0u64, Vec::new());
    // `SWEEP_FROM=N` runs the cases that start failing at call N only (with `SIM_TRACE=1`,
    // the simulated disk prints each call).
    let only: Option<u64> = std::env::var("SWEEP_FROM")
        .ok()
        .and_then(|s| s.parse().ok());
    let froms = (0..calls).step_by(stride.max(1) as usize);
    for from in froms.filter(|f| only.is_none_or(|o| o == *f)) {
        for count in [Some(1), Some(BURST), None] {
            if only.is_some() && count != Some(BURST) {
                continue;
            }
            for errno in [libc::EIO, libc::ENOSPC] {
                let case = Case {
                    fault: Fault { from, count, errno },
                    durability,
                    seed: cases,
                };
                cases += 1;
                if let Err(e) = run_case(&base, &case, &runtime) {
                    failures.push(format!("{:?} {:?}: {e}", case.fault, durability));
                }
            }
        }
    }
    eprintln!("fault sweep ({durability:?}): {calls} calls, {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn every_call_of_the_workload_fails_in_turn_strict() {
    sweep(Durability::Strict);
}

#[test]
fn every_call_of_the_workload_fails_in_turn_relaxed() {
    sweep(Durability::Relaxed);
}
