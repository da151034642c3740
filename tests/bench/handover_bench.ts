/**
 * History hand-over in real browsers (three Chromium processes, three servers): alice's old
 * device holds 2,000, then 100,000 messages (made through the page's test hook), and she logs in
 * on a new device. Measures, for each size, the time from pressing "Log in" on the new device
 * until it shows the hand-over done; for 100,000 the rate in messages/s (from the login shown to
 * done) and how long after the login the newest message shows in the open conversation. As root
 * it runs inside a private network namespace. Progress goes to stderr; the last stdout line is
 * one JSON object.
 * Usage: deno task bench:handover
 */
import { reexecInNamespace } from "../support/netns.ts";
import { waitForHandover } from "../support/chat_page.ts";
import {
  historyDigest,
  loginNewAlice,
  seedAliceHistory,
  startHandoverWorld,
} from "../support/handover_world.ts";
import { assertClientBuilt } from "../support/two_users.ts";

const code = await reexecInNamespace(import.meta.url, Deno.args);
if (code !== undefined) Deno.exit(code);

const log = (msg: string) => console.error(`[bench:handover] ${msg}`);

/** One hand-over of `n` seeded messages plus one live one; the figures of the new device. */
async function handover(n: number) {
  const world = await startHandoverWorld();
  try {
    const newest = `newest of ${n}`;
    log(`seeding ${n} messages`);
    await seedAliceHistory(world, n, `m${n}`, newest);
    const before = await historyDigest(world.oldAlice);
    log(`logging in on the new device`);
    const login = await loginNewAlice(world, newest);
    await waitForHandover(login.page, "receiving", "done", 300_000);
    const doneAt = performance.now();
    const after = await historyDigest(login.page);
    if (after.digest !== before.digest || after.count !== n + 1) {
      throw new Error(`The new device has ${after.count} rows, not the old one's ${before.count}`);
    }
    const figures = {
      totalMs: doneAt - login.startedAt,
      transferMs: doneAt - login.loggedInAt,
      firstVisibleMs: login.firstVisibleMs,
      rows: after.count,
    };
    log(JSON.stringify(figures));
    return figures;
  } finally {
    await world.close();
  }
}

await assertClientBuilt();
const small = await handover(2_000);
const large = await handover(100_000);
console.log(JSON.stringify({
  handover_2k_ms: Math.round(small.totalMs),
  handover_100k_ms: Math.round(large.totalMs),
  msgs_per_s: Math.round(large.rows / (large.transferMs / 1000)),
  first_visible_ms: Math.round(large.firstVisibleMs),
  note: "ms from pressing Log in on the new device to it showing the hand-over done (login " +
    "included); msgs_per_s and first_visible_ms count from the login shown",
}));
