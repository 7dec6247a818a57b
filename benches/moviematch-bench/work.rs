//! The workloads of the throughput table: what one request looks like for each peer, and the
//! loop that drives `clients` connections at a pipeline `depth`.
//!
//! Requests are built once per connection where they do not change (reads, saves) and written
//! into a reused buffer where they do (ratings), the same way for both protocols, so the client's
//! CPU per request stays small and alike on both sides.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs::{self, Server};
use crate::report::Stats;
use crate::wire::{self, ndjson, resp};

/// A room of about `bytes` bytes of compact JSON, shaped like a real one (ratings dominate).
pub fn room_of_size(name: &str, bytes: usize) -> Value {
    let mut ratings = serde_json::Map::new();
    let mut room = json!({
        "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "12345", "creatorPlexUsername": "john_doe",
        "options": ["EndOnFirstMatch"],
        "filters": [{"key": "genre", "operator": "=", "value": ["Action", "Comedy"]}],
        "userProgress": {"john_doe": 5, "jane": 3},
    });
    let mut n = 0;
    while serde_json::to_vec(&room).map_or(0, |v| v.len()) < bytes {
        for _ in 0..16 {
            ratings.insert(
                format!("plex://movie/5d776825880197001ec9{n:04x}"),
                json!([
                    ["john_doe", "like", 1729890000000u64 + n],
                    ["jane", "dislike", 1729890005000u64 + n]
                ]),
            );
            n += 1;
        }
        room["ratings"] = Value::Object(ratings.clone());
    }
    room
}

/// What one request of a workload looks like for each peer.
#[derive(Clone, Copy)]
pub enum Work {
    Get5k,
    Has,
    Save {
        kb: usize,
    },
    Rate {
        kb: usize,
    },
    /// `setProgress` of one of 16 users, against `HSET` of a field of a hash.
    Progress {
        kb: usize,
    },
}

impl Work {
    pub fn name(self) -> String {
        match self {
            Work::Get5k => "getRoom 5 KB / GET".into(),
            Work::Has => "hasRoom / EXISTS".into(),
            Work::Save { kb } => format!("saveRoom {kb} KB / SET"),
            Work::Rate { kb } => format!("addRating {kb} KB room / RPUSH"),
            Work::Progress { kb } => format!("setProgress {kb} KB room / HSET"),
        }
    }

    pub fn key(self, client: usize) -> String {
        match self {
            Work::Get5k | Work::Has => "bench-5k".into(),
            Work::Save { kb } => format!("save-{kb}k-{client}"),
            Work::Rate { kb } => format!("rate-{kb}k-{client}"),
            Work::Progress { kb } => format!("progress-{kb}k-{client}"),
        }
    }

    /// Puts what the workload reads or extends in place, on both peers.
    pub async fn prepare(self, ours: &Server, redis: &Server, clients: usize) {
        let keys: Vec<String> = match self {
            Work::Get5k | Work::Has => vec![self.key(0)],
            Work::Rate { .. } | Work::Progress { .. } => {
                (0..clients).map(|c| self.key(c)).collect()
            }
            Work::Save { .. } => return,
        };
        let kb = match self {
            Work::Rate { kb } | Work::Progress { kb } => kb,
            _ => 5,
        };
        let (mut a, mut b) = (ours.connect().await, redis.connect().await);
        for key in keys {
            let room = room_of_size(&key, kb * 1024);
            a.send(&ndjson(&json!({"op": "saveRoom", "room": room})))
                .await
                .unwrap();
            a.flush().await.unwrap();
            a.recv().await.unwrap();
            let bytes = serde_json::to_vec(&room).unwrap();
            let command = match self {
                // The list holds the room's ratings as tuples, as RPUSH will append them.
                Work::Rate { .. } | Work::Progress { .. } => resp(&[b"DEL", key.as_bytes()]),
                _ => resp(&[b"SET", key.as_bytes(), &bytes]),
            };
            b.send(&command).await.unwrap();
            b.flush().await.unwrap();
            b.recv().await.unwrap();
        }
        if let Work::Get5k = self {
            // Both must answer with the room, not with "none": the rows compare like with like.
            let mut lens = Vec::new();
            for (conn, ours) in [(&mut a, true), (&mut b, false)] {
                conn.send(&self.fixed_request(ours, 0, &[]).expect("a read"))
                    .await
                    .expect("send");
                conn.flush().await.expect("send");
                lens.push(conn.recv_len().await.expect("a read failed"));
            }
            assert!(
                lens.iter().all(|&len| len > 5 * 1024),
                "getRoom and GET should answer with the 5 KB room; replies of {lens:?} bytes"
            );
        }
    }

    /// Request number `seq` of client `client`, as [`measure`] sends it.
    pub fn request(self, ours: bool, client: usize, seq: u64) -> Vec<u8> {
        if let Some(fixed) = self.fixed_request(ours, client, &self.payload()) {
            return fixed;
        }
        let mut out = Vec::new();
        self.write_request(ours, &self.key(client), seq, &mut out);
        out
    }

    /// The request a connection sends every time, if it does not change between requests.
    fn fixed_request(self, ours: bool, client: usize, payload: &[u8]) -> Option<Vec<u8>> {
        let key = self.key(client);
        Some(match (self, ours) {
            (Work::Get5k, true) => ndjson(&json!({"op": "getRoom", "roomName": key})),
            (Work::Get5k, false) => resp(&[b"GET", key.as_bytes()]),
            (Work::Has, true) => ndjson(&json!({"op": "hasRoom", "roomName": key})),
            (Work::Has, false) => resp(&[b"EXISTS", key.as_bytes()]),
            (Work::Save { .. }, true) => named_room(&key, payload),
            (Work::Save { .. }, false) => resp(&[b"SET", key.as_bytes(), payload]),
            (Work::Rate { .. } | Work::Progress { .. }, _) => return None,
        })
    }

    /// A request that changes with `seq` (a rating or a progress of `key`), written into `out` without
    /// allocating, on either protocol.
    fn write_request(self, ours: bool, key: &str, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        let mut digits = itoa::Buffer::new();
        let at = digits.format(1729890000000u64 + seq);
        if let Work::Progress { .. } = self {
            let (mut u, mut n) = (itoa::Buffer::new(), itoa::Buffer::new());
            let (user, progress) = (u.format(seq % 16), n.format(seq));
            // Writing into a Vec cannot fail.
            let _ = if ours {
                writeln!(
                    out,
                    "{{\"op\":\"setProgress\",\"roomName\":\"{key}\",\"userName\":\"u{user}\",\"progress\":{progress}}}"
                )
            } else {
                write!(
                    out,
                    "*4\r\n$4\r\nHSET\r\n${}\r\n{key}\r\n${}\r\nu{user}\r\n${}\r\n{progress}\r\n",
                    key.len(),
                    user.len() + 1,
                    progress.len(),
                )
            };
            return;
        }
        // Writing into a Vec cannot fail.
        let _ = if ours {
            writeln!(
                out,
                "{{\"op\":\"addRating\",\"roomName\":\"{key}\",\"mediaId\":\"plex://movie/bench{seq}\",\"userName\":\"u\",\"rating\":\"like\",\"timestamp\":{at}}}"
            )
        } else {
            // The tuple `["u","like",AT]`, as RPUSH's third argument.
            let tuple_len = "[\"u\",\"like\",]".len() + at.len();
            write!(
                out,
                "*3\r\n$5\r\nRPUSH\r\n${}\r\n{key}\r\n${tuple_len}\r\n[\"u\",\"like\",{at}]\r\n",
                key.len(),
            )
        };
    }

    /// The bytes saved by `Save` (a room without its name, which each client puts first).
    pub fn payload(self) -> Arc<Vec<u8>> {
        match self {
            Work::Save { kb } => {
                let mut room = room_of_size("x", kb * 1024);
                room.as_object_mut().unwrap().shift_remove("roomName");
                Arc::new(serde_json::to_vec(&room).unwrap())
            }
            _ => Arc::new(Vec::new()),
        }
    }
}

/// Lays a room's name in front of `payload` (a room's JSON without its name) as a `saveRoom` line.
pub fn named_room(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut line =
        format!("{{\"op\":\"saveRoom\",\"room\":{{\"roomName\":\"{name}\",").into_bytes();
    line.extend_from_slice(&payload[1..]);
    line.extend_from_slice(b"}\n");
    line
}

/// `clients` connections, each sending `depth` requests then reading `depth` replies, for
/// `duration`. Latency is per request, from its batch's send to its reply. The connections are
/// open before the clock starts.
pub async fn measure(
    server: &Server,
    work: Work,
    clients: usize,
    depth: usize,
    duration: Duration,
) -> Stats {
    let ours = server.proto == wire::Proto::Ndjson;
    let payload = work.payload();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(server.connect().await);
    }
    let cpu_before = server.cpu_seconds();
    let behind_before = server.behind_cpu_seconds();
    let client_cpu_before = procs::own_cpu_seconds();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (client, mut conn) in conns.into_iter().enumerate() {
        let fixed = work.fixed_request(ours, client, &payload);
        let key = work.key(client);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut seq = (client as u64) << 32;
            let mut buf = Vec::with_capacity(256);
            while Instant::now() < deadline {
                let sent = Instant::now();
                for _ in 0..depth {
                    seq += 1;
                    let request = match &fixed {
                        Some(fixed) => fixed,
                        None => {
                            work.write_request(ours, &key, seq, &mut buf);
                            &buf
                        }
                    };
                    conn.send(request).await.expect("send");
                }
                conn.flush().await.expect("flush");
                for _ in 0..depth {
                    conn.recv().await.expect("a benchmark request failed");
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    // The server's own CPU time per request: steadier than ops/s on a shared machine.
    // The client's too: both share the machine's cores, so each one's cost bounds the other.
    let server_cpu = server.cpu_seconds() - cpu_before;
    let behind_cpu = server.behind_cpu_seconds() - behind_before;
    let client_cpu = procs::own_cpu_seconds() - client_cpu_before;
    let mut stats = Stats::from_latencies(latencies, elapsed);
    stats.set_cpu(server_cpu, client_cpu);
    let mut behind = String::new();
    if server.behind.is_some() {
        stats.set_behind(behind_cpu);
        let us = stats.behind_us.unwrap_or(0.0);
        behind = format!(", of which {us:.1} us in the Redis behind it");
    }
    eprintln!(
        "  {}: {} {clients}x{depth}: {:.0}/s, {:.1} us of server CPU per request{behind} ({:.1} us of client CPU)",
        if ours { "ours" } else { "redis" },
        work.name(),
        stats.ops_per_sec,
        stats.server_us,
        stats.client_us,
    );
    stats
}
