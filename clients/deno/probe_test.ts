// What an outside probe of the drop-in found (issue 16), each kept as a regression test: a closed
// client's own error code, arguments refused before anything is sent, answers checked per op,
// and the permissions the README names.

import { type SerializedRoom, SocketStorage, StorageError } from "./mod.ts";
import {
  assert,
  assertEquals,
  Daemon,
  FakeServer,
  rejects,
  room,
  sleep,
  withDaemon,
} from "./test_util.ts";

function assertStorageError(e: unknown, code: string): StorageError {
  assert(e instanceof StorageError, `expected a StorageError, got ${e}`);
  assertEquals(e.code, code, `error code (message: ${e.message})`);
  return e;
}

// ----- names with half a surrogate pair -----

Deno.test("names with half a surrogate pair are missing rooms, and saveRoom names roomName", async () => {
  await withDaemon(async (daemon) => {
    const storage = new SocketStorage({ socketPath: daemon.socketPath });
    try {
      await storage.saveRoom(room("r"));
      for (const name of ["\ud800", "a\udc00b", "r\udfff"]) {
        assertEquals(await storage.getRoom(name), null, JSON.stringify(name));
        assertEquals(await storage.hasRoom(name), false);
        await storage.deleteRoom(name);
        assertStorageError(await rejects(storage.verifyPassword(name, "p")), "not_found");
        assertStorageError(
          await rejects(storage.addRating(name, "\ud800", "u", "like")),
          "not_found",
        );
        const e = assertStorageError(await rejects(storage.saveRoom(room(name))), "invalid_room");
        assert(e.message.startsWith("roomName: "), e.message);
      }
      const watch = await storage.watch(["\ud800", "r"]);
      await watch.close();
      assertEquals(await storage.listRooms(), [room("r")]);
    } finally {
      await storage.close();
    }
  });
});

// ----- a closed client -----

/** The README's `announceMatches` loop, as written there (less the match check). */
async function announceMatches(storage: SocketStorage, roomNames: string[]): Promise<void> {
  for (;;) {
    try {
      const watch = await storage.watch(roomNames);
      for await (const _event of watch) { /* announce */ }
      return;
    } catch (e) {
      if (!(e instanceof StorageError)) throw e;
      if (e.code === "closed") return; // storage.close() was called: stop watching
      if (e.code !== "connection" && e.code !== "storage") throw e;
      await sleep(100);
    }
  }
}

Deno.test("the README's watch loop ends on close() after the daemon went away", async () => {
  const daemon = await Daemon.start();
  const storage = new SocketStorage({ socketPath: daemon.socketPath, timeoutMs: 2000 });
  try {
    const loop = announceMatches(storage, ["r"]);
    await sleep(300); // watching
    await daemon.kill();
    await sleep(300); // the loop retries: every watch() fails with connection
    await storage.close();
    let ended = false;
    loop.then(() => ended = true);
    await Promise.race([loop, sleep(2000)]);
    assert(ended, "the watch loop still runs after close()");
    assertStorageError(await rejects(storage.ping()), "closed");
    assertStorageError(await rejects(storage.watch()), "closed");
  } finally {
    await storage.close();
    await daemon.dispose();
  }
});

Deno.test("requests in flight when close() is called fail with closed", async () => {
  const server = await FakeServer.start(async (_n, lines) => {
    for await (const _line of lines) { /* never answers */ }
  });
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 5000 });
  try {
    const pending = rejects(storage.getRoom("r"));
    await sleep(100);
    await storage.close();
    assertStorageError(await pending, "closed");
  } finally {
    await server.close();
  }
});

// ----- arguments the client refuses, sending nothing -----

Deno.test("invalid dates, timestamps, counts and options are invalid_argument", async () => {
  const server = await FakeServer.start(async () => {});
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 2000 });
  const invalid = new Date(NaN);
  try {
    const calls: [string, () => Promise<unknown>][] = [
      ["deleteRooms(invalid Date)", () => storage.deleteRooms(invalid)],
      ["createdBefore", () => storage.listRoomsPage({ createdBefore: invalid })],
      ["createdAfter", () => storage.listRoomsPage({ createdAfter: invalid })],
      ["limit NaN", () => storage.listRoomsPage({ limit: NaN })],
      ["filters null", () => storage.listRoomsPage(null as unknown as undefined)],
      ["timestamp invalid Date", () => storage.addRating("r", "m", "u", "like", invalid)],
      ["timestamp NaN", () => storage.addRating("r", "m", "u", "like", NaN)],
      ["timestamp Infinity", () => storage.addRating("r", "m", "u", "like", Infinity)],
      ["timestamp -1", () => storage.addRating("r", "m", "u", "like", -1)],
      ["timestamp 1.5", () => storage.addRating("r", "m", "u", "like", 1.5)],
      ["progress Infinity", () => storage.setProgress("r", "u", Infinity)],
      ["progress NaN", () => storage.setProgress("r", "u", NaN)],
      ["progress -1", () => storage.setProgress("r", "u", -1)],
      ["progress 1.5", () => storage.setProgress("r", "u", 1.5)],
      ["progress missing", () => storage.setProgress("r", "u", undefined as unknown as number)],
      ["expectedRevision NaN", () => storage.deleteRoom("r", { expectedRevision: NaN })],
      ["options null", () => storage.deleteRoom("r", null as unknown as undefined)],
      [
        "save expectedRevision Infinity",
        () => storage.saveRoomWithRevision({} as SerializedRoom, { expectedRevision: Infinity }),
      ],
    ];
    for (const [what, call] of calls) {
      const e = assertStorageError(await rejects(call()), "invalid_argument");
      assert(e.message.length > 0, what);
    }
    // Nothing reached the daemon, and nothing was even connected for it.
    assertEquals(server.received, []);
    for (const options of [null, 5, "sock", { socketPath: 5 }, { timeoutMs: "1" }]) {
      let thrown: unknown;
      try {
        new SocketStorage(options as unknown as undefined);
      } catch (e) {
        thrown = e;
      }
      assertStorageError(thrown, "invalid_argument");
    }
  } finally {
    await storage.close();
    await server.close();
  }
});

// ----- answers that are not answers -----

/** The k-th request (over all connections) is answered with `answers[k]`, `ID` replaced by its
 * id. */
function answering(answers: (string | Uint8Array)[]) {
  let k = 0;
  return FakeServer.start(async (_n, lines, conn) => {
    for await (const line of lines) {
      const id = JSON.parse(line).id;
      const answer = answers[k++];
      const bytes = typeof answer === "string"
        ? new TextEncoder().encode(answer.replaceAll("ID", String(id)) + "\n")
        : answer;
      await conn.write(bytes);
    }
  });
}

Deno.test("an invalid answer is a protocol error and drops the connection", async () => {
  const cases: [string, (s: SocketStorage) => Promise<unknown>, string | Uint8Array][] = [
    ["getRoom without room", (s) => s.getRoom("r"), `{"id":ID,"ok":true}`],
    ["hasRoom without exists", (s) => s.hasRoom("r"), `{"id":ID,"ok":true}`],
    ["verifyPassword without valid", (s) => s.verifyPassword("r", "p"), `{"id":ID,"ok":true}`],
    ["listRooms without rooms", (s) => s.listRooms(), `{"id":ID,"ok":true}`],
    ["getRoom room 5", (s) => s.getRoom("r"), `{"id":ID,"ok":true,"room":5,"revision":1}`],
    ["getRoom without revision", (s) => s.getRoom("r"), `{"id":ID,"ok":true,"room":{}}`],
    ["hasRoom exists yes", (s) => s.hasRoom("r"), `{"id":ID,"ok":true,"exists":"yes"}`],
    ["deleteRoom deleted 1", (s) => s.deleteRoom("r"), `{"id":ID,"ok":true,"deleted":1}`],
    [
      "saveRoom revision 0",
      (s) => s.saveRoom({} as SerializedRoom),
      `{"id":ID,"ok":true,"revision":0}`,
    ],
    [
      "addRating added null",
      (s) => s.addRating("r", "m", "u", "like"),
      `{"id":ID,"ok":true,"revision":2}`,
    ],
    [
      "deleteRooms deleted -1",
      (s) => s.deleteRooms("2025-01-01T00:00:00Z"),
      `{"id":ID,"ok":true,"deleted":-1}`,
    ],
    ["listRooms next 5", (s) => s.listRoomsPage(), `{"id":ID,"ok":true,"rooms":[],"next":5}`],
    [
      "listRooms rooms [1]",
      (s) => s.listRoomsPage(),
      `{"id":ID,"ok":true,"rooms":[1],"next":null}`,
    ],
    ["not JSON", (s) => s.getRoom("r"), `nonsense`],
    ["an array", (s) => s.getRoom("r"), `[1,2]`],
    ["ok neither true nor false", (s) => s.ping(), `{"id":ID,"ok":"yes"}`],
    [
      "a cause that is an object",
      (s) => s.getRoom("r"),
      `{"id":ID,"ok":false,"error":{"code":"storage","message":"m","cause":{"os":5}}}`,
    ],
    [
      "invalid UTF-8",
      (s) => s.ping(),
      new Uint8Array([
        ...new TextEncoder().encode('{"ok":true,"protocol":1,"x":"'),
        0xff,
        0x22,
        0x7d,
        0x0a,
      ]),
    ],
  ];
  const server = await answering(cases.map(([, , answer]) => answer));
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 2000 });
  try {
    for (const [i, [what, call]] of cases.entries()) {
      const e = await rejects(call(storage));
      assert(e instanceof StorageError, `${what}: ${e}`);
      assertEquals(e.code, "protocol", `${what} (message: ${e.message})`);
      await sleep(20);
      // Dropped: the next call opens connection i + 1.
      assertEquals(server.connections, i + 1, what);
    }
  } finally {
    await storage.close();
    await server.close();
  }
});

Deno.test("a watch event that is not UTF-8 or not an event is a protocol error", async () => {
  for (const bad of [new Uint8Array([0x7b, 0xff, 0x7d, 0x0a]), '{"nope":1}\n', "[]\n"]) {
    const server = await FakeServer.start(async (_n, lines, conn) => {
      for await (const line of lines) {
        await conn.write(new TextEncoder().encode(`{"id":${JSON.parse(line).id},"ok":true}\n`));
        await sleep(100); // after the acknowledgement was read: an event
        await conn.write(typeof bad === "string" ? new TextEncoder().encode(bad) : bad);
      }
    });
    const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 2000 });
    try {
      const watch = await storage.watch();
      assertStorageError(await rejects(watch.next()), "protocol");
    } finally {
      await storage.close();
      await server.close();
    }
  }
});

Deno.test("valid answers of the fake server's kind still resolve on one connection", async () => {
  const server = await answering([
    `{"id":ID,"ok":true,"room":null}`,
    `{"id":ID,"ok":false,"error":{"code":"storage","message":"m","cause":"EIO"}}`,
    `{"id":ID,"ok":true,"exists":false}`,
  ]);
  const storage = new SocketStorage({ socketPath: server.path, timeoutMs: 2000 });
  try {
    assertEquals(await storage.getRoom("r"), null);
    const e = assertStorageError(await rejects(storage.getRoom("r")), "storage");
    assert(e.cause instanceof Error && e.cause.message === "EIO", String(e.cause));
    assertEquals(await storage.hasRoom("r"), false);
    assertEquals(server.connections, 1);
  } finally {
    await storage.close();
    await server.close();
  }
});

// ----- permissions, as the README states them -----

/** Runs a script that pings the daemon with `flags`, in a pseudo-terminal (`script`), where Deno
 * would prompt for a missing permission; gives up after `ms`. */
async function pingWith(socketPath: string, flags: string[], ms: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "mm-perm-" });
  try {
    const path = `${dir}/ping.ts`;
    const modUrl = new URL("./mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      path,
      `import { SocketStorage } from "${modUrl}";\n` +
        `const s = new SocketStorage({ socketPath: Deno.args[0] });\n` +
        `try { console.log("ping", await s.ping()); } catch (e) { console.log("failed", e.code); }\n`,
    );
    const command = [Deno.execPath(), "run", "--no-check", ...flags, path, socketPath]
      .map((a) => `'${a}'`).join(" ");
    const child = new Deno.Command("script", {
      args: ["-qec", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    const [out] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.status,
    ]);
    clearTimeout(timer);
    await child.stdin.close().catch(() => {});
    return out;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the README's permissions connect without a prompt; without --allow-net Deno asks", async () => {
  await withDaemon(async (daemon) => {
    const ok = await pingWith(
      daemon.socketPath,
      ["--allow-read", "--allow-write", "--allow-net"],
      20_000,
    );
    assert(ok.includes("ping 1"), ok);
    assert(!ok.includes("Allow?"), ok);
    const asked = await pingWith(daemon.socketPath, ["--allow-read", "--allow-write"], 5000);
    assert(asked.includes("--allow-net"), asked);
    const refused = await pingWith(
      daemon.socketPath,
      ["--allow-read", "--allow-write", "--no-prompt"],
      20_000,
    );
    assert(refused.includes("failed connection"), refused);
  });
});
