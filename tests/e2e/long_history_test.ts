/**
 * A long conversation (20,000 messages; Chromium, real IndexedDB): the newest messages show
 * first, scrolling up reaches the very first message while the page never holds more than a
 * window of rows and the row read stays put as pages come and go, a reader at the bottom follows
 * new messages while one who scrolled up stays where they are (and is offered the new ones), and
 * the history (kept as a snapshot plus a row log) is whole after a reload; search finds the
 * oldest message and opens the chat there; unread messages show in the page title.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { openChat, sendMessage, waitForMessages } from "../support/chat_page.ts";
import { historyDigest } from "../support/handover_world.ts";
import { scrollToFirst } from "../support/message_list.ts";
import { withAliceAndBob } from "../support/two_users.ts";

const SEEDED = 20_000; // past the snapshot threshold, 400 pages of the chat view
/** Most message rows the page may hold at once, whatever the length of the conversation. */
const MAX_ROWS = 200;

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

/** The first message row in view, and its distance from the list's top edge, px. */
const firstInView = (page: Page) =>
  page.$eval('[data-testid="messages"]', (list) => {
    const top = list.getBoundingClientRect().top;
    const row = [...list.querySelectorAll<HTMLElement>('[data-testid="message"]')].find((el) =>
      el.getBoundingClientRect().bottom > top
    );
    return row ? { id: row.dataset.id, offset: row.getBoundingClientRect().top - top } : null;
  });

Deno.test("a long conversation: newest first, scrolling up reaches the first message with a bounded list, the view follows new messages only at the bottom", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    // The oldest message of all (seeded first, so older than the rest), to be found by search.
    assert.equal(await seed(alice, 1, "walrus"), 1);
    assert.equal(await seed(alice, SEEDED, "old"), SEEDED);
    await sendMessage(alice, "live one");
    await waitForMessages(bob, ["live one"]);
    await openChat(alice, "bob");
    await alice.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"] .text')].at(-1)?.textContent ===
          "live one",
      { timeout: 40_000 },
    );
    assert.ok(await shownCount(alice) < MAX_ROWS, "a window of the conversation, not all of it");
    assert.ok(await alice.$('[data-testid="show-older"]'), "older messages are offered");
    assert.ok((await scroll(alice)).toBottom < 5, "the open chat starts at the newest message");

    // Scrolling to the top again and again reaches the very first message; the page holds a
    // bounded number of rows all along, and what the reader looks at stays put as pages come.
    const { maxRows, pages, moved } = await scrollToFirst(alice);
    assert.ok(maxRows < MAX_ROWS, `at most ${maxRows} rows in the page`);
    assert.ok(pages > 100, `${pages} pages read on the way up`);
    assert.ok(moved.every((px) => px < 2), `the row read moved by ${Math.max(...moved)} px`);
    const texts = await shownTexts(alice);
    assert.equal(texts[0], "walrus 0");
    assert.equal(texts[1], "old 0");
    assert.ok(texts.length < MAX_ROWS);
    assert.ok(!texts.includes("live one"), "the newest rows left the page");

    // Back to the newest: the affordance at the bottom of the view brings the reader there.
    await alice.click('[data-testid="jump-newest"]');
    await alice.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid="messages"]')!;
        const last = [...el.querySelectorAll('[data-testid="message"] .text')].at(-1);
        return last?.textContent === "live one" &&
          el.scrollHeight - el.scrollTop - el.clientHeight < 5 &&
          !document.querySelector('[data-testid="jump-newest"]');
      },
      { timeout: 20_000 },
    );
    assert.ok(await shownCount(alice) < MAX_ROWS);

    // At the bottom, a new message from bob comes into view.
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

    // A reader who scrolled up is left where they are, and told that something new came.
    await alice.$eval('[data-testid="messages"]', (el) => {
      el.scrollTop = el.scrollHeight / 3;
    });
    await alice.waitForFunction(() => {
      const el = document.querySelector('[data-testid="messages"]')!;
      return el.scrollHeight - el.scrollTop - el.clientHeight > 200;
    });
    const reading = await firstInView(alice);
    const midway = (await scroll(alice)).top;
    await sendMessage(bob, "from bob 2");
    await alice.waitForFunction(
      () =>
        document.querySelector('[data-testid="jump-newest"]')?.textContent === "1 new message ↓",
      { timeout: 40_000 },
    );
    assert.equal((await scroll(alice)).top, midway, "not pulled down while reading");
    assert.deepEqual(await firstInView(alice), reading, "the row read stays put");
    await alice.click('[data-testid="jump-newest"]');
    await alice.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid="messages"]')!;
        const last = [...el.querySelectorAll('[data-testid="message"] .text')].at(-1);
        return last?.textContent === "from bob 2" &&
          el.scrollHeight - el.scrollTop - el.clientHeight < 5 &&
          !document.querySelector('[data-testid="jump-newest"]');
      },
      { timeout: 20_000 },
    );

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
    assert.ok(await shownCount(alice) < MAX_ROWS, "the message's part of the conversation only");

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
