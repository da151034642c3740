/**
 * A long local history in a real browser (Chromium, three servers): alice's history with bob
 * holds 100, then 100,000 messages (made through the page's test hook). For each size it
 * measures what alice notices:
 * - cold open: from reloading the page (the session resumes) until bob shows in the contact list;
 * - chat open: from clicking bob until the newest message shows;
 * - send: from pressing send until the message leaves the "sending" state (median of 5), and the
 *   longest main-thread task (the page frozen) seen during those sends.
 * - file: a 5 MB file picked in alice's chat (100 messages of history) until bob's page holds it
 *   verified (`file_5mb_ms`, issue 15).
 * As root it runs inside a private network namespace. Progress goes to stderr; the last stdout
 * line is one JSON object.
 * Usage: deno task bench:history
 */
import type { Page } from "puppeteer-core";
import { reexecInNamespace } from "../support/netns.ts";
import {
  openChat,
  sendMessage,
  waitForChannel,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { assertClientBuilt, withAliceAndBob } from "../support/two_users.ts";
import { attachFile, randomBytes, waitForTransfer } from "../support/files_page.ts";

const code = await reexecInNamespace(import.meta.url, Deno.args);
if (code !== undefined) Deno.exit(code);

const log = (msg: string) => console.error(`[bench:history] ${msg}`);

interface Hook {
  seedHistory(peer: string, n: number, prefix: string): Promise<number>;
}

async function seed(page: Page, n: number, prefix: string): Promise<void> {
  const added = await page.evaluate(
    (count, p) => (globalThis as unknown as { p2pchat: Hook }).p2pchat.seedHistory("bob", count, p),
    n,
    prefix,
  );
  if (added !== n) throw new Error(`Seeded ${added} of ${n} messages`);
}

/** Starts recording main-thread long tasks (from now on) in the page. */
function recordLongTasks(page: Page): Promise<void> {
  return page.evaluate(() => {
    const w = globalThis as unknown as { longTasks: number[] };
    w.longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.longTasks.push(e.duration);
    }).observe({ type: "longtask" });
  });
}

function longestTask(page: Page): Promise<number> {
  return page.evaluate(() =>
    Math.max(0, ...(globalThis as unknown as { longTasks: number[] }).longTasks)
  );
}

/** Time from pressing send until the message shows as sent or delivered. */
async function timedSend(page: Page, text: string): Promise<number> {
  await page.type('[data-testid="chat-input"]', text);
  return await page.evaluate((t) =>
    new Promise<number>((resolve, reject) => {
      const start = performance.now();
      const deadline = start + 60_000;
      (document.querySelector('[data-testid="send"]') as HTMLButtonElement).click();
      const check = () => {
        const row = [...document.querySelectorAll('[data-testid="message"]')].find((el) =>
          el.querySelector(".text")?.textContent === t
        );
        const status = row?.getAttribute("data-status");
        if (status === "sent" || status === "delivered") return resolve(performance.now() - start);
        if (performance.now() > deadline) return reject(new Error(`"${t}" stayed ${status}`));
        requestAnimationFrame(check);
      };
      check();
    }), text);
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples?: number[];
  timeDeltas?: number[];
}

/** With P2P_BENCH_PROFILE=1: the functions where the page spent most time during the sends. */
function printProfile(profile: CpuProfile): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  (profile.samples ?? []).forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const name = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber}`;
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas?.[i] ?? 0) / 1000);
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
  for (const [name, ms] of top) log(`  ${ms.toFixed(1)} ms self  ${name}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function measure(page: Page, size: number, newest: string) {
  const start = performance.now();
  await page.reload({ waitUntil: "load" });
  await waitForContact(page, "bob", true);
  const coldOpenMs = performance.now() - start;
  const chatStart = performance.now();
  await openChat(page, "bob");
  await page.waitForFunction(
    (t) =>
      [...document.querySelectorAll('[data-testid="message"]')].some((el) =>
        el.querySelector(".text")?.textContent === t
      ),
    { timeout: 120_000 },
    newest,
  );
  const chatOpenMs = performance.now() - chatStart;
  await recordLongTasks(page);
  const profiling = Deno.env.get("P2P_BENCH_PROFILE") === "1";
  const cdp = profiling ? await page.createCDPSession() : null;
  if (cdp) await cdp.send("Profiler.enable").then(() => cdp.send("Profiler.start"));
  const sends: number[] = [];
  for (let i = 0; i < 5; i++) sends.push(await timedSend(page, `timed ${size} ${i}`));
  if (cdp) printProfile((await cdp.send("Profiler.stop")).profile);
  const figures = {
    size,
    coldOpenMs: Math.round(coldOpenMs),
    chatOpenMs: Math.round(chatOpenMs),
    sendMs: Math.round(median(sends)),
    sendLongestTaskMs: Math.round(await longestTask(page)),
  };
  log(JSON.stringify(figures));
  return figures;
}

/** From picking a 5 MB file in alice's chat until bob's page holds it verified, ms. */
async function timedFile(alice: Page, bob: Page): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-bench-" });
  try {
    await Deno.writeFile(`${dir}/bench.bin`, randomBytes(5 * 1024 * 1024));
    await waitForChannel(alice, "bob");
    const start = performance.now();
    await attachFile(alice, `${dir}/bench.bin`);
    await waitForTransfer(bob, "the 5 MB file at bob", (t) => t.status === "complete", 120_000);
    const ms = performance.now() - start;
    log(`5 MB file: ${Math.round(ms)} ms`);
    return ms;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

await assertClientBuilt();
let fileMs = NaN;
let small: Awaited<ReturnType<typeof measure>> | undefined;
let large: Awaited<ReturnType<typeof measure>> | undefined;
await withAliceAndBob(async ({ alice, bob }) => {
  log("seeding 100 messages");
  await seed(alice, 99, "s");
  await sendMessage(alice, "newest of 100");
  await waitForMessages(bob, ["newest of 100"]);
  small = await measure(alice, 100, "newest of 100");
  fileMs = await timedFile(alice, bob);
  log("seeding 100,000 messages");
  await seed(alice, 100_000 - 106, "l");
  await sendMessage(alice, "newest of 100000");
  await waitForContact(bob, "alice", true);
  large = await measure(alice, 100_000, "newest of 100000");
});
console.log(JSON.stringify({
  cold_open_100_ms: small!.coldOpenMs,
  cold_open_100k_ms: large!.coldOpenMs,
  chat_open_100k_ms: large!.chatOpenMs,
  send_100_ms: small!.sendMs,
  send_100k_ms: large!.sendMs,
  send_longest_task_100k_ms: large!.sendLongestTaskMs,
  file_5mb_ms: Math.round(fileMs),
}));
