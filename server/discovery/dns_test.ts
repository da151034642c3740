import assert from "node:assert/strict";
import { Metrics } from "../telemetry/mod.ts";
import { DnsDiscovery, peerUrl, type Resolve } from "./dns.ts";

function dns(records: Record<string, string[] | Error>, self?: string) {
  const metrics = new Metrics();
  const found: string[] = [];
  const resolve: Resolve = (name, type) => {
    const r = records[`${name}/${type}`];
    if (!r || r instanceof Error) return Promise.reject(r ?? new Error("NotFound"));
    return Promise.resolve(r);
  };
  const discovery = new DnsDiscovery(
    { metrics, log: () => {}, onPeer: (a) => found.push(a), resolve },
    { name: "chat.svc", port: 8000, self },
  );
  return { discovery, metrics, found };
}

Deno.test("dns: A and AAAA records become peer URLs, without this server", async () => {
  const { discovery, found } = dns({
    "chat.svc/A": ["10.0.0.2", "10.0.0.1", "10.0.0.2"],
    "chat.svc/AAAA": ["fd00::1"],
  }, "http://10.0.0.1:8000");
  const urls = await discovery.resolveNow();
  assert.deepEqual(urls, ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://[fd00::1]:8000"]);
  assert.deepEqual(found, ["http://10.0.0.2:8000", "http://[fd00::1]:8000"]);
});

Deno.test("dns: a name with only A records is fine; no records at all is counted", async () => {
  const onlyA = dns({ "chat.svc/A": ["10.0.0.2"] });
  assert.deepEqual(await onlyA.discovery.resolveNow(), ["http://10.0.0.2:8000"]);
  assert.equal(onlyA.metrics.get("p2pchat_discovery_errors_total", { mode: "dns" }), 0);
  const none = dns({});
  assert.deepEqual(await none.discovery.resolveNow(), []);
  assert.equal(none.metrics.get("p2pchat_discovery_errors_total", { mode: "dns" }), 1);
});

Deno.test("dns: start resolves at once and stop waits for the lookup", async () => {
  const { discovery, found } = dns({ "chat.svc/A": ["10.0.0.3"] });
  await discovery.start();
  await discovery.stop();
  assert.deepEqual(found, ["http://10.0.0.3:8000"]);
});

Deno.test("dns: peer URLs bracket IPv6 addresses", () => {
  assert.equal(peerUrl("https", "fd00::2", 443), "https://[fd00::2]:443");
  assert.equal(peerUrl("http", "10.1.2.3", 80), "http://10.1.2.3:80");
});
