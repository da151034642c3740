/**
 * A conversation longer than one page of the chat view (Chromium, real IndexedDB): the newest
 * page shows first, scrolling up reaches the very first message, a reader at the bottom follows
 * new messages while one who scrolled up stays where they are, and the history (kept as a
 * snapshot plus a row log) is whole after a reload; search finds the oldest message and opens
 * the chat there; unread messages show in the page title.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { openChat, sendMessage, waitForMessages } from "../support/chat_page.ts";
import { historyDigest } from "../support/handover_world.ts";
import { withAliceAndBob } from "../support/two_users.ts";

const SEEDED = 2_600; // more than five pages of 500, and past the snapshot threshold

function seed(page: Page, n: number, prefix: string): Promise<number> {
  return page.evaluate(
    (count, p) =>
      (globalThis as unknown as {
        p2pchat: { seedHistory(peer: string, n: number, prefix: string): Promise<number> };
      }).p2pchat.seedHistory("bob", count, p),
    n,
    prefix,
  );
}

const shownCount = (page: Page) => page.$$eval('[data-testid="message"]', (els) => els.length);

const shownTexts = (page: Page) =>
  page.$$eval('[data-testid="message"] .text', (els) => els.map((e) => e.textContent ?? ""));

/** The list's scroll position: top, and distance left to the bottom. */
const scroll = (page: Page) =>
  page.$eval('[data-testid="messages"]', (el) => ({
    top: el.scrollTop,
    toBottom: el.scrollHeight - el.scrollTop - el.clientHeight,
  }));

Deno.test("a long conversation: newest page first, scrolling up reaches the first message, the view follows new messages only at the bottom", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    // The oldest message of all (seeded first, so older than the rest), to be found by search.
    assert.equal(await seed(alice, 1, "walrus"), 1);
    assert.equal(await seed(alice, SEEDED, "old"), SEEDED);
    await sendMessage(alice, "live one");
    await waitForMessages(bob, ["live one"]);
    await openChat(alice, "bob");
    await alice.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"] .text')].some((e) =>
          e.textContent === "live one"
        ),
      { timeout: 40_000 },
    );
    assert.equal(await shownCount(alice), 500, "one page shown at first");
    assert.ok(await alice.$('[data-testid="show-older"]'), "older messages are offered");
    assert.ok((await scroll(alice)).toBottom < 5, "the open chat starts at the newest message");

    // Scrolling to the top again and again reaches the very first message.
    const deadline = Date.now() + 90_000;
    while (await alice.$('[data-testid="show-older"]')) {
      if (Date.now() > deadline) throw new Error(`Stuck at ${await shownCount(alice)} shown`);
      const before = await shownCount(alice);
      await alice.$eval('[data-testid="messages"]', (el) => el.scrollTop = 0);
      await alice.waitForFunction(
        (n) =>
          document.querySelectorAll('[data-testid="message"]').length > n ||
          !document.querySelector('[data-testid="show-older"]'),
        { timeout: 20_000 },
        before,
      );
      // The page added above did not move what the reader was looking at to the top.
      if (await alice.$('[data-testid="show-older"]')) {
        assert.ok((await scroll(alice)).top > 0, "the view stays on the messages read");
      }
    }
    const texts = await shownTexts(alice);
    assert.equal(texts.length, SEEDED + 2);
    assert.equal(texts[0], "walrus 0");
    assert.equal(texts[1], "old 0");
    assert.equal(texts.at(-1), "live one");

    // At the bottom, a new message from bob comes into view.
    await alice.$eval('[data-testid="messages"]', (el) => el.scrollTop = el.scrollHeight);
    await sendMessage(bob, "from bob 1");
    await alice.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid="messages"]')!;
        const last = [...el.querySelectorAll('[data-testid="message"] .text')].at(-1);
        return last?.textContent === "from bob 1" &&
          el.scrollHeight - el.scrollTop - el.clientHeight < 5;
      },
      { timeout: 40_000 },
    );

    // A reader who scrolled up is left where they are.
    const midway = await alice.$eval('[data-testid="messages"]', (el) => {
      el.scrollTop = el.scrollHeight / 2;
      return el.scrollTop;
    });
    await sendMessage(bob, "from bob 2");
    await alice.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"] .text')].at(-1)?.textContent ===
          "from bob 2",
      { timeout: 40_000 },
    );
    assert.equal((await scroll(alice)).top, midway, "not pulled down while reading");

    // The whole history survives a reload (snapshot plus the rows written after it).
    const before = await historyDigest(alice);
    await alice.reload({ waitUntil: "load" });
    await openChat(alice, "bob");
    await alice.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"] .text')].at(-1)?.textContent ===
          "from bob 2",
      { timeout: 40_000 },
    );
    assert.deepEqual(await historyDigest(alice), before);
    assert.equal(before.count, SEEDED + 4);

    // Search finds the oldest message; picking it shows it, marked, in the middle of the view.
    await alice.type('[data-testid="search-input"]', "WALR");
    await alice.waitForSelector('[data-testid="search-hit"]', { timeout: 20_000 });
    const hits = await alice.$$eval('[data-testid="search-hit"]', (els) =>
      els.map((e) => ({
        text: e.querySelector(".hit-text")?.textContent,
        marked: e.querySelector("mark")?.textContent,
      })));
    assert.deepEqual(hits, [{ text: "walrus 0", marked: "walrus" }]);
    await alice.click('[data-testid="search-hit"]');
    await alice.waitForFunction(
      () => {
        const list = document.querySelector('[data-testid="messages"]')!.getBoundingClientRect();
        const el = document.querySelector(".message.focused");
        if (el?.querySelector(".text")?.textContent !== "walrus 0") return false;
        const box = el.getBoundingClientRect();
        return box.top >= list.top && box.bottom <= list.bottom;
      },
      { timeout: 20_000 },
    );
    assert.equal(await alice.$('[data-testid="search-hit"]'), null, "the results closed");

    // With the chat closed, a new message shows as unread in the contact list and the title.
    await alice.evaluate(() =>
      (globalThis as unknown as { p2pchat: { openChat(p: string | null): void } }).p2pchat
        .openChat(null)
    );
    await sendMessage(bob, "from bob 3");
    await alice.waitForFunction(() => document.title === "(1) P2P-Chat", { timeout: 40_000 });
    await openChat(alice, "bob");
    await alice.waitForFunction(() => document.title === "P2P-Chat", { timeout: 20_000 });
  }));
