// MovieMatch switches to the daemon by one line: `SocketStorage` against MovieMatch's own types
// and behaviour (repository 8bitgentleman/moviematch, `internal/app/moviematch/storage/` and
// `types/moviematch.ts`).
//
// MovieMatch's declarations are written out below from those public facts (not copied): the
// `Mm*` names are MovieMatch's types. `deno check` of this file is the proof that
// `SocketStorage` is assignable to MovieMatch's `Storage` with no cast; the `@ts-expect-error`
// lines prove the types are not loose. The tests then run MovieMatch's contract against the real
// daemon on `memory` and `file`.
//
//   deno test --allow-all moviematch_test.ts

import { type SerializedRoom, SocketStorage, StorageError } from "./mod.ts";
import {
  assert,
  assertEquals,
  DAEMON,
  type Daemon,
  FakeServer,
  rejects,
  send,
  withDaemon,
} from "./test_util.ts";

// ----- MovieMatch's types, as MovieMatch declares them -----

type MmRoomOption = "EndOnFirstMatch";
type MmRoomSort = "random" | "rating";
type MmRoomType = "standard" | "unanimous" | "solo" | "async";
type MmSortOrder = "newest" | "oldest" | "random";
type MmGenreFilterMode = "and" | "or";
interface MmFilter {
  key: string;
  operator: string;
  value: string[];
}
interface MmRatingFilter {
  min?: number;
  max?: number;
  type?: "critic" | "audience";
}
interface MmContentRatingFilter {
  ratings: string[];
}

interface MmSerializedRoom {
  roomName: string;
  password?: string;
  options?: MmRoomOption[];
  filters?: MmFilter[];
  sort: MmRoomSort;
  roomType?: MmRoomType;
  sortOrder?: MmSortOrder;
  genreFilterMode?: MmGenreFilterMode;
  ratingFilter?: MmRatingFilter;
  contentRatingFilter?: MmContentRatingFilter;
  createdAt: string;
  creatorPlexUserId: string;
  creatorPlexUsername: string;
  ratings?: Record<
    string,
    Array<[userName: string, rating: "like" | "dislike", timestamp: number]>
  >;
  userProgress?: Record<string, number>;
}

interface MmStorage {
  saveRoom(room: MmSerializedRoom): Promise<void>;
  getRoom(roomName: string): Promise<MmSerializedRoom | null>;
  deleteRoom(roomName: string): Promise<void>;
  listRooms(): Promise<MmSerializedRoom[]>;
  hasRoom(roomName: string): Promise<boolean>;
}

class MmStorageError extends Error {
  override name = "StorageError";
  constructor(message: string, public override cause?: Error) {
    super(message);
  }
}

/** MovieMatch's room before its phase 2 fields (`roomType`, `sortOrder`, ...). */
type MmPhase1SerializedRoom = Omit<
  MmSerializedRoom,
  "roomType" | "sortOrder" | "genreFilterMode" | "ratingFilter" | "contentRatingFilter"
>;

/** MovieMatch's room with an optional field a later version may add. */
interface MmLaterSerializedRoom extends MmSerializedRoom {
  watchParty?: { host: string; startsAt: string };
}

/** MovieMatch's `Storage` over another room type. */
interface MmStorageOf<Room> {
  saveRoom(room: Room): Promise<void>;
  getRoom(roomName: string): Promise<Room | null>;
  deleteRoom(roomName: string): Promise<void>;
  listRooms(): Promise<Room[]>;
  hasRoom(roomName: string): Promise<boolean>;
}

// ----- assignability, checked by `deno check` -----

/** Earlier and later MovieMatch rooms assign too. */
function _otherVersionsAssign(storage: SocketStorage) {
  const phase1: MmStorageOf<MmPhase1SerializedRoom> = storage;
  const later: MmStorageOf<MmLaterSerializedRoom> = storage;
  return [phase1, later];
}

/** `SocketStorage` as MovieMatch's `createStorage` returns it for `type: "socket"`: no cast. */
function asMovieMatchStorage(storage: SocketStorage): MmStorage {
  return storage;
}

/** Rooms go both ways with no cast, and so do errors; the extras stay on `SocketStorage`. */
async function _roomsAndErrorsAssign(storage: SocketStorage, room: MmSerializedRoom) {
  await storage.saveRoom(room);
  const got: MmSerializedRoom | null = await storage.getRoom(room.roomName);
  const all: MmSerializedRoom[] = await storage.listRooms();
  const withRevision: MmSerializedRoom | undefined = (await storage.getRoomWithRevision("r"))
    ?.room;
  const page: MmSerializedRoom[] = (await storage.listRoomsPage({ limit: 5 })).rooms;
  const ours: SerializedRoom = room;
  const error: MmStorageError = new StorageError("message", new Error("cause"));
  const plain: MmStorageError = new StorageError("message");
  await storage.addRating(room.roomName, "m", "u", "like");
  return [got, all, withRevision, page, ours, error, plain];
}

function _typesAreNotLoose(room: MmSerializedRoom): void {
  // @ts-expect-error MovieMatch types creatorPlexUserId as a string
  const numericId: SerializedRoom = { ...room, creatorPlexUserId: 5 };
  // @ts-expect-error a room type MovieMatch does not know
  const unknownType: SerializedRoom = { ...room, roomType: "battle" };
  // @ts-expect-error MovieMatch's cause is an Error, not a text
  const textCause = new StorageError("message", "a text");
  void [numericId, unknownType, textCause];
}

// ----- helpers -----

const BACKENDS = ["memory", "file"] as const;

/** A room as MovieMatch's `Room.toSerializedRoom()` makes one, every field set. */
function movieMatchRoom(name: string): MmSerializedRoom {
  return {
    roomName: name,
    password: "popcorn",
    options: ["EndOnFirstMatch"],
    filters: [{ key: "genre", operator: "=", value: ["Action", "Comedy"] }],
    sort: "random",
    roomType: "unanimous",
    sortOrder: "newest",
    genreFilterMode: "or",
    ratingFilter: { min: 6, type: "audience" },
    contentRatingFilter: { ratings: ["PG", "PG-13"] },
    createdAt: "2025-10-25T20:00:00.000Z",
    creatorPlexUserId: "12345",
    creatorPlexUsername: "john_doe",
    ratings: { "plex://movie/1": [["john_doe", "like", 1729890000000]] },
    userProgress: { john_doe: 1 },
  };
}

/** Names MovieMatch takes from its users and that no daemon room can have (section 4). */
const UNSTORABLE_NAMES = ["", "a\nb", "tab\there", "\u0000", "x\u007f", "n".repeat(256)];

async function withMovieMatchStorage(
  backend: typeof BACKENDS[number],
  fn: (storage: MmStorage, extras: SocketStorage, daemon: Daemon) => Promise<void>,
): Promise<void> {
  await withDaemon(async (daemon) => {
    const extras = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      await fn(asMovieMatchStorage(extras), extras, daemon);
    } finally {
      await extras.close();
    }
  }, { storageType: backend });
}

function assertStorageError(e: unknown, code: string): StorageError {
  assert(e instanceof StorageError, `expected a StorageError, got ${e}`);
  assert(e instanceof Error, "a StorageError is an Error");
  assertEquals(e.name, "StorageError");
  // Every own property MovieMatch's error has (`name`, `cause`), ours has.
  for (const key of Object.keys(new MmStorageError("m", new Error("c")))) {
    assert(Object.hasOwn(e, key), `a StorageError has its own ${key}`);
  }
  assertEquals(e.code, code, `error code (message: ${e.message})`);
  assert(e.cause === undefined || e.cause instanceof Error, `cause is an Error: ${e.cause}`);
  return e;
}

/** Runs `source` as a Deno script (it gets mod.ts's URL and `args`); kills it after `ms`. */
async function runScript(
  source: string,
  args: string[],
  ms: number,
  onLine?: (line: string) => Promise<void>,
): Promise<{ code: number | null; stdout: string[]; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "mm-script-" });
  const path = `${dir}/script.ts`;
  const modUrl = new URL("./mod.ts", import.meta.url).href;
  await Deno.writeTextFile(path, source.replaceAll("MOD_URL", modUrl));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-check", path, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, ms);
  const stderr = new Response(child.stderr).text();
  const stdout: string[] = [];
  const lines = child.stdout.pipeThrough(new TextDecoderStream());
  let partial = "";
  for await (const chunk of lines) {
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf("\n")) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      stdout.push(line);
      await onLine?.(line);
    }
  }
  const status = await child.status;
  clearTimeout(timer);
  await Deno.remove(dir, { recursive: true });
  return { code: killed ? null : status.code, stdout, stderr: await stderr };
}

// ----- MovieMatch's contract, on memory and file -----

for (const backend of BACKENDS) {
  Deno.test(`MovieMatch Storage on ${backend}: every method, as example.ts uses them`, async () => {
    await withMovieMatchStorage(backend, async (storage) => {
      const room = movieMatchRoom("friday-movie-night");
      assertEquals(await storage.getRoom("non-existent"), null);
      assertEquals(await storage.hasRoom("non-existent"), false);
      assertEquals(await storage.deleteRoom("non-existent"), undefined);
      assertEquals(await storage.saveRoom(room), undefined);
      assertEquals(await storage.getRoom(room.roomName), room);
      assertEquals(await storage.hasRoom(room.roomName), true);
      // MovieMatch's room names with dots and spaces are rooms of their own.
      const { password: _, ...other } = movieMatchRoom("film.club");
      await storage.saveRoom(other);
      assertEquals(await storage.listRooms(), [other, room]);
      // Saving again replaces the whole room.
      const updated = { ...room, ratings: {}, userProgress: { jane: 2 } };
      await storage.saveRoom(updated);
      assertEquals(await storage.getRoom(room.roomName), updated);
      await storage.deleteRoom(room.roomName);
      assertEquals(await storage.hasRoom(room.roomName), false);
      assertEquals(await storage.getRoom(room.roomName), null);
      await storage.deleteRoom(room.roomName); // idempotent
      assertEquals((await storage.listRooms()).map((r) => r.roomName), ["film.club"]);
    });
  });

  Deno.test(`MovieMatch Storage on ${backend}: names no room can have are missing rooms`, async () => {
    await withMovieMatchStorage(backend, async (storage, extras) => {
      await storage.saveRoom(movieMatchRoom("r"));
      for (const name of [...UNSTORABLE_NAMES, "r\u0000"]) {
        const shown = JSON.stringify(name).slice(0, 20);
        assertEquals(await storage.getRoom(name), null, `getRoom(${shown})`);
        assertEquals(await storage.hasRoom(name), false, `hasRoom(${shown})`);
        assertEquals(await storage.deleteRoom(name), undefined, `deleteRoom(${shown})`);
        assertEquals(await extras.getRoomWithRevision(name), null);
        assertEquals(await extras.deleteRoomWithResult(name), false);
        for (
          const call of [
            extras.verifyPassword(name, "popcorn"),
            extras.addRating(name, "m", "u", "like"),
            extras.setProgress(name, "u", 1),
          ]
        ) {
          assertStorageError(await rejects(call), "not_found");
        }
        // Only saving checks the name: MovieMatch would never find such a room again anyway.
        const e = assertStorageError(
          await rejects(storage.saveRoom(movieMatchRoom(name))),
          "invalid_room",
        );
        assert(e.message.includes("roomName"), e.message);
      }
      assertEquals((await storage.listRooms()).map((r) => r.roomName), ["r"]);
      assertEquals(await storage.getRoom("r"), movieMatchRoom("r"));
    });
  });

  Deno.test(`MovieMatch Storage on ${backend}: unawaited saves of one room, one per swipe`, async () => {
    await withMovieMatchStorage(backend, async (storage, extras, daemon) => {
      // As room.ts does: every swipe changes the room in memory and starts a save of the
      // whole room, which nobody awaits before the next swipe.
      const room = movieMatchRoom("swipes");
      room.ratings = {};
      room.userProgress = {};
      await storage.saveRoom(room);
      const saves: Promise<void>[] = [];
      for (let swipe = 0; swipe < 60; swipe++) {
        const user = swipe % 2 === 0 ? "ann" : "bob";
        room.ratings[`plex://movie/${swipe >> 1}`] ??= [];
        room.ratings[`plex://movie/${swipe >> 1}`].push([user, "like", 1_700_000_000_000 + swipe]);
        room.userProgress[user] = (room.userProgress[user] ?? 0) + 1;
        saves.push(storage.saveRoom(structuredClone(room)));
      }
      await Promise.all(saves);
      // The last swipe's room is the one kept: saves are applied in the order they were made.
      assertEquals(await storage.getRoom("swipes"), room);
      assertEquals((await extras.getRoomWithRevision("swipes"))?.revision, 61);
      if (backend === "file") {
        await daemon.stop();
        await withDaemon(async (again) => {
          const reread = new SocketStorage({ socketPath: again.socketPath });
          try {
            assertEquals(await reread.getRoom("swipes"), room);
          } finally {
            await reread.close();
          }
        }, { storageType: "file", dir: daemon.dir });
      }
    });
  });

  Deno.test(`MovieMatch Storage on ${backend}: every failure is a StorageError with an Error cause`, async () => {
    await withMovieMatchStorage(backend, async (storage) => {
      const invalid = {
        ...movieMatchRoom("r"),
        sort: "alphabetical",
      } as unknown as MmSerializedRoom;
      const e = assertStorageError(await rejects(storage.saveRoom(invalid)), "invalid_room");
      assert(e.message.includes("sort"), e.message);

      const withBigInt = { ...movieMatchRoom("big"), userProgress: { ann: 1n } };
      const bigError = assertStorageError(
        await rejects(storage.saveRoom(withBigInt as unknown as MmSerializedRoom)),
        "invalid_argument",
      );
      assert(bigError.cause instanceof TypeError, `cause: ${bigError.cause}`);
      assert(bigError.message.includes("saveRoom"), bigError.message);
      const cyclic: Record<string, unknown> = { ...movieMatchRoom("cyclic") };
      cyclic.self = cyclic;
      const cycleError = assertStorageError(
        await rejects(storage.saveRoom(cyclic as unknown as MmSerializedRoom)),
        "invalid_argument",
      );
      assert(cycleError.cause instanceof TypeError, `cause: ${cycleError.cause}`);
      // Nothing was sent, and the connection goes on.
      assertEquals(await storage.hasRoom("big"), false);
      assertEquals(await storage.hasRoom("cyclic"), false);
    });
  });
}

Deno.test("a daemon's cause text and a socket error become Error causes", async () => {
  const server = await FakeServer.start(async (_n, lines, conn) => {
    for await (const line of lines) {
      const { id } = JSON.parse(line);
      await send(conn, {
        id,
        ok: false,
        error: { code: "storage", message: "the change was not stored", cause: "disk full" },
      });
    }
  });
  const storage: MmStorage = new SocketStorage({ socketPath: server.path });
  try {
    const e = assertStorageError(await rejects(storage.saveRoom(movieMatchRoom("r"))), "storage");
    assert(e.cause instanceof Error && e.cause.message === "disk full", `cause: ${e.cause}`);
  } finally {
    await (storage as SocketStorage).close();
    await server.close();
  }
  const nowhere = new SocketStorage({ socketPath: `${server.dir}/gone.sock` });
  const e = assertStorageError(await rejects(nowhere.getRoom("r")), "connection");
  assert(e.cause instanceof Deno.errors.NotFound, `cause: ${e.cause}`);
  assert(e.message.includes("gone.sock"), e.message);
  const options = await rejects(Promise.resolve().then(() => new SocketStorage({ timeoutMs: 0 })));
  assertStorageError(options, "invalid_argument");
});

// ----- the process: idle clients do not keep it alive, pending work does -----

Deno.test("a script that never calls close() exits; a request it did not await is answered first", async () => {
  await withDaemon(async (daemon) => {
    const { code, stdout, stderr } = await runScript(
      `import { SocketStorage } from "MOD_URL";
const storage = new SocketStorage({ socketPath: Deno.args[0] });
await storage.saveRoom({ roomName: "r", sort: "random", createdAt: new Date().toISOString(),
  creatorPlexUserId: "1", creatorPlexUsername: "u" });
console.log(JSON.stringify([await storage.hasRoom("r"), (await storage.listRooms()).length]));
// Not awaited: the process must still wait for its answer.
storage.getRoom("r").then((room) => console.log("answered " + room?.roomName));
console.log("last line");
`,
      [daemon.socketPath],
      15_000,
    );
    assertEquals(code, 0, `exit code (null: still running after 15 s); stderr: ${stderr}`);
    assertEquals(stdout, ["[true,1]", "last line", "answered r"]);
  });
});

Deno.test("a script waiting on a watch stays alive until the event arrives", async () => {
  await withDaemon(async (daemon) => {
    const writer = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      const { code, stdout, stderr } = await runScript(
        `import { SocketStorage } from "MOD_URL";
const storage = new SocketStorage({ socketPath: Deno.args[0] });
await storage.ping();
const watch = await storage.watch(["r"]);
console.log("watching");
for await (const event of watch) {
  console.log(JSON.stringify(event));
  break;
}
`,
        [daemon.socketPath],
        15_000,
        async (line) => {
          if (line !== "watching") return;
          // The script has nothing else pending now; give it time to exit if it wrongly would.
          await new Promise((resolve) => setTimeout(resolve, 300));
          await writer.saveRoom(movieMatchRoom("r"));
        },
      );
      assertEquals(code, 0, `exit code (null: still running after 15 s); stderr: ${stderr}`);
      assertEquals(stdout.length, 2, stdout.join("\n"));
      assertEquals(JSON.parse(stdout[1]), { event: "saved", roomName: "r", revision: 1 });
    } finally {
      await writer.close();
    }
  });
});

// The daemon binary must exist for the tests above; say so plainly when it does not.
Deno.test("the daemon under test exists", async () => {
  const info = await Deno.stat(DAEMON);
  assert(info.isFile, `${DAEMON} is not a file`);
});
