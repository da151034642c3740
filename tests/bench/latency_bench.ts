/**
 * Latency of the app's whole path between two Chromium processes connected to two different
 * servers: time from page load to an open data channel, and round trips of small messages over
 * the data channel versus relayed through both servers' WebSockets. As root it runs inside a
 * private network namespace. Progress goes to stderr; the last stdout line is one JSON object.
 * Usage: deno task bench:latency [--rounds N]
 */
import { parseArgs } from "node:util";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { reexecInNamespace } from "../support/netns.ts";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import {
  dcOpenedAt,
  isChannelOpen,
  openApp,
  openChat,
  pingRoundTrips,
  signIn,
  waitForContact,
} from "../support/chat_page.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "1000" } },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 10 || rounds > 100_000) {
  console.error(`Error: --rounds must be a whole number from 10 to 100000, got "${values.rounds}"`);
  Deno.exit(2);
}

const code = await reexecInNamespace(import.meta.url, Deno.args);
if (code !== undefined) Deno.exit(code);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}
const round3 = (x: number) => Math.round(x * 1000) / 1000;
const log = (msg: string) => console.error(`[bench:latency] ${msg}`);

const servers: ServerProcess[] = [];
const browsers: TestBrowser[] = [];
try {
  log("starting 3 servers");
  // A thousand back-to-back pings exceed the default 50 frames/s a browser may send.
  servers.push(...await startCluster(3, { env: { P2P_FRAME_RATE: "100000" } }));
  browsers.push(await launchBrowser(), await launchBrowser());
  const alice = await openApp(browsers[0]!.browser, servers[0]!.url);
  const bob = await openApp(browsers[1]!.browser, servers[1]!.url);
  log("registering alice (server 1) and bob (server 2)");
  await signIn(alice, "alice", "alice-password", true);
  await signIn(bob, "bob", "bob-password-1", true);
  await waitForContact(alice, "bob", true);

  // Measure from a fresh page load: reload alice, resume the session, open the chat.
  log("reloading alice's page and timing load → open data channel");
  await alice.reload({ waitUntil: "load" });
  await alice.waitForSelector('[data-testid="contact-bob"][data-online="true"]');
  await openChat(alice, "bob");
  const deadline = Date.now() + 20_000;
  while (!(await isChannelOpen(alice, "bob"))) {
    if (Date.now() > deadline) throw new Error("The data channel did not open within 20 s");
    await new Promise((r) => setTimeout(r, 5));
  }
  const dcOpen = (await dcOpenedAt(alice, "bob"))!;
  const isolated = await alice.evaluate(() => globalThis.crossOriginIsolated);

  log(`warming up, then ${rounds} round trips over the data channel`);
  await pingRoundTrips(alice, "bob", 50, "p2p");
  const dc = (await pingRoundTrips(alice, "bob", rounds, "p2p")).sort((a, b) => a - b);
  log(`${rounds} round trips relayed through both servers`);
  await pingRoundTrips(alice, "bob", 50, "relay");
  const ws = (await pingRoundTrips(alice, "bob", rounds, "relay")).sort((a, b) => a - b);

  console.log(JSON.stringify({
    dc_open_ms: round3(dcOpen),
    dc_rtt_p50_ms: round3(percentile(dc, 0.5)),
    dc_rtt_p99_ms: round3(percentile(dc, 0.99)),
    ws_rtt_p50_ms: round3(percentile(ws, 0.5)),
    ws_rtt_p99_ms: round3(percentile(ws, 0.99)),
    rounds,
    cross_origin_isolated: isolated,
  }));
} finally {
  await Promise.all(browsers.map((b) => b.close()));
  await Promise.all(servers.map((s) => s.stop()));
}
