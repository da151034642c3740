/**
 * Cost of the end-to-end crypto (DESIGN §4) where it runs: in Chromium, on `shared/crypto`
 * bundled with esbuild and served from a loopback `Deno.serve` with COOP/COEP headers (a
 * cross-origin isolated page, so `performance.now()` is not coarsened).
 *
 * - login: the client part (PBKDF2 600,000 + HKDF derivation with the account's random salt,
 *   then unwrapping both private keys) measured in the page, plus the server part (bcryptjs `compare` at cost 10 of the
 *   43-character auth secret) measured here in Deno; `login_p50_ms` is the sum of the two p50s.
 * - encrypt+sign: `seal` of a chat message (fresh AES-256-GCM key, two RSA-OAEP wraps, one
 *   RSA-PSS signature, 3072-bit keys).
 * - verify+decrypt: `openEnvelope` by the recipient (signature check, RSA-OAEP unwrap, AES-GCM).
 *
 * Progress goes to stderr; the last stdout line is one JSON object.
 * Usage: deno run -A tests/bench/crypto_bench.ts [--messages N] [--logins N]
 */
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";
import { compare, hash } from "bcryptjs";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "50" },
    logins: { type: "string", default: "15" },
  },
});
const messages = Number(values.messages);
const logins = Number(values.logins);
for (const [name, n, max] of [["messages", messages, 10_000], ["logins", logins, 1_000]] as const) {
  if (!Number.isInteger(n) || n < 3 || n > max) {
    console.error(`Error: --${name} must be a whole number from 3 to ${max}, got ${n}`);
    Deno.exit(2);
  }
}

const ROOT = new URL("../../", import.meta.url).pathname;
const BCRYPT_COST = 10;
const log = (msg: string) => console.error(`[bench:crypto] ${msg}`);

function p(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** What the page reports back. */
interface PageResult {
  crossOriginIsolated: boolean;
  userAgent: string;
  derive: number[];
  unwrap: number[];
  login: number[];
  seal: number[];
  open: number[];
  envelopeBytes: number;
}

// The page's script: times the primitives through the bundle's exports (`/crypto.js`).
const PAGE_SCRIPT = `
import * as c from "/crypto.js";
const t = () => performance.now();
globalThis.runBench = async (logins, messages) => {
  const progress = (msg) => console.log("progress: " + msg);
  progress("generating 2 x 2 RSA-3072 key pairs");
  const [alice, bob] = await Promise.all([c.generateUserKeys(), c.generateUserKeys()]);
  const salt = c.newSalt();
  const creds = await c.deriveCredentials("correct horse battery staple", salt);
  const wrapped = await Promise.all([
    c.wrapPrivateKey(alice.encryption.privateKey, creds.wrappingKey),
    c.wrapPrivateKey(alice.signing.privateKey, creds.wrappingKey),
  ]);
  const stored = JSON.parse(JSON.stringify(wrapped)).map((r) => c.parseWrappedPrivateKey(r));
  const r = { crossOriginIsolated, userAgent: navigator.userAgent, derive: [], unwrap: [],
    login: [], seal: [], open: [], envelopeBytes: 0 };
  for (let i = 0; i < logins; i++) {
    const t0 = t();
    const d = await c.deriveCredentials("correct horse battery staple", salt);
    const t1 = t();
    await Promise.all(stored.map((s) => c.unwrapPrivateKey(s, d.wrappingKey)));
    const t2 = t();
    r.derive.push(t1 - t0); r.unwrap.push(t2 - t1); r.login.push(t2 - t0);
    if ((i + 1) % 5 === 0) progress("logins " + (i + 1) + "/" + logins);
  }
  const text = "Hi bob! Are we still on for lunch tomorrow at noon? I can bring the slides.";
  for (let i = 0; i < messages; i++) {
    const msg = { id: "bench-msg-" + String(i).padStart(6, "0"), from: "alice", to: "bob",
      sentAt: Date.now(), text };
    const t0 = t();
    const env = await c.seal(msg, alice.signing.privateKey, bob.encryption.publicKey,
      alice.encryption.publicKey);
    const t1 = t();
    const wire = JSON.stringify(env);
    const t2 = t();
    const got = await c.openEnvelope(c.parseEnvelope(JSON.parse(wire)), bob.encryption.privateKey,
      alice.signing.publicKey);
    const t3 = t();
    if (got.text !== text) throw new Error("round trip mismatch");
    r.seal.push(t1 - t0); r.open.push(t3 - t2); r.envelopeBytes = wire.length;
    if ((i + 1) % 10 === 0) progress("messages " + (i + 1) + "/" + messages);
  }
  return r;
};
document.title = "ready";
`;

const HTML = `<!doctype html><meta charset="utf-8"><title>loading</title>
<script type="module" src="/bench.js"></script>`;

log("bundling shared/crypto with esbuild");
let bundle: string;
try {
  const out = await esbuild.build({
    entryPoints: [`${ROOT}shared/crypto/mod.ts`],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
  });
  bundle = out.outputFiles[0]!.text;
} finally {
  await esbuild.stop();
}

const ISOLATION_HEADERS = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};
const files: Record<string, [string, string]> = {
  "/": [HTML, "text/html; charset=utf-8"],
  "/bench.js": [PAGE_SCRIPT, "text/javascript; charset=utf-8"],
  "/crypto.js": [bundle, "text/javascript; charset=utf-8"],
};
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const file = files[new URL(req.url).pathname];
  if (!file) return new Response("not found", { status: 404, headers: ISOLATION_HEADERS });
  return new Response(file[0], { headers: { ...ISOLATION_HEADERS, "content-type": file[1] } });
});
const origin = `http://127.0.0.1:${server.addr.port}`;

let browser: TestBrowser | undefined;
let result: PageResult;
try {
  log(`launching Chromium; page at ${origin}`);
  browser = await launchBrowser();
  const page = await browser.browser.newPage();
  const errors: string[] = [];
  page.on("console", (msg) => {
    const text = msg.text();
    if (text.startsWith("progress: ")) log(`chromium: ${text.slice(10)}`);
    else if (msg.type() === "error") errors.push(text);
  });
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(origin + "/", { waitUntil: "load" });
  await page.waitForFunction(() => document.title === "ready", { timeout: 20_000 }).catch(() => {
    throw new Error(`The bench page did not load: ${errors.join("; ")}`);
  });
  page.setDefaultTimeout(600_000);
  result = await page.evaluate(
    (l, m) =>
      (globalThis as unknown as { runBench(l: number, m: number): Promise<PageResult> })
        .runBench(l, m),
    logins,
    messages,
  );
  if (!result.crossOriginIsolated) log("warning: the page is not cross-origin isolated");
} finally {
  await browser?.close();
  await server.shutdown();
}

log(`bcryptjs compare at cost ${BCRYPT_COST} in Deno (server side of login), ${logins} rounds`);
const authSecret = "x".repeat(43);
const stored = await hash(authSecret, BCRYPT_COST);
const bcrypt: number[] = [];
for (let i = 0; i < logins; i++) {
  const t0 = performance.now();
  const ok = await compare(authSecret, stored);
  bcrypt.push(performance.now() - t0);
  if (!ok) throw new Error("bcrypt compare failed");
}

const clientLogin = p(result.login, 0.5);
const bcryptP50 = p(bcrypt, 0.5);
const summary = {
  login_p50_ms: round3(clientLogin + bcryptP50),
  encrypt_sign_p50_ms: round3(p(result.seal, 0.5)),
  verify_decrypt_p50_ms: round3(p(result.open, 0.5)),
  login_client_p50_ms: round3(clientLogin),
  login_derive_p50_ms: round3(p(result.derive, 0.5)),
  login_unwrap_p50_ms: round3(p(result.unwrap, 0.5)),
  login_server_bcrypt_p50_ms: round3(bcryptP50),
  login_client_p95_ms: round3(p(result.login, 0.95)),
  encrypt_sign_p95_ms: round3(p(result.seal, 0.95)),
  verify_decrypt_p95_ms: round3(p(result.open, 0.95)),
  pbkdf2_iterations: 600_000,
  rsa_bits: 3072,
  bcrypt_cost: BCRYPT_COST,
  logins,
  messages,
  envelope_json_bytes: result.envelopeBytes,
  cross_origin_isolated: result.crossOriginIsolated,
  browser: result.userAgent.match(/(?:Headless)?Chrome\/[\d.]+/)?.[0] ?? result.userAgent,
};
console.log(JSON.stringify(summary));
