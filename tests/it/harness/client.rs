//! The test client: one NDJSON connection to a daemon (`Conn`), one request line out, one
//! response line in, and the checks every test makes on an answer.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use moviematch_storaged::protocol::request::{
    AddRating, Call, GetRoom, HasRoom, Operation, Ping, RoomLookup, SaveRoom,
};
use moviematch_storaged::room::Rating;
use serde::Serialize;
use serde_json::{json, Map, Value};

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One client connection: one request line out, one response line in.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    pub fn connect(path: &Path) -> io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// A second handle on the socket, for a writer thread while this one reads.
    pub fn writer(&self) -> UnixStream {
        self.writer.try_clone().unwrap()
    }

    /// `send_raw` that reports a closed connection instead of panicking.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to daemon");
    }

    pub fn try_send(&mut self, req: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    pub fn send(&mut self, req: &Value) {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next line without its `\n`; `None` at EOF. Panics on timeout.
    pub fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(buf.pop(), Some(b'\n'), "response not ended by \\n: {buf:?}");
                Some(String::from_utf8(buf).expect("response is not UTF-8"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a response: {e} (a hang or a missing response)"),
        }
    }

    /// The next line, or `None` on EOF, error or timeout.
    pub fn try_read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf).trim_end().to_string()),
            _ => None,
        }
    }

    /// The next line, parsed; it must be one JSON object.
    pub fn read_json(&mut self) -> Value {
        let line = self
            .read_line()
            .expect("connection closed instead of a response");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {line}"));
        assert!(v.is_object(), "response is not an object: {line}");
        v
    }

    pub fn call(&mut self, req: Value) -> Value {
        self.send(&req);
        self.read_json()
    }

    /// `call` that must succeed; returns the response.
    pub fn ok(&mut self, req: Value) -> Value {
        let resp = self.call(req.clone());
        assert_ok(&resp, &req);
        resp
    }

    /// Sends `req`; every field of `want` must equal that field of the response (for `error`,
    /// each field of the error object). Without `error` in `want` the response must be `ok`.
    pub fn expect(&mut self, req: Value, want: Value) -> Value {
        let resp = self.call(req.clone());
        let want = want.as_object().expect("want is an object");
        match want.get("error") {
            Some(Value::Object(err)) => {
                let code = err["code"].as_str().expect("error.code in want");
                let got = assert_err(&resp, code);
                for (k, v) in err {
                    assert_eq!(got.get(k), Some(v), "request {req}\nerror.{k}: got {resp}");
                }
            }
            _ => assert_ok(&resp, &req),
        }
        for (k, v) in want.iter().filter(|(k, _)| *k != "error") {
            assert_eq!(resp.get(k), Some(v), "request {req}\nfield {k}: got {resp}");
        }
        resp
    }

    /// `expect` for each `[request, want]` pair of `steps`, in order.
    pub fn script(&mut self, steps: Value) {
        for step in steps.as_array().expect("steps is an array") {
            self.expect(step[0].clone(), step[1].clone());
        }
    }

    /// Sends each of `lines` (none a JSON object) and checks it is answered `bad_json`,
    /// without an `id` (there is no request to take one from).
    pub fn assert_bad_json_lines(&mut self, lines: &[&str]) {
        for line in lines {
            self.send_raw(format!("{line}\n").as_bytes());
            let r = self.read_json();
            assert_err(&r, "bad_json");
            assert!(r.get("id").is_none(), "{line}: {r}");
        }
    }

    /// `call` that must fail with `code`; returns the error object.
    pub fn err(&mut self, req: Value, code: &str) -> Map<String, Value> {
        let resp = self.call(req.clone());
        assert_eq!(
            resp["ok"], false,
            "request {req}\nshould fail with {code}: {resp}"
        );
        assert_err(&resp, code).clone()
    }

    /// Names of the rooms `listRooms` returns with these arguments (first page).
    pub fn names(&mut self, args: Value) -> Vec<String> {
        room_names(&self.list(args).0)
    }

    /// Sends one operation built from the protocol's own request types (as the CLI does) and
    /// returns its `ok` answer. Tests of the wire itself write their lines by hand (`ok`,
    /// `send_raw`), so a field name the daemon and its types both got wrong still fails there.
    pub fn request<Op: Operation + Serialize>(&mut self, op: Op) -> Value {
        let req = serde_json::to_value(Call::new(op)).expect("a request encodes as JSON");
        self.ok(req)
    }

    pub fn ping(&mut self) {
        let r = self.request(Ping);
        assert_eq!(r["protocol"], 1);
    }

    pub fn save(&mut self, room: &Value) -> u64 {
        revision(&self.request(SaveRoom {
            room,
            expected_revision: None,
        }))
    }

    /// The room and its revision, or `None`.
    pub fn get(&mut self, name: &str) -> Option<(Value, u64)> {
        let r = self.request(GetRoom {
            room_name: RoomLookup::new(name),
        });
        if r["room"].is_null() {
            assert!(
                r.get("revision").is_none(),
                "revision present for a missing room: {r}"
            );
            None
        } else {
            Some((r["room"].clone(), revision(&r)))
        }
    }

    pub fn has(&mut self, name: &str) -> bool {
        let r = self.request(HasRoom {
            room_name: RoomLookup::new(name),
        });
        r["exists"]
            .as_bool()
            .unwrap_or_else(|| panic!("exists not a bool: {r}"))
    }

    /// `(revision, added)`
    pub fn rate(&mut self, room: &str, media: &str, user: &str, rating: &str) -> (u64, bool) {
        let r = self.request(AddRating {
            room_name: RoomLookup::new(room),
            media_id: media.to_owned(),
            user_name: user.to_owned(),
            rating: Rating::parse(rating).expect("rating is \"like\" or \"dislike\""),
            timestamp: Some(1_700_000_000_000),
        });
        (
            revision(&r),
            r["added"]
                .as_bool()
                .unwrap_or_else(|| panic!("added not a bool: {r}")),
        )
    }

    /// `listRooms` with the given extra arguments: `(rooms, next)`.
    pub fn list(&mut self, args: Value) -> (Vec<Value>, Option<String>) {
        let mut req = args;
        req["op"] = json!("listRooms");
        let r = self.ok(req);
        let rooms = r["rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("rooms not an array: {r}"));
        assert!(
            r.get("next").is_some(),
            "next missing (must be a string or null): {r}"
        );
        (rooms.clone(), r["next"].as_str().map(String::from))
    }
}

pub fn revision(resp: &Value) -> u64 {
    let rev = resp["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision in {resp}"));
    assert!(rev >= 1, "revisions are positive: {resp}");
    rev
}

pub fn assert_ok(resp: &Value, req: &Value) {
    assert_eq!(resp["ok"], true, "request {req}\nfailed: {resp}");
    assert!(
        resp.get("error").is_none(),
        "ok response with an error: {resp}"
    );
}

/// Asserts a well-formed failure with `code`; returns the error object.
pub fn assert_err<'a>(resp: &'a Value, code: &str) -> &'a Map<String, Value> {
    assert_eq!(resp["ok"], false, "expected error {code}, got {resp}");
    let err = resp["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {resp}"));
    assert_eq!(
        err.get("code").and_then(Value::as_str),
        Some(code),
        "wrong code in {resp}"
    );
    assert!(
        err.get("message").is_some_and(Value::is_string),
        "no message in {resp}"
    );
    if let Some(cause) = err.get("cause") {
        assert!(cause.is_string(), "cause must be a string: {resp}");
    }
    err
}

pub fn room_names(rooms: &[Value]) -> Vec<String> {
    rooms
        .iter()
        .map(|r| r["roomName"].as_str().expect("roomName").to_string())
        .collect()
}
