/**
 * Starts a local ring of server processes, each serving the PWA, and stops them all on Ctrl-C.
 * Usage: deno task start [--servers N] [--base-port P] [--host ADDRESS] [--https]
 *
 * With --https it keeps a private certificate authority in data/tls/ (ca.pem, made once) and
 * issues a fresh server certificate for localhost, 127.0.0.1, ::1, --host and this machine's own
 * interface addresses (read locally, nothing is sent); the servers trust the CA for their calls
 * to each other through DENO_CERT. Phones install data/tls/ca.pem once to trust every server.
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    servers: { type: "string", default: "3" },
    "base-port": { type: "string", default: "8001" },
    host: { type: "string", default: "127.0.0.1" },
    https: { type: "boolean", default: false },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    `Usage: deno task start [--servers N (1-9, default 3)] [--base-port P (default 8001)]
                       [--host ADDRESS (default 127.0.0.1)] [--https]
  --host ADDRESS   address the servers listen on and advertise: a LAN address of this machine
                   (e.g. 192.168.1.20) lets phones on the LAN connect
  --https          serve HTTPS with a certificate from a local CA kept in data/tls/ (needs
                   openssl); install data/tls/ca.pem on each device once`,
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

const host = values.host!;
if (!/^[0-9.]+$|^[0-9a-fA-F:]+$|^[A-Za-z0-9.-]+$/.test(host)) {
  console.error(`Error: --host must be an IP address or host name, got "${host}"`);
  Deno.exit(2);
}
const tls = values.https ? await makeCertificate(host) : undefined;
const scheme = tls ? "https" : "http";
const urlHost = host.includes(":") ? `[${host}]` : host;
const urls = Array.from({ length: count }, (_, i) => `${scheme}://${urlHost}:${basePort + i}`);
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
      `--hostname=${host}`,
      `--public-url=${url}`,
      `--peers=${urls.filter((u) => u !== url).join(",")}`,
      `--data-dir=data/node-${port}`,
      ...(tls ? [`--tls-cert=${tls.cert}`, `--tls-key=${tls.key}`] : []),
    ],
    // With TLS, servers call each other over HTTPS and trust the local CA for it.
    env: { P2P_CLUSTER_SECRET: secret, ...(tls ? { DENO_CERT: tls.ca } : {}) },
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
if (tls) {
  console.log(
    `HTTPS with a local CA: install ${tls.ca} on each device (once) so browsers trust the servers.`,
  );
}
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

async function openssl(args: string[]): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      console.error(
        "Error: --https needs openssl to make a certificate: install it (apt-get install openssl), " +
          "or start the servers yourself with --tls-cert/--tls-key",
      );
      Deno.exit(1);
    }
    throw err;
  }
  if (!out.success) {
    console.error(`Error: openssl ${args[0]} failed:\n${new TextDecoder().decode(out.stderr)}`);
    Deno.exit(1);
  }
}

/** This machine's own addresses, read from the local interfaces (no traffic is sent). */
function localAddresses(): string[] {
  try {
    return Deno.networkInterfaces()
      .map((i) => i.address.replace(/%.*$/, ""))
      .filter((a) => !a.startsWith("fe80:"));
  } catch {
    return []; // no --allow-sys: only loopback and --host
  }
}

/**
 * A certificate for this machine signed by a local CA in data/tls/ (the CA is made once and kept;
 * the server certificate is re-issued on each start, so a changed LAN address is covered).
 */
async function makeCertificate(
  extraHost: string,
): Promise<{ ca: string; cert: string; key: string }> {
  const dir = "data/tls";
  await Deno.mkdir(dir, { recursive: true });
  const ca = `${dir}/ca.pem`;
  const caKey = `${dir}/ca-key.pem`;
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const exists = await Deno.stat(caKey).then(() => true, () => false);
  if (!exists) {
    await openssl([
      "req",
      "-x509",
      ...ec,
      "-days",
      "3650",
      "-subj",
      "/CN=P2P-Chat local CA",
      "-keyout",
      caKey,
      "-out",
      ca,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    ]); // deno-fmt-ignore
    await Deno.chmod(caKey, 0o600);
  }
  const ips = new Set(["127.0.0.1", "::1", ...localAddresses()]);
  const names = new Set(["localhost"]);
  (/^[0-9.]+$|:/.test(extraHost) ? ips : names).add(extraHost);
  const san = [...[...names].map((n) => `DNS:${n}`), ...[...ips].map((a) => `IP:${a}`)].join(",");
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
  );
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  await openssl([
    "req",
    ...ec,
    "-subj",
    "/CN=P2P-Chat server",
    "-keyout",
    key,
    "-out",
    `${dir}/server.csr`,
  ]);
  // 825 days: the longest validity Apple devices accept for a server certificate.
  await openssl([
    "x509",
    "-req",
    "-in",
    `${dir}/server.csr`,
    "-CA",
    ca,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-days",
    "825",
    "-extfile",
    `${dir}/server.ext`,
    "-out",
    cert,
  ]); // deno-fmt-ignore
  await Deno.chmod(key, 0o600);
  console.log(`Certificate for ${san.replaceAll(",", ", ")} in ${cert} (CA: ${ca}).`);
  return { ca, cert, key };
}
