//! The Redis backend with several daemons, and with Redis going away (issue #4, PROTOCOL.md
//! section 5): each test starts its own `redis-server` on a Unix socket in its own directory
//! (see `harness/redis.rs`) and one or two real daemons on it.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{bare_room, room, Backend, Conn, Daemon};
use serde_json::{json, Value};

/// A second daemon on the same Redis server, with its own socket.
fn second(first: &Daemon) -> Daemon {
    first
        .sibling()
        .socket(first.dir().join("second.sock"))
        .start()
}

fn watcher(daemon: &Daemon, names: Option<&[&str]>) -> Conn {
    let mut conn = daemon.connect();
    let mut request = json!({"op": "watch"});
    if let Some(names) = names {
        request["roomNames"] = json!(names);
    }
    conn.expect(request, json!({"ok": true}));
    conn.set_read_timeout(Duration::from_secs(10));
    conn
}

fn next_json(conn: &mut Conn) -> Value {
    let line = conn.read_line().expect("an event line");
    serde_json::from_str(&line).expect("an event is JSON")
}

/// A Redis-backed daemon with room `kept` saved (revision 1), and a connection to it.
fn with_kept_room() -> (Daemon, Conn) {
    let daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    assert_eq!(conn.save(&room("kept")), 1);
    (daemon, conn)
}

/// Rates media `m` of room `kept` as the user of round `round`, who has not rated it: the
/// rating must be added, with no error.
fn rate_as_a_new_user(conn: &mut Conn, round: usize) {
    let answer = conn.call(
        json!({"op": "addRating", "roomName": "kept", "mediaId": "m",
        "userName": format!("user {round}"), "rating": "like", "timestamp": 1}),
    );
    assert_eq!(answer["ok"], true, "round {round}: {answer}");
    assert_eq!(answer["added"], true, "round {round}: {answer}");
}

/// Polls `request` until it succeeds (Redis coming back), for at most 15 s.
fn until_ok(conn: &mut Conn, request: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = conn.call(request.clone());
        if answer["ok"] == true {
            return answer;
        }
        assert!(Instant::now() < deadline, "still failing: {answer}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rooms_saved_through_one_daemon_are_read_through_the_other() {
    let one = Daemon::start(Backend::Redis);
    let two = second(&one);
    let (mut a, mut b) = (one.connect(), two.connect());
    let mut sent = room("shared night");
    sent["roomType"] = json!({"future": [1.5, null]});
    assert_eq!(a.save(&sent), 1);
    assert_eq!(b.get("shared night"), Some((sent.clone(), 1)));
    assert!(b.has("shared night"));
    assert_eq!(b.rate("shared night", "m", "jane", "like"), (2, true));
    let (through_a, revision) = a.get("shared night").expect("the room");
    assert_eq!(revision, 2);
    assert_eq!(through_a["ratings"]["m"][0][0], "jane");
    // expectedRevision holds across daemons.
    let stale = a.err(
        json!({"op": "saveRoom", "room": sent, "expectedRevision": 1}),
        "conflict",
    );
    assert_eq!(stale["revision"], 2);
    b.expect(
        json!({"op": "deleteRoom", "roomName": "shared night", "expectedRevision": 2}),
        json!({"ok": true, "deleted": true}),
    );
    assert_eq!(a.get("shared night"), None);
}

#[test]
fn ten_clients_on_two_daemons_add_400_ratings_to_one_room() {
    const CLIENTS: usize = 10;
    const EACH: usize = 40;
    let one = Daemon::start(Backend::Redis);
    let two = second(&one);
    assert_eq!(one.connect().save(&bare_room("party")), 1);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = one.alternating_socket(&two, c);
            thread::spawn(move || {
                let mut conn = Conn::connect(&socket).expect("connect");
                for k in 0..EACH {
                    // Every client rates the same media, as different users: the scripts, not
                    // the daemons, must keep the array whole.
                    let user = format!("user-{c}-{k}");
                    let (_, added) = conn.rate("party", &format!("m{}", k % 4), &user, "like");
                    assert!(added, "{user} rated once");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client");
    }
    for daemon in [&one, &two] {
        let (party, revision) = daemon.connect().get("party").expect("the room");
        assert_eq!(revision, (CLIENTS * EACH + 1) as u64);
        let ratings = party["ratings"].as_object().expect("ratings");
        let count: usize = ratings
            .values()
            .map(|v| v.as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(count, CLIENTS * EACH, "no rating lost or doubled");
        let (summary, _) = daemon.connect().list(json!({"summary": true, "limit": 1}));
        assert_eq!(summary[0]["ratingCount"], CLIENTS * EACH);
    }
}

#[test]
fn redis_stopped_and_restarted_gives_errors_then_service_again() {
    let mut daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    assert_eq!(conn.save(&room("kept")), 1);
    let url = daemon.redis().url();
    // The test servers keep an append-only file, synced every second.
    let stats = conn.ok(json!({"op": "stats"}));
    assert_eq!(
        stats["redisPersistence"],
        "appendonly yes, appendfsync everysec"
    );
    daemon.wait_log("persists with appendonly yes, appendfsync everysec");
    daemon.redis().stop();

    let error = conn.err(json!({"op": "getRoom", "roomName": "kept"}), "storage");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains(&url), "the error names the URL: {message}");
    let error = conn.err(json!({"op": "saveRoom", "room": room("lost")}), "storage");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the change was not stored") && m.contains(&url)),
        "{error:?}"
    );
    conn.err(json!({"op": "addRating", "roomName": "kept", "mediaId": "m", "userName": "u", "rating": "like"}), "storage");
    // The daemon itself keeps serving: ping and stats answer, new connections are accepted.
    conn.ping();
    let stats = daemon.connect().ok(json!({"op": "stats"}));
    assert_eq!(stats["rooms"], Value::Null);
    assert_eq!(stats["backend"], "redis");
    daemon.wait_for("stats to show the lost subscription", || {
        daemon.connect().ok(json!({"op": "stats"}))["watchSubscribed"] == false
    });
    assert!(daemon.is_running());

    daemon.redis().restart();
    until_ok(&mut conn, json!({"op": "getRoom", "roomName": "kept"}));
    daemon.wait_for("the watch subscription to come back", || {
        daemon.connect().ok(json!({"op": "stats"}))["watchSubscribed"] == true
    });
    assert_eq!(conn.get("kept").map(|(_, r)| r), Some(1));
    assert_eq!(
        conn.get("lost"),
        None,
        "a change that got an error was not stored"
    );
    assert_eq!(conn.rate("kept", "m", "u", "like"), (2, true));
    assert_eq!(daemon.sigterm().code(), Some(0));
    assert!(
        daemon.stderr().contains(&url),
        "the log names the URL:\n{}",
        daemon.stderr()
    );
}

/// Found by an outside probe: after Redis restarted, each daemon's first swipe answered
/// `storage` "the change may have been stored" (a broken pipe: the connection for commands
/// learned of the restart only by sending it), although Redis was back and the change was not
/// stored. Now the subscription, which notices at once, pings the connection for commands before
/// it counts as up again.
#[test]
fn once_redis_is_back_after_a_restart_the_first_swipe_succeeds() {
    let (daemon, mut conn) = with_kept_room();
    for round in 1..=3 {
        daemon.redis().restart();
        // Nothing but the log is looked at meanwhile: `stats` asks Redis too, and would take
        // the failure in the swipe's place.
        daemon.wait_for("the daemon to notice the restart", || {
            daemon.stderr().matches("lost the subscription").count() == round
        });
        thread::sleep(Duration::from_secs(1));
        rate_as_a_new_user(&mut conn, round);
    }
    assert_eq!(conn.get("kept").map(|(_, r)| r), Some(4));
}

/// Found by an outside probe: when Redis closed the daemon's connection for commands on its own
/// (`CLIENT KILL TYPE normal`, its `timeout` setting, a proxy), while the subscription stayed,
/// the next request failed ("unreachable"), reads included. A read is now sent once more on a new
/// connection.
#[test]
fn reads_go_through_after_redis_closes_the_connection_for_commands() {
    let (daemon, mut conn) = with_kept_room();
    let reads = [
        json!({"op": "getRoom", "roomName": "kept"}),
        json!({"op": "hasRoom", "roomName": "kept"}),
        json!({"op": "listRooms"}),
        json!({"op": "getRoom", "roomName": "kept"}),
    ];
    for read in reads {
        let killed = daemon
            .redis()
            .command("CLIENT KILL TYPE normal")
            .expect("Redis answers CLIENT KILL");
        assert!(killed.starts_with(':'), "{killed}");
        let answer = conn.call(read.clone());
        assert_eq!(
            answer["ok"], true,
            "{read} right after CLIENT KILL: {answer}"
        );
    }
    let stats = conn.ok(json!({"op": "stats"}));
    assert_eq!(stats["watchSubscribed"], true, "{stats}");
}

/// Found by an outside probe: with Redis's `timeout` under the daemon's 5 s ping, the first
/// change after the daemon had been idle failed ("may have been stored", broken pipe, nothing
/// stored) in 5 of 12 tries. A change after a second or more of quiet now pings first, so a
/// connection Redis closed is replaced before the change is sent.
#[test]
fn the_first_change_after_redis_closed_an_idle_connection_goes_through() {
    let (daemon, mut conn) = with_kept_room();
    assert!(daemon
        .redis()
        .command("CONFIG SET timeout 1")
        .is_some_and(|r| r.starts_with("+OK")));
    for round in 0..3 {
        // Redis closes clients idle for more than 1 s (checked about every second).
        thread::sleep(Duration::from_millis(2500));
        rate_as_a_new_user(&mut conn, round);
    }
    assert_eq!(conn.get("kept").map(|(_, r)| r), Some(4));
}

/// Found by an outside probe: a swipe on a room that another daemon saved over and over was
/// refused (`storage`, "saved again 8 times") in 0.3% of swipes: each save puts the room back in
/// the whole form, and the swipe gave up after 8 splits. It now keeps trying for up to 5 s.
#[test]
fn swipes_go_through_while_another_daemon_saves_the_room_in_a_loop() {
    let one = Daemon::start(Backend::Redis);
    let two = second(&one);
    let mut saver = one.connect();
    assert_eq!(saver.save(&room("hot")), 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saving = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut saves = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = saver.call(json!({"op": "saveRoom", "room": room("hot")}));
                assert_eq!(answer["ok"], true, "{answer}");
                saves += 1;
            }
            saves
        })
    };
    let mut swiper = two.connect();
    let mut refused = Vec::new();
    for i in 0..1500 {
        let request = if i % 2 == 0 {
            json!({"op": "addRating", "roomName": "hot", "mediaId": "m", "userName": format!("u{i}"),
                   "rating": "like", "timestamp": 1})
        } else {
            json!({"op": "setProgress", "roomName": "hot", "userName": "u", "progress": i})
        };
        let answer = swiper.call(request);
        if answer["ok"] != true {
            refused.push(answer);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let saves = saving.join().expect("the saver");
    assert!(saves > 100, "the room was saved {saves} times only");
    assert!(
        refused.is_empty(),
        "{} of 1500 swipes refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
}

/// The bytes the daemon's Redis uses (`INFO memory`).
fn used_memory(daemon: &Daemon) -> u64 {
    let info = daemon.redis().command("INFO memory").expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// Makes the daemon's Redis refuse writes past `bytes` (`maxmemory`, `noeviction`).
fn limit_memory(daemon: &Daemon, bytes: u64) {
    for setting in [
        format!("CONFIG SET maxmemory {bytes}"),
        "CONFIG SET maxmemory-policy noeviction".to_owned(),
    ] {
        let answer = daemon.redis().command(&setting);
        assert!(
            answer.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "{setting}: {answer:?}"
        );
    }
}

/// Found by an outside probe: with `maxmemory` and `noeviction`, swipes were refused once Redis
/// was full but saves went on growing it (a script's first write decides whether its later ones
/// may exceed the limit, and a save's first write was an `UNLINK`, which Redis does not check).
/// Now a save is refused too, whole, and saves work again once there is room.
#[test]
fn saves_respect_the_memory_limit_of_redis() {
    let daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    let used = || used_memory(&daemon);
    let limit = used() + 2_000_000;
    limit_memory(&daemon, limit);
    let mut big = room("big 0");
    big["notes"] = json!("n".repeat(200_000));
    let mut refused = None;
    for i in 0..40 {
        big["roomName"] = json!(format!("big {i}"));
        let answer = conn.call(json!({"op": "saveRoom", "room": big}));
        if answer["ok"] != true {
            refused = Some((i, answer));
            break;
        }
    }
    let (stored, answer) = refused.expect("a save refused once Redis is full");
    assert!(stored > 0, "the first save was refused: {answer}");
    assert_eq!(answer["error"]["code"], "storage", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the change was not stored"), "{answer}");
    assert!(
        used() < limit + 400_000,
        "Redis grew to {} bytes past its limit of {limit}",
        used() - limit.min(used())
    );
    // Nothing of the refused save is there; the rooms before it are whole.
    assert_eq!(conn.get(&format!("big {stored}")), None);
    let (last, _) = conn
        .get(&format!("big {}", stored - 1))
        .expect("the last stored room");
    assert_eq!(last["notes"].as_str().map(str::len), Some(200_000));
    // Reads and deletions still work while Redis is full.
    let deleted = conn.call(json!({"op": "deleteRoom", "roomName": "big 0"}));
    assert_eq!(deleted["ok"], true, "{deleted}");
    assert_eq!(conn.get("big 0"), None);
    // With room again, saves work.
    assert!(daemon
        .redis()
        .command("CONFIG SET maxmemory 0")
        .is_some_and(|r| r.starts_with("+OK")));
    assert_eq!(conn.save(&big), 1);
}

/// A room split by an earlier release has no `U` flag, and its first swipe builds the set of who
/// rated what. That rebuild began with an `UNLINK` of the set, which Redis does not check against
/// `maxmemory` and which, once it removed something, let every later write of the script pass
/// the limit: on a full Redis such a swipe was stored. It is refused now, like every other.
#[test]
fn a_swipe_that_rebuilds_who_rated_what_respects_the_memory_limit_of_redis() {
    let (daemon, mut conn) = with_kept_room();
    rate_as_a_new_user(&mut conn, 0);
    // As an earlier release left it: split, with its set of who rated what, and no flag.
    let hdel = daemon.redis().command("HDEL moviematch:room:kept U");
    assert_eq!(hdel.as_deref(), Some(":1\r\n"), "the room's flag");
    limit_memory(&daemon, used_memory(&daemon) / 2);
    let answer = conn.call(
        json!({"op": "addRating", "roomName": "kept", "mediaId": "m",
        "userName": "user 1", "rating": "like", "timestamp": 1}),
    );
    assert_eq!(answer["error"]["code"], "storage", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the change was not stored"), "{answer}");
    // Nothing of it is there; with room again, the rebuild and the rating go through.
    let (kept, _) = conn.get("kept").expect("room kept");
    assert_eq!(
        kept["ratings"]["m"].as_array().map(Vec::len),
        Some(1),
        "{kept}"
    );
    limit_memory(&daemon, 0);
    rate_as_a_new_user(&mut conn, 1);
    let answer = conn.call(
        json!({"op": "addRating", "roomName": "kept", "mediaId": "m",
        "userName": "user 0", "rating": "like", "timestamp": 1}),
    );
    assert_eq!(answer["added"], false, "user 0 rated m before: {answer}");
}

/// Found by an outside probe: on a full Redis a daemon's announcement (`SET ... PX`, refused
/// there) lapsed after 15 s, and `migrate` took the prefix for unused while the daemon served.
/// A renewal is now a `PEXPIRE`, which a full Redis takes.
#[test]
fn a_daemon_stays_announced_on_a_full_redis() {
    let daemon = Daemon::start(Backend::Redis);
    let announced = || {
        daemon
            .redis()
            .command("KEYS moviematch:daemon:*")
            .is_some_and(|r| r.starts_with("*1"))
    };
    daemon.wait_for("the daemon to announce itself", announced);
    limit_memory(&daemon, used_memory(&daemon) / 2);
    let mut conn = daemon.connect();
    conn.err(
        json!({"op": "saveRoom", "room": room("no room")}),
        "storage",
    );
    // Past the announcement's 15 s lifetime.
    thread::sleep(Duration::from_secs(17));
    assert!(announced(), "the announcement lapsed on a full Redis");
}

#[test]
fn a_daemon_starts_while_redis_is_down_and_serves_once_it_is_up() {
    let builder = Daemon::builder(Backend::Redis);
    builder.redis().stop();
    let mut daemon = builder.start();
    let mut conn = daemon.connect();
    conn.ping();
    let url = daemon.redis().url();
    let error = conn.err(json!({"op": "hasRoom", "roomName": "x"}), "storage");
    assert!(error["message"].as_str().is_some_and(|m| m.contains(&url)));
    // A watch cannot promise every event while the subscription is down: refused, clearly.
    daemon.connect().err(json!({"op": "watch"}), "storage");
    daemon.redis().restart();
    until_ok(&mut conn, json!({"op": "saveRoom", "room": room("late")}));
    assert!(conn.has("late"));
    daemon.wait_log("is unreachable");
    assert_eq!(daemon.sigterm().code(), Some(0));
}

#[test]
fn a_rating_through_one_daemon_reaches_a_watcher_on_the_other() {
    let one = Daemon::start(Backend::Redis);
    let two = second(&one);
    let mut a = one.connect();
    a.save(&room("r"));
    let mut watch = watcher(&two, Some(&["r"]));
    assert_eq!(a.rate("r", "plex://movie/1", "jane", "like").0, 2);
    let event = next_json(&mut watch);
    assert_eq!(event["event"], "rated");
    assert_eq!(event["roomName"], "r");
    assert_eq!(event["revision"], 2);
    assert_eq!(event["mediaId"], "plex://movie/1");
    assert_eq!(event["userName"], "jane");
    assert_eq!(event["rating"], "like");
    assert!(event["timestamp"].as_u64().is_some());
    a.ok(json!({"op": "setProgress", "roomName": "r", "userName": "jane", "progress": 7}));
    assert_eq!(
        next_json(&mut watch),
        json!({"event": "progress", "roomName": "r", "revision": 3, "userName": "jane", "progress": 7})
    );
    a.save(&room("other"));
    a.ok(json!({"op": "deleteRoom", "roomName": "r"}));
    assert_eq!(
        next_json(&mut watch),
        json!({"event": "deleted", "roomName": "r"}),
        "rooms not asked for are filtered out"
    );
}

#[test]
fn a_watcher_is_told_overflow_when_its_daemon_loses_the_subscription() {
    let daemon = Daemon::start(Backend::Redis);
    let mut watch = watcher(&daemon, None);
    daemon.redis().stop();
    assert_eq!(next_json(&mut watch), json!({"event": "overflow"}));
    assert_eq!(watch.read_line(), None, "then the watch ends");
    daemon.redis().restart();
    // Once subscribed again, watching works again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut watch = loop {
        let mut conn = daemon.connect();
        if conn.call(json!({"op": "watch"}))["ok"] == true {
            break conn;
        }
        assert!(Instant::now() < deadline, "watch never available again");
        thread::sleep(Duration::from_millis(50));
    };
    watch.set_read_timeout(Duration::from_secs(10));
    daemon.connect().save(&room("again"));
    assert_eq!(next_json(&mut watch)["roomName"], "again");
}

#[test]
fn expiry_with_two_daemons_deletes_each_idle_room_once() {
    let one = Daemon::builder(Backend::Redis)
        .args(["--room-expiry", "2s"])
        .start();
    let two = one.sibling().socket(one.dir().join("second.sock")).start();
    let mut watch = watcher(&one, None);
    let mut conn = two.connect();
    conn.save(&room("idle"));
    conn.save(&room("busy"));
    assert_eq!(next_json(&mut watch)["roomName"], "idle");
    assert_eq!(next_json(&mut watch)["roomName"], "busy");
    let start = Instant::now();
    // Keep "busy" changing while "idle" expires.
    let mut progress = 0;
    while conn.has("idle") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "idle never expired"
        );
        progress += 1;
        conn.ok(
            json!({"op": "setProgress", "roomName": "busy", "userName": "u", "progress": progress}),
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "not before its time"
    );
    assert!(conn.has("busy"));
    // Exactly one deleted event for "idle", though both daemons run expiry.
    conn.save(&room("marker"));
    let mut deleted = 0;
    loop {
        let event = next_json(&mut watch);
        match (event["event"].as_str(), event["roomName"].as_str()) {
            (Some("deleted"), Some("idle")) => deleted += 1,
            (_, Some("marker")) => break,
            _ => {}
        }
    }
    assert_eq!(deleted, 1);
}

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` command.
fn make_certificates(dir: &std::path::Path) {
    let sh = |script: &str| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl (apt-get install openssl)");
        assert!(status.success(), "openssl failed: {script}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem");
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key -out other.pem");
    sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}

#[test]
fn rediss_urls_speak_tls_and_check_the_certificate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    make_certificates(dir.path());
    let port = free_port();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let _server = crate::harness::redis::RedisServer::start_with(
        &dir.path().join("redis"),
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    let url = format!("rediss://127.0.0.1:{port}/0");
    // Trusting the test CA (SSL_CERT_FILE, as for any rustls program): rooms go through TLS.
    let trusting = Daemon::builder(Backend::Memory)
        .no_backend_flag()
        .args(["--storage-type", "redis", "--redis-url", url.as_str()])
        .env("SSL_CERT_FILE", &file("ca.pem"))
        .start();
    let mut conn = trusting.connect();
    assert_eq!(conn.save(&room("secure")), 1);
    assert_eq!(conn.get("secure").map(|(_, r)| r), Some(1));
    // Not trusting it: the certificate is refused, and nothing is sent in the clear.
    let doubting = trusting
        .sibling()
        .socket(trusting.dir().join("doubting.sock"))
        .env("SSL_CERT_FILE", &file("other.pem"))
        .start();
    let error = doubting
        .connect()
        .err(json!({"op": "getRoom", "roomName": "secure"}), "storage");
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(&url)),
        "{error:?}"
    );
}

#[test]
fn a_redis_password_is_used_and_never_shown() {
    const SECRET: &str = "s3cret-pw";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = crate::harness::redis::RedisServer::start_with(
        &dir.path().join("redis"),
        vec!["--requirepass".into(), SECRET.into()],
    );
    let url = |password: &str| format!("{}?pass={password}", server.url());
    let start = |password: &str, socket: &str| {
        Daemon::builder(Backend::Memory)
            .no_backend_flag()
            .socket(dir.path().join(socket))
            .args(["--storage-type", "redis", "--redis-url", &url(password)])
            .start()
    };
    let mut good = start(SECRET, "good.sock");
    let mut conn = good.connect();
    assert_eq!(conn.save(&room("private")), 1);
    assert_eq!(conn.get("private").map(|(_, r)| r), Some(1));
    let stats = conn.ok(json!({"op": "stats"}));
    assert!(!stats.to_string().contains(SECRET), "stats: {stats}");

    let mut bad = start("wrong-pw", "bad.sock");
    let error = bad
        .connect()
        .err(json!({"op": "getRoom", "roomName": "private"}), "storage");
    let shown = format!("{error:?}");
    assert!(
        shown.contains("pass=***"),
        "the URL is named, redacted: {shown}"
    );
    assert!(!shown.contains("wrong-pw"), "{shown}");
    // Found by an outside probe: it said "unreachable; check that redis-server runs there".
    assert!(
        shown.contains("refused the password") && !shown.contains("unreachable"),
        "a wrong password is named as such: {shown}"
    );
    assert_eq!(good.sigterm().code(), Some(0));
    assert_eq!(bad.sigterm().code(), Some(0));
    for log in [good.stderr(), bad.stderr()] {
        assert!(!log.contains(SECRET) && !log.contains("wrong-pw"), "{log}");
    }
}

#[test]
fn a_redis_that_stops_answering_is_noticed_by_watchers_and_requests() {
    let daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    conn.save(&room("frozen"));
    let mut watch = watcher(&daemon, None);
    watch.set_read_timeout(Duration::from_secs(30));
    // Frozen, not gone: no connection is closed, nothing answers.
    daemon.redis().signal(libc::SIGSTOP);
    // Found by an outside probe: a change sent to a Redis that does not answer in time was
    // said not to be stored, and Redis applied it once it went on.
    let error = conn.err(
        json!({"op": "addRating", "roomName": "frozen", "mediaId": "m", "userName": "u", "rating": "like"}),
        "storage",
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the change may have been stored")),
        "{error:?}"
    );
    let started = Instant::now();
    let error = daemon
        .connect()
        .err(json!({"op": "getRoom", "roomName": "x"}), "storage");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a request times out"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{error:?}"
    );
    assert_eq!(next_json(&mut watch), json!({"event": "overflow"}));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the watcher is told in time"
    );
    daemon.redis().signal(libc::SIGCONT);
    let mut conn = daemon.connect();
    until_ok(&mut conn, json!({"op": "saveRoom", "room": room("after")}));
    // Sent again, as the message says: rated once either way.
    let (_, added) = conn.rate("frozen", "m", "u", "like");
    let (room, _) = conn.get("frozen").expect("the room");
    let raters = room["ratings"]["m"].as_array().expect("ratings of m");
    assert_eq!(raters.len(), 1, "added again: {added}");
}

#[test]
fn awkward_names_rate_once_and_read_back_as_the_memory_backend_does() {
    // The Lua side compares user names after cjson decoding; these must all match exactly.
    let awkward = [
        "plain",
        "\"quoted\"",
        "back\\slash",
        "nul\u{0}inside",
        "line\u{2028}sep",
        "🎬 émoji",
        "r:looks-like-a-field",
        " ",
        "[\"x\",",
    ];
    let redis = Daemon::start(Backend::Redis);
    let memory = Daemon::start(Backend::Memory);
    for daemon in [&redis, &memory] {
        let mut conn = daemon.connect();
        conn.save(&bare_room("r"));
        for media in awkward {
            for user in awkward {
                let rate = json!({"op": "addRating", "roomName": "r", "mediaId": media,
                                  "userName": user, "rating": "like", "timestamp": 7});
                assert_eq!(conn.ok(rate.clone())["added"], true, "{media:?} {user:?}");
                assert_eq!(conn.ok(rate)["added"], false, "{media:?} {user:?} twice");
            }
            let progress =
                json!({"op": "setProgress", "roomName": "r", "userName": media, "progress": 1});
            conn.ok(progress);
        }
    }
    let read = |daemon: &Daemon| {
        let answer = daemon
            .connect()
            .ok(json!({"op": "getRoom", "roomName": "r"}));
        (
            serde_json::to_string(&answer["room"]).expect("encode"),
            answer["revision"].clone(),
        )
    };
    assert_eq!(read(&redis), read(&memory));
}

#[test]
fn a_redis_without_persistence_is_warned_about_at_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = crate::harness::redis::RedisServer::start_with(
        &dir.path().join("redis"),
        vec!["--appendonly".into(), "no".into()],
    );
    let daemon = Daemon::builder(Backend::Memory)
        .no_backend_flag()
        .args(["--storage-type", "redis", "--redis-url", &server.url()])
        .start();
    daemon.wait_log("runs with appendonly no");
    let stats = daemon.connect().ok(json!({"op": "stats"}));
    assert!(stats["redisPersistence"]
        .as_str()
        .is_some_and(|s| s.starts_with("appendonly no")));
}

/// A daemon keeps the rooms it read, but asks Redis before each answer: whatever another daemon
/// (or this one) changed since is read anew, including a room deleted and saved again, which
/// starts over at revision 1 with other content.
#[test]
fn a_room_read_before_is_read_anew_after_any_change_through_another_daemon() {
    let one = Daemon::start(Backend::Redis);
    let two = second(&one);
    let (mut reader, mut writer) = (one.connect(), two.connect());
    let name = "kept night";
    let first = room(name);
    assert_eq!(writer.save(&first), 1);
    assert_eq!(reader.get(name), Some((first.clone(), 1)));
    assert_eq!(reader.get(name), Some((first.clone(), 1)));

    writer.ok(json!({"op": "addRating", "roomName": name, "mediaId": "m2",
                     "userName": "jane", "rating": "like", "timestamp": 5}));
    let (rated, revision) = reader.get(name).expect("the room");
    assert_eq!(revision, 2);
    assert_eq!(rated["ratings"]["m2"], json!([["jane", "like", 5]]));

    writer.ok(json!({"op": "setProgress", "roomName": name, "userName": "jane", "progress": 9}));
    let (progressed, revision) = reader.get(name).expect("the room");
    assert_eq!(
        (revision, &progressed["userProgress"]["jane"]),
        (3, &json!(9))
    );

    writer.ok(json!({"op": "deleteRoom", "roomName": name}));
    assert_eq!(reader.get(name), None);

    // Deleted and saved again: revision 1 again, other content. Then again with the first content.
    assert_eq!(writer.save(&first), 1);
    assert_eq!(reader.get(name), Some((first.clone(), 1)));
    writer.ok(json!({"op": "deleteRoom", "roomName": name}));
    let other = bare_room(name);
    assert_eq!(writer.save(&other), 1);
    assert_eq!(reader.get(name), Some((other.clone(), 1)));

    // Replaced whole at the next revision, through the reader's own daemon too.
    let mut third = room(name);
    third["sort"] = json!("rating");
    assert_eq!(writer.save(&third), 2);
    assert_eq!(reader.get(name), Some((third.clone(), 2)));
    let mut fourth = third.clone();
    fourth["password"] = json!("other");
    assert_eq!(reader.save(&fourth), 3);
    assert_eq!(writer.get(name), Some((fourth.clone(), 3)));
    assert_eq!(reader.get(name), Some((fourth, 3)));
}

/// Redis's `total_net_output_bytes`.
fn redis_output_bytes(daemon: &Daemon) -> u64 {
    let info = daemon
        .redis()
        .command("INFO stats")
        .expect("Redis answers INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_net_output_bytes")
}

/// Reading an unchanged room again costs Redis a short answer, not the room (issue #18: carrying
/// and rejoining the hash was most of a read's cost on both sides).
#[test]
fn rereading_an_unchanged_room_does_not_carry_it_from_redis_again() {
    const READS: u64 = 50;
    let daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    let mut big = room("big night");
    for i in 0..200 {
        big["ratings"][format!("plex://movie/{i:04}")] = json!([["john_doe", "like", i]]);
    }
    conn.save(&big);
    assert_eq!(conn.get("big night"), Some((big.clone(), 1)));
    let size = serde_json::to_vec(&big).expect("encodes").len() as u64;
    let before = redis_output_bytes(&daemon);
    for _ in 0..READS {
        assert_eq!(conn.get("big night"), Some((big.clone(), 1)));
    }
    let sent = redis_output_bytes(&daemon) - before;
    assert!(
        sent < READS * size / 20,
        "Redis sent {sent} bytes for {READS} reads of an unchanged {size}-byte room"
    );
}

/// SIGHUP re-reads room files; with Redis there are none: the daemon says so and serves on.
#[test]
fn sighup_with_redis_has_nothing_to_re_read_and_serves_on() {
    let mut daemon = Daemon::start(Backend::Redis);
    let mut conn = daemon.connect();
    assert_eq!(conn.save(&room("before")), 1);
    daemon.sighup();
    daemon.wait_log("SIGHUP: nothing to re-read: rooms live in Redis");
    assert!(conn.has("before"));
    assert_eq!(conn.save(&room("after")), 1);
    assert_eq!(daemon.sigterm().code(), Some(0));
}
