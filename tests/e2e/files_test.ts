/**
 * Files between two Chromium processes over a real data channel (issue 15): a 5 MB file picked
 * in alice's chat arrives in bob's byte-identical (its SHA-256 computed in bob's page); alice's
 * data channel closes after her 100th chunk and the transfer resumes, on a new channel whose
 * end at alice reports open late, from bob's first missing chunk, not from zero; an image shows inline with its thumbnail on both sides and opens full size.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { withAliceAndBob } from "../support/two_users.ts";
import { waitFor } from "../support/wait.ts";
import {
  attachFile,
  makePng,
  randomBytes,
  sha256,
  storedDigest,
  transfers,
  waitForTransfer,
} from "../support/files_page.ts";

interface ChannelHook {
  p2pchat: { isChannelOpen(peer: string): boolean };
}

/** The attachment shown for file `name` in `page`, as `{status, thumbnail, full}`. */
const shownFile = (page: Page, name: string) =>
  page.$$eval('[data-testid="attachment"]', (els, n) => {
    const el = els.find((e) => e.getAttribute("data-name") === n);
    if (!el) return null;
    const img = el.querySelector('[data-testid="thumbnail"]') as HTMLImageElement | null;
    return {
      status: el.getAttribute("data-status"),
      thumbnail: img ? img.complete && img.naturalWidth > 0 : false,
      download: el.querySelector('[data-testid="file-download"]') !== null,
    };
  }, name);

Deno.test("a 5 MB file arrives byte-identical; a dropped channel resumes where it stopped; an image shows inline", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    const dir = await Deno.makeTempDir({ prefix: "p2pchat-files-" });
    try {
      const bytes = randomBytes(5 * 1024 * 1024);
      const path = `${dir}/report.bin`;
      await Deno.writeFile(path, bytes);
      // Alice's data channel closes right after her 100th chunk frame: a real drop, mid-way.
      await alice.evaluate((limit) => {
        const send = RTCDataChannel.prototype.send;
        let chunks = 0;
        RTCDataChannel.prototype.send = function (this: RTCDataChannel, data: string) {
          if (typeof data === "string" && data.includes('"file_chunk"') && ++chunks === limit) {
            this.close();
            throw new DOMException("closed by the test", "InvalidStateError");
          }
          return (send as (this: RTCDataChannel, d: unknown) => void).call(this, data);
        } as typeof send;
      }, 100);
      // Her end of the next connection reports open late (simple-peer reads the connection's
      // statistics first): bob's end opens first and asks at once. That request must not be lost.
      await alice.evaluate((ms) => {
        const getStats = RTCPeerConnection.prototype.getStats;
        RTCPeerConnection.prototype.getStats = function (this: RTCPeerConnection, ...a: unknown[]) {
          return new Promise((r) => setTimeout(r, ms)).then(() =>
            (getStats as (...x: unknown[]) => Promise<RTCStatsReport>).apply(this, a)
          );
        } as typeof getStats;
      }, 1_000);
      await attachFile(alice, path);
      const receiving = await waitForTransfer(bob, "bob receiving the file", (t) => !t.outgoing);
      const done = await waitForTransfer(
        bob,
        "the file complete in bob's page",
        (t) => t.id === receiving.id && t.status === "complete",
        90_000,
      ).catch(async (err) => {
        // Where it stopped: each side's view of the transfer and of its channel.
        for (
          const [name, page, peer] of [["alice", alice, "bob"], ["bob", bob, "alice"]] as const
        ) {
          const t = (await transfers(page).catch(() => [])).find((x) => x.id === receiving.id);
          const open = await page.evaluate(
            (p) => (globalThis as unknown as ChannelHook).p2pchat.isChannelOpen(p),
            peer,
          ).catch(() => "?");
          console.error(`${name}: channel open ${open}; transfer ${JSON.stringify(t ?? null)}`);
        }
        throw err;
      });
      assert.equal(done.done, done.total);
      assert.equal(await storedDigest(bob, receiving.id), await sha256(bytes));
      // Alice resumed from bob's first missing chunk: the second run sent fewer than the whole.
      const sent = await waitForTransfer(
        alice,
        "alice's side complete",
        (t) => t.id === receiving.id && t.status === "complete",
      );
      assert.ok(sent.resumedFrom > 0 && sent.resumedFrom < 100, `resumed from ${sent.resumedFrom}`);
      assert.ok(sent.lastRunChunks < sent.total, `${sent.lastRunChunks} of ${sent.total}`);
      assert.ok(sent.lastRunChunks > 0);
      console.log(
        `resumed at chunk ${sent.resumedFrom}: ${sent.lastRunChunks} of ${sent.total} sent again`,
      );
      await waitFor(
        "bob's download link",
        async () => (await shownFile(bob, "report.bin"))?.download,
      );

      // An image: a thumbnail at once on both sides, full size once it arrived.
      const png = await makePng(alice, 640, 480);
      await Deno.writeFile(`${dir}/sunset.png`, png);
      await attachFile(alice, `${dir}/sunset.png`);
      for (const page of [alice, bob]) {
        await waitFor(
          "the thumbnail shown",
          async () => (await shownFile(page, "sunset.png"))?.thumbnail,
          30_000,
        );
      }
      await waitFor(
        "the image complete at bob",
        async () => (await shownFile(bob, "sunset.png"))?.status === "complete",
        30_000,
      );
      const image = await bob.$('[data-testid="attachment"][data-name="sunset.png"] button');
      await waitFor("the thumbnail clickable", () => image?.evaluate((b) => !b.disabled));
      await image!.click();
      const size = await bob.waitForFunction(() => {
        const img = document.querySelector('[data-testid="full-image"]') as HTMLImageElement;
        return img?.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;
      }, { timeout: 20_000 });
      assert.deepEqual(await size.jsonValue(), [640, 480]);
      const thumbId = (await waitForTransfer(bob, "the image", (t) =>
        t.status === "complete" && t.id !== receiving.id)).id;
      assert.equal(await storedDigest(bob, thumbId), await sha256(png));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));
