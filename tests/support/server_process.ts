/**
 * Starts real server processes for tests: each listens on port 0, and the test waits for its
 * `ready <url>` line. Processes are killed by PID (SIGKILL for crash tests) and awaited.
 */

/** A server process started by a test. */
export interface ServerProcess {
  url: string;
  pid: number;
  dataDir: string;
  /** Everything the process wrote to stderr so far (JSON log lines). */
  logs(): string;
  /** Sends `signal` (default SIGTERM) and waits for the process to end. */
  stop(signal?: Deno.Signal): Promise<void>;
}

/** Options of {@link startServer}. */
export interface StartOptions {
  secret?: string;
  peers?: string[];
  dataDir?: string;
  distDir?: string;
  port?: number;
  hostname?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run the process inside this network namespace (needs root). */
  netns?: string;
}

/** The secret test clusters use unless a test chooses another. */
export const TEST_SECRET = "test-cluster-secret-0123456789";
const ROOT = new URL("../../", import.meta.url).pathname;

/** Starts one server process and resolves when it prints `ready`. */
export async function startServer(options: StartOptions = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "p2pchat-node-" });
  const args = [
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    `--allow-write=${dataDir}`,
    `${ROOT}server/main.ts`,
    `--port=${options.port ?? 0}`,
    `--hostname=${options.hostname ?? "127.0.0.1"}`,
    `--cluster-secret=${options.secret ?? TEST_SECRET}`,
    `--data-dir=${dataDir}`,
    `--dist=${options.distDir ?? `${ROOT}dist`}`,
  ];
  if (options.peers?.length) args.push(`--peers=${options.peers.join(",")}`);
  const [program, programArgs] = options.netns
    ? ["ip", ["netns", "exec", options.netns, Deno.execPath(), ...args]]
    : [Deno.execPath(), args];
  const child = new Deno.Command(program, {
    args: programArgs,
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).spawn();
  let stderr = "";
  const decoder = new TextDecoder();
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk);
  })();
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`Server did not start in 20 s:\n${stderr}`)),
      20_000,
    );
    (async () => {
      let buffer = "";
      for await (const chunk of child.stdout) {
        buffer += decoder.decode(chunk);
        const match = buffer.match(/^ready (\S+)$/m);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      }
      clearTimeout(timer);
      reject(new Error(`Server exited before ready:\n${stderr}`));
    })().catch(reject);
  });
  let stopped: Promise<void> | undefined;
  return {
    url,
    pid: child.pid,
    dataDir,
    logs: () => stderr,
    stop(signal: Deno.Signal = "SIGTERM") {
      stopped ??= (async () => {
        try {
          child.kill(signal);
        } catch { /* already ended */ }
        await child.status;
        await stderrDone.catch(() => {});
      })();
      return stopped;
    },
  };
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Starts `n` servers that know one another (each later one seeded with the first). */
export async function startCluster(
  n: number,
  options: StartOptions = {},
): Promise<ServerProcess[]> {
  const first = await startServer(options);
  const rest = await Promise.all(
    Array.from({ length: n - 1 }, () => startServer({ ...options, peers: [first.url] })),
  );
  const servers = [first, ...rest];
  await waitFor("every server to see every other", async () => {
    for (const s of servers) {
      const health = await (await fetch(`${s.url}/healthz`)).json();
      if (health.servers.length !== n) return false;
    }
    return true;
  }, 15_000);
  return servers;
}
