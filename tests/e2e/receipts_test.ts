/**
 * Typing and read receipts between two Chromium processes over a real data channel: bob's
 * typing shows on alice's screen; his message, shown on alice's open chat, turns "read" on his;
 * with read receipts off, alice reads without telling.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  clickWhenLaidOut,
  isChannelOpen,
  sendMessage,
  waitForMessages,
} from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";
import { holdsFor, waitFor } from "../support/wait.ts";

const typingShown = (page: Page) =>
  page.$eval('[data-testid="typing"]', (el) => el.textContent ?? "");

/** Whether `page` shows its own message `text` as read. */
const shownRead = (page: Page, text: string) =>
  page.$$eval(
    '[data-testid="message"]',
    (els, t) =>
      els.some((el) =>
        el.querySelector(".text")?.textContent === t && el.getAttribute("data-read") === "true" &&
        el.querySelector(".status")?.textContent?.includes("read")
      ),
    text,
  );

Deno.test("bob's typing shows on alice's screen, and his messages turn read once she sees them", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    await waitFor("the data channel", () => isChannelOpen(bob, "alice"), 40_000);
    await bob.type('[data-testid="chat-input"]', "hello al");
    await waitFor(
      "alice sees bob typing",
      async () => (await typingShown(alice)) === "bob is typing…",
      20_000,
    );
    await bob.click('[data-testid="send"]');
    await waitForMessages(alice, ["hello al"]);
    await waitFor("the typing notice gone", async () => (await typingShown(alice)) === "", 20_000);
    await waitFor("bob sees his message read", () => shownRead(bob, "hello al"), 20_000);

    // alice turns read receipts off: bob's next message is delivered, never shown read.
    await clickWhenLaidOut(alice, '[data-testid="my-key"]');
    await clickWhenLaidOut(alice, '[data-testid="read-receipts-setting"]');
    await alice.waitForFunction(
      () =>
        !(document.querySelector('[data-testid="read-receipts-setting"]') as HTMLInputElement)
          .checked,
    );
    await sendMessage(bob, "still there?");
    await waitForMessages(alice, ["hello al", "still there?"]);
    await bob.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"]')].some((el) =>
          el.querySelector(".text")?.textContent === "still there?" &&
          el.getAttribute("data-status") === "delivered"
        ),
      { timeout: 20_000 },
    );
    await holdsFor("not shown read", async () => !(await shownRead(bob, "still there?")), 2_000);
    assert.ok(await shownRead(bob, "hello al"), "the earlier receipt stays");
  }));
