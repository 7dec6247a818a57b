//! A small blocking client for the moviematch-storaged protocol (PROTOCOL.md sections 1 and 2).
//!
//! This module owns the client side of the wire: connecting to the daemon's Unix socket, writing
//! one request per line, reading one response line per request in order, and turning an
//! `{"ok":false,"error":{...}}` envelope into [`ClientError::Remote`]. [`Client::request`] sends
//! one of the daemon's own operation types ([`crate::protocol::request`]) and decodes its typed
//! reply ([`crate::protocol::response`]); [`Client::call`] and [`Client::pipeline`] send anything
//! that serializes to a JSON object, so a caller can also send a [`Value`] or a room's text as
//! written.
//!
//! It never interprets the results of an operation (that is the caller's business: the CLI,
//! scripts, tests) and it never retries: a request may have been applied even when its response
//! was lost, so only the caller can decide whether sending it again is safe.
//!
//! ```no_run
//! use moviematch_storaged::client::Client;
//! use moviematch_storaged::protocol::request::{HasRoom, Ping, RoomLookup};
//!
//! let mut client = Client::connect("./data/storaged.sock".as_ref())?;
//! assert_eq!(client.request(&Ping)?.protocol, 1);
//! let room_name = RoomLookup::new("movie-night");
//! let found = client.request(&HasRoom { room_name })?;
//! println!("movie-night exists: {}", found.exists);
//! # Ok::<(), moviematch_storaged::client::ClientError>(())
//! ```

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::protocol::request::{self, Call, Operation, RoomLookup};

/// How many requests [`Client::pipeline`] keeps sent but unanswered: enough to hide the round
/// trip to a local daemon, few enough that a slow daemon never holds much of our memory.
pub const PIPELINE_DEPTH: usize = 64;

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon could not be reached at all; nothing was sent. The message says whether the
    /// daemon seems not to be running (no socket file, or nobody listening on it).
    #[error("cannot connect to {}: {source}{}", socket.display(), connect_hint(.source))]
    Connect { socket: PathBuf, source: io::Error },
    /// The connection failed after it was opened: the daemon stopped or closed it, or a timeout
    /// expired. A request in flight may or may not have been applied.
    #[error("connection to {} failed: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    /// The daemon sent a line that is not a response envelope. The connection is out of step
    /// and should not be used again.
    #[error("unexpected response from {}: {reason}", socket.display())]
    Protocol { socket: PathBuf, reason: String },
    /// The daemon answered with an error envelope (PROTOCOL.md section 2). The connection stays
    /// usable.
    #[error("{code}: {message}{}", remote_details(.cause, .revision))]
    Remote {
        /// Stable machine-readable code, e.g. `conflict` or `not_found`.
        code: String,
        /// Human-readable text naming the offending field where there is one.
        message: String,
        /// The underlying error's text, e.g. the OS error of a failed write.
        cause: Option<String>,
        /// For `conflict`: the room's current revision (0 = absent).
        revision: Option<u64>,
    },
}

impl ClientError {
    /// Whether the daemon seems not to be running: the socket file is missing, or nothing
    /// listens on it (a daemon that crashed leaves its socket file behind).
    pub fn daemon_seems_down(&self) -> bool {
        matches!(self, ClientError::Connect { source, .. } if matches!(
            source.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
        ))
    }

    /// Remote errors answer one request; every other error leaves the connection unusable.
    fn ends_connection(&self) -> bool {
        !matches!(self, ClientError::Remote { .. })
    }
}

fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "; the daemon seems not to be running (no socket file there)",
        io::ErrorKind::ConnectionRefused => {
            "; the daemon seems not to be running (nothing listens on that socket file)"
        }
        io::ErrorKind::PermissionDenied => "; check the socket file's permissions and group",
        _ => "",
    }
}

fn remote_details(cause: &Option<String>, revision: &Option<u64>) -> String {
    let mut details = String::new();
    if let Some(cause) = cause {
        details.push_str(&format!(" (cause: {cause})"));
    }
    if let Some(revision) = revision {
        details.push_str(&format!(" (current revision: {revision})"));
    }
    details
}

/// One connection to the daemon. Requests on it are answered in the order they were sent.
#[derive(Debug)]
pub struct Client {
    /// Kept only to name the socket in errors.
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    /// A second handle on the same stream, so that [`Client::pipeline`] can read responses on
    /// another thread while this one writes.
    writer: BufWriter<UnixStream>,
}

impl Client {
    /// Connects to the daemon listening on `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            socket: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_error)?;
        let write_half = stream.try_clone().map_err(connect_error)?;
        Ok(Client {
            socket: path.to_owned(),
            reader: BufReader::new(stream),
            writer: BufWriter::new(write_half),
        })
    }

    /// The socket path this client connected to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Bounds every wait for the daemon (each read and each write), `None` to wait forever (the
    /// default). It is not a deadline for a whole call: a 10 MB room that keeps arriving is
    /// fine. An expired timeout is an [`ClientError::Io`] and ends the connection.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        // Both halves share one socket, so setting the options once covers reads and writes.
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|source| io_error(&self.socket, source))
    }

    /// Sends one operation and waits for its reply, decoded into the operation's reply type;
    /// [`ClientError::Remote`] for an error envelope.
    pub fn request<Op: Operation + Serialize>(
        &mut self,
        op: &Op,
    ) -> Result<Op::Reply, ClientError> {
        let line = self.call_raw(&Call::new(op))?;
        serde_json::from_slice(&line).map_err(|error| ClientError::Protocol {
            socket: self.socket.clone(),
            reason: format!("not a {} answer ({error}): {}", Op::NAME, excerpt(&line)),
        })
    }

    /// Sends one request and waits for its response. Returns the whole success object as the
    /// daemon sent it (`ok` and any `id` included), or [`ClientError::Remote`] for an error one.
    ///
    /// `request` is usually a [`Value`]; any `Serialize` works, e.g. a struct holding a room as
    /// a borrowed [`RawValue`] so that its text reaches the daemon exactly as written.
    pub fn call<R: Serialize + ?Sized>(&mut self, request: &R) -> Result<Value, ClientError> {
        if let Err(error) = write_request(&mut self.writer, request) {
            return Err(send_failed(&mut self.reader, &self.socket, error));
        }
        read_response(&mut self.reader, &self.socket)
    }

    /// Like [`Client::call`], but returns the success line as the daemon sent it (`\n`
    /// included), checked to be an `{"ok":true,...}` envelope but not parsed into a [`Value`].
    /// For responses too large to hold twice, such as a `listRooms` of every room: the caller
    /// deserializes what it needs from the bytes, borrowing from them (e.g. `&RawValue`).
    pub fn call_raw<R: Serialize + ?Sized>(&mut self, request: &R) -> Result<Vec<u8>, ClientError> {
        if let Err(error) = write_request(&mut self.writer, request) {
            return Err(send_failed(&mut self.reader, &self.socket, error));
        }
        let line = read_line(&mut self.reader, &self.socket)?;
        check_raw_response(&line, &self.socket)?;
        Ok(line)
    }

    /// Sends `watch` (for the rooms named in `room_names`, every room when `None`), waits for
    /// its `{"ok":true}`, and turns the connection into a stream of change events
    /// (PROTOCOL.md section 3). The connection carries nothing else afterwards.
    pub fn watch(mut self, room_names: Option<&[String]>) -> Result<Watch, ClientError> {
        let watch = request::Watch {
            room_names: room_names.map(|names| names.iter().map(RoomLookup::new).collect()),
        };
        self.request(&watch)?;
        Ok(Watch { client: self })
    }

    /// Sends every request of `requests`, keeping up to [`PIPELINE_DEPTH`] of them unanswered,
    /// and calls `on_response` with each response in request order (the n-th call answers the
    /// n-th request): the success object, or [`ClientError::Remote`] for an error envelope, which
    /// does not stop the pipeline. Returns once every response is delivered, or with the first
    /// error that ends the connection (I/O or protocol); responses that arrived before it are
    /// still delivered.
    ///
    /// Responses are read on a helper thread while this one writes, so neither side can stall
    /// the other however large requests and responses are (10 MB rooms both ways).
    ///
    /// Requests are anything that serializes to a JSON object: a [`Value`], or a struct holding
    /// borrowed [`RawValue`]s to send large documents verbatim without parsing them.
    pub fn pipeline<I, R, F>(&mut self, requests: I, mut on_response: F) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = R>,
        R: Serialize,
        F: FnMut(Result<Value, ClientError>),
    {
        let Client {
            socket,
            reader,
            writer,
        } = self;
        let socket: &Path = socket;
        // One token per request sent: the reader thread only ever waits for a response that some
        // request asked for, and it ends when the sender is dropped and the tokens run out.
        let (expect_tx, expect_rx) = mpsc::channel::<()>();
        // Never more than PIPELINE_DEPTH responses are outstanding, so the reader never blocks
        // on this channel: it keeps draining the socket and the daemon never blocks writing.
        let (response_tx, response_rx) = mpsc::sync_channel(PIPELINE_DEPTH);
        thread::scope(|scope| {
            scope.spawn(move || {
                for () in expect_rx {
                    let response = read_response(reader, socket);
                    let fatal = matches!(&response, Err(error) if error.ends_connection());
                    if response_tx.send(response).is_err() || fatal {
                        break;
                    }
                }
            });
            let outcome = send_all(
                writer,
                socket,
                requests,
                expect_tx,
                &response_rx,
                &mut on_response,
            );
            if outcome.is_err() {
                // The reader may wait for a response that will never come; shutting the socket
                // down wakes it so the scope can end. The connection is unusable anyway.
                let _ = writer.get_ref().shutdown(Shutdown::Both);
            }
            outcome
        })
    }
}

/// A connection that carries change events, from [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    client: Client,
}

impl Watch {
    /// The next event, e.g. `{"event":"saved","roomName":"movie-night","revision":3}`, waiting
    /// as long as it takes (see [`Watch::set_timeout`]). `Ok(None)` when the daemon closed the
    /// connection between two events (it stops, or it dropped this watcher without being able
    /// to say so); [`ClientError::Io`] when it broke in the middle of one, and
    /// [`ClientError::Protocol`] for a line that is not a JSON object. After
    /// `{"event":"overflow"}` the daemon closes the connection: the watcher missed events and
    /// should re-read the rooms it cares about.
    pub fn next_event(&mut self) -> Result<Option<Value>, ClientError> {
        let Some(line) = self.next_event_line()? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Value>(&line) {
            Ok(event @ Value::Object(_)) => Ok(Some(event)),
            _ => Err(ClientError::Protocol {
                socket: self.client.socket.clone(),
                reason: format!("an event that is not a JSON object: {}", excerpt(&line)),
            }),
        }
    }

    /// Like [`Watch::next_event`], but the event line as the daemon sent it (`\n` included),
    /// for a caller that passes it on with every number as written.
    pub fn next_event_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let Client { socket, reader, .. } = &mut self.client;
        let buffer = reader.fill_buf().map_err(|error| io_error(socket, error))?;
        if buffer.is_empty() {
            return Ok(None);
        }
        read_line(reader, socket).map(Some)
    }

    /// Bounds each wait for the next event; see [`Client::set_timeout`].
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.client.set_timeout(timeout)
    }
}

/// The writing side of [`Client::pipeline`]. Takes `expect` by value so that it is dropped on
/// return, which tells the reader thread no more responses are coming.
fn send_all<R: Serialize, F>(
    writer: &mut BufWriter<UnixStream>,
    socket: &Path,
    requests: impl IntoIterator<Item = R>,
    expect: Sender<()>,
    responses: &Receiver<Result<Value, ClientError>>,
    on_response: &mut F,
) -> Result<(), ClientError>
where
    F: FnMut(Result<Value, ClientError>),
{
    let mut in_flight = 0usize;
    for request in requests {
        if in_flight == PIPELINE_DEPTH {
            deliver(receive(responses, socket), on_response)?;
            in_flight -= 1;
        }
        // Flushed per request so that the reader never waits (and never times out) for the
        // answer to a request still sitting in our buffer.
        if let Err(error) = write_request(writer, &request) {
            // Requests already on the wire may have been applied: report what the daemon
            // answered before the connection broke (a `busy` refusal, say), then the failure.
            drain(responses, in_flight, on_response);
            return Err(io_error(socket, error));
        }
        in_flight += 1;
        // A send error means the reader thread stopped after a fatal error, which the next
        // receive reports.
        let _ = expect.send(());
        while let Ok(response) = responses.try_recv() {
            deliver(response, on_response)?;
            in_flight -= 1;
        }
    }
    drop(expect);
    for _ in 0..in_flight {
        deliver(receive(responses, socket), on_response)?;
    }
    Ok(())
}

fn receive(
    responses: &Receiver<Result<Value, ClientError>>,
    socket: &Path,
) -> Result<Value, ClientError> {
    responses.recv().unwrap_or_else(|_| {
        // Only reachable if the reader thread panicked.
        Err(io_error(
            socket,
            io::Error::other("the response reader stopped"),
        ))
    })
}

/// Hands a response to the caller; returns the errors that end the connection instead.
fn deliver<F>(response: Result<Value, ClientError>, on_response: &mut F) -> Result<(), ClientError>
where
    F: FnMut(Result<Value, ClientError>),
{
    match response {
        Err(error) if error.ends_connection() => Err(error),
        response => {
            on_response(response);
            Ok(())
        }
    }
}

/// Delivers the responses that still arrive for requests already sent, until the first error
/// that ends the connection.
fn drain<F>(responses: &Receiver<Result<Value, ClientError>>, in_flight: usize, on_response: &mut F)
where
    F: FnMut(Result<Value, ClientError>),
{
    for _ in 0..in_flight {
        let delivered = responses
            .recv()
            .is_ok_and(|response| deliver(response, on_response).is_ok());
        if !delivered {
            break;
        }
    }
}

fn write_request<R: Serialize + ?Sized>(
    writer: &mut BufWriter<UnixStream>,
    request: &R,
) -> io::Result<()> {
    // Serialization of a Value (or of borrowed raw JSON) cannot fail on its own; any error here
    // is the writer's.
    serde_json::to_writer(&mut *writer, request)?;
    writer.write_all(b"\n")?;
    writer.flush()
}

/// A daemon that refuses a connection (`busy`) answers and closes it; our write then fails with
/// a broken pipe although the answer that says why is waiting to be read. Prefer that answer.
fn send_failed(reader: &mut BufReader<UnixStream>, socket: &Path, error: io::Error) -> ClientError {
    if matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    ) {
        if let Err(remote @ ClientError::Remote { .. }) = read_response(reader, socket) {
            return remote;
        }
    }
    io_error(socket, error)
}

fn read_response(reader: &mut BufReader<UnixStream>, socket: &Path) -> Result<Value, ClientError> {
    let line = read_line(reader, socket)?;
    parse_response(&line, socket)
}

/// One whole line from the daemon, `\n` included; a connection closed before the line ended is
/// an [`ClientError::Io`].
fn read_line(reader: &mut BufReader<UnixStream>, socket: &Path) -> Result<Vec<u8>, ClientError> {
    let mut line = Vec::new();
    let read = reader
        .read_until(b'\n', &mut line)
        .map_err(|error| io_error(socket, error))?;
    if line.last() != Some(&b'\n') {
        let what = if read == 0 {
            "the daemon closed the connection without answering"
        } else {
            "the daemon closed the connection in the middle of a response"
        };
        return Err(io_error(
            socket,
            io::Error::new(io::ErrorKind::UnexpectedEof, what),
        ));
    }
    Ok(line)
}

/// Checks that a success line is an `{"ok":true,...}` envelope without building a [`Value`] of
/// it (it may hold every room); error envelopes are small and go through [`parse_response`].
fn check_raw_response(line: &[u8], socket: &Path) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow, default)]
        ok: Option<&'a RawValue>,
    }
    let protocol = |reason: String| ClientError::Protocol {
        socket: socket.to_owned(),
        reason,
    };
    // A derived struct would also accept a JSON array; a response must be an object.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(protocol(format!("not a JSON object: {}", excerpt(line))));
    }
    let envelope: Envelope = serde_json::from_slice(line)
        .map_err(|error| protocol(format!("not JSON ({error}): {}", excerpt(line))))?;
    match envelope.ok.map(RawValue::get) {
        Some("true") => Ok(()),
        // The whole error envelope, or why it is malformed.
        _ => parse_response(line, socket).map(drop),
    }
}

/// Checks the envelope of one response line (PROTOCOL.md section 2).
fn parse_response(line: &[u8], socket: &Path) -> Result<Value, ClientError> {
    let protocol = |reason: String| ClientError::Protocol {
        socket: socket.to_owned(),
        reason,
    };
    let response: Value = serde_json::from_slice(line)
        .map_err(|error| protocol(format!("not JSON ({error}): {}", excerpt(line))))?;
    match response.get("ok") {
        Some(Value::Bool(true)) => Ok(response),
        Some(Value::Bool(false)) => Err(remote_error(&response)
            .unwrap_or_else(|| protocol(format!("malformed error: {}", excerpt(line))))),
        _ => Err(protocol(format!(
            "no boolean \"ok\" field: {}",
            excerpt(line)
        ))),
    }
}

/// The [`ClientError::Remote`] of an `ok: false` response, `None` when its `error` lacks the
/// `code` or `message` every error must have.
fn remote_error(response: &Value) -> Option<ClientError> {
    let error = response.get("error")?;
    Some(ClientError::Remote {
        code: error.get("code")?.as_str()?.to_owned(),
        message: error.get("message")?.as_str()?.to_owned(),
        cause: error
            .get("cause")
            .and_then(Value::as_str)
            .map(str::to_owned),
        revision: error.get("revision").and_then(Value::as_u64),
    })
}

/// The start of a bad line, enough to recognise it in an error message without printing 10 MB.
fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    let text = text.trim_end();
    if line.len() > MAX {
        format!("{text}...")
    } else {
        text.to_owned()
    }
}

fn io_error(socket: &Path, source: io::Error) -> ClientError {
    // An expired socket timeout surfaces as EAGAIN ("resource temporarily unavailable"), which
    // would only puzzle the reader.
    let source = if source.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the daemon did not answer in time")
    } else {
        source
    };
    ClientError::Io {
        socket: socket.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::net::UnixListener;

    /// Serves one connection on a fresh socket: answers each request line with `answer(line)`
    /// (no line at all for `None`), then closes.
    fn serve_one(
        answer: impl Fn(&Value) -> Option<String> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("test.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut writer = BufWriter::new(stream.try_clone().expect("clone"));
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let request: Value = serde_json::from_str(&line).expect("request is JSON");
                let Some(response) = answer(&request) else {
                    return;
                };
                if writeln!(writer, "{response}")
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        (dir, socket)
    }

    #[test]
    fn call_returns_the_success_object() {
        let (_dir, socket) = serve_one(|request| {
            Some(json!({"id": request["id"], "ok": true, "protocol": 1}).to_string())
        });
        let mut client = Client::connect(&socket).expect("connect");
        let response = client.call(&json!({"id": 7, "op": "ping"})).expect("ping");
        assert_eq!(response, json!({"id": 7, "ok": true, "protocol": 1}));
    }

    #[test]
    fn request_sends_the_operation_and_decodes_its_reply() {
        let (_dir, socket) = serve_one(|request| {
            Some(match request["op"].as_str() {
                Some("addRating") => {
                    let expected = json!({"op": "addRating", "roomName": "movie night",
                        "mediaId": "plex://movie/1", "userName": "jane", "rating": "dislike"});
                    assert_eq!(request, &expected);
                    json!({"ok": true, "revision": 4, "added": true}).to_string()
                }
                _ => json!({"ok": true, "room": null}).to_string(),
            })
        });
        let mut client = Client::connect(&socket).expect("connect");
        let rated = client
            .request(&request::AddRating {
                room_name: RoomLookup::new("movie night"),
                media_id: "plex://movie/1".to_owned(),
                user_name: "jane".to_owned(),
                rating: crate::room::Rating::Dislike,
                timestamp: None,
            })
            .expect("addRating");
        assert_eq!(
            rated,
            crate::protocol::response::Rated {
                revision: 4,
                added: true
            }
        );
        // A reply without the fields its operation promises is the daemon out of step.
        let error = client
            .request(&request::Ping)
            .expect_err("no protocol field");
        assert!(
            matches!(&error, ClientError::Protocol { reason, .. } if reason.contains("not a ping answer")),
            "{error:?}"
        );
    }

    #[test]
    fn an_error_envelope_becomes_remote_and_the_connection_stays_usable() {
        let (_dir, socket) = serve_one(|request| {
            Some(match request["op"].as_str() {
                Some("saveRoom") => json!({"ok": false, "error": {
                    "code": "conflict", "message": "expectedRevision 1 does not match",
                    "cause": "because", "revision": 3}})
                .to_string(),
                _ => json!({"ok": true}).to_string(),
            })
        });
        let mut client = Client::connect(&socket).expect("connect");
        let error = client
            .call(&json!({"op": "saveRoom"}))
            .expect_err("conflict");
        match &error {
            ClientError::Remote {
                code,
                message,
                cause,
                revision,
            } => {
                assert_eq!(code, "conflict");
                assert_eq!(message, "expectedRevision 1 does not match");
                assert_eq!(cause.as_deref(), Some("because"));
                assert_eq!(*revision, Some(3));
            }
            other => panic!("expected Remote, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "conflict: expectedRevision 1 does not match (cause: because) (current revision: 3)"
        );
        assert_eq!(
            client.call(&json!({"op": "flush"})).expect("flush"),
            json!({"ok": true})
        );
    }

    #[test]
    fn a_line_that_is_not_an_envelope_is_a_protocol_error() {
        for bad in ["hello", "[1,2]", "{\"ok\":\"yes\"}", "{\"ok\":false}"] {
            let (_dir, socket) = serve_one(move |_| Some(bad.to_owned()));
            let mut client = Client::connect(&socket).expect("connect");
            let error = client.call(&json!({"op": "ping"})).expect_err(bad);
            assert!(
                matches!(error, ClientError::Protocol { .. }),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn a_hang_up_is_an_io_error() {
        let (_dir, socket) = serve_one(|_| None);
        let mut client = Client::connect(&socket).expect("connect");
        let error = client.call(&json!({"op": "ping"})).expect_err("hang up");
        assert!(matches!(error, ClientError::Io { .. }), "{error:?}");
        assert!(error.to_string().contains("without answering"), "{error}");
    }

    #[test]
    fn a_missing_socket_names_the_path_and_says_the_daemon_seems_down() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("absent.sock");
        let error = Client::connect(&socket).expect_err("no daemon");
        let text = error.to_string();
        assert!(text.contains(&*socket.to_string_lossy()), "{text}");
        assert!(text.contains("seems not to be running"), "{text}");
        assert!(error.daemon_seems_down());
    }

    #[test]
    fn a_timeout_is_reported_as_such() {
        let (_dir, socket) = serve_one(|_| {
            thread::sleep(Duration::from_millis(500));
            Some(json!({"ok": true}).to_string())
        });
        let mut client = Client::connect(&socket).expect("connect");
        client
            .set_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let error = client.call(&json!({"op": "ping"})).expect_err("timeout");
        assert!(
            matches!(&error, ClientError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut),
            "{error:?}"
        );
    }

    #[test]
    fn a_busy_refusal_is_reported_rather_than_the_broken_pipe() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("busy.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let busy = json!({"ok": false, "error": {"code": "busy", "message": "too many"}});
            writeln!(stream, "{busy}").expect("write busy");
        });
        let mut client = Client::connect(&socket).expect("connect");
        server.join().expect("server");
        let error = client.call(&json!({"op": "ping"})).expect_err("busy");
        assert!(
            matches!(&error, ClientError::Remote { code, .. } if code == "busy"),
            "{error:?}"
        );
    }

    #[test]
    fn pipeline_delivers_every_response_in_order_errors_included() {
        let (_dir, socket) = serve_one(|request| {
            let n = request["n"].as_u64().expect("n");
            Some(if n % 10 == 3 {
                json!({"ok": false, "error": {"code": "invalid_room", "message": format!("{n}")}})
                    .to_string()
            } else {
                json!({"ok": true, "n": n}).to_string()
            })
        });
        let mut client = Client::connect(&socket).expect("connect");
        let mut seen = Vec::new();
        client
            .pipeline(
                (0..1000u64).map(|n| json!({"op": "x", "n": n})),
                |response| {
                    seen.push(match response {
                        Ok(success) => success["n"].as_u64().expect("n"),
                        Err(ClientError::Remote { message, .. }) => message.parse().expect("n"),
                        Err(other) => panic!("unexpected {other:?}"),
                    })
                },
            )
            .expect("pipeline");
        assert_eq!(seen, (0..1000).collect::<Vec<u64>>());
        // Still usable afterwards.
        assert!(client.call(&json!({"op": "x", "n": 1})).is_ok());
    }

    #[test]
    fn pipeline_does_not_stall_when_requests_and_responses_are_both_large() {
        // Each request and response is far bigger than a socket buffer, and PIPELINE_DEPTH of
        // them exceed it many times over: a client that only reads after writing would stall.
        let big = "x".repeat(256 * 1024);
        let (_dir, socket) =
            serve_one(|request| Some(json!({"ok": true, "echo": request["payload"]}).to_string()));
        let mut client = Client::connect(&socket).expect("connect");
        client
            .set_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut count = 0;
        client
            .pipeline(
                (0..200).map(|_| json!({"op": "x", "payload": big})),
                |response| {
                    let response = response.expect("success");
                    assert_eq!(response["echo"].as_str().map(str::len), Some(big.len()));
                    count += 1;
                },
            )
            .expect("pipeline");
        assert_eq!(count, 200);
    }

    #[test]
    fn pipeline_reports_a_hang_up_after_delivering_earlier_responses() {
        let (_dir, socket) = serve_one(|request| {
            let n = request["n"].as_u64().expect("n");
            (n < 5).then(|| json!({"ok": true, "n": n}).to_string())
        });
        let mut client = Client::connect(&socket).expect("connect");
        let mut delivered = 0;
        let outcome = client.pipeline((0..100u64).map(|n| json!({"op": "x", "n": n})), |r| {
            assert!(r.is_ok());
            delivered += 1;
        });
        assert!(
            matches!(outcome, Err(ClientError::Io { .. })),
            "{outcome:?}"
        );
        assert_eq!(delivered, 5);
    }
}
