/**
 * Cost of a failed login on a ring of three real servers: a wrong password for a known name
 * versus any password for an unknown name, interleaved, from one client on the first server
 * (each name's counters and account live wherever the ring puts them, as in production). Both
 * should cost one account read from the ring, one bcrypt comparison at the server's cost and the
 * same limit charges; this reports the medians and their ratio. Likewise the salt served before
 * login (`login_params`): the account's for a known name, a fake one of the same form for an
 * unknown name, both after one account read. The login limits are raised so that no attempt is
 * refused. Progress goes to stderr; the last stdout line is one JSON object.
 * Usage: deno task bench:login [--rounds N]
 */
import { parseArgs } from "node:util";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "30" } },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 5 || rounds > 1000) {
  console.error(`Error: --rounds must be a whole number from 5 to 1000, got "${values.rounds}"`);
  Deno.exit(2);
}

const log = (msg: string) => console.error(`[bench:login] ${msg}`);
const round1 = (x: number) => Math.round(x * 10) / 10;
function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** How long one failed login takes, from the client's request to its answer, in ms. */
async function failedLoginMs(client: TestClient, username: string): Promise<number> {
  const started = performance.now();
  const r = await client.request({ type: "login", username, secret: "wrong-password-000" });
  const ms = performance.now() - started;
  if (r.type !== "error" || r.code !== "wrong_credentials") {
    throw new Error(`login ${username}: expected wrong_credentials, got ${JSON.stringify(r)}`);
  }
  return ms;
}

/** How long one `login_params` takes, in ms; checks the salt's form. */
async function saltMs(client: TestClient, username: string): Promise<number> {
  const started = performance.now();
  const r = await client.request({ type: "login_params", username });
  const ms = performance.now() - started;
  if (r.type !== "login_params" || !/^[A-Za-z0-9_-]{22}$/.test(r.salt)) {
    throw new Error(`login_params ${username}: expected a 16-byte salt, got ${JSON.stringify(r)}`);
  }
  return ms;
}

const servers: ServerProcess[] = [];
const clients: TestClient[] = [];
try {
  log("starting 3 servers");
  servers.push(
    ...await startCluster(3, {
      env: {
        P2P_LOGIN_FAILURES_PER_MINUTE: "10000",
        P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "100000",
        P2P_REGISTRATIONS_PER_MINUTE: "100000",
      },
    }),
  );
  const client = await TestClient.connect(servers[0]!.url);
  clients.push(client);
  const warmup = 5;
  const known = Array.from({ length: rounds + warmup }, (_, i) => `known${i}`);
  const unknown = Array.from({ length: rounds + warmup }, (_, i) => `unknown${i}`);
  log(`registering ${known.length} accounts`);
  for (const username of known) {
    const r = await client.request({
      type: "register",
      username,
      secret: "right-password-000",
      ...TEST_ACCOUNT,
    });
    if (r.type !== "ok") throw new Error(`register ${username}: ${JSON.stringify(r)}`);
  }
  log(`${warmup} warm-up rounds, then ${rounds} rounds of one known and one unknown name`);
  const knownMs: number[] = [];
  const unknownMs: number[] = [];
  for (let i = 0; i < rounds + warmup; i++) {
    // Alternate which goes first, so neither always follows the other.
    const pair = i % 2 === 0
      ? [await failedLoginMs(client, known[i]!), await failedLoginMs(client, unknown[i]!)]
      : [
        await failedLoginMs(client, unknown[i]!),
        await failedLoginMs(client, known[i]!),
      ].reverse();
    if (i < warmup) continue;
    knownMs.push(pair[0]!);
    unknownMs.push(pair[1]!);
  }
  const knownSaltMs: number[] = [];
  const unknownSaltMs: number[] = [];
  for (let i = 0; i < rounds + warmup; i++) {
    const [k, u] = i % 2 === 0
      ? [await saltMs(client, known[i]!), await saltMs(client, unknown[i]!)]
      : [await saltMs(client, unknown[i]!), await saltMs(client, known[i]!)].reverse();
    if (i < warmup) continue;
    knownSaltMs.push(k!);
    unknownSaltMs.push(u!);
  }
  for (const list of [knownMs, unknownMs, knownSaltMs, unknownSaltMs]) list.sort((a, b) => a - b);
  const knownSaltP50 = percentile(knownSaltMs, 0.5);
  const unknownSaltP50 = percentile(unknownSaltMs, 0.5);
  const knownP50 = percentile(knownMs, 0.5);
  const unknownP50 = percentile(unknownMs, 0.5);
  console.log(JSON.stringify({
    known_wrong_password_p50_ms: round1(knownP50),
    unknown_name_p50_ms: round1(unknownP50),
    known_wrong_password_p90_ms: round1(percentile(knownMs, 0.9)),
    unknown_name_p90_ms: round1(percentile(unknownMs, 0.9)),
    unknown_over_known_p50: Math.round((unknownP50 / knownP50) * 1000) / 1000,
    salt_known_p50_ms: round1(knownSaltP50),
    salt_unknown_p50_ms: round1(unknownSaltP50),
    salt_unknown_over_known_p50: Math.round((unknownSaltP50 / knownSaltP50) * 1000) / 1000,
    rounds,
  }));
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.stop()));
}
