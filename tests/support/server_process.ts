/**
 * Starts real server processes for tests: each listens on port 0, and the test waits for its
 * `ready <url>` line. Processes are killed by PID (SIGKILL for crash tests) and awaited.
 */
import { waitForCorrectRing } from "./ring.ts";
import { waitFor } from "./wait.ts";

export { waitFor } from "./wait.ts";

/** A server process started by a test. */
export interface ServerProcess {
  url: string;
  pid: number;
  dataDir: string;
  /** Everything the process wrote to stderr so far (JSON log lines). */
  logs(): string;
  /** The file its output also goes to (with {@link StartOptions.logDir}). */
  logPath?: string;
  /** Resolves when the process ends, whoever ended it. */
  exited: Promise<Deno.CommandStatus>;
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
  /** Also write everything the process writes (stdout and stderr) to `server-<pid>.log` here. */
  logDir?: string;
  /** Extra flags for `deno run` (e.g. `--cpu-prof`), before the script. */
  denoFlags?: string[];
}

/** The secret test clusters use unless a test chooses another. */
export const TEST_SECRET = "test-cluster-secret-0123456789";
const ROOT = new URL("../../", import.meta.url).pathname;
/** How long a server may take to print `ready` (generous: a busy machine compiles slowly). */
const READY_MS = 60_000;

/** Temporary directories made by {@link tempDataDir}: removed when this process exits. */
const madeDirs = new Set<string>();

/**
 * A new temporary directory for a server's data (or a copy of it), removed with everything in it
 * when this test process exits: a suite run left some 16,000 of them in /tmp before.
 */
export async function tempDataDir(prefix = "p2pchat-node-"): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  if (madeDirs.size === 0) {
    globalThis.addEventListener("unload", () => {
      for (const d of madeDirs) {
        try {
          Deno.removeSync(d, { recursive: true });
        } catch { /* gone already */ }
      }
    });
  }
  madeDirs.add(dir);
  return dir;
}

/** Starts one server process and resolves when it prints `ready`. */
export async function startServer(options: StartOptions = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? await tempDataDir();
  const args = [
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    `--allow-write=${dataDir}`,
    ...options.denoFlags ?? [],
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
  const logPath = options.logDir ? `${options.logDir}/server-${child.pid}.log` : undefined;
  const logFile = logPath ? await Deno.open(logPath, { create: true, append: true }) : undefined;
  const toFile = async (chunk: Uint8Array) => {
    try {
      await logFile?.write(chunk);
    } catch { /* a full disk must not end the server's reader */ }
  };
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) {
      stderr += decoder.decode(chunk);
      await toFile(chunk);
    }
  })();
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => {
        // Not ready in time: it is ours to end, or it would outlive the test.
        try {
          child.kill("SIGKILL");
        } catch { /* already ended */ }
        reject(new Error(`Server did not start in ${READY_MS / 1000} s:\n${stderr}`));
      },
      READY_MS,
    );
    (async () => {
      let buffer: string | undefined = "";
      for await (const chunk of child.stdout) {
        await toFile(chunk);
        if (buffer === undefined) continue; // ready already
        buffer += decoder.decode(chunk);
        const match = buffer.match(/^ready (\S+)$/m);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
          buffer = undefined;
        }
      }
      clearTimeout(timer);
      reject(new Error(`Server exited before ready:\n${stderr}`));
    })().catch(reject);
  });
  let stopped: Promise<void> | undefined;
  const exited = child.status.then(async (status) => {
    await stderrDone.catch(() => {});
    logFile?.close();
    return status;
  });
  return {
    url,
    pid: child.pid,
    dataDir,
    logs: () => stderr,
    logPath,
    exited,
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

/**
 * Starts `n` servers that know one another (each later one seeded with the first) and resolves
 * once they form one correct ring, the state in which users are served. On failure, every server
 * it started is stopped.
 */
export async function startCluster(
  n: number,
  options: StartOptions = {},
): Promise<ServerProcess[]> {
  const servers: ServerProcess[] = [];
  try {
    servers.push(await startServer(options));
    const started = await Promise.allSettled(
      Array.from({ length: n - 1 }, () => startServer({ ...options, peers: [servers[0]!.url] })),
    );
    for (const s of started) if (s.status === "fulfilled") servers.push(s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    await waitFor("every server to see every other", async () => {
      for (const s of servers) {
        const health = await (await fetch(`${s.url}/healthz`)).json();
        if (health.servers.length !== n) return false;
      }
      return true;
    });
    await waitForCorrectRing(servers, `${n} servers to form one correct ring`);
    return servers;
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
}

/**
 * Runs `fn`, then closes `clients` and stops `servers` whatever happened, so a failed test
 * leaves no process behind.
 */
export async function withServers(
  servers: ServerProcess[],
  clients: { close(): Promise<unknown> }[],
  fn: () => Promise<void>,
): Promise<void> {
  try {
    await fn();
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
  }
}
