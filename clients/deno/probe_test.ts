// What an outside probe of the drop-in found (issue 16), each kept as a regression test: the
// permissions the README names.

import { assert, withDaemon } from "./test_util.ts";

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
