/**
 * Replies, reactions, edits and deletes between alice (Chromium) and bob (Firefox ESR), through
 * their visible controls: each shows on both screens, over the data channel; the same operations
 * done while bob is logged out reach him through the mailbox when he is back; and an edit alice
 * forges of bob's message (a hostile client sending it sealed and signed as her own) changes
 * nothing on either screen.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { launchFirefox } from "../support/browser.ts";
import {
  logOut,
  openChat,
  sendMessage,
  signIn,
  storedMessages,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";
import { holdsFor, waitFor } from "../support/wait.ts";

/** How message `id` shows on `page` (null if it is not shown). */
interface Shown {
  text: string;
  deleted: boolean;
  edited: boolean;
  /** `sender: snippet` of the quoted message of a reply. */
  quote: string | null;
  /** `emoji count mine`, space separated. */
  reactions: string;
}

function shownAs(page: Page, id: string): Promise<Shown | null> {
  return page.evaluate((id) => {
    const el = document.querySelector(`[data-testid="message"][data-id="${id}"]`);
    if (!el) return null;
    const q = el.querySelector('[data-testid="reply-quote"]');
    return {
      text: el.querySelector(".text")?.textContent ?? "",
      deleted: el.querySelector('[data-testid="deleted"]') !== null,
      edited: el.querySelector('[data-testid="edited"]') !== null,
      quote: q
        ? `${q.querySelector('[data-testid="quote-sender"]')?.textContent}: ${
          q.querySelector('[data-testid="quote-snippet"]')?.textContent
        }`
        : null,
      reactions: [...el.querySelectorAll('[data-testid="reaction"]')].map((r) =>
        `${r.getAttribute("data-emoji")} ${r.getAttribute("data-count")} ${
          r.getAttribute("data-mine")
        }`
      ).join(" "),
    };
  }, id);
}

/** Waits until message `id` shows on `page` as `want` says (fields left out: any). */
async function waitShown(page: Page, who: string, id: string, want: Partial<Shown>) {
  let last: Shown | null = null;
  try {
    await waitFor(`${who} shows ${id} as ${JSON.stringify(want)}`, async () => {
      last = await shownAs(page, id);
      return last !== null &&
        Object.entries(want).every(([k, v]) => last![k as keyof Shown] === v);
    }, 40_000);
  } catch (err) {
    throw new Error(`${(err as Error).message}; it shows ${JSON.stringify(last)}`);
  }
}

/** How many rows `page`'s history holds (messages and operations). */
async function storedRowCount(page: Page): Promise<number> {
  return await page.evaluate(async () =>
    (await (globalThis as unknown as {
      p2pchat: { historyDigest(): Promise<{ count: number }> };
    }).p2pchat.historyDigest()).count
  );
}

/** Opens the actions of message `id` and presses the one `testId` (a reaction: its `emoji`). */
async function act(page: Page, id: string, testId: string, emoji?: string) {
  const msg = `[data-testid="message"][data-id="${id}"]`;
  await page.waitForSelector(`${msg} [data-testid="message-actions"]`, { timeout: 40_000 });
  await page.click(`${msg} [data-testid="message-actions"]`);
  const button = `${msg} [data-testid="${testId}"]${emoji ? `[data-emoji="${emoji}"]` : ""}`;
  await page.waitForSelector(button, { timeout: 10_000 });
  await page.click(button);
}

/** The id of the stored message of `page`'s conversation with `peer` showing `text`. */
async function idOf(page: Page, peer: string, text: string): Promise<string> {
  return await waitFor(`the message "${text}" stored`, async () => {
    const rows = await storedMessages(page, peer);
    return rows.find((r) => r.text === text || r.text.endsWith(`\u001f${text}`))?.id;
  }, 40_000);
}

/** Replaces what the message input holds by `text` and sends it. */
async function replaceDraftAndSend(page: Page, text: string) {
  const input = '[data-testid="chat-input"]';
  await page.click(input, { count: 3 });
  await page.keyboard.press("Backspace");
  await waitFor(
    "the input emptied",
    () => page.$eval(input, (el) => (el as HTMLInputElement).value === ""),
    10_000,
  );
  await sendMessage(page, text);
}

Deno.test("reply, react, edit and delete show on both sides, live and through the mailbox; a forged edit does not apply", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    await sendMessage(bob, "original words");
    await waitForMessages(alice, ["original words"]);
    await sendMessage(bob, "second words");
    await waitForMessages(alice, ["original words", "second words"]);
    const original = await idOf(alice, "bob", "original words");
    const second = await idOf(alice, "bob", "second words");

    // alice replies to bob's first message: the quote shows above her reply on both sides.
    await act(alice, original, "action-reply");
    await alice.waitForSelector('[data-testid="compose-mode"][data-kind="reply"]');
    await sendMessage(alice, "my answer");
    const reply = await idOf(alice, "bob", "my answer");
    for (const [page, who] of [[alice, "alice"], [bob, "bob"]] as const) {
      await waitShown(page, who, reply, { text: "my answer", quote: "bob: original words" });
    }

    // bob reacts to the reply, then takes the reaction back.
    await act(bob, reply, "react", "👍");
    await waitShown(bob, "bob", reply, { reactions: "👍 1 true" });
    await waitShown(alice, "alice", reply, { reactions: "👍 1 false" });
    await bob.click(`[data-id="${reply}"] [data-testid="reaction"][data-emoji="👍"]`);
    await waitShown(bob, "bob", reply, { reactions: "" });
    await waitShown(alice, "alice", reply, { reactions: "" });

    // bob edits his first message: both show the new text, marked edited, and the quote too.
    await act(bob, original, "action-edit");
    await bob.waitForSelector('[data-testid="compose-mode"][data-kind="edit"]');
    assert.equal(
      await bob.$eval('[data-testid="chat-input"]', (el) => (el as HTMLInputElement).value),
      "original words",
      "the input holds the text to edit",
    );
    await replaceDraftAndSend(bob, "corrected words");
    for (const [page, who] of [[alice, "alice"], [bob, "bob"]] as const) {
      await waitShown(page, who, original, { text: "corrected words", edited: true });
      await waitShown(page, who, reply, { quote: "bob: corrected words" });
    }

    // bob deletes his second message for everyone.
    await act(bob, second, "action-delete-everyone");
    for (const [page, who] of [[alice, "alice"], [bob, "bob"]] as const) {
      await waitShown(page, who, second, { deleted: true, text: "message deleted" });
    }
    assert.ok(
      !(await storedMessages(alice, "bob")).some((r) => r.text.includes("second words")),
      "the deleted text is gone from alice's history",
    );

    // alice's client turns hostile: it sends an edit of bob's message, sealed and signed by
    // her. Once bob has stored it (and her next message), his message is unchanged.
    const rowsBefore = await storedRowCount(bob);
    await alice.evaluate(
      (id) =>
        (globalThis as unknown as { p2pchat: { sendRaw(t: string): Promise<void> } }).p2pchat
          .sendRaw(`\u001dedit\u001d${id}\u001dforged words`),
      original,
    );
    await sendMessage(alice, "after the forgery");
    const after = await idOf(alice, "bob", "after the forgery");
    await waitShown(bob, "bob", after, { text: "after the forgery" });
    await waitFor(
      "bob stored the forged edit",
      async () => (await storedRowCount(bob)) === rowsBefore + 2,
      40_000,
    );
    for (const page of [alice, bob]) {
      await holdsFor(
        "the forged edit not applied",
        async () => (await shownAs(page, original))?.text === "corrected words",
        2_000,
      );
    }

    // bob logs out; alice edits, reacts, replies and deletes while he is away.
    await logOut(bob);
    await waitForContact(alice, "bob", false);
    await act(alice, reply, "action-edit");
    await replaceDraftAndSend(alice, "my better answer");
    await act(alice, original, "react", "🙏");
    await act(alice, original, "action-reply");
    await sendMessage(alice, "answer while you were away");
    await act(alice, after, "action-delete-everyone");
    await sendMessage(alice, "sent and deleted while away");
    const gone = await idOf(alice, "bob", "sent and deleted while away");
    await act(alice, gone, "action-delete-everyone");
    await waitShown(alice, "alice", gone, { deleted: true });
    const away = await idOf(alice, "bob", "answer while you were away");
    // Everything alice sent waits in bob's mailbox (her page says so for her messages).
    await waitFor("alice's messages stored for bob", async () => {
      const rows = await storedMessages(alice, "bob");
      return rows.filter((r) => r.status !== "delivered").every((r) => r.via === "mailbox");
    }, 40_000);

    await signIn(bob, "bob", "bob-password-1", false);
    await openChat(bob, "alice");
    await waitShown(bob, "bob", reply, { text: "my better answer", edited: true });
    await waitShown(bob, "bob", original, { text: "corrected words", reactions: "🙏 1 false" });
    await waitShown(bob, "bob", away, {
      text: "answer while you were away",
      quote: "bob: corrected words",
    });
    await waitShown(bob, "bob", after, { deleted: true });
    await waitShown(bob, "bob", gone, { deleted: true });
    assert.ok(
      !(await storedMessages(bob, "alice")).some((r) => r.text.includes("sent and deleted")),
      "the text deleted before bob came back never stays in his history",
    );
    // Each operation arrived once: alice's page shows everything delivered.
    await waitFor("alice sees all delivered", async () => {
      const rows = await storedMessages(alice, "bob");
      return rows.every((r) => r.status === "delivered");
    }, 40_000);
  }, { servers: 2, bobBrowser: launchFirefox }));
