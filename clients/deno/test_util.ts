// Test helpers: the real daemon in a temporary directory, and fake servers for failure cases.

import type { SerializedRoom } from "./mod.ts";

/** The daemon binary: env MOVIEMATCH_STORAGED, else ../../target/debug/moviematch-storaged. */
export const DAEMON = Deno.env.get("MOVIEMATCH_STORAGED") ??
  new URL("../../target/debug/moviematch-storaged", import.meta.url).pathname;

export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new Error(message);
}

export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  const a = canonical(actual);
  const e = canonical(expected);
  if (a !== e) {
    throw new Error(`${message ? message + ": " : ""}expected ${e}\n  got ${a}`);
  }
}

/** JSON with sorted keys, so that key order does not matter. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  }) ?? "undefined";
}

/** Awaits `promise`, expects it to reject, returns the error. */
export async function rejects(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

/** A room with MovieMatch's required fields, `extra` ones (any field: the daemon keeps them all). */
export function room(
  name: string,
  extra: Partial<SerializedRoom> & Record<string, unknown> = {},
): SerializedRoom {
  return {
    roomName: name,
    sort: "random",
    createdAt: "2025-10-25T20:00:00.000Z",
    creatorPlexUserId: "12345",
    creatorPlexUsername: "john_doe",
    ...extra,
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until something accepts connections on `path`. */
export async function waitForSocket(
  path: string,
  child?: Deno.ChildProcess,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  child?.status.then(() => (exited = true));
  for (;;) {
    try {
      const conn = await Deno.connect({ transport: "unix", path });
      conn.close();
      return;
    } catch {
      if (exited) throw new Error(`the daemon exited before listening on ${path}`);
      if (Date.now() > deadline) throw new Error(`nothing listens on ${path}`);
      await sleep(20);
    }
  }
}

export interface DaemonOptions {
  storageType?: "memory" | "file" | "redis";
  /** For storageType "redis": the server's URL (see RedisServer). */
  redisUrl?: string;
  /** Reuse a directory (for restarts); default: a new temporary one. */
  dir?: string;
  extraArgs?: string[];
}

/** A running daemon; `stop()` sends SIGTERM and checks it exits 0. */
export class Daemon {
  readonly dir: string;
  readonly socketPath: string;
  readonly storagePath: string;
  #child: Deno.ChildProcess;
  #log: Promise<string>;
  #ownsDir: boolean;
  #killed = false;

  private constructor(dir: string, ownsDir: boolean, child: Deno.ChildProcess) {
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.socketPath = `${dir}/storaged.sock`;
    this.storagePath = `${dir}/rooms`;
    this.#child = child;
    this.#log = new Response(child.stderr).text();
  }

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const ownsDir = options.dir === undefined;
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "mm-deno-" });
    const type = options.storageType ?? "memory";
    const args = ["--storage-type", type, "--socket", `${dir}/storaged.sock`];
    if (type === "file") args.push("--storage-path", `${dir}/rooms`);
    if (options.redisUrl) args.push("--redis-url", options.redisUrl);
    args.push(...(options.extraArgs ?? []));
    const child = new Deno.Command(DAEMON, {
      args,
      cwd: dir,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { STORAGE_LOG_LEVEL: "warn" },
    }).spawn();
    const daemon = new Daemon(dir, ownsDir, child);
    try {
      await waitForSocket(daemon.socketPath, child);
    } catch (e) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      const log = await daemon.#log;
      if (ownsDir) await Deno.remove(dir, { recursive: true });
      throw new Error(`${(e as Error).message}\n${log}`);
    }
    return daemon;
  }

  /** SIGTERM, then waits; fails unless it exits 0 (or was killed). Keeps the directory. */
  async stop(): Promise<void> {
    if (this.#killed) return;
    try {
      this.#child.kill("SIGTERM");
    } catch { /* exited already */ }
    const status = await this.#child.status;
    const log = await this.#log;
    if (status.code !== 0) {
      throw new Error(`the daemon exited with ${status.code}:\n${log}`);
    }
  }

  /** SIGKILL, as a crash: nothing is answered or closed cleanly. Keeps the directory. */
  async kill(): Promise<void> {
    this.#killed = true;
    try {
      this.#child.kill("SIGKILL");
    } catch { /* exited already */ }
    await this.#child.status;
    await this.#log;
  }

  /** Stops the daemon and removes its directory (if it made it). */
  async dispose(): Promise<void> {
    try {
      await this.stop();
    } finally {
      if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true });
    }
  }
}

/** A private redis-server on a Unix socket in a temporary directory (redis-server must exist). */
export class RedisServer {
  readonly dir: string;
  readonly url: string;
  #child: Deno.ChildProcess;

  private constructor(dir: string, child: Deno.ChildProcess) {
    this.dir = dir;
    this.url = `unix://${dir}/redis.sock`;
    this.#child = child;
  }

  static async start(): Promise<RedisServer> {
    const dir = await Deno.makeTempDir({ prefix: "mm-deno-redis-" });
    const child = new Deno.Command("redis-server", {
      args: ["--port", "0", "--unixsocket", `${dir}/redis.sock`, "--save", "", "--dir", dir],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitForSocket(`${dir}/redis.sock`, child);
    return new RedisServer(dir, child);
  }

  async dispose(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* exited */ }
    await this.#child.status;
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Runs `fn` with a fresh daemon, stopped afterwards. */
export async function withDaemon(
  fn: (daemon: Daemon) => Promise<void>,
  options: DaemonOptions = {},
): Promise<void> {
  const daemon = await Daemon.start(options);
  try {
    await fn(daemon);
  } finally {
    await daemon.dispose();
  }
}

/**
 * A fake daemon on a Unix socket: for every connection, `handle` gets the connection number and
 * an async iterator of request lines, and the connection to answer (or not) on.
 */
export class FakeServer {
  readonly path: string;
  readonly dir: string;
  readonly received: string[] = [];
  connections = 0;
  #listener: Deno.UnixListener;
  #tasks: Promise<void>[] = [];
  #conns = new Set<Deno.UnixConn>();
  #loop: Promise<void>;

  private constructor(
    dir: string,
    listener: Deno.UnixListener,
    handle: (n: number, lines: AsyncGenerator<string>, conn: Deno.UnixConn) => Promise<void>,
  ) {
    this.dir = dir;
    this.path = `${dir}/fake.sock`;
    this.#listener = listener;
    this.#loop = (async () => {
      try {
        for await (const conn of listener) {
          const n = this.connections++;
          this.#conns.add(conn);
          this.#tasks.push(
            handle(n, this.#lines(conn), conn).catch(() => {}).finally(() => {
              if (this.#conns.delete(conn)) {
                try {
                  conn.close();
                } catch { /* closed */ }
              }
            }),
          );
        }
      } catch { /* listener closed */ }
    })();
  }

  static async start(
    handle: (n: number, lines: AsyncGenerator<string>, conn: Deno.UnixConn) => Promise<void>,
  ): Promise<FakeServer> {
    const dir = await Deno.makeTempDir({ prefix: "mm-fake-" });
    const listener = Deno.listen({ transport: "unix", path: `${dir}/fake.sock` });
    return new FakeServer(dir, listener, handle);
  }

  async *#lines(conn: Deno.UnixConn): AsyncGenerator<string> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let pending = "";
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch {
        return;
      }
      if (n === null) return;
      pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.received.push(line);
        yield line;
      }
    }
  }

  /** Closes one connection from the server side. */
  drop(conn: Deno.UnixConn): void {
    if (this.#conns.delete(conn)) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  async close(): Promise<void> {
    this.#listener.close();
    await this.#loop;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
    await Promise.all(this.#tasks);
    await Deno.remove(this.dir, { recursive: true });
  }
}

export async function send(conn: Deno.UnixConn, value: unknown): Promise<void> {
  const data = new TextEncoder().encode(JSON.stringify(value) + "\n");
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}
