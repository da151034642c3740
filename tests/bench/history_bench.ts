/**
 * A long local history in a real browser (Chromium, three servers): alice's history with bob
 * holds 100, then 10,000, then 100,000 messages (made through the page's test hook). For each
 * size it measures what alice notices:
 * - open: from reloading the page (the session resumes) until bob shows in the contact list;
 * - chat open: from clicking bob until the newest message shows;
 * - send to channel: from pressing send until the message leaves the "sending" state (it was
 *   handed to the data channel; median of 9);
 * - burst: bob sends 50 messages at once; until alice shows the last one;
 * - older: pressing "show older messages" until the older page shows (median of 3);
 * - search: from a query in the search box until its result shows (median of 3 queries, each a
 *   word common to every seeded message and a rare number);
 * - longest task: the longest main-thread task (`longtask` entries of a PerformanceObserver in
 *   the page) from the contact list showing until the end: opening the chat, sending, receiving
 *   the burst, paging older, searching (typed key by key);
 * - heap: the page's JS heap after a garbage collection (CDP `Runtime.getHeapUsage`, plus the
 *   array buffers outside it — sql.js's WebAssembly memory — where Chromium reports them).
 * - file: a 5 MB file picked in alice's chat (100 messages of history) until bob's page holds it
 *   verified (`file_5mb_ms`).
 * As root it runs inside a private network namespace. Progress goes to stderr; stdout has a
 * table of the figures at every size, then, as the last line, one JSON object.
 * With P2P_BENCH_PROFILE=1 it prints where the page spent its time during each size's chatting.
 * Usage: deno task bench:history
 */
import type { Page } from "puppeteer-core";
import { reexecInNamespace } from "../support/netns.ts";
import { openChat, sendMessage, waitForChannel, waitForContact } from "../support/chat_page.ts";
import { assertClientBuilt, withAliceAndBob } from "../support/two_users.ts";
import { attachFile, randomBytes, waitForTransfer } from "../support/files_page.ts";

const code = await reexecInNamespace(import.meta.url, Deno.args);
if (code !== undefined) Deno.exit(code);

const log = (msg: string) => console.error(`[bench:history] ${msg}`);

interface Hook {
  seedHistory(peer: string, n: number, prefix: string): Promise<number>;
  messages(peer: string): Promise<unknown[]>;
  send(text: string): Promise<void>;
}

async function seed(page: Page, n: number, prefix: string): Promise<void> {
  const added = await page.evaluate(
    (count, p) => (globalThis as unknown as { p2pchat: Hook }).p2pchat.seedHistory("bob", count, p),
    n,
    prefix,
  );
  if (added !== n) throw new Error(`Seeded ${added} of ${n} messages`);
}

function storedCount(page: Page): Promise<number> {
  return page.evaluate(async () =>
    (await (globalThis as unknown as { p2pchat: Hook }).p2pchat.messages("bob")).length
  );
}

/** Starts recording main-thread long tasks (from now on) in the page. */
function recordLongTasks(page: Page): Promise<void> {
  return page.evaluate(() => {
    const w = globalThis as unknown as LongTaskLog;
    w.longTasks = [];
    w.benchPhases = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.longTasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask" });
  });
}

interface LongTaskLog {
  /** Start time and duration of each long task. */
  longTasks: [number, number][];
  /** Name and start time of each phase of the bench. */
  benchPhases: [string, number][];
}

/** Marks the start of a phase (for the longest task of each phase, on stderr). */
function phase(page: Page, name: string): Promise<void> {
  return page.evaluate((n) => {
    (globalThis as unknown as LongTaskLog).benchPhases.push([n, performance.now()]);
  }, name);
}

/** The longest task recorded, and (for stderr) the longest of each phase. */
async function longestTask(page: Page): Promise<number> {
  const { longTasks, benchPhases } = await page.evaluate(() => {
    const w = globalThis as unknown as LongTaskLog;
    return { longTasks: w.longTasks, benchPhases: w.benchPhases };
  });
  const byPhase = new Map<string, number[]>();
  for (const [at, ms] of longTasks) {
    const name = benchPhases.findLast(([, t]) => t <= at)?.[0] ?? "(before)";
    byPhase.set(name, [...(byPhase.get(name) ?? []), Math.round(ms)]);
  }
  for (const [name, tasks] of byPhase) log(`  long tasks while ${name}: ${tasks.join(", ")} ms`);
  return Math.max(0, ...longTasks.map(([, ms]) => ms));
}

/** Resolves once `text` shows in the open conversation (checked at every frame). */
function whenShown(page: Page, text: string, attr?: [string, string]): Promise<void> {
  return page.waitForFunction(
    (t, a) =>
      [...document.querySelectorAll('[data-testid="message"]')].some((el) =>
        el.querySelector(".text")?.textContent === t && (!a || el.getAttribute(a[0]) === a[1])
      ),
    { timeout: 120_000, polling: "raf" },
    text,
    attr ?? null,
  ).then(() => {});
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

/** Bob sends `n` messages at once; time until alice shows the last one. */
async function timedBurst(alice: Page, bob: Page, size: number, n: number): Promise<number> {
  const last = `burst ${size} ${n - 1}`;
  const start = performance.now();
  const shown = whenShown(alice, last);
  await bob.evaluate(
    async (count, s) => {
      const hook = (globalThis as unknown as { p2pchat: Hook }).p2pchat;
      const sends: Promise<void>[] = [];
      for (let i = 0; i < count; i++) sends.push(hook.send(`burst ${s} ${i}`));
      await Promise.all(sends);
    },
    n,
    size,
  );
  await shown;
  return performance.now() - start;
}

/** Presses "show older messages"; time until the older page shows (the first shown changes). */
function timedOlder(page: Page): Promise<number> {
  return page.evaluate(() =>
    new Promise<number>((resolve, reject) => {
      const first = () =>
        document.querySelector('[data-testid="message"]')?.getAttribute("data-id");
      const before = first();
      const button = document.querySelector('[data-testid="show-older"]') as HTMLButtonElement;
      if (!button) return reject(new Error("No 'show older messages' button"));
      const start = performance.now();
      button.click();
      const check = () => {
        if (first() !== before) return resolve(performance.now() - start);
        if (performance.now() - start > 60_000) return reject(new Error("No older page showed"));
        requestAnimationFrame(check);
      };
      check();
    })
  );
}

/** Puts `query` in the search box at once; time until the hit `id` shows, then clears it. */
async function timedSearch(page: Page, query: string, id: string): Promise<number> {
  const ms = await page.evaluate(
    (q, want) =>
      new Promise<number>((resolve, reject) => {
        const input = document.querySelector('[data-testid="search-input"]') as HTMLInputElement;
        const start = performance.now();
        input.value = q;
        input.dispatchEvent(new Event("input", { bubbles: true }));
        const check = () => {
          if (document.querySelector(`[data-testid="search-hit"][data-id="${want}"]`)) {
            return resolve(performance.now() - start);
          }
          if (performance.now() - start > 60_000) {
            return reject(new Error(`"${q}" found no ${want}`));
          }
          requestAnimationFrame(check);
        };
        check();
      }),
    query,
    id,
  );
  await clearSearch(page);
  return ms;
}

async function clearSearch(page: Page): Promise<void> {
  await page.evaluate(() => {
    const input = document.querySelector('[data-testid="search-input"]') as HTMLInputElement;
    input.value = "";
    input.dispatchEvent(new Event("input", { bubbles: true }));
  });
  await page.waitForFunction(() => !document.querySelector('[data-testid="search-results"]'));
}

/** The page's heap in MB after a garbage collection. */
async function heapMb(page: Page): Promise<number> {
  const cdp = await page.createCDPSession();
  try {
    await cdp.send("HeapProfiler.collectGarbage");
    const usage = await cdp.send("Runtime.getHeapUsage") as {
      usedSize: number;
      backingStorageSize?: number;
    };
    log(`  heap: ${JSON.stringify(usage)}`);
    return (usage.usedSize + (usage.backingStorageSize ?? 0)) / 2 ** 20;
  } finally {
    await cdp.detach();
  }
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  }[];
  samples?: number[];
  timeDeltas?: number[];
}

/** With P2P_BENCH_PROFILE=1: the functions where the page spent most time. */
function printProfile(profile: CpuProfile): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  (profile.samples ?? []).forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const name = `${f.functionName || "(anonymous)"} ${
      f.url.split("/").pop()
    }:${f.lineNumber}:${f.columnNumber}`;
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas?.[i] ?? 0) / 1000);
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
  for (const [name, ms] of top) log(`  ${ms.toFixed(1)} ms self  ${name}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

interface Figures {
  size: number;
  openMs: number;
  openChatMs: number;
  sendToChannelMs: number;
  burstMs: number;
  olderMs: number;
  searchMs: number;
  longestTaskMs: number;
  heapMb: number;
}

/** A seeded message's search words: its prefix (in every seeded message) and its number. */
interface SearchTarget {
  query: string;
  id: string;
}

async function measure(
  alice: Page,
  bob: Page,
  size: number,
  newest: string,
  targets: SearchTarget[],
): Promise<Figures> {
  const start = performance.now();
  await alice.reload({ waitUntil: "load" });
  await waitForContact(alice, "bob", true);
  const openMs = performance.now() - start;
  await recordLongTasks(alice);
  const profiling = Deno.env.get("P2P_BENCH_PROFILE") === "1";
  const cdp = profiling ? await alice.createCDPSession() : null;
  if (cdp) await cdp.send("Profiler.enable").then(() => cdp.send("Profiler.start"));
  await phase(alice, "opening the chat");
  const chatStart = performance.now();
  await openChat(alice, "bob");
  await whenShown(alice, newest);
  const openChatMs = performance.now() - chatStart;
  await phase(alice, "sending");
  const sends: number[] = [];
  for (let i = 0; i < 9; i++) sends.push(await timedSend(alice, `timed ${size} ${i}`));
  await phase(alice, "receiving a burst");
  const burstMs = await timedBurst(alice, bob, size, 50);
  await phase(alice, "paging older");
  const older: number[] = [];
  // At 100 messages every one is shown already: no older page.
  for (let i = 0; i < 3; i++) {
    const hasOlder = await alice.$('[data-testid="show-older"]');
    if (hasOlder) older.push(await timedOlder(alice));
  }
  await phase(alice, "searching");
  const searches: number[] = [];
  for (const t of targets) searches.push(await timedSearch(alice, t.query, t.id));
  // As a person types: one search per key.
  await phase(alice, "typing a search");
  await alice.type('[data-testid="search-input"]', targets[0]!.query);
  await alice.waitForSelector(`[data-testid="search-hit"][data-id="${targets[0]!.id}"]`);
  await clearSearch(alice);
  if (cdp) printProfile((await cdp.send("Profiler.stop")).profile);
  const figures: Figures = {
    size,
    openMs: Math.round(openMs),
    openChatMs: Math.round(openChatMs),
    sendToChannelMs: Math.round(median(sends)),
    burstMs: Math.round(burstMs),
    olderMs: older.length ? Math.round(median(older)) : NaN,
    searchMs: Math.round(median(searches)),
    longestTaskMs: Math.round(await longestTask(alice)),
    heapMb: Math.round(await heapMb(alice) * 10) / 10,
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

/** Seeds alice's history with bob up to `size` messages (the last one sent live). */
async function grow(alice: Page, bob: Page, size: number, prefix: string): Promise<SearchTarget[]> {
  const have = await storedCount(alice);
  const n = size - have - 1;
  log(`seeding ${n} messages (history of ${size})`);
  await seed(alice, n, prefix);
  const newest = `newest of ${size}`;
  await sendMessage(alice, newest);
  await whenShown(bob, newest);
  // A rare number (a few messages) and, with it, the word every seeded message of this size has.
  const pick = (i: number) => ({
    query: `${prefix} ${i}`,
    id: `seed-${prefix}-${String(i).padStart(7, "0")}`,
  });
  return [pick(Math.floor(n / 2)), pick(Math.floor(n / 3)), pick(n - 7)];
}

await assertClientBuilt();
const results: Figures[] = [];
let fileMs = NaN;
await withAliceAndBob(async ({ alice, bob }) => {
  for (const [size, prefix] of [[100, "s"], [10_000, "m"], [100_000, "l"]] as const) {
    const targets = await grow(alice, bob, size, prefix);
    results.push(await measure(alice, bob, size, `newest of ${size}`, targets));
    if (size === 100) fileMs = await timedFile(alice, bob);
  }
});

const columns: [string, keyof Figures][] = [
  ["messages", "size"],
  ["open ms", "openMs"],
  ["open chat ms", "openChatMs"],
  ["send to channel ms", "sendToChannelMs"],
  ["burst of 50 ms", "burstMs"],
  ["older page ms", "olderMs"],
  ["search ms", "searchMs"],
  ["longest task ms", "longestTaskMs"],
  ["heap MB", "heapMb"],
];
for (const [title, key] of columns) {
  console.log(title.padEnd(20) + results.map((r) => String(r[key]).padStart(10)).join(""));
}
const at = (size: number) => results.find((r) => r.size === size)!;
const [small, large] = [at(100), at(100_000)];
const summary: Record<string, number> = {
  open_100k_ms: large.openMs,
  open_chat_100k_ms: large.openChatMs,
  append_ratio_100k_vs_100: Math.round(large.sendToChannelMs / small.sendToChannelMs * 100) / 100,
  send_to_channel_100k_ms: large.sendToChannelMs,
  longest_task_100k_ms: large.longestTaskMs,
  search_100k_ms: large.searchMs,
  heap_100k_mb: large.heapMb,
};
summary.file_5mb_ms = Math.round(fileMs);
console.log(JSON.stringify(summary));
