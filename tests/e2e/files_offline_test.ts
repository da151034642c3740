/**
 * Files to an offline contact (issue 15), two Chromium processes on a three-server ring whose
 * mailboxes take at most 1 MB of files per sender: a file sent while bob is logged out waits in
 * his mailbox as encrypted chunks and arrives byte-identical when he logs in; a bigger one is
 * refused past the quota with a message saying what to do, and its rest goes directly once bob
 * is back online.
 */
import assert from "node:assert/strict";
import { logOut, openChat, signIn, waitForContact } from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";
import { waitFor } from "../support/wait.ts";
import {
  attachFile,
  randomBytes,
  sha256,
  storedDigest,
  waitForTransfer,
} from "../support/files_page.ts";

Deno.test("a file to an offline contact arrives through the mailbox; past the sender quota the user is told", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-files-" });
  try {
    await withAliceAndBob(async ({ alice, bob }) => {
      await waitForContact(alice, "bob", true);
      // Alice pins bob's keys while he is online, then he logs out.
      await openChat(alice, "bob");
      await logOut(bob);
      await waitForContact(alice, "bob", false);

      const small = randomBytes(300 * 1024);
      await Deno.writeFile(`${dir}/notes.pdf`, small);
      await attachFile(alice, `${dir}/notes.pdf`);
      const queued = await waitForTransfer(
        alice,
        "every chunk stored in bob's mailbox",
        (t) => t.outgoing && t.done === t.total && t.total > 0,
      );
      assert.equal(queued.sentChunks, 0, "nothing went over a data channel");

      await signIn(bob, "bob", "bob-password-1", false);
      const got = await waitForTransfer(
        bob,
        "the file complete at bob",
        (t) => t.id === queued.id && t.status === "complete",
      );
      assert.equal(got.done, got.total);
      assert.equal(await storedDigest(bob, queued.id), await sha256(small));

      // Past the quota: bob is away again, alice sends 1.5 MB.
      await logOut(bob);
      await waitForContact(alice, "bob", false);
      const big = randomBytes(1536 * 1024);
      await Deno.writeFile(`${dir}/video.mp4`, big);
      await attachFile(alice, `${dir}/video.mp4`);
      const toast = await waitFor("the quota refusal shown", async () => {
        const text = await alice.$eval(".toast", (el) => el.textContent ?? "").catch(() => "");
        return text.includes("video.mp4") ? text : null;
      }, 60_000);
      assert.match(toast, /already holds .* from you/);
      assert.match(toast, /bob is online/);
      const refused = await waitForTransfer(
        alice,
        "the transfer marked not all stored",
        (t) => t.outgoing && t.id !== queued.id && t.status === "failed",
      );
      assert.ok(refused.done < refused.total);
      // Bob comes back: what was stored comes from his mailbox, the rest directly from alice.
      await signIn(bob, "bob", "bob-password-1", false);
      await openChat(bob, "alice");
      const whole = await waitForTransfer(
        bob,
        "the big file complete at bob",
        (t) => t.id === refused.id && t.status === "complete",
        60_000,
      );
      assert.equal(whole.done, whole.total);
      assert.equal(await storedDigest(bob, refused.id), await sha256(big));
      const sent = await waitForTransfer(
        alice,
        "alice's side complete",
        (t) => t.id === refused.id && t.status === "complete",
      );
      assert.ok(sent.sentChunks < sent.total, `${sent.sentChunks} of ${sent.total} went directly`);
      console.log(
        `past the quota: ${sent.total - sent.sentChunks} chunks by mailbox, ` +
          `${sent.sentChunks} directly`,
      );
    }, { env: { P2P_MAILBOX_SENDER_MB: "1" }, until: "signed in" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
