//! `watch` against the real daemon (PROTOCOL.md section 3): every change reaches a watcher, in
//! revision order per room, only after its writer got the answer, filtered by `roomNames`; a
//! watcher that never reads is disconnected without the daemon's memory growing.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{bare_room, revision, room, Backend, Conn, Daemon};
use moviematch_storaged::client::Client;
use serde_json::{json, Value};

for_each_backend!(
    a_watcher_sees_every_change_of_concurrent_writers_in_revision_order,
    room_names_limit_a_watch_to_those_rooms,
    delete_rooms_sends_a_deleted_event_per_room,
    a_watch_does_not_report_changes_acknowledged_before_it_started,
    a_watcher_that_never_reads_is_disconnected_and_memory_stays_bounded,
    event_lines_are_the_same_bytes_from_every_backend,
);

/// A connection that sent `watch` (for `names`, or every room) and got its `{"ok":true}`: every
/// change committed from now on reaches it.
fn watcher(daemon: &Daemon, names: Option<&[&str]>) -> Conn {
    let mut conn = daemon.connect();
    let request = match names {
        Some(names) => json!({"op": "watch", "roomNames": names}),
        None => json!({"op": "watch"}),
    };
    let ack = conn.call(request);
    assert_eq!(ack, json!({"ok": true}), "watch acknowledgement");
    conn
}

/// The next event of a watcher; panics on EOF or after `IO_TIMEOUT`.
fn event(conn: &mut Conn) -> Value {
    let event = conn.read_json();
    assert!(event["event"].is_string(), "not an event: {event}");
    assert_ne!(
        event["event"], "overflow",
        "this watcher reads all the time"
    );
    event
}

/// The event a successful request produces according to its answer, or `None` when the request
/// changed nothing.
fn expected_event(request: &Value, answer: &Value) -> Option<Value> {
    // Requests without a room (flush, ...) change none.
    let name = request["roomName"]
        .as_str()
        .or_else(|| request["room"]["roomName"].as_str())
        .unwrap_or_default();
    match request["op"].as_str().expect("op") {
        "saveRoom" => {
            Some(json!({"event": "saved", "roomName": name, "revision": answer["revision"]}))
        }
        "addRating" if answer["added"] == true => Some(json!({
            "event": "rated", "roomName": name, "revision": answer["revision"],
            "mediaId": request["mediaId"], "userName": request["userName"],
            "rating": request["rating"], "timestamp": request["timestamp"],
        })),
        "setProgress" => Some(json!({
            "event": "progress", "roomName": name, "revision": answer["revision"],
            "userName": request["userName"], "progress": request["progress"],
        })),
        "deleteRoom" if answer["deleted"] == true => {
            Some(json!({"event": "deleted", "roomName": name}))
        }
        _ => None,
    }
}

/// Checks that `events` of one room are in revision order with none missing: each change raises
/// the revision by exactly one, a deleted room comes back only by a save at revision 1.
fn assert_revision_order(name: &str, initial: Option<u64>, events: &[&Value]) {
    let mut current = initial;
    for (i, event) in events.iter().enumerate() {
        let kind = event["event"].as_str().expect("event kind");
        let context = || format!("room {name:?}, event {i} {event} after revision {current:?}");
        match (kind, current) {
            ("deleted", Some(_)) => current = None,
            ("saved", None) => {
                assert_eq!(event["revision"], 1, "{}", context());
                current = Some(1);
            }
            ("saved" | "rated" | "progress", Some(r)) => {
                assert_eq!(event["revision"], r + 1, "{}", context());
                current = Some(r + 1);
            }
            _ => panic!("impossible event: {}", context()),
        }
    }
}

/// What `expected` has that `seen` lacks, and the other way round (as multisets).
fn multiset_difference(expected: &[Value], seen: &[Value]) -> (Vec<String>, Vec<String>) {
    let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
    for value in expected {
        *counts.entry(value.to_string()).or_default() += 1;
    }
    for value in seen {
        *counts.entry(value.to_string()).or_default() -= 1;
    }
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for (value, count) in counts {
        for _ in 0..count.abs() {
            if count > 0 {
                missing.push(value.clone());
            } else {
                extra.push(value.clone());
            }
        }
    }
    (missing, extra)
}

fn a_watcher_sees_every_change_of_concurrent_writers_in_revision_order(backend: Backend) {
    const WRITERS: usize = 8;
    const OPS: usize = 250;
    const ROOMS: [&str; 3] = ["alpha", "beta/../b", "gamma 🎬"];
    let daemon = Daemon::start(backend);
    let mut setup = daemon.connect();
    for name in ROOMS {
        assert_eq!(setup.save(&room(name)), 1);
    }
    let mut watch = watcher(&daemon, None);
    // Events of the saves above may still arrive (see
    // `a_watch_does_not_report_changes_acknowledged_before_it_started`): start after a marker.
    setup.save(&bare_room("start"));
    while event(&mut watch)["roomName"] != "start" {}
    let reader = thread::spawn(move || {
        let mut events = Vec::new();
        loop {
            let event = event(&mut watch);
            if event["roomName"] == "done" {
                return events;
            }
            events.push(event);
        }
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut conn = daemon.connect();
            thread::spawn(move || {
                let mut expected = Vec::new();
                for j in 0..OPS {
                    let name = ROOMS[(w + j) % ROOMS.len()];
                    let request = match (w * 7 + j * 3) % 10 {
                        0..=3 => json!({"op": "addRating", "roomName": name,
                                        "mediaId": format!("m{}", j % 40), "userName": format!("w{w}"),
                                        "rating": if j % 2 == 0 { "like" } else { "dislike" },
                                        "timestamp": 1_000 + j}),
                        4..=6 => json!({"op": "setProgress", "roomName": name,
                                        "userName": format!("w{w}"), "progress": j}),
                        7 | 8 => json!({"op": "saveRoom", "room": bare_room(name)}),
                        _ => json!({"op": "deleteRoom", "roomName": name}),
                    };
                    let answer = conn.call(request.clone());
                    if answer["ok"] == true {
                        expected.extend(expected_event(&request, &answer));
                    } else {
                        // Rating or progress of a room another writer just deleted.
                        crate::harness::assert_err(&answer, "not_found");
                    }
                }
                expected
            })
        })
        .collect();
    let expected: Vec<Value> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    setup.save(&bare_room("done"));
    let seen = reader.join().expect("watcher");

    assert!(
        expected.len() > WRITERS * OPS / 2,
        "too few changes to say anything"
    );
    let (missing, extra) = multiset_difference(&expected, &seen);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the watcher's {} events differ from the writers' {} changes:\nmissing {missing:?}\nextra {extra:?}",
        seen.len(),
        expected.len()
    );
    for name in ROOMS {
        let events: Vec<&Value> = seen.iter().filter(|e| e["roomName"] == name).collect();
        assert_revision_order(name, Some(1), &events);
    }
}

#[test]
fn an_event_follows_the_writers_answer_and_carries_its_revision() {
    let daemon = Daemon::start(Backend::File);
    let mut writer = daemon.connect();
    let mut reader = daemon.connect();
    let mut watch = watcher(&daemon, None);
    let name = "movie-night";
    for k in 0..60u64 {
        let request = match k % 4 {
            0 => json!({"op": "saveRoom", "room": room(name)}),
            1 => json!({"op": "addRating", "roomName": name, "mediaId": format!("m{k}"),
                        "userName": "jane", "rating": "like", "timestamp": k}),
            2 => json!({"op": "setProgress", "roomName": name, "userName": "jane", "progress": k}),
            _ => json!({"op": "deleteRoom", "roomName": name}),
        };
        let answer = writer.ok(request.clone());
        let expected = expected_event(&request, &answer).expect("every request here changes");
        let seen = event(&mut watch);
        assert_eq!(seen, expected, "request {request}");
        // What the watcher heard of is committed: a read from anywhere sees it.
        let current = reader.get(name).map(|(_, revision)| revision);
        match seen["revision"].as_u64() {
            Some(r) => assert_eq!(current, Some(r), "{seen}"),
            None => assert_eq!(current, None, "{seen}"),
        }
    }

    // Requests that change nothing send no event: the next event is the marker's.
    writer.ok(json!({"op": "saveRoom", "room": room(name)}));
    assert_eq!(event(&mut watch)["event"], "saved");
    let unchanged = [
        (
            json!({"op": "saveRoom", "room": room(name), "expectedRevision": 7}),
            Some("conflict"),
        ),
        (
            json!({"op": "saveRoom", "room": {"roomName": name}}),
            Some("invalid_room"),
        ),
        (
            json!({"op": "addRating", "roomName": "absent", "mediaId": "m", "userName": "u",
                "rating": "like"}),
            Some("not_found"),
        ),
        (
            json!({"op": "addRating", "roomName": name, "mediaId": "movie-123",
                "userName": "john_doe", "rating": "like"}),
            None,
        ),
        (json!({"op": "deleteRoom", "roomName": "absent"}), None),
        (
            json!({"op": "deleteRoom", "roomName": name, "expectedRevision": 99}),
            Some("conflict"),
        ),
        (json!({"op": "getRoom", "roomName": name}), None),
        (json!({"op": "flush"}), None),
    ];
    for (request, error) in unchanged {
        match error {
            Some(code) => {
                writer.err(request, code);
            }
            None => {
                let answer = writer.ok(request.clone());
                assert_eq!(
                    expected_event(&request, &answer),
                    None,
                    "{request}: {answer}"
                );
            }
        }
    }
    let marker = writer.ok(
        json!({"op": "setProgress", "roomName": name, "userName": "marker",
                                  "progress": 1}),
    );
    let seen = event(&mut watch);
    assert_eq!(
        (seen["userName"].as_str(), seen["revision"].as_u64()),
        (Some("marker"), Some(revision(&marker))),
        "an event for a request that changed nothing: {seen}"
    );
}

fn room_names_limit_a_watch_to_those_rooms(backend: Backend) {
    let daemon = Daemon::start(backend);
    let mut writer = daemon.connect();
    let picky_names = ["a", "c d", "Ω/../x"];
    let mut picky = watcher(&daemon, Some(&picky_names));
    let mut all = watcher(&daemon, None);
    // Names no room can have are accepted (PROTOCOL.md section 3) and match nothing.
    let too_long = "n".repeat(256);
    let mut elsewhere = watcher(
        &daemon,
        Some(&["nothing-here", "", "marker", "x\u{1}", &too_long]),
    );
    let mut nowhere = watcher(&daemon, Some(&["", "a\nb"]));

    let names = ["a", "b", "c d", "A", "Ω/../x", "a ", "c"];
    let mut expected_all = Vec::new();
    for name in names {
        let answer = writer.ok(json!({"op": "saveRoom", "room": bare_room(name)}));
        expected_all
            .push(json!({"event": "saved", "roomName": name, "revision": revision(&answer)}));
        let answer = writer.ok(
            json!({"op": "setProgress", "roomName": name, "userName": "u",
                                      "progress": 2}),
        );
        expected_all.push(json!({"event": "progress", "roomName": name,
                                 "revision": revision(&answer), "userName": "u", "progress": 2}));
    }
    for name in names {
        writer.ok(json!({"op": "deleteRoom", "roomName": name}));
        expected_all.push(json!({"event": "deleted", "roomName": name}));
    }
    writer.save(&bare_room("marker"));

    let seen_all: Vec<Value> = (0..expected_all.len()).map(|_| event(&mut all)).collect();
    assert_eq!(seen_all, expected_all);
    assert_eq!(event(&mut all)["roomName"], "marker");

    let expected_picky: Vec<Value> = expected_all
        .iter()
        .filter(|e| picky_names.iter().any(|n| e["roomName"] == *n))
        .cloned()
        .collect();
    assert_eq!(expected_picky.len(), 9);
    let seen_picky: Vec<Value> = (0..expected_picky.len())
        .map(|_| event(&mut picky))
        .collect();
    assert_eq!(seen_picky, expected_picky);

    // Nothing of the other rooms, and the marker is its first event.
    assert_eq!(event(&mut elsewhere)["roomName"], "marker");

    // The marker is not among the picky watcher's rooms: nothing more is waiting for it.
    writer.save(&bare_room("a"));
    assert_eq!(event(&mut picky)["roomName"], "a");
    // Every event went out before the last one reached `picky`; none was for `nowhere`.
    nowhere.set_read_timeout(Duration::from_millis(300));
    assert_eq!(nowhere.try_read_line(), None, "a watch of no storable name");

    for bad in [json!("a"), json!([1]), json!(["", 1]), json!({"a": 1})] {
        let mut conn = daemon.connect();
        let answer = conn.call(json!({"op": "watch", "roomNames": bad}));
        crate::harness::assert_err(&answer, "bad_request");
    }
}

/// Waits until the daemon counts `open` connections (stats), polling through `conn`.
fn wait_for_connections(conn: &mut Conn, open: u64) {
    let started = Instant::now();
    loop {
        let stats = conn.ok(json!({"op": "stats"}));
        if stats["connections"].as_u64() == Some(open) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the watcher was not disconnected within 60 s: {stats}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A watcher on a raw socket that has read its acknowledgement and nothing more, so that
/// nothing reads ahead of what the test reads.
fn stalled_watcher(daemon: &Daemon) -> UnixStream {
    let mut stalled = UnixStream::connect(daemon.socket()).expect("connect watcher");
    stalled
        .write_all(b"{\"op\":\"watch\"}\n")
        .expect("send watch");
    let mut ack = [0u8; 12];
    stalled.read_exact(&mut ack).expect("read ack");
    assert_eq!(&ack, b"{\"ok\":true}\n");
    stalled
}

fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The whole lines a stalled watcher received before its EOF. A watcher dropped in the middle
/// of a line sees that torn line last; it is left out (and noted).
fn whole_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        let torn = lines.pop().unwrap_or_default();
        eprintln!(
            "note: the stalled watcher's stream ended with a torn line of {} bytes",
            torn.len()
        );
    }
    lines
}

fn a_watcher_that_never_reads_is_disconnected_and_memory_stays_bounded(backend: Backend) {
    const WRITERS: usize = 4;
    const EVENTS_EACH: usize = 12_500;
    let daemon = Daemon::start(backend);
    let mut setup = daemon.connect();
    for w in 0..WRITERS {
        setup.save(&room(&format!("room-{w}")));
    }
    let stalled = stalled_watcher(&daemon);

    let pid = daemon.pid();
    let baseline = rss_kb(pid).expect("daemon RSS");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let socket = daemon.socket().to_owned();
            thread::spawn(move || {
                let mut client = Client::connect(&socket).expect("writer connects");
                client
                    .set_timeout(Some(Duration::from_secs(60)))
                    .expect("timeout");
                let name = format!("room-{w}");
                let mut oks = 0;
                let mut failures = Vec::new();
                client
                    .pipeline(
                        (0..EVENTS_EACH).map(|k| {
                            json!({"op": "setProgress", "roomName": name,
                                   "userName": format!("user-{}", k % 100), "progress": k})
                        }),
                        |answer| match answer {
                            Ok(_) => oks += 1,
                            Err(error) => failures.push(error.to_string()),
                        },
                    )
                    .expect("the writer's connection works throughout");
                assert!(failures.is_empty(), "writer {w}: {failures:?}");
                oks
            })
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.join().expect("writer"), EVENTS_EACH);
    }
    // The daemon answers others while (or after) it drops the watcher, and it does drop it:
    // only `setup` is left (reading first could unblock a watcher the daemon has not dropped
    // yet).
    wait_for_connections(&mut setup, 1);

    // Everything the daemon wrote to the watcher before dropping it, then EOF.
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    BufReader::new(&stalled)
        .read_to_end(&mut received)
        .unwrap_or_else(|e| {
            panic!(
                "the watcher was not disconnected (after {:?}): {e}",
                started.elapsed()
            )
        });
    done.store(true, Ordering::SeqCst);
    // The kernel's own high-water mark catches a peak between two samples.
    let peak = sampler.join().expect("sampler").max(daemon.hwm_kb());

    let text = String::from_utf8_lossy(&received);
    let lines = whole_lines(&text);
    assert!(
        lines.len() < WRITERS * EVENTS_EACH,
        "a watcher that never read got every event ({})",
        lines.len()
    );
    for (i, line) in lines.iter().enumerate() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i} ({e}): {line}"));
        if event["event"] == "overflow" {
            assert_eq!(i, lines.len() - 1, "overflow must be the last line");
        }
    }
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "stalled watcher: {} lines, the last {:?}; RSS {baseline} kB, peak {peak} kB",
        lines.len(),
        lines.last()
    );
    assert!(
        growth_mib < 64,
        "daemon RSS grew by {growth_mib} MiB (from {baseline} kB to a peak of {peak} kB)"
    );

    // A new watcher works as before.
    let mut fresh = watcher(&daemon, Some(&["room-0"]));
    let answer = setup.ok(
        json!({"op": "setProgress", "roomName": "room-0", "userName": "x",
                                 "progress": 1}),
    );
    assert_eq!(event(&mut fresh)["revision"], revision(&answer));
}

#[test]
fn requests_before_watch_are_answered_first_and_lines_after_it_are_ignored() {
    let daemon = Daemon::start(Backend::Memory);
    let mut conn = daemon.connect();
    conn.send_raw(b"{\"id\":1,\"op\":\"ping\"}\n{\"id\":\"w\",\"op\":\"watch\"}\n");
    assert_eq!(
        conn.read_json(),
        json!({"id": 1, "ok": true, "protocol": 1})
    );
    assert_eq!(conn.read_json(), json!({"id": "w", "ok": true}));
    // Ignored: no answer to any of these, and the watch goes on.
    conn.send_raw(b"{\"id\":2,\"op\":\"ping\"}\nnot json\n\n{\"op\":\"watch\"}\n");
    let mut writer = daemon.connect();
    let answer = writer.ok(json!({"op": "saveRoom", "room": bare_room("x")}));
    assert_eq!(
        event(&mut conn),
        json!({"event": "saved", "roomName": "x", "revision": revision(&answer)})
    );
}

fn delete_rooms_sends_a_deleted_event_per_room(backend: Backend) {
    let daemon = Daemon::start(backend);
    let mut writer = daemon.connect();
    let mut watch = watcher(&daemon, None);
    let old = |name: &str| {
        crate::harness::with(
            bare_room(name),
            json!({"createdAt": "2020-01-01T00:00:00.000Z"}),
        )
    };
    for name in ["old 1", "old 2"] {
        writer.save(&old(name));
        assert_eq!(event(&mut watch)["event"], "saved");
    }
    writer.save(&bare_room("new"));
    assert_eq!(event(&mut watch)["roomName"], "new");
    let answer = writer.ok(json!({"op": "deleteRooms", "createdBefore": "2021-01-01T00:00:00Z"}));
    assert_eq!(answer["deleted"], 2);
    let mut deleted = vec![event(&mut watch), event(&mut watch)];
    deleted.sort_by_key(|e| e["roomName"].to_string());
    assert_eq!(
        deleted,
        vec![
            json!({"event": "deleted", "roomName": "old 1"}),
            json!({"event": "deleted", "roomName": "old 2"}),
        ]
    );
    writer.save(&bare_room("marker"));
    assert_eq!(event(&mut watch)["roomName"], "marker");
}

#[test]
fn a_watcher_whose_socket_stays_full_is_disconnected() {
    // Fewer events than the daemon's event buffer (so the watcher never falls behind it), but
    // long ones (255-byte names): far more bytes than socket buffers hold. The daemon's write
    // to the watcher blocks, and after a few seconds it gives up on the watcher.
    const EVENTS: usize = 3_000;
    let daemon = Daemon::start(Backend::Memory);
    let name = "n".repeat(255);
    let mut setup = daemon.connect();
    setup.save(&bare_room(&name));
    let stalled = stalled_watcher(&daemon);

    let mut client = Client::connect(daemon.socket()).expect("writer connects");
    client
        .set_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut oks = 0;
    client
        .pipeline(
            (0..EVENTS).map(
                |k| json!({"op": "setProgress", "roomName": name, "userName": "u", "progress": k}),
            ),
            |answer| {
                answer.expect("the writer gets its answers");
                oks += 1;
            },
        )
        .expect("pipeline");
    assert_eq!(oks, EVENTS);
    drop(client);
    // Reading now would unblock the watcher; wait until only `setup` is left.
    wait_for_connections(&mut setup, 1);

    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut received = Vec::new();
    BufReader::new(&stalled)
        .read_to_end(&mut received)
        .expect("the stalled watcher is disconnected (EOF within 60 s)");
    let text = String::from_utf8_lossy(&received);
    let lines = whole_lines(&text);
    assert!(
        lines.len() < EVENTS,
        "got every event, so it was never stalled"
    );
    let progress: Vec<u64> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|event| event["progress"].as_u64())
        .collect();
    let in_order: Vec<u64> = (0..progress.len() as u64).collect();
    assert_eq!(progress, in_order, "events in order, none skipped");
    for (i, line) in lines.iter().enumerate() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i} ({e}): {line}"));
        if event["event"] == "overflow" {
            assert_eq!(i, lines.len() - 1, "overflow must be the last line");
        }
    }
    eprintln!(
        "socket-full watcher: {} complete lines, the last {:?}",
        lines.len(),
        lines.last().map(|l| &l[..l.len().min(60)])
    );
    Conn::connect(daemon.socket()).expect("connect").ping();
}

fn a_watch_does_not_report_changes_acknowledged_before_it_started(backend: Backend) {
    // A client that got the `ok` of a change and then starts a watch must not hear of that
    // change as if it were new: the state it reads after the `ok` already holds it, and the
    // event would be a stale duplicate (PROTOCOL.md 1.5: a request sent after a response sees
    // the mutation). It is a race between the writer's answer and the event, so it is tried
    // many times, with another client keeping the daemon's commit batches large.
    const ATTEMPTS: usize = 2_000;
    let daemon = Daemon::start(backend);
    let mut writer = daemon.connect();
    writer.save(&bare_room("noise"));
    let stop = Arc::new(AtomicBool::new(false));
    let noise: Vec<_> = (0..3).map(|_| {
        let (socket, stop) = (daemon.socket().to_owned(), stop.clone());
        thread::spawn(move || {
            let mut client = Client::connect(&socket).expect("noise connects");
            let requests = (0u64..)
                .take_while(|_| !stop.load(Ordering::SeqCst))
                .map(|k| json!({"op": "setProgress", "roomName": "noise", "userName": "n", "progress": k}));
            client
                .pipeline(requests, |answer| {
                    answer.expect("noise write");
                })
                .expect("noise pipeline");
        })
    }).collect();
    let mut stale = Vec::new();
    for attempt in 0..ATTEMPTS {
        let answer = writer.ok(json!({"op": "saveRoom", "room": bare_room("before")}));
        let stale_event =
            json!({"event": "saved", "roomName": "before", "revision": answer["revision"]});
        let mut watch = watcher(&daemon, None);
        writer.save(&bare_room("marker"));
        loop {
            let event = event(&mut watch);
            if event == stale_event {
                stale.push(format!("attempt {attempt}: {event}"));
            }
            if event["roomName"] == "marker" {
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for noise in noise {
        noise.join().expect("noise");
    }
    assert!(
        stale.is_empty(),
        "{} of {ATTEMPTS} watches, each sent after the answer to a saveRoom of \"before\", received \
         that change's event (the daemon answers a batch's writers before it broadcasts the \
         batch's events, and a watch subscribing in between hears of changes older than itself): \
         {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

/// Redis rooms' events are published by the scripts and local rooms' events come from the
/// actor: a watcher must get the same bytes from either (one encoder), with the protocol's key
/// order and JSON's escaping of awkward names.
fn event_lines_are_the_same_bytes_from_every_backend(backend: Backend) {
    let daemon = Daemon::start(backend);
    let mut writer = daemon.connect();
    let mut watch = watcher(&daemon, None);
    let name = "Film \"night\" \\ é😀 </script>";
    let media = "plex://movie/\"q\"\u{7f}";
    let user = "jäne\\\u{2028}";
    let requests = [
        json!({"op": "saveRoom", "room": room(name)}),
        json!({"op": "addRating", "roomName": name, "mediaId": media, "userName": user,
               "rating": "dislike", "timestamp": 1729890000123u64}),
        json!({"op": "setProgress", "roomName": name, "userName": user, "progress": 42}),
        json!({"op": "deleteRoom", "roomName": name}),
    ];
    for request in requests {
        let answer = writer.ok(request.clone());
        let expected = expected_event(&request, &answer).expect("every request here changes");
        let line = watch.read_line().expect("an event line");
        assert_eq!(
            line,
            serde_json::to_string(&expected).expect("encodes"),
            "{} event of {request}",
            backend.name()
        );
    }
}
