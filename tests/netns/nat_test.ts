/**
 * NAT traversal with real routers, a real TURN server and two browsers: Chromium behind one
 * home router, Firefox ESR (WebDriver BiDi) behind another, the ring and coturn on a "public"
 * network (tests/support/nat_lab.ts). (a) Ordinary NAT: the data channel opens through STUN, on a
 * server-reflexive path. (b) NAT giving every flow a new port: it opens through TURN (relay
 * candidates). (c) TURN down too: messages still arrive, through the servers, without waiting for
 * a channel. In (a), the path then dies silently (all UDP dropped): the keep-alives notice and
 * what went into the dead channel arrives through the servers, once. Each case is a fresh pair of users (fresh peer connections). Runs as root.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  isChannelOpen,
  openChat,
  sendMessage,
  shownMessages,
  waitForChannel,
  waitForMessages,
} from "../support/chat_page.ts";
import { NatLab, registerPair } from "../support/nat_lab.ts";
import { netnsTestAvailability } from "../support/netns_cluster.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import { waitFor } from "../support/wait.ts";

const netns = await natLabAvailability();

/** Namespaces, plus coturn and nftables (`.ci/run` installs them): else skip, or fail under CI. */
async function natLabAvailability(): Promise<{ ignore: boolean }> {
  const base = await netnsTestAvailability("the NAT traversal tests");
  if (base.ignore) return base;
  const missing = [];
  for (const tool of ["/usr/bin/turnserver", "/usr/sbin/nft"]) {
    if (!(await Deno.stat(tool).then(() => true, () => false))) missing.push(tool);
  }
  if (missing.length === 0) return { ignore: false };
  const why = `${missing.join(" and ")} missing (Debian packages coturn, nftables)`;
  if (Deno.env.get("CI") === "true") throw new Error(`Cannot run the NAT tests: ${why}`);
  console.warn(`Skipping the NAT traversal tests: ${why}`);
  return { ignore: true };
}

type AppPage = Page & { errors: string[] };

interface Candidates {
  local: string;
  remote: string;
}

/** The candidate types of the page's open channel to `peer` (`getStats`, selected pair). */
function selectedCandidates(page: Page, peer: string): Promise<Candidates | null> {
  return page.evaluate(
    (p) =>
      (globalThis as unknown as {
        p2pchat: { selectedCandidates(p: string): Promise<Candidates | null> };
      }).p2pchat.selectedCandidates(p),
    peer,
  );
}

Deno.test({
  name: "NAT: STUN through ordinary NAT, TURN through port-randomizing NAT, servers without either",
  ignore: netns.ignore,
  fn: async (t) => {
    await assertClientBuilt();
    const lab = await NatLab.create();
    const pages: AppPage[] = [];
    try {
      const chromium = await lab.openBrowser("a", "chromium");
      const firefox = await lab.openBrowser("b", "firefox");

      await t.step(
        "(a) ordinary NAT: the channel opens on server-reflexive candidates",
        async () => {
          const [alice, bob] = await registerPair(chromium, firefox, "alice", "bob");
          pages.push(alice, bob);
          await openChat(alice, "bob");
          await openChat(bob, "alice");
          await waitForChannel(alice, "bob");
          await waitForChannel(bob, "alice");
          // ICE may use a relay pair first and move to a better one once it works.
          const pairs = await waitFor("both sides to settle on a direct pair", async () => {
            const both = [
              await selectedCandidates(alice, "bob"),
              await selectedCandidates(bob, "alice"),
            ];
            return both.every((p) => p && p.local !== "relay" && p.remote !== "relay")
              ? both
              : null;
          }).catch(async (err) => {
            const now = [
              await selectedCandidates(alice, "bob"),
              await selectedCandidates(bob, "alice"),
            ];
            throw new Error(`${err.message}; selected now: ${JSON.stringify(now)}`);
          });
          for (const pair of pairs) {
            assert.ok(pair);
            // Behind two NATs no host pair can work: a reflexive address carries it.
            assert.ok(
              ["srflx", "prflx"].includes(pair.local) || ["srflx", "prflx"].includes(pair.remote),
              JSON.stringify(pair),
            );
          }
          await sendMessage(alice, "hello through two NATs");
          await waitForMessages(bob, ["hello through two NATs"]);
          assert.deepEqual((await shownMessages(bob)).map((m) => m.via), ["p2p"]);

          // The path dies without a word (the router drops all UDP): the keep-alives notice,
          // and the message that went into the dead channel arrives through the servers, once.
          await lab.cutUdp("a");
          const cutAt = Date.now();
          await sendMessage(alice, "into the dead channel");
          await waitFor(
            "alice to notice the dead channel",
            async () => !(await isChannelOpen(alice, "bob")),
          );
          console.log(`dead channel noticed after ${Date.now() - cutAt} ms`);
          const all = ["hello through two NATs", "into the dead channel", "after the cut"];
          await waitForMessages(bob, all.slice(0, 2));
          await sendMessage(alice, "after the cut");
          await waitForMessages(bob, all);
          assert.deepEqual(
            (await shownMessages(bob)).map((m) => m.via),
            ["p2p", "relay", "relay"],
          );
          await waitForMessages(alice, all);
          await Promise.all([alice.close(), bob.close()]);
        },
      );

      await lab.setNat("fully-random");
      await t.step("(b) a new port per flow: the channel opens through TURN", async () => {
        const [alice, bob] = await registerPair(chromium, firefox, "alice2", "bob2");
        pages.push(alice, bob);
        await openChat(alice, "bob2");
        await openChat(bob, "alice2");
        await waitForChannel(alice, "bob2");
        await waitForChannel(bob, "alice2");
        for (const [page, peer] of [[alice, "bob2"], [bob, "alice2"]] as const) {
          const pair = await selectedCandidates(page, peer);
          assert.ok(pair, `a selected candidate pair towards ${peer}`);
          assert.ok(pair.local === "relay" || pair.remote === "relay", JSON.stringify(pair));
        }
        await sendMessage(bob, "relayed by TURN, still direct");
        await waitForMessages(alice, ["relayed by TURN, still direct"]);
        assert.deepEqual(
          (await shownMessages(alice)).map((m) => m.via),
          ["p2p"],
          "arrived over the channel",
        );
        await Promise.all([alice.close(), bob.close()]);
      });

      await lab.stopTurn();
      await t.step("(c) no TURN either: messages go through the servers at once", async () => {
        const [alice, bob] = await registerPair(chromium, firefox, "alice3", "bob3");
        pages.push(alice, bob);
        await openChat(bob, "alice3");
        await openChat(alice, "bob3");
        // Sent the moment the chat is open, while the channel is still being tried.
        await alice.type('[data-testid="chat-input"]', "first, via the servers");
        const started = Date.now();
        await alice.click('[data-testid="send"]');
        await waitForMessages(bob, ["first, via the servers"]);
        const firstMs = Date.now() - started;
        await sendMessage(alice, "second");
        await sendMessage(bob, "and back");
        const all = ["first, via the servers", "second", "and back"];
        await waitForMessages(alice, all);
        await waitForMessages(bob, all);
        for (const page of [alice, bob]) {
          assert.deepEqual((await shownMessages(page)).map((m) => m.via), [
            "relay",
            "relay",
            "relay",
          ]);
          const header = await page.$eval(".chat-header .path", (el) => el.textContent ?? "");
          assert.match(header, /via server/);
        }
        console.log(`first message through the servers after ${firstMs} ms`);
        // The old client waited 5 s for a channel before using the servers; this one does not
        // wait at all (the figure itself is measured by `deno task bench:nat`).
        assert.ok(firstMs < 4_000, `the first message took ${firstMs} ms`);
      });
    } catch (err) {
      for (const p of pages) if (p.errors.length > 0) console.error("page console:", p.errors);
      throw err;
    } finally {
      await lab.destroy();
    }
  },
});
