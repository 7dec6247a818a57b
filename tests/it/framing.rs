//! PROTOCOL.md section 1 (transport and framing): pipelining, line terminators, empty lines,
//! malformed lines, oversized lines with bounded memory, and `maxConnections`.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

for_each_backend!(pipelined_requests_are_answered_in_order);

fn start_memory(args: &[&str]) -> (Daemon, Conn) {
    let d = Daemon::start_with(Backend::Memory, args.iter().copied());
    let c = d.connect();
    (d, c)
}

fn pipelined_requests_are_answered_in_order(b: Backend) {
    let n: usize = if b == Backend::Memory { 6000 } else { 1200 };
    let d = Daemon::start(b);
    let mut c = d.connect();
    c.save(&bare_room("p"));
    let mut expected: Vec<Value> = Vec::new(); // the id each response must carry (Null: none)
    let mut buf = Vec::new();
    for i in 0..n {
        let (req, id) = match i % 5 {
            0 => (json!({"id": i, "op": "ping"}).to_string(), json!(i)),
            1 => (
                json!({"id": i, "op": "addRating", "roomName": "p", "mediaId": format!("m{i}"),
                         "userName": "u", "rating": "like", "timestamp": i})
                .to_string(),
                json!(i),
            ),
            2 => (
                json!({"id": format!("h{i}"), "op": "hasRoom", "roomName": "p"}).to_string(),
                json!(format!("h{i}")),
            ),
            3 if i % 50 == 48 => ("{broken".to_string(), Value::Null),
            3 => (
                json!({"op": "getRoom", "roomName": "nope"}).to_string(),
                Value::Null,
            ),
            _ => (json!({"id": i, "op": "noSuchOp"}).to_string(), json!(i)),
        };
        buf.extend_from_slice(req.as_bytes());
        buf.push(b'\n');
        expected.push(id);
    }
    // A writer thread so neither side blocks on a full socket buffer; the daemon still sees
    // thousands of requests before this client reads any response.
    let mut w = c.writer();
    let writer = thread::spawn(move || w.write_all(&buf).unwrap());
    let mut ratings = 0;
    for (i, id) in expected.iter().enumerate() {
        let r = c.read_json();
        assert_eq!(
            r.get("id").unwrap_or(&Value::Null),
            id,
            "response {i} out of order: {r}"
        );
        match i % 5 {
            0 => assert_eq!(r["protocol"], 1, "{r}"),
            1 => {
                ratings += 1;
                assert_eq!(r["revision"], 1 + ratings, "{r}");
            }
            2 => assert_eq!(r["exists"], true, "{r}"),
            3 if i % 50 == 48 => {
                assert_err(&r, "bad_json");
            }
            3 => assert_eq!(r["room"], Value::Null, "{r}"),
            _ => {
                assert_err(&r, "bad_request");
            }
        }
    }
    writer.join().unwrap();
    let (room, rev) = c.get("p").unwrap();
    assert_eq!(rev, 1 + ratings);
    assert_eq!(room["ratings"].as_object().unwrap().len() as u64, ratings);
}

#[test]
fn crlf_terminated_lines_are_accepted() {
    let (_d, mut c) = start_memory(&[]);
    let save = json!({"id": 1, "op": "saveRoom", "room": room("r")}).to_string();
    c.send_raw(
        format!("{save}\r\n{{\"id\":2,\"op\":\"getRoom\",\"roomName\":\"r\"}}\r\n").as_bytes(),
    );
    assert_eq!(c.read_json()["id"], 1);
    let r = c.read_json();
    assert_eq!(
        (r["id"].clone(), r["room"].clone()),
        (json!(2), room("r")),
        "no stray \\r in the room"
    );
}

#[test]
fn empty_lines_get_no_response() {
    let (_d, mut c) = start_memory(&[]);
    c.send_raw(b"\n\n\r\n\n{\"id\":3,\"op\":\"ping\"}\n\n\r\n");
    assert_eq!(c.read_json()["id"], 3);
    c.send_raw(b"\n{\"id\":4,\"op\":\"ping\"}\n");
    assert_eq!(c.read_json()["id"], 4, "an empty line was answered");
}

#[test]
fn a_request_written_byte_by_byte_gets_one_response() {
    let (_d, mut c) = start_memory(&[]);
    // Multi-byte characters split across writes too.
    let req = "{\"id\":5,\"op\":\"hasRoom\",\"roomName\":\"é🎬\"}\n{\"id\":6,";
    for byte in req.as_bytes() {
        c.send_raw(&[*byte]);
    }
    let r = c.read_json();
    assert_eq!((&r["id"], &r["exists"]), (&json!(5), &json!(false)), "{r}");
    c.send_raw(b"\"op\":\"ping\"}\n");
    assert_eq!(c.read_json()["id"], 6);
}

#[test]
fn whitespace_around_the_object_is_valid_json() {
    let (_d, mut c) = start_memory(&[]);
    c.send_raw(b"  {\"id\":9,\"op\":\"ping\"}\t \n");
    let r = c.read_json();
    assert_eq!(
        (r["ok"].clone(), r["id"].clone()),
        (json!(true), json!(9)),
        "{r}"
    );
}

#[test]
fn invalid_utf8_is_bad_json_and_the_connection_lives() {
    let (_d, mut c) = start_memory(&[]);
    let lines: [&[u8]; 5] = [
        b"\xff\xfe",
        b"{\"id\":1,\"op\":\"ping\",\"x\":\"\xc3\x28\"}",
        b"{\"id\":2,\"op\":\"getRoom\",\"roomName\":\"\xc0\xaf\"}",
        b"{\"id\":3,\"op\":\"getRoom\",\"roomName\":\"\xed\xa0\x80\"}",
        b"{\"id\":4,\"op\":\"getRoom\",\"roomName\":\"caf\xe9\"}",
    ];
    for (i, line) in lines.iter().enumerate() {
        c.send_raw(&[line, &b"\n"[..]].concat());
        let r = c.read_json();
        assert_err(&r, "bad_json");
        c.send_raw(format!("{{\"id\":{i},\"op\":\"ping\"}}\n").as_bytes());
        assert_eq!(
            c.read_json()["id"],
            i,
            "connection unusable after invalid UTF-8"
        );
    }
}

#[test]
fn json_that_is_not_one_object_is_bad_json() {
    let (_d, mut c) = start_memory(&[]);
    c.assert_bad_json_lines(&[
        "[]",
        "[{\"op\":\"ping\"}]",
        "1",
        "\"ping\"",
        "null",
        "true",
        "{\"op\":\"ping\"} x",
        "{\"op\":\"ping\"}{\"op\":\"ping\"}",
        "{'op':'ping'}",
        "{\"op\":\"ping\",\"id\":01}",
    ]);
    c.ping();
}

/// The oversized line is answered `too_large`, then the request after it on the same
/// connection, `{"id":2,"op":"hasRoom","roomName":"big"}`, is served: the big room is not there.
fn assert_too_large_then_has_room_served(c: &mut Conn) {
    assert_err(&c.read_json(), "too_large");
    let r = c.read_json();
    assert_eq!(
        (r["id"].clone(), r["exists"].clone()),
        (json!(2), json!(false)),
        "{r}"
    );
}

#[test]
fn oversized_line_is_refused_and_the_next_line_served() {
    let (d, mut c) = start_memory(&["--max-request-bytes", "65536"]);
    let mut big = room("big");
    big["pad"] = json!("x".repeat(100_000));
    let line = json!({"id": 1, "op": "saveRoom", "room": big}).to_string();
    // Oversized line and the next request in one write: the rest of the big line is skipped.
    c.send_raw(
        format!("{line}\n{{\"id\":2,\"op\":\"hasRoom\",\"roomName\":\"big\"}}\n").as_bytes(),
    );
    assert_too_large_then_has_room_served(&mut c);

    // Size is checked before content: oversized garbage, even invalid UTF-8, is too_large.
    let mut garbage = vec![0xffu8; 200_000];
    garbage.extend_from_slice(b"\n{\"id\":3,\"op\":\"ping\"}\n");
    c.send_raw(&garbage);
    assert_err(&c.read_json(), "too_large");
    assert_eq!(c.read_json()["id"], 3);

    // Oversized lines between pipelined requests, back to back, some ended by \r\n.
    let ping = |i: u32| format!("{{\"id\":{i},\"op\":\"ping\"}}");
    let pad = "y".repeat(70_000);
    let batch = [
        ping(4),
        pad.clone(),
        pad.clone(),
        ping(5),
        pad.clone(),
        ping(6),
    ]
    .join("\n");
    c.send_raw(format!("{}\r\n", batch.replace(&ping(5), &format!("{}\r", ping(5)))).as_bytes());
    for want in [
        json!(4),
        json!("too_large"),
        json!("too_large"),
        json!(5),
        json!("too_large"),
        json!(6),
    ] {
        let r = c.read_json();
        match want.as_str() {
            Some(code) => {
                assert_err(&r, code);
            }
            None => assert_eq!((&r["ok"], &r["id"]), (&json!(true), &want), "{r}"),
        }
    }

    // A second connection is unaffected throughout.
    d.connect().ping();
}

#[test]
fn a_client_that_half_closes_still_gets_every_answer() {
    // What `echo ... | socat - UNIX-CONNECT:...` does: write, shut the write side, then read.
    let (_d, mut c) = start_memory(&[]);
    c.send_raw(b"{\"id\":1,\"op\":\"saveRoom\",\"room\":");
    c.send_raw(
        format!(
            "{}}}\n{{\"id\":2,\"op\":\"getRoom\",\"roomName\":\"r\"}}\n",
            room("r")
        )
        .as_bytes(),
    );
    c.writer().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.read_json()["revision"], 1);
    assert_eq!(c.read_json()["room"], room("r"));
    assert_eq!(
        c.read_line(),
        None,
        "the daemon closes once every answer is sent"
    );
}

#[test]
fn clients_that_leave_without_reading_do_not_disturb_the_daemon() {
    let (d, mut c) = start_memory(&[]);
    c.save(&bare_room("r"));
    for round in 0..20 {
        let mut gone = d.connect();
        let mut batch = String::new();
        for i in 0..500 {
            let req = json!({"op": "addRating", "roomName": "r", "mediaId": format!("m{round}-{i}"),
                             "userName": "u", "rating": "like"});
            batch.push_str(&format!("{req}\n"));
        }
        gone.send_raw(batch.as_bytes());
        drop(gone);
    }
    // Whatever of those is applied (some may still be), the daemon serves and stays consistent.
    assert!(c.rate("r", "new", "u", "like").1);
    for _ in 0..3 {
        let (room, rev) = c.get("r").unwrap();
        let n = room["ratings"].as_object().map_or(0, |m| m.len()) as u64;
        assert_eq!(rev, 1 + n, "revision counts exactly the ratings stored");
    }
}

#[test]
fn oversized_line_at_default_limit_keeps_memory_bounded() {
    let (d, mut c) = start_memory(&[]);
    c.ping();
    let limit_kb: u64 = 16 * 1024; // default maxRequestBytes, 16 MiB
    let line_len: usize = 64 << 20; // four times the limit
    let before_kb = d.rss_kb();
    let mut w = c.writer();
    let writer = thread::spawn(move || {
        w.write_all(b"{\"id\":1,\"op\":\"saveRoom\",\"room\":{\"roomName\":\"big\",\"pad\":\"")
            .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..line_len >> 20 {
            w.write_all(&chunk).unwrap();
        }
        w.write_all(b"\"}}\n{\"id\":2,\"op\":\"hasRoom\",\"roomName\":\"big\"}\n")
            .unwrap();
    });
    c.set_read_timeout(Duration::from_secs(120));
    assert_too_large_then_has_room_served(&mut c);
    writer.join().unwrap();
    let growth_kb = d.hwm_kb().saturating_sub(before_kb);
    assert!(
        growth_kb < 2 * limit_kb + 8 * 1024,
        "peak RSS grew by {growth_kb} KiB for a {} MiB line over a 16 MiB limit",
        line_len >> 20
    );
}

/// Connects and pings; a `busy` answer is retried because the daemon may not have noticed yet
/// that an earlier connection (e.g. the readiness probe) closed.
fn connect_accepted(d: &Daemon) -> Conn {
    let start = Instant::now();
    loop {
        let mut c = d.connect();
        let sent = c.try_send(&json!({"op": "ping"}));
        match c
            .read_line()
            .map(|l| serde_json::from_str::<Value>(&l).unwrap())
        {
            Some(r) if r["ok"] == true && sent.is_ok() => return c,
            Some(r) => {
                assert_err(&r, "busy");
            }
            None => {} // closed after busy before we read it
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still busy after 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_over_the_limit_get_busy_then_eof() {
    let d = Daemon::start_with(Backend::Memory, ["--max-connections", "3"]);
    let mut conns: Vec<Conn> = (0..3).map(|_| connect_accepted(&d)).collect();
    for _ in 0..2 {
        let mut extra = d.connect();
        let line = extra
            .read_line()
            .expect("a busy error line before the close");
        let r: Value = serde_json::from_str(&line).expect("busy line is JSON");
        assert_err(&r, "busy");
        assert_eq!(
            extra.read_line(),
            None,
            "connection must be closed after busy"
        );
    }
    for c in &mut conns {
        c.ping();
    }
    drop(conns.pop());
    let mut again = connect_accepted(&d);
    again.save(&room("r"));
    assert!(conns[0].has("r"));
}

#[test]
fn deeply_nested_json_does_not_bring_the_daemon_down() {
    let (_d, mut c) = start_memory(&[]);
    c.send_raw(format!("{}\n", "[".repeat(100_000)).as_bytes());
    assert_err(&c.read_json(), "bad_json");
    let deep = format!(
        "{{\"op\":\"ping\",\"x\":{}1{}}}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    c.send_raw(deep.as_bytes());
    let r = c.read_json();
    assert_eq!(r["ok"], false, "{r}");
    c.ping();
}

#[test]
fn a_client_that_does_not_read_does_not_grow_the_daemon() {
    let (d, mut c) = start_memory(&[]);
    c.save(&with(room("big"), json!({"pad": "x".repeat(1 << 20)})));
    let before_kb = d.rss_kb();
    let mut w = c.writer();
    let writer = thread::spawn(move || {
        for i in 0..1000 {
            let req = json!({"id": i, "op": "getRoom", "roomName": "big"});
            w.write_all(format!("{req}\n").as_bytes()).unwrap();
        }
    });
    thread::sleep(Duration::from_secs(1)); // 1 GB of answers are due; none is read yet
    let growth_kb = d.rss_kb().saturating_sub(before_kb);
    assert!(
        growth_kb < 128 * 1024,
        "RSS grew by {growth_kb} KiB for an unread client"
    );
    for i in 0..1000 {
        let r = c.read_json();
        assert_eq!(
            (&r["id"], r["room"]["pad"].as_str().map(str::len)),
            (&json!(i), Some(1 << 20))
        );
    }
    writer.join().unwrap();
}

#[test]
fn closed_connections_free_their_slots() {
    let d = Daemon::start_with(Backend::Memory, ["--max-connections", "4"]);
    for i in 0..200 {
        // Some of these may get busy (earlier closes not yet noticed): errors are fine here.
        let mut c = d.connect();
        let _ = match i % 4 {
            0 => Ok(()),
            1 => c.try_send_raw(b"{\"op\":\"pi"),
            2 => c.try_send_raw(b"{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n"),
            _ => c.try_send_raw(format!("{}\n", "[".repeat(1000)).as_bytes()),
        };
    }
    let mut all: Vec<Conn> = (0..4).map(|_| connect_accepted(&d)).collect();
    for c in &mut all {
        c.ping();
    }
}

/// A client may write many large requests before reading any answer: the daemon keeps reading
/// while its answers wait, so neither side blocks the other (up to 1024 requests in flight).
#[test]
fn many_large_requests_sent_before_reading_are_all_answered() {
    let d = Daemon::start(Backend::Memory);
    let mut c = d.connect();
    let padding = "x".repeat(5000);
    let mut lines = Vec::new();
    for i in 0..800 {
        let room = with(bare_room(&format!("r{i}")), json!({"padding": padding}));
        lines
            .extend(serde_json::to_vec(&json!({"id": i, "op": "saveRoom", "room": room})).unwrap());
        lines.push(b'\n');
    }
    // About 4 MB in one write: it only completes if the daemon reads while answers pile up.
    c.send_raw(&lines);
    for i in 0..800 {
        let answer = c.read_json();
        assert_eq!(answer["id"], i, "{answer}");
        assert_eq!(answer["ok"], true, "{answer}");
    }
}
