/**
 * NAT traversal figures in the lab of tests/support/nat_lab.ts (two nftables NATs, the ring and
 * coturn on a public namespace, Chromium behind each NAT): how long the data channel takes to
 * open through STUN (ordinary NAT) and through TURN (a NAT giving every flow a new port), the
 * round trip over the TURN path, and how long the first message takes through the servers when
 * TURN is down too (sent the moment the chat opens). Each open and first message is measured
 * on a fresh pair of users, `--pairs` times; figures are medians. Needs root, nftables, coturn.
 * Progress goes to stderr; the last stdout line is one JSON object.
 * Usage: deno task bench:nat [--pairs N] [--rounds N]
 */
import { parseArgs } from "node:util";
import type { Page } from "puppeteer-core";
import { pingRoundTrips } from "../support/chat_page.ts";
import { type LabBrowser, NatLab, registerPair } from "../support/nat_lab.ts";
import { canUseNetns } from "../support/netns.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    pairs: { type: "string", default: "3" },
    rounds: { type: "string", default: "50" },
  },
});
const pairs = Number(values.pairs);
const rounds = Number(values.rounds);
if (!Number.isInteger(pairs) || pairs < 1 || pairs > 20) {
  console.error(`Error: --pairs must be a whole number from 1 to 20, got "${values.pairs}"`);
  Deno.exit(2);
}
if (!Number.isInteger(rounds) || rounds < 10 || rounds > 10_000) {
  console.error(`Error: --rounds must be a whole number from 10 to 10000, got "${values.rounds}"`);
  Deno.exit(2);
}
const netns = await canUseNetns();
if (!netns.ok) {
  console.error(`Error: the NAT lab needs network namespaces: ${netns.why}`);
  Deno.exit(1);
}

const log = (msg: string) => console.error(`[bench:nat] ${msg}`);
const round1 = (x: number) => Math.round(x * 10) / 10;
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

type Hooked = { p2pchat: { openChat(p: string): void; dcOpenedAt: Record<string, number> } };

/** Fails the bench unless the page's channel to `peer` runs on the expected kind of path. */
async function expectPath(page: Page, peer: string, relay: boolean): Promise<void> {
  const pair = await page.evaluate(
    (p) =>
      (globalThis as unknown as {
        p2pchat: { selectedCandidates(p: string): Promise<{ local: string; remote: string }> };
      }).p2pchat.selectedCandidates(p),
    peer,
  );
  const isRelay = pair !== null && (pair.local === "relay" || pair.remote === "relay");
  log(`selected candidate pair: ${JSON.stringify(pair)}`);
  if (pair === null || isRelay !== relay) {
    throw new Error(`Expected a ${relay ? "TURN" : "STUN"} path, got ${JSON.stringify(pair)}`);
  }
}

let pairNo = 0;
/** A fresh pair of users, alice-N in the first browser and bob-N in the second. */
async function freshPair(one: LabBrowser, two: LabBrowser): Promise<[Page, Page, string, string]> {
  pairNo++;
  const [left, right] = [`alice${pairNo}`, `bob${pairNo}`];
  const [a, b] = await registerPair(one, two, left, right);
  return [a, b, left, right];
}

/** ms from opening the chat (which starts the channel) to the channel being open. */
async function channelOpenMs(alice: Page, bob: string): Promise<number> {
  const started = await alice.evaluate((peer) => {
    const t = performance.now();
    (globalThis as unknown as Hooked).p2pchat.openChat(peer);
    return t;
  }, bob);
  await alice.waitForFunction(
    (peer) => (globalThis as unknown as Hooked).p2pchat.dcOpenedAt[peer] !== undefined,
    { timeout: 60_000, polling: 20 },
    bob,
  );
  const opened = await alice.evaluate(
    (peer) => (globalThis as unknown as Hooked).p2pchat.dcOpenedAt[peer]!,
    bob,
  );
  return opened - started;
}

/** ms (wall clock, one machine) from sending right after opening the chat to bob storing it. */
async function firstMessageMs(alice: Page, bob: Page, aliceName: string, bobName: string) {
  const text = `first to ${bobName}`;
  const arrived = bob.evaluate(
    (from, want) =>
      new Promise<number>((resolve) => {
        const hook = (globalThis as unknown as {
          p2pchat: { messages(p: string): Promise<Array<{ text: string }>> };
        }).p2pchat;
        const timer = setInterval(async () => {
          if ((await hook.messages(from)).some((m) => m.text === want)) {
            clearInterval(timer);
            resolve(Date.now());
          }
        }, 5);
      }),
    aliceName,
    text,
  );
  const sent = await alice.evaluate(
    async (peer, t) => {
      const hook = (globalThis as unknown as {
        p2pchat: { openChat(p: string): void; send(t: string): Promise<void> };
      }).p2pchat;
      hook.openChat(peer);
      const at = Date.now();
      await hook.send(t);
      return at;
    },
    bobName,
    text,
  );
  return await arrived - sent;
}

const lab = await NatLab.create();
try {
  const one = await lab.openBrowser("a", "chromium");
  const two = await lab.openBrowser("b", "chromium");

  const stun: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const [a, b, , bobName] = await freshPair(one, two);
    stun.push(await channelOpenMs(a, bobName));
    log(`STUN channel open: ${round1(stun.at(-1)!)} ms`);
    // ICE may start on a relay pair and move to the direct one: only the open time is measured.
    if (i === 0) {
      await a.waitForFunction(
        async (p) => {
          const pair = await (globalThis as unknown as {
            p2pchat: {
              selectedCandidates(p: string): Promise<{ local: string; remote: string } | null>;
            };
          }).p2pchat.selectedCandidates(p);
          return pair !== null && pair.local !== "relay" && pair.remote !== "relay";
        },
        { timeout: 30_000, polling: 200 },
        bobName,
      ).then(() => expectPath(a, bobName, false));
    }
    await Promise.all([a.close(), b.close()]);
  }

  await lab.setNat("fully-random");
  const turn: number[] = [];
  let rtts: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const [a, b, , bobName] = await freshPair(one, two);
    turn.push(await channelOpenMs(a, bobName));
    log(`TURN channel open: ${round1(turn.at(-1)!)} ms`);
    if (i === 0) {
      await expectPath(a, bobName, true);
      rtts = (await pingRoundTrips(a, bobName, rounds, "p2p")).sort((x, y) => x - y);
      log(`TURN round trips: ${rounds}, p50 ${round1(median(rtts))} ms`);
    }
    await Promise.all([a.close(), b.close()]);
  }

  await lab.stopTurn();
  const fallback: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const [a, b, aliceName, bobName] = await freshPair(one, two);
    fallback.push(await firstMessageMs(a, b, aliceName, bobName));
    log(`first message through the servers: ${fallback.at(-1)} ms`);
    await Promise.all([a.close(), b.close()]);
  }

  console.log(JSON.stringify({
    stun_dc_open_ms: round1(median(stun)),
    turn_dc_open_ms: round1(median(turn)),
    turn_rtt_p50_ms: round1(median(rtts)),
    fallback_first_message_ms: median(fallback),
  }));
} finally {
  await lab.destroy();
}
