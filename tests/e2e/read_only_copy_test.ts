/**
 * A long history kept as a read-only copy (Chromium, real IndexedDB, a real hand-over): alice's
 * old device holds 20,000 messages with bob and keeps a copy when she signs in elsewhere. The
 * copy's conversation opens at its newest messages and scrolling up reaches the very first one,
 * while the page never holds more than a window of rows, like the chat; an edit applies and a
 * forged one does not, as in the chat; and nothing in the copy can send, edit or delete.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  openApp,
  openChat,
  sendMessage,
  signIn,
  storedMessages,
  waitForHandover,
} from "../support/chat_page.ts";
import { historyDigest, seedAliceHistory, startHandoverWorld } from "../support/handover_world.ts";
import { type ListSelectors, scrollToFirst } from "../support/message_list.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import { waitFor } from "../support/wait.ts";

const SEEDED = 20_000;
/** Most message rows the page may hold at once (`MESSAGE_WINDOW`), however long the history. */
const MAX_ROWS = 150;

const COPY: ListSelectors = {
  list: '[data-testid="readonly-messages"]',
  row: '[data-testid="readonly-message"]',
};

const shownCount = (page: Page) => page.$$eval(COPY.row, (els) => els.length);

const shownTexts = (page: Page) =>
  page.$$eval(`${COPY.row} .text`, (els) => els.map((e) => e.textContent ?? ""));

function sendRaw(page: Page, text: string): Promise<void> {
  return page.evaluate(
    (t) =>
      (globalThis as unknown as { p2pchat: { sendRaw(t: string): Promise<void> } }).p2pchat
        .sendRaw(t),
    text,
  );
}

Deno.test("a read-only copy of 20,000 messages opens at the newest, pages up to the first with a bounded list, shows edits as the chat does, and cannot write", async () => {
  await assertClientBuilt();
  const world = await startHandoverWorld();
  try {
    const { oldAlice, bob } = world;
    await seedAliceHistory(world, SEEDED, "old", "a mesage with a typo");
    const typo = (await storedMessages(oldAlice, "bob")).find((m) =>
      m.text === "a mesage with a typo"
    )!;
    // alice corrects her message; bob's client, turned hostile, sends an edit of it too.
    await sendRaw(oldAlice, `\u001dedit\u001d${typo.id}\u001da message, corrected`);
    await openChat(bob, "alice");
    await sendRaw(bob, `\u001dedit\u001d${typo.id}\u001dforged words`);
    await sendMessage(bob, "the newest, from bob");
    // Settled: the seeded rows, alice's message and edit, bob's forged edit and his message.
    await waitFor(
      "every row stored on the old device",
      async () => (await historyDigest(oldAlice)).count === SEEDED + 4,
      40_000,
    );
    const before = await historyDigest(oldAlice);

    // alice signs in on another device, with the setting on: a copy stays here.
    await oldAlice.evaluate(() =>
      (globalThis as unknown as { p2pchat: { setKeepCopy(v: boolean): void } }).p2pchat
        .setKeepCopy(true)
    );
    const newAlice = await openApp(world.newBrowser, world.servers[2]!.url);
    await signIn(newAlice, "alice", "alice-password", false);
    await waitForHandover(oldAlice, "sending", "done", 90_000);
    await waitForHandover(newAlice, "receiving", "done", 90_000);
    await oldAlice.waitForSelector('[data-testid="readonly-statement"]', { timeout: 40_000 });

    // The copy's conversation opens at its newest messages, a window of it only.
    await oldAlice.click('[data-testid="readonly-contact"][data-username="bob"]');
    await oldAlice.waitForFunction(
      (sel) => {
        const list = document.querySelector(sel.list);
        const last = [...document.querySelectorAll(`${sel.row} .text`)].at(-1);
        return list && last?.textContent === "the newest, from bob" &&
          list.scrollHeight - list.scrollTop - list.clientHeight < 5;
      },
      { timeout: 40_000 },
      COPY,
    );
    assert.ok(await shownCount(oldAlice) <= MAX_ROWS, "a window of the conversation, not all");
    assert.ok(await oldAlice.$('[data-testid="show-older"]'), "older messages are offered");

    // Alice's edit applies, bob's forged one does not (as in the chat).
    const corrected = await oldAlice.$eval(
      `${COPY.row}[data-id="${typo.id}"]`,
      (el) => ({
        text: el.querySelector(".text")?.textContent,
        edited: el.querySelector('[data-testid="edited"]') !== null,
      }),
    );
    assert.deepEqual(corrected, { text: "a message, corrected", edited: true });

    // Nothing here writes: no message field, no send button, no message actions.
    for (const testId of ["chat-input", "send", "attach", "message-actions"]) {
      assert.equal(await oldAlice.$(`[data-testid="${testId}"]`), null, `no ${testId}`);
    }
    assert.equal(await oldAlice.$$eval(`${COPY.row} button`, (els) => els.length), 0);

    // Scrolling up again and again reaches the first message; the page never holds more than
    // the window, and the row read stays put as pages come and go.
    const { maxRows, pages, moved } = await scrollToFirst(oldAlice, COPY);
    assert.ok(maxRows <= MAX_ROWS, `at most ${maxRows} rows in the page`);
    assert.ok(pages > 100, `${pages} pages read on the way up`);
    assert.ok(moved.every((px) => px < 2), `the row read moved by ${Math.max(...moved)} px`);
    const texts = await shownTexts(oldAlice);
    assert.deepEqual(texts.slice(0, 2), ["old 0", "old 1"]);
    assert.ok(!texts.includes("the newest, from bob"), "the newest rows left the page");

    // From the keyboard: the "Show newer messages" button reads the next page.
    const lastShown = texts.at(-1);
    await oldAlice.focus('[data-testid="show-newer"]');
    await oldAlice.keyboard.press("Enter");
    await oldAlice.waitForFunction(
      (sel, was) => [...document.querySelectorAll(`${sel.row} .text`)].at(-1)?.textContent !== was,
      { timeout: 20_000 },
      COPY,
      lastShown,
    );
    assert.ok(await shownCount(oldAlice) <= MAX_ROWS);

    // Back to the newest.
    await oldAlice.click('[data-testid="jump-newest"]');
    await oldAlice.waitForFunction(
      (sel) =>
        [...document.querySelectorAll(`${sel.row} .text`)].at(-1)?.textContent ===
          "the newest, from bob" && !document.querySelector('[data-testid="jump-newest"]'),
      { timeout: 20_000 },
      COPY,
    );
    assert.ok(await shownCount(oldAlice) <= MAX_ROWS);
    const copy = await oldAlice.evaluate(() =>
      (globalThis as unknown as {
        p2pchat: { readOnlyDigest(): Promise<{ count: number; digest: string }> };
      }).p2pchat.readOnlyDigest()
    );
    assert.deepEqual(copy, before, "the copy is the whole history");
  } finally {
    await world.close();
  }
});
