/**
 * A dependency-free Deno client for `moviematch-storaged` (protocol version 1, see PROTOCOL.md).
 *
 * `SocketStorage` implements MovieMatch's `Storage` interface (`saveRoom`, `getRoom`,
 * `deleteRoom`, `listRooms`, `hasRoom`) over the daemon's Unix socket, typed as MovieMatch types
 * it so that it assigns to MovieMatch's own `Storage` with no cast, plus the daemon's extra
 * operations (revisions, atomic `addRating` / `setProgress`, `verifyPassword`, filtered and
 * paginated listing, `watch`, ...). Every failure is a `StorageError` shaped like MovieMatch's.
 *
 * Connection semantics, in short:
 * - One connection carries every request; requests are pipelined and answers are matched by `id`.
 * - The connection is opened lazily and re-opened after it died (e.g. the daemon restarted), so a
 *   request made after the daemon came back works.
 * - A request in flight when the connection dies fails with `StorageError` code `"connection"`;
 *   after `close()`, calls fail with `"closed"`. An answer without its operation's fields (or
 *   not JSON, not UTF-8) fails with `"protocol"` and drops the connection.
 *   Mutations (`saveRoom*`, `deleteRoom*`, `addRating`, `setProgress`, `deleteRooms`) are NEVER
 *   retried: the daemon may or may not have applied them. Reads (`getRoom*`, `hasRoom`,
 *   `listRooms*`, `verifyPassword`, `ping`, `stats`) and `flush` are retried once on a fresh
 *   connection.
 * - Every request has a timeout (`timeoutMs`, default 10 s) covering connecting and the answer;
 *   it then fails with code `"timeout"` (a mutation that timed out may still be applied).
 * - `watch()` uses a connection of its own.
 * - An idle client does not keep the process alive (its socket is unreferenced while no call
 *   waits), so `close()` is optional, as MovieMatch's own storages have none.
 *
 * @module
 */

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/** A swipe: `"like"` or `"dislike"`. */
export type Rating = "like" | "dislike";

/** One entry of `ratings[mediaId]`: `[userName, rating, timestamp (epoch ms)]`. */
export type RatingEntry = [userName: string, rating: Rating, timestamp: number];

// The room types below are MovieMatch's (`types/moviematch.ts` and `storage/interface.ts`),
// declared the same way so that a room goes from MovieMatch to this client and back with no
// cast, in both directions (`moviematch_test.ts` checks it).

/** A room option. */
export type RoomOption = "EndOnFirstMatch";

/** How MovieMatch orders the media of a room. */
export type RoomSort = "random" | "rating";

/** MovieMatch's matching strategy of a room. */
export type RoomType = "standard" | "unanimous" | "solo" | "async";

/** MovieMatch's media order within a room. */
export type SortOrder = "newest" | "oldest" | "random";

/** How several genre filters combine. */
export type GenreFilterMode = "and" | "or";

/** A media filter of a room. */
export interface Filter {
  key: string;
  operator: string;
  value: string[];
}

/** A rating range filter (0 to 10). */
export interface RatingFilter {
  min?: number;
  max?: number;
  type?: "critic" | "audience";
}

/** A content rating filter, e.g. `["G", "PG"]`. */
export interface ContentRatingFilter {
  ratings: string[];
}

/**
 * A room as MovieMatch serializes it (PROTOCOL.md section 4), typed as MovieMatch types it.
 * The daemon keeps every other field verbatim too; this type names the ones MovieMatch writes.
 */
export interface SerializedRoom {
  roomName: string;
  password?: string;
  options?: RoomOption[];
  filters?: Filter[];
  sort: RoomSort;
  roomType?: RoomType;
  sortOrder?: SortOrder;
  genreFilterMode?: GenreFilterMode;
  ratingFilter?: RatingFilter;
  contentRatingFilter?: ContentRatingFilter;
  /** RFC 3339 / `Date.prototype.toISOString()`. */
  createdAt: string;
  /**
   * A string, as MovieMatch types it. The daemon also accepts an integer (Plex ids are
   * numeric) and keeps it as sent; this client gives it back as a string.
   */
  creatorPlexUserId: string;
  creatorPlexUsername: string;
  ratings?: Record<string, RatingEntry[]>;
  userProgress?: Record<string, number>;
}

/** MovieMatch's storage interface, which `SocketStorage` implements. */
export interface Storage {
  saveRoom(room: SerializedRoom): Promise<void>;
  getRoom(roomName: string): Promise<SerializedRoom | null>;
  deleteRoom(roomName: string): Promise<void>;
  listRooms(): Promise<SerializedRoom[]>;
  hasRoom(roomName: string): Promise<boolean>;
}

/** A room with its revision, as `getRoomWithRevision` returns it. */
export interface RoomWithRevision {
  room: SerializedRoom;
  revision: number;
}

/** A `listRooms` entry when `summary: true`: never the password nor the ratings. */
export interface RoomSummary {
  roomName: string;
  sort: RoomSort;
  createdAt: string;
  /** A string, as in `SerializedRoom`. */
  creatorPlexUserId: string;
  creatorPlexUsername: string;
  hasPassword: boolean;
  /** The number of rating entries, over all media. */
  ratingCount: number;
  revision: number;
}

/** Filters and paging of `listRoomsPage`; all optional and combinable. */
export interface ListRoomsFilters {
  /** Compared as strings: `13692262` matches `"13692262"`. */
  creatorPlexUserId?: string | number;
  creatorPlexUsername?: string;
  /** Only rooms created strictly before this instant (a `Date` or an RFC 3339 string). */
  createdBefore?: Date | string;
  /** Only rooms created strictly after this instant. */
  createdAfter?: Date | string;
  /** Only room names strictly greater (byte order); pass the previous page's `next`. */
  after?: string;
  /** At most this many rooms (a positive integer). */
  limit?: number;
  /** Return `RoomSummary` entries instead of whole rooms. */
  summary?: boolean;
}

/** One page of `listRoomsPage`. `next` is the value to pass as `after`, or `null` at the end. */
export interface RoomsPage<T> {
  rooms: T[];
  next: string | null;
}

/** The answer of `addRating`. `added` is false when the user had already rated that media. */
export interface AddRatingResult {
  revision: number;
  added: boolean;
}

/** The answer of `stats`. The daemon may add more counters. */
export interface Stats {
  version: string;
  backend: string;
  rooms: number;
  uptimeSeconds: number;
  connections: number;
  protocol?: number;
  durability?: string;
  commits?: number;
  changes?: number;
  failedCommits?: number;
  storagePath?: string;
  [counter: string]: unknown;
}

/** `saveRoom` / `saveRoomWithRevision`: a room was created or replaced. */
export interface SavedEvent {
  event: "saved";
  roomName: string;
  revision: number;
}

/** `addRating` that added a rating. */
export interface RatedEvent {
  event: "rated";
  roomName: string;
  revision: number;
  mediaId: string;
  userName: string;
  rating: Rating;
  timestamp: number;
}

/** `setProgress`. */
export interface ProgressEvent {
  event: "progress";
  roomName: string;
  revision: number;
  userName: string;
  progress: number;
}

/** `deleteRoom`, `deleteRooms` or expiry removed a room. */
export interface DeletedEvent {
  event: "deleted";
  roomName: string;
}

/** The watcher read too slowly; the daemon disconnected it. Re-read the rooms and watch again. */
export interface OverflowEvent {
  event: "overflow";
}

/** A change event of `watch`. */
export type WatchEvent =
  | SavedEvent
  | RatedEvent
  | ProgressEvent
  | DeletedEvent
  | OverflowEvent;

/** Options of `SocketStorage`. */
export interface SocketStorageOptions {
  /**
   * The daemon's socket. Default: env `STORAGE_SOCKET` when that variable may be read without a
   * prompt (`--allow-env`), else `./data/storaged.sock` (the daemon's default).
   */
  socketPath?: string;
  /** Per-request timeout in milliseconds (connecting included). Default 10000. */
  timeoutMs?: number;
  /** Rooms per `listRooms` page when `listRooms()` collects every room. Default 100. */
  listPageSize?: number;
}

/** Error codes: the daemon's (PROTOCOL.md section 2) and the client's own. */
export type StorageErrorCode =
  | "bad_json"
  | "bad_request"
  | "invalid_room"
  | "not_found"
  | "conflict"
  | "too_large"
  | "storage"
  | "shutting_down"
  | "busy"
  /** Client side: cannot connect, or the connection died (the daemon stopped or restarted). */
  | "connection"
  /** Client side: `close()` was called on this client; it makes no more requests. */
  | "closed"
  /** Client side: no answer within `timeoutMs`. */
  | "timeout"
  /** Client side: the daemon sent something that is not a valid answer. */
  | "protocol"
  /**
   * Client side: an argument the client cannot send (not encodable as JSON, e.g. a BigInt or a
   * cycle; an invalid `Date`; a timestamp, progress or revision that is not an integer >= 0) or
   * an invalid option; nothing was sent.
   */
  | "invalid_argument";

/** What a `StorageError` carries besides MovieMatch's `message` and `cause`. */
export interface StorageErrorDetails {
  /** Default `"storage"`. */
  code?: StorageErrorCode | string;
  revision?: number;
}

/**
 * Every failure of `SocketStorage` and `RoomWatch`, encoding a request included. Constructed and
 * shaped like MovieMatch's own `StorageError` (`new StorageError(message, cause?)`, `cause` an
 * `Error`), with `code` and `revision` added.
 */
export class StorageError extends Error {
  override name = "StorageError";
  /** The daemon's error code, or a client-side one (`"connection"`, `"closed"`, ...). */
  readonly code: StorageErrorCode | string;
  /** With `"conflict"`: the room's current revision (0 = the room does not exist). */
  readonly revision?: number;

  /**
   * @param cause the underlying error: the daemon's `cause` text as an `Error`, or the
   *   JavaScript error behind a client-side failure.
   */
  constructor(
    message: string,
    public override cause?: Error,
    details: StorageErrorDetails = {},
  ) {
    super(message);
    this.code = details.code ?? "storage";
    if (details.revision !== undefined) this.revision = details.revision;
  }
}

/** A client-side failure; `cause` is whatever was thrown, made an `Error` if it is not one. */
function failure(code: StorageErrorCode, message: string, cause?: unknown): StorageError {
  const asError = cause === undefined || cause instanceof Error ? cause : new Error(String(cause));
  return new StorageError(message, asError, { code });
}

/**
 * A request object as JSON text (absent optional arguments: `undefined` fields are dropped).
 * What `JSON.stringify` cannot encode (a BigInt, a cycle) is an `invalid_argument` failure.
 */
function encodeRequest(request: Record<string, unknown>): string {
  try {
    return JSON.stringify(request);
  } catch (e) {
    throw failure(
      "invalid_argument",
      `${String(request.op)}: the request cannot be encoded as JSON: ${describe(e)}`,
      e,
    );
  }
}

/** `value` as an options object: `undefined` is `{}`; anything else but an object is refused. */
function optionsArg<T extends object>(
  value: T | undefined,
  what: string,
): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw failure("invalid_argument", `${what}: expected an object, got ${shown(value)}`);
  }
  return value;
}

/** An optional integer >= 0 (a revision, a count): JSON would send NaN or Infinity as `null`,
 * which the daemon reads as absent, so they are refused here instead of changing the meaning. */
function countArg(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw failure("invalid_argument", `${what}: expected an integer >= 0, got ${shown(value)}`);
  }
  return value;
}

/** A `Date` or an RFC 3339 string, as sent; an invalid `Date` (`new Date(NaN)`) is refused. */
function timestampArg(value: Date | string, what: string): string {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) {
      throw failure("invalid_argument", `${what}: an invalid Date`);
    }
    return value.toISOString();
  }
  if (typeof value !== "string") {
    throw failure("invalid_argument", `${what}: expected a Date or a string, got ${shown(value)}`);
  }
  return value;
}

function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.slice(0, 100));
  if (value instanceof Date) return "a Date";
  return typeof value === "bigint" ? `${value}n` : String(value);
}

/** Rooms come back as MovieMatch types them: a numeric `creatorPlexUserId` (the daemon keeps
 * one as sent) becomes a string. */
function asMovieMatchRoom<T>(room: T): T {
  const fields = room as { creatorPlexUserId?: unknown };
  if (typeof fields.creatorPlexUserId === "number") {
    fields.creatorPlexUserId = String(fields.creatorPlexUserId);
  }
  return room;
}

// ---------------------------------------------------------------------------------------------
// Internals: line reading and one request connection
// ---------------------------------------------------------------------------------------------

const DEFAULT_SOCKET = "./data/storaged.sock";
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_PAGE_SIZE = 100;
const READ_CHUNK = 256 * 1024;

// deno-lint-ignore no-explicit-any
type Reply = Record<string, any>;

function defaultSocketPath(): string {
  try {
    const state = Deno.permissions.querySync({
      name: "env",
      variable: "STORAGE_SOCKET",
    }).state;
    if (state === "granted") {
      const fromEnv = Deno.env.get("STORAGE_SOCKET");
      if (fromEnv) return fromEnv;
    }
  } catch {
    // No permission API or no access: use the default.
  }
  return DEFAULT_SOCKET;
}

// deno-lint-ignore no-explicit-any
function isObject(value: unknown): value is Record<string, any> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isBoolean(value: unknown): value is boolean {
  return typeof value === "boolean";
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isRevision(value: unknown): value is number {
  return isCount(value) && value > 0;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Cuts a byte stream into lines, decoding UTF-8 as a stream (a character may span reads). */
class LineReader {
  #conn: Deno.UnixConn;
  #decoder = new TextDecoder("utf-8", { fatal: true });
  #buffer = new Uint8Array(READ_CHUNK);
  #parts: string[] = [];
  #lines: string[] = [];
  #head = 0;
  #eof = false;

  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /** The next line without its terminator, or null at the end of the stream. */
  async readLine(): Promise<string | null> {
    while (this.#head === this.#lines.length) {
      if (this.#eof) return null;
      const n = await this.#conn.read(this.#buffer);
      if (n === null) {
        this.#eof = true;
        // An unterminated last line is not a response: drop it.
        this.#decoder = new TextDecoder("utf-8", { fatal: true });
        this.#parts = [];
        return null;
      }
      let text: string;
      try {
        text = this.#decoder.decode(this.#buffer.subarray(0, n), { stream: true });
      } catch (e) {
        throw failure("protocol", "the storage daemon sent invalid UTF-8", e);
      }
      this.#push(text);
    }
    const line = this.#lines[this.#head++];
    if (this.#head === this.#lines.length) {
      this.#lines = [];
      this.#head = 0;
    }
    return line;
  }

  // Only the new text is searched for "\n", and a long line is joined once: linear in its size.
  #push(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl === -1) break;
      this.#parts.push(text.slice(start, nl));
      let line = this.#parts.length === 1 ? this.#parts[0] : this.#parts.join("");
      this.#parts = [];
      if (line.endsWith("\r")) line = line.slice(0, -1);
      this.#lines.push(line);
      start = nl + 1;
    }
    if (start < text.length) this.#parts.push(text.slice(start));
  }
}

async function writeAll(conn: Deno.UnixConn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(data.subarray(offset));
  }
}

async function openSocket(path: string): Promise<Deno.UnixConn> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (e) {
    throw failure(
      "connection",
      `cannot connect to the storage daemon at ${path}: ${describe(e)}`,
      e,
    );
  }
}

function errorFromReply(reply: Reply): StorageError {
  const error = reply.error;
  const valid = reply.ok === false && isObject(error) && typeof error.code === "string" &&
    ["string", "undefined"].includes(typeof error.message) &&
    ["string", "undefined"].includes(typeof error.cause) &&
    ["number", "undefined"].includes(typeof error.revision);
  if (!valid) {
    return failure(
      "protocol",
      "the storage daemon sent an invalid answer (neither ok:true nor a failure with a code, " +
        "a message and a text cause)",
      JSON.stringify(reply).slice(0, 300),
    );
  }
  const revision = typeof error.revision === "number"
    ? error.revision
    : typeof reply.revision === "number"
    ? reply.revision
    : undefined;
  return new StorageError(
    typeof error.message === "string" ? error.message : error.code,
    typeof error.cause === "string" ? new Error(error.cause) : undefined,
    { code: error.code, revision },
  );
}

/** Races `promise` against a timer; on expiry calls `onTimeout` and rejects with `timeout`. */
function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  onTimeout?: () => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(failure("timeout", `${what}: no answer within ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

interface PendingRequest {
  resolve: (reply: Reply) => void;
  reject: (error: StorageError) => void;
  /** Timed out: the caller is gone, but the entry stays until its answer, to keep the order. */
  abandoned: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

/** One connection carrying pipelined requests. */
class RequestConnection {
  #conn: Deno.UnixConn;
  #pending = new Map<number, PendingRequest>();
  #queue: Uint8Array[] = [];
  #pumping: Promise<void> | null = null;
  #dead = false;
  /** Requests whose caller still waits (not timed out). */
  #waiting = 0;
  /** Whether the socket keeps the process alive (Deno's default for a new one). */
  #referenced = true;
  readonly done: Promise<void>;

  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.done = this.#readLoop();
  }

  // The read loop always has a read pending. Like MovieMatch's own storages, an idle client must
  // not keep the process alive (a script that never calls close() exits), so the socket is
  // unreferenced whenever no caller waits for an answer. A timed-out request's answer is still
  // read (to keep the order) but is waited for by nobody: it keeps nothing alive.
  #updateReference(): void {
    const wanted = this.#waiting > 0;
    if (wanted === this.#referenced || this.#dead) return;
    this.#referenced = wanted;
    if (wanted) this.#conn.ref();
    else this.#conn.unref();
  }

  get dead(): boolean {
    return this.#dead;
  }

  /** Sends one request line and resolves with the daemon's successful reply. */
  request(id: number, line: Uint8Array, timeoutMs: number, what: string): Promise<Reply> {
    if (this.#dead) {
      return Promise.reject(failure("connection", "the connection is closed"));
    }
    return new Promise<Reply>((resolve, reject) => {
      const entry: PendingRequest = { resolve, reject, abandoned: false };
      entry.timer = setTimeout(() => {
        entry.abandoned = true;
        this.#waiting--;
        this.#updateReference();
        reject(failure("timeout", `${what}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, entry);
      this.#waiting++;
      this.#updateReference();
      this.#queue.push(line);
      if (!this.#pumping) this.#pumping = this.#pump();
    });
  }

  /** Closes the socket; requests in flight fail with `code`. */
  async close(reason: string, code: StorageErrorCode): Promise<void> {
    this.#die(reason, undefined, code);
    await this.done;
    await this.#pumping;
  }

  // Writes queued lines, coalescing everything queued meanwhile into one write.
  async #pump(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#dead) {
        const lines = this.#queue;
        this.#queue = [];
        let data: Uint8Array;
        if (lines.length === 1) {
          data = lines[0];
        } else {
          data = new Uint8Array(lines.reduce((n, l) => n + l.length, 0));
          let offset = 0;
          for (const l of lines) {
            data.set(l, offset);
            offset += l.length;
          }
        }
        await writeAll(this.#conn, data);
      }
    } catch (e) {
      this.#die(`writing to the storage daemon failed: ${describe(e)}`, e);
    } finally {
      this.#pumping = null;
    }
  }

  async #readLoop(): Promise<void> {
    const reader = new LineReader(this.#conn);
    let reason = "the storage daemon closed the connection";
    let cause: unknown;
    let code: StorageErrorCode = "connection";
    try {
      for (;;) {
        const line = await reader.readLine();
        if (line === null) break;
        if (line.trim() === "") continue;
        this.#dispatch(line);
      }
    } catch (e) {
      reason = `reading from the storage daemon failed: ${describe(e)}`;
      cause = e;
      if (e instanceof StorageError) code = e.code as StorageErrorCode;
    }
    this.#die(reason, cause, code);
  }

  #dispatch(line: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(line);
    } catch (e) {
      this.#die(`the storage daemon sent invalid JSON: ${describe(e)}`, e, "protocol");
      return;
    }
    if (!isObject(reply)) {
      this.#die("the storage daemon sent a line that is not a JSON object", undefined, "protocol");
      return;
    }
    let id: number | undefined;
    if (typeof reply.id === "number" && this.#pending.has(reply.id)) {
      id = reply.id;
    } else if (!("id" in reply)) {
      // `too_large`, `bad_json` and `busy` carry no id: answers come in order, so it is the
      // oldest request still waiting.
      id = this.#pending.keys().next().value;
    }
    if (id === undefined) return; // an answer for nobody: ignore
    const entry = this.#pending.get(id)!;
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    if (entry.abandoned) return;
    this.#waiting--;
    this.#updateReference();
    if (reply.ok === true) {
      entry.resolve(reply);
      return;
    }
    const error = errorFromReply(reply);
    entry.reject(error);
    if (error.code === "protocol") this.#die(error.message, undefined, "protocol");
  }

  #die(reason: string, cause?: unknown, code: StorageErrorCode = "connection"): void {
    if (this.#dead) return;
    this.#dead = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    for (const entry of this.#pending.values()) {
      clearTimeout(entry.timer);
      if (!entry.abandoned) {
        entry.reject(failure(code, reason, cause));
      }
    }
    this.#pending.clear();
    this.#waiting = 0;
    this.#queue = [];
  }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

const encoder = new TextEncoder();

/**
 * MovieMatch's storage, kept by `moviematch-storaged`.
 *
 * ```ts
 * const storage = new SocketStorage({ socketPath: "./data/storaged.sock" });
 * await storage.saveRoom(room);
 * const { added } = await storage.addRating(room.roomName, mediaId, user, "like");
 * await storage.close();
 * ```
 */
export class SocketStorage implements Storage {
  readonly socketPath: string;
  readonly timeoutMs: number;
  readonly listPageSize: number;

  #nextId = 1;
  #conn: RequestConnection | null = null;
  #connecting: Promise<RequestConnection> | null = null;
  #connections = new Set<RequestConnection>();
  #watches = new Set<RoomWatch>();
  #closed = false;

  constructor(options?: SocketStorageOptions) {
    options = optionsArg(options, "SocketStorage options");
    if (options.socketPath !== undefined && typeof options.socketPath !== "string") {
      throw failure(
        "invalid_argument",
        `socketPath must be a string, got ${shown(options.socketPath)}`,
      );
    }
    this.socketPath = options.socketPath ?? defaultSocketPath();
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.listPageSize = options.listPageSize ?? DEFAULT_PAGE_SIZE;
    if (typeof this.timeoutMs !== "number" || !(this.timeoutMs > 0)) {
      throw failure("invalid_argument", `timeoutMs must be positive, got ${this.timeoutMs}`);
    }
    if (!Number.isInteger(this.listPageSize) || this.listPageSize < 1) {
      throw failure(
        "invalid_argument",
        `listPageSize must be a positive integer, got ${this.listPageSize}`,
      );
    }
  }

  // ----- the original Storage interface -----

  /** Creates or replaces a room. */
  async saveRoom(room: SerializedRoom): Promise<void> {
    await this.saveRoomWithRevision(room);
  }

  /** The room, or null when it does not exist. */
  async getRoom(roomName: string): Promise<SerializedRoom | null> {
    return (await this.getRoomWithRevision(roomName))?.room ?? null;
  }

  /**
   * Deletes a room; deleting a missing room is not an error. With `expectedRevision`, only if the
   * room is at that revision (else `StorageError` `"conflict"` carrying the current `revision`).
   */
  async deleteRoom(
    roomName: string,
    options?: { expectedRevision?: number },
  ): Promise<void> {
    await this.deleteRoomWithResult(roomName, options);
  }

  /** Every room, sorted by name (byte order); pages through the daemon's `listRooms`. */
  async listRooms(): Promise<SerializedRoom[]> {
    const rooms: SerializedRoom[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.listRoomsPage({ after, limit: this.listPageSize });
      rooms.push(...page.rooms);
      if (page.next === null) return rooms;
      after = page.next;
    }
  }

  /** Whether the room exists. */
  async hasRoom(roomName: string): Promise<boolean> {
    const reply = await this.#call({ op: "hasRoom", roomName }, true);
    return this.#answer(reply, "exists", isBoolean);
  }

  // ----- revisions -----

  /**
   * Creates or replaces a room and returns its new revision. With `expectedRevision`, only if the
   * room is at that revision (`0`: only if it does not exist); else `"conflict"`.
   */
  async saveRoomWithRevision(
    room: SerializedRoom,
    options?: { expectedRevision?: number },
  ): Promise<number> {
    const { expectedRevision } = optionsArg(options, "saveRoom options");
    const reply = await this.#call({
      op: "saveRoom",
      room,
      expectedRevision: countArg(expectedRevision, "expectedRevision"),
    }, false);
    return this.#answer(reply, "revision", isRevision);
  }

  /** The room and its revision, or null when it does not exist. */
  async getRoomWithRevision(roomName: string): Promise<RoomWithRevision | null> {
    const reply = await this.#call({ op: "getRoom", roomName }, true);
    if (this.#answer(reply, "room", (room) => room === null || isObject(room)) === null) {
      return null;
    }
    return {
      room: asMovieMatchRoom(reply.room),
      revision: this.#answer(reply, "revision", isRevision),
    };
  }

  /** `deleteRoom` that tells whether a room was deleted (false: there was none). */
  async deleteRoomWithResult(
    roomName: string,
    options?: { expectedRevision?: number },
  ): Promise<boolean> {
    const { expectedRevision } = optionsArg(options, "deleteRoom options");
    const reply = await this.#call({
      op: "deleteRoom",
      roomName,
      expectedRevision: countArg(expectedRevision, "expectedRevision"),
    }, false);
    return this.#answer(reply, "deleted", isBoolean);
  }

  // ----- atomic updates -----

  /**
   * Appends `[userName, rating, timestamp]` to `ratings[mediaId]` atomically. A user rates a
   * media once: when they already did, the room is unchanged and `added` is false.
   * `timestamp` is epoch ms (a `Date` is accepted), default: the daemon's clock.
   * Fails with `"not_found"` when the room does not exist.
   */
  async addRating(
    roomName: string,
    mediaId: string,
    userName: string,
    rating: Rating,
    timestamp?: number | Date,
  ): Promise<AddRatingResult> {
    const reply = await this.#call({
      op: "addRating",
      roomName,
      mediaId,
      userName,
      rating,
      timestamp: countArg(
        timestamp instanceof Date ? timestamp.getTime() : timestamp,
        "addRating timestamp (epoch ms)",
      ),
    }, false);
    return {
      revision: this.#answer(reply, "revision", isRevision),
      added: this.#answer(reply, "added", isBoolean),
    };
  }

  /** Sets `userProgress[userName]` atomically; returns the new revision. `"not_found"` if no room. */
  async setProgress(roomName: string, userName: string, progress: number): Promise<number> {
    const reply = await this.#call({
      op: "setProgress",
      roomName,
      userName,
      progress: countArg(progress === undefined ? null : progress, "progress"),
    }, false);
    return this.#answer(reply, "revision", isRevision);
  }

  /** Whether `password` opens the room (a room without password accepts any). `"not_found"` if no room. */
  async verifyPassword(roomName: string, password: string): Promise<boolean> {
    const reply = await this.#call({ op: "verifyPassword", roomName, password }, true);
    return this.#answer(reply, "valid", isBoolean);
  }

  /** Deletes every room created strictly before `createdBefore`; returns how many. */
  async deleteRooms(createdBefore: Date | string): Promise<number> {
    const reply = await this.#call(
      { op: "deleteRooms", createdBefore: timestampArg(createdBefore, "createdBefore") },
      false,
    );
    return this.#answer(reply, "deleted", isCount);
  }

  // ----- listing -----

  /** One page of `listRooms` with filters; summaries when `summary: true`. */
  listRoomsPage(
    filters: ListRoomsFilters & { summary: true },
  ): Promise<RoomsPage<RoomSummary>>;
  listRoomsPage(
    filters?: ListRoomsFilters & { summary?: false },
  ): Promise<RoomsPage<SerializedRoom>>;
  listRoomsPage(
    filters?: ListRoomsFilters,
  ): Promise<RoomsPage<SerializedRoom | RoomSummary>>;
  async listRoomsPage(
    filters?: ListRoomsFilters,
  ): Promise<RoomsPage<SerializedRoom | RoomSummary>> {
    filters = optionsArg(filters, "listRoomsPage filters");
    const reply = await this.#call({
      op: "listRooms",
      creatorPlexUserId: filters.creatorPlexUserId,
      creatorPlexUsername: filters.creatorPlexUsername,
      createdBefore: filters.createdBefore === undefined
        ? undefined
        : timestampArg(filters.createdBefore, "createdBefore"),
      createdAfter: filters.createdAfter === undefined
        ? undefined
        : timestampArg(filters.createdAfter, "createdAfter"),
      after: filters.after,
      limit: countArg(filters.limit, "limit"),
      summary: filters.summary,
    }, true);
    const rooms: (SerializedRoom | RoomSummary)[] = this.#answer(
      reply,
      "rooms",
      (rooms) => Array.isArray(rooms) && rooms.every(isObject),
    );
    const next = this.#answer(reply, "next", (next) => next === null || typeof next === "string");
    return { rooms: rooms.map(asMovieMatchRoom), next };
  }

  // ----- daemon -----

  /** Checks the daemon answers; returns its protocol version (1). */
  async ping(): Promise<number> {
    const reply = await this.#call({ op: "ping" }, true);
    return this.#answer(reply, "protocol", isRevision);
  }

  /** The daemon's counters. */
  async stats(): Promise<Stats> {
    const { id: _id, ok: _ok, ...stats } = await this.#call({ op: "stats" }, true);
    return stats as Stats;
  }

  /** Returns once every acknowledged change is on stable storage. */
  async flush(): Promise<void> {
    await this.#call({ op: "flush" }, true);
  }

  /**
   * Watches changes of the given rooms (all rooms when absent) on a connection of its own.
   * Resolves once the daemon acknowledged: every change acknowledged to its writer afterwards is
   * delivered, for one room in revision order.
   *
   * The result is an async iterator of `WatchEvent`s. It ends (`done`) when `close()` is called on
   * it or on this client, when a `for await` loop over it is left (break/return/throw), or after
   * an `overflow` event (the daemon then disconnects; re-read rooms and watch again). If the
   * daemon closes the connection otherwise (it stopped or restarted), the iterator throws a
   * `StorageError` `"connection"`: changes may have been missed, so re-read and watch again.
   */
  async watch(roomNames?: string[]): Promise<RoomWatch> {
    if (this.#closed) throw failure("closed", "the client is closed");
    const id = this.#nextId++;
    const line = encoder.encode(encodeRequest({ id, op: "watch", roomNames }) + "\n");
    let conn: Deno.UnixConn | undefined;
    let timedOut = false;
    const setUp = async (): Promise<RoomWatch> => {
      conn = await openSocket(this.socketPath);
      if (timedOut) {
        conn.close();
        throw failure("timeout", "watch: timed out while connecting");
      }
      const reader = new LineReader(conn);
      try {
        await writeAll(conn, line);
        const ackLine = await reader.readLine();
        if (ackLine === null) {
          throw failure("connection", "the storage daemon closed the watch connection");
        }
        let ack: unknown;
        try {
          ack = JSON.parse(ackLine);
        } catch (e) {
          throw failure("protocol", "the storage daemon sent invalid JSON", e);
        }
        if (!isObject(ack)) {
          throw failure("protocol", "the storage daemon sent a line that is not a JSON object");
        }
        if (ack.ok !== true) throw errorFromReply(ack);
      } catch (e) {
        throw e instanceof StorageError
          ? e
          : failure("connection", `watch failed: ${describe(e)}`, e);
      }
      return new RoomWatch(conn, reader, (w) => this.#watches.delete(w));
    };
    let watch: RoomWatch;
    try {
      watch = await withTimeout(setUp(), this.timeoutMs, "watch", () => {
        timedOut = true;
        try {
          conn?.close();
        } catch {
          // closed already
        }
      });
    } catch (e) {
      try {
        conn?.close();
      } catch {
        // closed already
      }
      throw e;
    }
    if (this.#closed) {
      await watch.close();
      throw failure("closed", "the client is closed");
    }
    this.#watches.add(watch);
    return watch;
  }

  /**
   * Closes the request connection and every watch. Requests in flight fail with `"closed"`, and
   * so does every later call (`"connection"` would mean "the daemon went away: retry").
   */
  async close(): Promise<void> {
    this.#closed = true;
    const connecting = this.#connecting;
    if (connecting) await connecting.catch(() => {});
    await Promise.all([
      ...[...this.#connections].map((c) => c.close("the client was closed", "closed")),
      ...[...this.#watches].map((w) => w.close()),
    ]);
    this.#conn = null;
  }

  // ----- plumbing -----

  /** `reply[key]` when `valid` accepts it; else the daemon sent something that is no answer to
   * this request: the connection is dropped (its stream can no longer be trusted) and the call
   * fails with `protocol`. */
  #answer<K extends string>(reply: Reply, key: K, valid: (value: unknown) => boolean) {
    const value = reply[key];
    if (valid(value)) return value;
    const reason = `the storage daemon sent an invalid answer (${key}: ${shown(value)})`;
    this.#conn?.close(reason, "protocol");
    throw failure("protocol", reason, JSON.stringify(reply).slice(0, 300));
  }

  async #connection(): Promise<RequestConnection> {
    if (this.#closed) throw failure("closed", "the client is closed");
    if (this.#conn && !this.#conn.dead) return this.#conn;
    if (!this.#connecting) {
      this.#connecting = (async () => {
        try {
          const conn = new RequestConnection(await openSocket(this.socketPath));
          this.#connections.add(conn);
          conn.done.then(() => this.#connections.delete(conn));
          this.#conn = conn;
          return conn;
        } finally {
          this.#connecting = null;
        }
      })();
    }
    return await this.#connecting;
  }

  async #call(request: Record<string, unknown>, retryable: boolean): Promise<Reply> {
    const what = String(request.op);
    const deadline = Date.now() + this.timeoutMs;
    // Encoded once, before connecting: a request that cannot be encoded sends nothing.
    // `request` always has `op`, so the text is `{"op":...}` and the id goes in front.
    const body = encodeRequest(request).slice(1);
    const attempt = async (): Promise<Reply> => {
      const remaining = Math.max(1, deadline - Date.now());
      const conn = await withTimeout(this.#connection(), remaining, what);
      const id = this.#nextId++;
      const line = encoder.encode(`{"id":${id},${body}\n`);
      return await conn.request(id, line, Math.max(1, deadline - Date.now()), what);
    };
    try {
      return await attempt();
    } catch (e) {
      if (
        retryable && e instanceof StorageError && e.code === "connection" &&
        !this.#closed && Date.now() < deadline
      ) {
        return await attempt();
      }
      throw e;
    }
  }
}

/**
 * The events of one `watch` connection: an async iterator, and closable.
 *
 * ```ts
 * const watch = await storage.watch(["movie-night"]);
 * for await (const event of watch) {
 *   if (event.event === "rated") console.log(event.userName, event.rating, event.mediaId);
 * }
 * ```
 */
export class RoomWatch implements AsyncIterableIterator<WatchEvent> {
  #conn: Deno.UnixConn;
  #reader: LineReader;
  #onClose: (watch: RoomWatch) => void;
  #closed = false;
  #finished = false;
  #reading: Promise<IteratorResult<WatchEvent, undefined>> | null = null;

  /** @internal Use `SocketStorage.watch`. */
  constructor(conn: Deno.UnixConn, reader: LineReader, onClose: (watch: RoomWatch) => void) {
    this.#conn = conn;
    this.#reader = reader;
    this.#onClose = onClose;
  }

  [Symbol.asyncIterator](): RoomWatch {
    return this;
  }

  /** The next event; `done` once the watch ended. */
  next(): Promise<IteratorResult<WatchEvent, undefined>> {
    // One read at a time: calls made while one is pending wait for it.
    const previous = this.#reading ?? Promise.resolve(undefined);
    const current = previous.catch(() => {}).then(() => this.#readEvent());
    this.#reading = current;
    return current;
  }

  /** Ends the watch (called by `for await` when the loop is left). */
  async return(): Promise<IteratorResult<WatchEvent, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /** Closes the watch connection; a pending `next()` resolves as `done`. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#finish();
    }
    await this.#reading?.catch(() => {});
  }

  async #readEvent(): Promise<IteratorResult<WatchEvent, undefined>> {
    if (this.#finished) return { done: true, value: undefined };
    let line: string | null;
    try {
      line = await this.#reader.readLine();
    } catch (e) {
      if (this.#closed) return { done: true, value: undefined };
      this.#finish();
      if (e instanceof StorageError) throw e; // invalid UTF-8: protocol
      throw failure("connection", `the watch connection failed: ${describe(e)}`, e);
    }
    if (this.#closed) return { done: true, value: undefined };
    if (line === null) {
      this.#finish();
      throw failure(
        "connection",
        "the storage daemon closed the watch connection; changes may have been missed",
      );
    }
    let event: WatchEvent;
    try {
      event = JSON.parse(line);
    } catch (e) {
      this.#finish();
      throw failure("protocol", "the storage daemon sent an invalid event", e);
    }
    if (!isObject(event) || typeof event.event !== "string") {
      this.#finish();
      throw failure("protocol", `the storage daemon sent an invalid event: ${line.slice(0, 200)}`);
    }
    if (event.event === "overflow") this.#finish();
    return { done: false, value: event };
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    try {
      this.#conn.close();
    } catch {
      // closed already
    }
    this.#onClose(this);
  }
}
