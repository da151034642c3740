/**
 * Starts a local ring of server processes on loopback, each serving the PWA, and stops them all
 * on Ctrl-C. Usage: deno task start [--servers N] [--base-port P]
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    servers: { type: "string", default: "3" },
    "base-port": { type: "string", default: "8001" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "Usage: deno task start [--servers N (1-9, default 3)] [--base-port P (default 8001)]",
  );
  Deno.exit(0);
}
const count = Number(values.servers);
const basePort = Number(values["base-port"]);
if (!Number.isInteger(count) || count < 1 || count > 9) {
  console.error(`Error: --servers must be 1 to 9, got "${values.servers}"`);
  Deno.exit(2);
}
if (!Number.isInteger(basePort) || basePort < 1024 || basePort > 65535 - count) {
  console.error(
    `Error: --base-port must be 1024 to ${65535 - count}, got "${values["base-port"]}"`,
  );
  Deno.exit(2);
}

// One secret per local installation, kept with the data so restarts rejoin the same cluster.
await Deno.mkdir("data", { recursive: true });
let secret: string;
try {
  secret = (await Deno.readTextFile("data/cluster-secret")).trim();
} catch {
  secret = Array.from(
    crypto.getRandomValues(new Uint8Array(24)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
  await Deno.writeTextFile("data/cluster-secret", secret + "\n", { mode: 0o600 });
}

const urls = Array.from({ length: count }, (_, i) => `http://127.0.0.1:${basePort + i}`);
const children = urls.map((url, i) => {
  const port = basePort + i;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write=data",
      "server/main.ts",
      `--port=${port}`,
      `--peers=${urls.filter((u) => u !== url).join(",")}`,
      `--data-dir=data/node-${port}`,
    ],
    env: { P2P_CLUSTER_SECRET: secret },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  return { url, child };
});

const ready = await Promise.all(children.map(async ({ url, child }) => {
  const decoder = new TextDecoder();
  let buffer = "";
  const reader = child.stdout.getReader();
  while (!/^ready /m.test(buffer)) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value);
  }
  reader.releaseLock();
  child.stdout.pipeTo(Deno.stdout.writable, { preventClose: true }).catch(() => {});
  return url;
}));
if (ready.some((r) => r === false)) {
  console.error("Error: a server failed to start (see its log above). Is the port already in use?");
  for (const { child } of children) child.kill("SIGTERM");
  Deno.exit(1);
}

console.log(`\nP2P-Chat is running: ${count} servers on a local ring.`);
console.log(`Open ${urls[0]}/ in a browser (any of ${urls.join(", ")} works).`);
console.log("Press Ctrl-C to stop every server.\n");

let stopping = false;
async function stopAll(): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log("\nStopping servers...");
  for (const { child } of children) {
    try {
      child.kill("SIGTERM");
    } catch { /* already ended */ }
  }
  await Promise.all(children.map(({ child }) => child.status));
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", stopAll);
Deno.addSignalListener("SIGTERM", stopAll);
const first = await Promise.race(children.map(({ child, url }) => child.status.then(() => url)));
if (!stopping) {
  console.error(`Error: server ${first} stopped unexpectedly; stopping the others.`);
  await stopAll();
}
