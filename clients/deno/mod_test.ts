// Tests of mod.ts against the real daemon (env MOVIEMATCH_STORAGED, default
// ../../target/debug/moviematch-storaged) and, for failure cases, against fake servers.
//
//   deno test --allow-all

import {
  type RoomSummary,
  type SerializedRoom,
  SocketStorage,
  StorageError,
  type WatchEvent,
} from "./mod.ts";
import {
  assert,
  assertEquals,
  Daemon,
  FakeServer,
  RedisServer,
  rejects,
  room,
  send,
  sleep,
  withDaemon,
} from "./test_util.ts";

function assertStorageError(e: unknown, code: string): StorageError {
  assert(e instanceof StorageError, `expected a StorageError, got ${e}`);
  assert(e instanceof Error);
  assertEquals(e.code, code, `error code (message: ${e.message})`);
  assertEquals(e.name, "StorageError");
  return e;
}

async function withClient(
  fn: (storage: SocketStorage, daemon: Daemon) => Promise<void>,
  storageType: "memory" | "file" = "memory",
): Promise<void> {
  await withDaemon(async (daemon) => {
    const storage = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      await fn(storage, daemon);
    } finally {
      await storage.close();
    }
  }, { storageType });
}

/** Waits until the daemon counts `n` connections (closed ones are counted down asynchronously). */
async function waitForConnections(storage: SocketStorage, n: number): Promise<void> {
  let connections = -1;
  for (let i = 0; i < 250; i++) {
    connections = (await storage.stats()).connections;
    if (connections === n) return;
    await sleep(20);
  }
  throw new Error(`the daemon counts ${connections} connections, expected ${n}`);
}

// ----- the original Storage interface -----

Deno.test("original interface: save, get, has, list, delete", async () => {
  await withClient(async (storage) => {
    assertEquals(await storage.listRooms(), []);
    assertEquals(await storage.getRoom("movie-night"), null);
    assertEquals(await storage.hasRoom("movie-night"), false);

    const full: SerializedRoom = room("movie-night", {
      password: "secret",
      options: ["EndOnFirstMatch"],
      filters: [{ key: "genre", operator: "=", value: ["Action", "Comedy"] }],
      ratings: { "movie-123": [["john_doe", "like", 1729890000000]] },
      userProgress: { john_doe: 5 },
      roomType: "solo",
      theme: "custom", // unknown fields are kept
    });
    await storage.saveRoom(full);
    await storage.saveRoom(room("a/../b c 🎬"));
    assertEquals(await storage.getRoom("movie-night"), full);
    assertEquals(await storage.hasRoom("movie-night"), true);
    assertEquals(await storage.hasRoom("Movie-Night"), false);

    const all = await storage.listRooms();
    assertEquals(all.map((r) => r.roomName), ["a/../b c 🎬", "movie-night"]);
    assertEquals(all[1], full);

    await storage.deleteRoom("movie-night");
    await storage.deleteRoom("movie-night"); // idempotent
    assertEquals(await storage.getRoom("movie-night"), null);
    assertEquals((await storage.listRooms()).length, 1);
  });
});

Deno.test("listRooms follows next through every page", async () => {
  await withDaemon(async (daemon) => {
    const storage = new SocketStorage({ socketPath: daemon.socketPath, listPageSize: 7 });
    try {
      const names = Array.from({ length: 50 }, (_, i) => `room-${String(i).padStart(3, "0")}`);
      await Promise.all(names.map((n) => storage.saveRoom(room(n))));
      const all = await storage.listRooms();
      assertEquals(all.map((r) => r.roomName), names);
      // the default page size (100) with more than one page
      const more = Array.from({ length: 160 }, (_, i) => `x-${String(i).padStart(3, "0")}`);
      await Promise.all(more.map((n) => storage.saveRoom(room(n))));
      const defaultClient = new SocketStorage({ socketPath: daemon.socketPath });
      try {
        assertEquals((await defaultClient.listRooms()).length, 210);
      } finally {
        await defaultClient.close();
      }
    } finally {
      await storage.close();
    }
  });
});

Deno.test("SocketStorage reads STORAGE_SOCKET when no socketPath is given", async () => {
  await withDaemon(async (daemon) => {
    const before = Deno.env.get("STORAGE_SOCKET");
    Deno.env.set("STORAGE_SOCKET", daemon.socketPath);
    try {
      const storage = new SocketStorage();
      assertEquals(storage.socketPath, daemon.socketPath);
      try {
        assertEquals(await storage.ping(), 1);
      } finally {
        await storage.close();
      }
    } finally {
      if (before === undefined) Deno.env.delete("STORAGE_SOCKET");
      else Deno.env.set("STORAGE_SOCKET", before);
    }
    Deno.env.delete("STORAGE_SOCKET");
    try {
      assertEquals(new SocketStorage().socketPath, "./data/storaged.sock");
    } finally {
      if (before !== undefined) Deno.env.set("STORAGE_SOCKET", before);
    }
  });
});

// ----- revisions -----

Deno.test("revisions: saveRoomWithRevision, getRoomWithRevision, expectedRevision, conflicts", async () => {
  await withClient(async (storage) => {
    assertEquals(await storage.saveRoomWithRevision(room("r"), { expectedRevision: 0 }), 1);
    assertEquals(await storage.saveRoomWithRevision(room("r", { sort: "rating" })), 2);
    assertEquals(await storage.getRoomWithRevision("r"), {
      room: room("r", { sort: "rating" }),
      revision: 2,
    });
    assertEquals(await storage.getRoomWithRevision("nope"), null);

    let e = assertStorageError(
      await rejects(storage.saveRoomWithRevision(room("r"), { expectedRevision: 0 })),
      "conflict",
    );
    assertEquals(e.revision, 2);
    e = assertStorageError(
      await rejects(storage.saveRoomWithRevision(room("new"), { expectedRevision: 3 })),
      "conflict",
    );
    assertEquals(e.revision, 0);
    assertEquals(await storage.saveRoomWithRevision(room("r"), { expectedRevision: 2 }), 3);

    e = assertStorageError(
      await rejects(storage.deleteRoom("r", { expectedRevision: 1 })),
      "conflict",
    );
    assertEquals(e.revision, 3);
    assert(await storage.hasRoom("r"));
    assertEquals(await storage.deleteRoomWithResult("r", { expectedRevision: 3 }), true);
    assertEquals(await storage.deleteRoomWithResult("r"), false);
    await storage.deleteRoom("r", { expectedRevision: 0 }); // "must not exist": it does not
  });
});

// ----- atomic updates -----

Deno.test("addRating and setProgress", async () => {
  await withClient(async (storage) => {
    await storage.saveRoom(room("r"));
    assertEquals(
      await storage.addRating("r", "plex://movie/1", "john", "like", 1729890000000),
      { revision: 2, added: true },
    );
    assertEquals(
      await storage.addRating("r", "plex://movie/1", "john", "dislike", 1729890000001),
      { revision: 2, added: false },
    );
    const before = Date.now();
    const second = await storage.addRating("r", "plex://movie/1", "jane", "dislike");
    assertEquals(second, { revision: 3, added: true });
    assertEquals(
      await storage.addRating("r", "plex://movie/2", "jane", "like", new Date(5)),
      { revision: 4, added: true },
    );
    assertEquals(await storage.setProgress("r", "john", 7), 5);
    assertEquals(await storage.setProgress("r", "john", 8), 6);

    const got = await storage.getRoomWithRevision("r");
    assert(got);
    assertEquals(got.revision, 6);
    const ratings = got.room.ratings!;
    assertEquals(ratings["plex://movie/1"][0], ["john", "like", 1729890000000]);
    assertEquals(ratings["plex://movie/1"][1].slice(0, 2), ["jane", "dislike"]);
    assert(ratings["plex://movie/1"][1][2] >= before - 5000, "the daemon's clock is used");
    assertEquals(ratings["plex://movie/2"], [["jane", "like", 5]]);
    assertEquals(got.room.userProgress, { john: 8 });

    assertStorageError(await rejects(storage.addRating("none", "m", "u", "like")), "not_found");
    assertStorageError(await rejects(storage.setProgress("none", "u", 1)), "not_found");
  });
});

Deno.test("verifyPassword", async () => {
  await withClient(async (storage) => {
    await storage.saveRoom(room("locked", { password: "secret" }));
    await storage.saveRoom(room("open"));
    await storage.saveRoom(room("empty", { password: "" }));
    assertEquals(await storage.verifyPassword("locked", "secret"), true);
    assertEquals(await storage.verifyPassword("locked", "Secret"), false);
    assertEquals(await storage.verifyPassword("locked", ""), false);
    assertEquals(await storage.verifyPassword("open", "anything"), true);
    assertEquals(await storage.verifyPassword("empty", "anything"), true);
    assertStorageError(await rejects(storage.verifyPassword("none", "x")), "not_found");
  });
});

Deno.test("deleteRooms deletes rooms created before an instant", async () => {
  await withClient(async (storage) => {
    await storage.saveRoom(room("old", { createdAt: "2020-01-01T00:00:00.000Z" }));
    await storage.saveRoom(room("older", { createdAt: "2019-01-01T00:00:00Z" }));
    await storage.saveRoom(room("new", { createdAt: "2030-01-01T00:00:00.000Z" }));
    assertEquals(await storage.deleteRooms(new Date("2025-01-01T00:00:00Z")), 2);
    assertEquals(await storage.deleteRooms("2025-01-01T00:00:00.000Z"), 0);
    assertEquals((await storage.listRooms()).map((r) => r.roomName), ["new"]);
    assertStorageError(await rejects(storage.deleteRooms("yesterday")), "bad_request");
  });
});

// ----- listing -----

Deno.test("listRoomsPage: every filter, paging and summaries", async () => {
  await withClient(async (storage) => {
    await storage.saveRoom(room("a", {
      // Plex's numeric id, as plain JavaScript may send it: the daemon keeps it as sent, and the
      // client gives it back as MovieMatch types it, a string.
      creatorPlexUserId: 13692262 as unknown as string,
      creatorPlexUsername: "ann",
      createdAt: "2025-01-01T00:00:00.000Z",
      password: "pw",
      ratings: { m1: [["ann", "like", 1], ["bob", "dislike", 2]], m2: [["ann", "like", 3]] },
    }));
    await storage.saveRoom(room("b", {
      creatorPlexUserId: "13692262",
      creatorPlexUsername: "ann",
      createdAt: "2025-02-01T00:00:00.000Z",
    }));
    await storage.saveRoom(room("c", {
      creatorPlexUserId: "1",
      creatorPlexUsername: "bob",
      createdAt: "2025-03-01T02:00:00+02:00",
    }));
    await storage.addRating("c", "m", "bob", "like", 9);

    const names = (p: { rooms: { roomName: string }[] }) => p.rooms.map((r) => r.roomName);
    assertEquals(names(await storage.listRoomsPage()), ["a", "b", "c"]);
    assertEquals((await storage.getRoom("a"))?.creatorPlexUserId, "13692262");
    assertEquals((await storage.listRooms())[0].creatorPlexUserId, "13692262");
    assertEquals(names(await storage.listRoomsPage({ creatorPlexUserId: "13692262" })), ["a", "b"]);
    assertEquals(names(await storage.listRoomsPage({ creatorPlexUserId: 13692262 })), ["a", "b"]);
    assertEquals(names(await storage.listRoomsPage({ creatorPlexUsername: "bob" })), ["c"]);
    assertEquals(
      names(await storage.listRoomsPage({ createdBefore: new Date("2025-02-01T00:00:00Z") })),
      ["a"],
    );
    assertEquals(
      names(await storage.listRoomsPage({ createdAfter: "2025-02-01T00:00:00.000Z" })),
      ["c"],
    );
    assertEquals(
      names(
        await storage.listRoomsPage({
          createdAfter: "2024-12-31T00:00:00Z",
          createdBefore: "2025-03-01T00:00:00Z",
          creatorPlexUsername: "ann",
        }),
      ),
      ["a", "b"],
    );
    assertEquals(names(await storage.listRoomsPage({ after: "a" })), ["b", "c"]);

    const first = await storage.listRoomsPage({ limit: 2 });
    assertEquals(names(first), ["a", "b"]);
    assertEquals(first.next, "b");
    const second = await storage.listRoomsPage({ limit: 2, after: first.next! });
    assertEquals(names(second), ["c"]);
    assertEquals(second.next, null);
    assertEquals((await storage.listRoomsPage({ limit: 3 })).next, null);

    const page = await storage.listRoomsPage({ summary: true });
    const summaries: RoomSummary[] = page.rooms;
    assertEquals(summaries[0], {
      roomName: "a",
      sort: "random",
      createdAt: "2025-01-01T00:00:00.000Z",
      creatorPlexUserId: "13692262",
      creatorPlexUsername: "ann",
      hasPassword: true,
      ratingCount: 3,
      revision: 1,
    });
    assertEquals(summaries[1].hasPassword, false);
    assertEquals(summaries[2].ratingCount, 1);
    assertEquals(summaries[2].revision, 2);
    assert(!("password" in summaries[0]) && !("ratings" in summaries[0]));

    assertStorageError(await rejects(storage.listRoomsPage({ limit: 0 })), "bad_request");
    assertStorageError(
      await rejects(storage.listRoomsPage({ createdBefore: "not a date" })),
      "bad_request",
    );
  });
});

// ----- daemon operations -----

Deno.test("ping, stats, flush", async () => {
  await withClient(async (storage, daemon) => {
    assertEquals(await storage.ping(), 1);
    await storage.saveRoom(room("r"));
    const stats = await storage.stats();
    assertEquals(stats.backend, "file");
    assertEquals(stats.rooms, 1);
    assertEquals(typeof stats.version, "string");
    assertEquals(typeof stats.uptimeSeconds, "number");
    assert(stats.connections >= 1);
    assert(!("ok" in stats) && !("id" in stats));
    await storage.flush();
    assertEquals(stats.durability, "strict");
    assertEquals(stats.storagePath, daemon.storagePath);
  }, "file");
});

// ----- errors -----

Deno.test("daemon errors surface as StorageError with the daemon's code", async () => {
  await withClient(async (storage) => {
    // invalid_room: a field fails section 4
    const bad = { ...room("r"), sort: "alphabetical" } as unknown as SerializedRoom;
    let e = assertStorageError(await rejects(storage.saveRoom(bad)), "invalid_room");
    assert(e.message.includes("sort"), e.message);
    const badRating = room("r", {
      ratings: { "plex://movie/1": [["u", "meh" as "like", 1]] },
    });
    e = assertStorageError(await rejects(storage.saveRoom(badRating)), "invalid_room");
    assert(e.message.includes('ratings["plex://movie/1"][0][1]'), e.message);
    const missing = { roomName: "r" } as unknown as SerializedRoom;
    assertStorageError(await rejects(storage.saveRoom(missing)), "invalid_room");

    // bad_request: invalid arguments (a name no room can have is not one: it is a missing room)
    assertStorageError(await rejects(storage.getRoom(5 as unknown as string)), "bad_request");
    assertStorageError(await rejects(storage.hasRoom(null as unknown as string)), "bad_request");
    await storage.saveRoom(room("r"));
    e = assertStorageError(
      await rejects(storage.addRating("r", "m", "u", "meh" as "like")),
      "bad_request",
    );
    assert(e.message.includes("rating"), e.message);
    // a progress the daemon would refuse is refused before sending (see probe_test.ts)
    assertStorageError(await rejects(storage.setProgress("r", "u", -1)), "invalid_argument");
    assertStorageError(
      await rejects(storage.watch(["ok", 1 as unknown as string])),
      "bad_request",
    );

    // not_found and conflict are covered above; the connection stays usable after errors
    assertEquals(await storage.ping(), 1);
  });
});

Deno.test("a daemon that is not running gives StorageError connection", async () => {
  const dir = await Deno.makeTempDir();
  const storage = new SocketStorage({ socketPath: `${dir}/none.sock`, timeoutMs: 2000 });
  try {
    const e = assertStorageError(await rejects(storage.getRoom("r")), "connection");
    assert(e.cause !== undefined);
    assertStorageError(await rejects(storage.saveRoom(room("r"))), "connection");
    assertStorageError(await rejects(storage.watch()), "connection");
  } finally {
    await storage.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("calls after close() fail with closed", async () => {
  await withDaemon(async (daemon) => {
    const storage = new SocketStorage({ socketPath: daemon.socketPath });
    assertEquals(await storage.ping(), 1);
    await storage.close();
    assertStorageError(await rejects(storage.ping()), "closed");
  });
});

// ----- reconnect -----

Deno.test("reconnect: the daemon restarts on the same socket and storage directory", async () => {
  let daemon = await Daemon.start({ storageType: "file" });
  const dir = daemon.dir;
  const storage = new SocketStorage({ socketPath: daemon.socketPath });
  try {
    assertEquals(await storage.saveRoomWithRevision(room("persist")), 1);
    await storage.addRating("persist", "m", "u", "like", 1);
    await daemon.stop();
    // while it is down, calls fail with connection
    assertStorageError(await rejects(storage.hasRoom("persist")), "connection");
    daemon = await Daemon.start({ storageType: "file", dir });
    const got = await storage.getRoomWithRevision("persist");
    assertEquals(got, {
      room: room("persist", { ratings: { m: [["u", "like", 1]] } }),
      revision: 2,
    });
    // mutations work on the new connection too
    assertEquals(await storage.setProgress("persist", "u", 1), 3);

    // restart again without any failing call in between
    await daemon.stop();
    daemon = await Daemon.start({ storageType: "file", dir });
    assertEquals(await storage.addRating("persist", "m2", "u", "like", 2), {
      revision: 4,
      added: true,
    });
  } finally {
    await storage.close();
    try {
      await daemon.stop();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("a mutation in flight when the connection dies fails with connection and is not retried", async () => {
  const server = await FakeServer.start(async (_n, lines, conn) => {
    for await (const _line of lines) {
      server.drop(conn); // read the request, then hang up without answering
      return;
    }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 5000 });
  try {
    assertStorageError(await rejects(storage.saveRoom(room("r"))), "connection");
    assertStorageError(await rejects(storage.addRating("r", "m", "u", "like")), "connection");
    await sleep(50);
    assertEquals(server.received.map((l) => JSON.parse(l).op), ["saveRoom", "addRating"]);
    assertEquals(server.connections, 2);
  } finally {
    await storage.close();
    await server.close();
  }
});

Deno.test("a read in flight when the connection dies is retried once", async () => {
  const server = await FakeServer.start(async (n, lines, conn) => {
    for await (const line of lines) {
      if (n === 0) {
        server.drop(conn);
        return;
      }
      const request = JSON.parse(line);
      await send(conn, { id: request.id, ok: true, exists: true });
    }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 5000 });
  try {
    assertEquals(await storage.hasRoom("r"), true);
    assertEquals(server.received.length, 2);
    assertEquals(server.connections, 2);
  } finally {
    await storage.close();
    await server.close();
  }
  // ...but only once
  const dropAll = await FakeServer.start(async (_n, lines, conn) => {
    for await (const _line of lines) {
      dropAll.drop(conn);
      return;
    }
  });
  const again = new SocketStorage({ socketPath: dropAll.path, timeoutMs: 5000 });
  try {
    assertStorageError(await rejects(again.getRoom("r")), "connection");
    assertEquals(dropAll.received.length, 2);
  } finally {
    await again.close();
    await dropAll.close();
  }
});

// ----- timeout -----

Deno.test("timeout: a server that never answers", async () => {
  const server = await FakeServer.start(async (_n, lines) => {
    for await (const _line of lines) { /* never answer */ }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 300 });
  try {
    const started = Date.now();
    const e = assertStorageError(await rejects(storage.getRoom("r")), "timeout");
    const elapsed = Date.now() - started;
    assert(elapsed >= 250 && elapsed < 3000, `timed out after ${elapsed} ms`);
    assert(e.message.includes("getRoom"), e.message);
    assertStorageError(await rejects(storage.saveRoom(room("r"))), "timeout");
    const watchError = assertStorageError(await rejects(storage.watch()), "timeout");
    assert(watchError.message.includes("watch"));
  } finally {
    await storage.close();
    await server.close();
  }
});

// ----- pipelining and framing -----

Deno.test("pipelining: many concurrent calls on one client", async () => {
  await withClient(async (storage) => {
    await storage.saveRoom(room("r"));
    const users = Array.from({ length: 300 }, (_, i) => `user-${i}`);
    const results = await Promise.all([
      ...users.map((u, i) =>
        storage.addRating("r", "plex://movie/1", u, i % 2 ? "like" : "dislike", i)
      ),
      ...users.map(() => storage.hasRoom("r")),
    ]);
    const ratings = results.slice(0, users.length) as { revision: number; added: boolean }[];
    assert(ratings.every((r) => r.added));
    const revisions = ratings.map((r) => r.revision).sort((a, b) => a - b);
    assertEquals(revisions, users.map((_, i) => i + 2));
    assert(results.slice(users.length).every((x) => x === true));
    await waitForConnections(storage, 1); // one connection for every request
    const got = await storage.getRoom("r");
    assertEquals(got!.ratings!["plex://movie/1"].length, 300);
  });
});

Deno.test("answers are matched by id, even out of order; id-less errors go to the oldest request", async () => {
  const server = await FakeServer.start(async (_n, lines, conn) => {
    const held: { id: number; roomName: string }[] = [];
    for await (const line of lines) {
      const request = JSON.parse(line);
      if (request.op === "ping") {
        // an id-less answer (as too_large / bad_json are sent)
        await send(conn, { ok: false, error: { code: "too_large", message: "too long" } });
        continue;
      }
      held.push(request);
      if (held.length === 3) {
        for (const r of held.reverse()) {
          await send(conn, { id: r.id, ok: true, exists: r.roomName === "b" });
        }
        held.length = 0;
      }
    }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 5000 });
  try {
    const answers = await Promise.all(["a", "b", "c"].map((n) => storage.hasRoom(n)));
    assertEquals(answers, [false, true, false]);
    assertStorageError(await rejects(storage.ping()), "too_large");
  } finally {
    await storage.close();
    await server.close();
  }
});

Deno.test("10 MB rooms round-trip, pipelined with small requests", async () => {
  await withClient(async (storage) => {
    const ratings: Record<string, [string, "like" | "dislike", number][]> = {};
    for (let i = 0; i < 120_000; i++) {
      ratings[`plex://movie/${"x".repeat(40)}${i}`] = [[
        "someone-é-🎬",
        i % 2 ? "like" : "dislike",
        i,
      ]];
    }
    const big = room("big", { ratings, note: "ü".repeat(1000) });
    const size = new TextEncoder().encode(JSON.stringify(big)).length;
    assert(size > 10_000_000, `room is ${size} bytes`);
    const [revision, , small] = await Promise.all([
      storage.saveRoomWithRevision(big),
      storage.saveRoom(room("small")),
      storage.getRoom("small"),
    ]);
    assertEquals(revision, 1);
    assertEquals(small, room("small"));
    const [got, got2, list] = await Promise.all([
      storage.getRoom("big"),
      storage.getRoom("big"),
      storage.listRooms(),
    ]);
    assertEquals(got, big);
    assertEquals(got2, big);
    assertEquals(list.length, 2);
    assertEquals(list[0], big);
  });
});

Deno.test("a request over the daemon's maxRequestBytes gets too_large; the client goes on", async () => {
  await withDaemon(async (daemon) => {
    const storage = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      const huge = room("huge", { blob: "x".repeat(4096) });
      const [a, b, c] = await Promise.allSettled([
        storage.ping(),
        storage.saveRoom(huge),
        storage.hasRoom("huge"),
      ]);
      assertEquals(a.status === "fulfilled" && a.value, 1);
      assert(b.status === "rejected");
      assertStorageError(b.reason, "too_large");
      assertEquals(c.status === "fulfilled" && c.value, false);
    } finally {
      await storage.close();
    }
  }, { extraArgs: ["--max-request-bytes", "2048"] });
});

// ----- watch -----

async function collect(
  iterator: AsyncIterator<WatchEvent>,
  count: number,
  timeoutMs = 5000,
): Promise<WatchEvent[]> {
  const events: WatchEvent[] = [];
  const deadline = Date.now() + timeoutMs;
  while (events.length < count) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`only ${events.length} of ${count} events: ${JSON.stringify(events)}`),
          ),
        Math.max(1, deadline - Date.now()),
      );
    });
    try {
      const next = await Promise.race([iterator.next(), timeout]);
      if (next.done) break;
      events.push(next.value);
    } finally {
      clearTimeout(timer);
    }
  }
  return events;
}

Deno.test("watch: another client's writes arrive in order, filtered by room", async () => {
  await withDaemon(async (daemon) => {
    const watcher = new SocketStorage({ socketPath: daemon.socketPath });
    const writer = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      const watch = await watcher.watch(["r"]);
      const all = await watcher.watch();
      await writer.saveRoom(room("r"));
      await writer.saveRoom(room("other"));
      await writer.addRating("r", "plex://movie/1", "ann", "like", 10);
      await writer.addRating("r", "plex://movie/1", "ann", "like", 11); // not added: no event
      await writer.setProgress("r", "ann", 3);
      const ratings = await Promise.all(
        Array.from({ length: 20 }, (_, i) => writer.addRating("r", `m${i}`, "bob", "dislike", i)),
      );
      // "other" first, so this test does not depend on the flush after a filtered-out event
      // (which has a test of its own below).
      await writer.deleteRoom("other");
      await writer.deleteRoom("r");

      const events = await collect(watch, 24);
      assertEquals(events.slice(0, 3), [
        { event: "saved", roomName: "r", revision: 1 },
        {
          event: "rated",
          roomName: "r",
          revision: 2,
          mediaId: "plex://movie/1",
          userName: "ann",
          rating: "like",
          timestamp: 10,
        },
        { event: "progress", roomName: "r", revision: 3, userName: "ann", progress: 3 },
      ]);
      const rated = events.slice(3, 23);
      assert(rated.every((e) => e.event === "rated"));
      assertEquals(
        rated.map((e) => (e as { revision: number }).revision),
        Array.from({ length: 20 }, (_, i) => i + 4),
        "revision order",
      );
      assertEquals(
        ratings.map((r) => r.revision).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 4),
      );
      assertEquals(events[23], { event: "deleted", roomName: "r" });

      const everything = await collect(all, 26);
      assertEquals(everything.length, 26);
      assertEquals(everything[1], { event: "saved", roomName: "other", revision: 1 });
      assertEquals(everything[24], { event: "deleted", roomName: "other" });
      assertEquals(everything[25], { event: "deleted", roomName: "r" });

      // close() ends the iterator, also with a pending next()
      const pending = watch.next();
      await watch.close();
      assertEquals(await pending, { done: true, value: undefined });
      assertEquals(await watch.next(), { done: true, value: undefined });
      await all.close();
    } finally {
      await watcher.close();
      await writer.close();
    }
  });
});

Deno.test("watch: breaking out of for-await and client.close() end the watch and its connection", async () => {
  await withDaemon(async (daemon) => {
    const watcher = new SocketStorage({ socketPath: daemon.socketPath });
    const writer = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      await waitForConnections(writer, 1);
      const watch = await watcher.watch(["r"]);
      await waitForConnections(writer, 2);
      const seen: WatchEvent[] = [];
      const loop = (async () => {
        for await (const event of watch) {
          seen.push(event);
          if (seen.length === 2) break;
        }
      })();
      await writer.saveRoom(room("r"));
      await writer.saveRoom(room("r"));
      await writer.saveRoom(room("r"));
      await loop;
      assertEquals(seen.map((e) => (e as { revision: number }).revision), [1, 2]);
      assertEquals(await watch.next(), { done: true, value: undefined });
      await waitForConnections(writer, 1); // the watch connection was closed

      // client.close() ends every watch of the client
      const second = await watcher.watch();
      const third = await watcher.watch(["x"]);
      const waiting = second.next();
      const loop3 = (async () => {
        let n = 0;
        for await (const _ of third) n++;
        return n;
      })();
      await watcher.close();
      assertEquals(await waiting, { done: true, value: undefined });
      assertEquals(await loop3, 0);
    } finally {
      await watcher.close();
      await writer.close();
    }
  });
});

Deno.test("watch: the daemon stopping ends the iterator with a connection error", async () => {
  const daemon = await Daemon.start();
  const watcher = new SocketStorage({ socketPath: daemon.socketPath });
  let stopped = false;
  try {
    const watch = await watcher.watch();
    const pending = rejects(watch.next());
    await daemon.dispose();
    stopped = true;
    assertStorageError(await pending, "connection");
    assertEquals(await watch.next(), { done: true, value: undefined });
  } finally {
    await watcher.close();
    if (!stopped) await daemon.dispose();
  }
});

// A regression test for a daemon bug this client's tests found (src/watch.rs, now fixed): when
// events for a watched room and for a room the watcher filters out were broadcast together, the
// watched room's event could stay in the daemon's write buffer (the filtered event was skipped
// before the flush) until the watcher's next event. The daemon now flushes whenever nothing more
// is waiting, whether the last event was sent or filtered out.
Deno.test({
  name: "watch: an event followed by a filtered-out event is delivered at once",
  fn: async () => {
    await withDaemon(async (daemon) => {
      const watcher = new SocketStorage({ socketPath: daemon.socketPath });
      try {
        const watch = await watcher.watch(["r"]);
        for (let i = 1; i <= 20; i++) {
          // both changes in one write: committed and broadcast together
          const conn = await Deno.connect({ transport: "unix", path: daemon.socketPath });
          try {
            await conn.write(new TextEncoder().encode(
              JSON.stringify({ id: 1, op: "saveRoom", room: room("r") }) + "\n" +
                JSON.stringify({ id: 2, op: "saveRoom", room: room("other") }) + "\n",
            ));
            let answers = "";
            const buffer = new Uint8Array(4096);
            while (answers.split("\n").length < 3) {
              const n = await conn.read(buffer);
              if (n === null) break;
              answers += new TextDecoder().decode(buffer.subarray(0, n));
            }
          } finally {
            conn.close();
          }
          const events = await collect(watch, 1, 1000);
          assertEquals(events, [{ event: "saved", roomName: "r", revision: i }]);
        }
      } finally {
        await watcher.close();
      }
    });
  },
});

Deno.test("two daemons on one Redis: a swipe through one reaches a watch on the other", async () => {
  const redis = await RedisServer.start();
  const one = await Daemon.start({ storageType: "redis", redisUrl: redis.url });
  const two = await Daemon.start({ storageType: "redis", redisUrl: redis.url });
  const a = new SocketStorage({ socketPath: one.socketPath });
  const b = new SocketStorage({ socketPath: two.socketPath });
  try {
    await a.saveRoom(room("shared"));
    assertEquals(await b.getRoom("shared"), room("shared"));
    const watch = await b.watch(["shared"]);
    const rated = await a.addRating("shared", "plex://movie/1", "ann", "like", 5);
    assertEquals(rated, { revision: 2, added: true });
    assertEquals(await collect(watch, 1), [{
      event: "rated",
      roomName: "shared",
      revision: 2,
      mediaId: "plex://movie/1",
      userName: "ann",
      rating: "like",
      timestamp: 5,
    }]);
    assertEquals((await b.getRoom("shared"))?.ratings, { "plex://movie/1": [["ann", "like", 5]] });
    await watch.close();
  } finally {
    await a.close();
    await b.close();
    await one.dispose();
    await two.dispose();
    await redis.dispose();
  }
});

Deno.test("watch: overflow is the last event, then the iterator ends", async () => {
  // The daemon sends overflow to a watcher that fell behind, then disconnects it. A real daemon
  // does so only under load (or drops a watcher that stopped reading for 5 s without it: its
  // socket is full), so a fake server plays the daemon here.
  const server = await FakeServer.start(async (_n, lines, conn) => {
    for await (const line of lines) {
      const request = JSON.parse(line);
      assertEquals(request.op, "watch");
      assertEquals(request.roomNames, ["r"]);
      await send(conn, { id: request.id, ok: true });
      await send(conn, { event: "saved", roomName: "r", revision: 1 });
      await send(conn, { event: "deleted", roomName: "r" });
      await send(conn, { event: "overflow" });
      server.drop(conn);
      return;
    }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 5000 });
  try {
    const watch = await storage.watch(["r"]);
    const events: WatchEvent[] = [];
    for await (const event of watch) events.push(event);
    assertEquals(events, [
      { event: "saved", roomName: "r", revision: 1 },
      { event: "deleted", roomName: "r" },
      { event: "overflow" },
    ]);
    assertEquals(await watch.next(), { done: true, value: undefined });
  } finally {
    await storage.close();
    await server.close();
  }
});
