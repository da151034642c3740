import assert from "node:assert/strict";
import { ManualClock } from "../../shared/clock.ts";
import {
  answerLimitRequest,
  type LimitCall,
  parseLimitRequest,
  parseLimitResponse,
} from "../cluster/mod.ts";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import { LocalLimits, RingLimits } from "./shared_limits.ts";

const RULES = {
  loginFailuresPerUser: { capacity: 5, perSecond: 5 / 60 },
  loginFailuresPerAddress: { capacity: 20, perSecond: 20 / 60 },
  registrationsPerAddress: { capacity: 3, perSecond: 3 / 60 },
};

Deno.test("local limits: attempts are charged when they begin, refunded when they succeed", async () => {
  const limits = new LocalLimits(RULES, new ManualClock());
  // 60 attempts in flight at once: five may go ahead, the rest wait.
  const started = await Promise.all(
    Array.from({ length: 60 }, () => limits.beginLogin("alice", "192.0.2.1")),
  );
  assert.equal(started.filter((c) => c.blockedMs === 0).length, 5);
  assert.ok(started.slice(5).every((c) => c.blockedMs > 0));
  // One of the five was the right password: it gives its token back.
  await started[0]!.refund();
  assert.equal((await limits.beginLogin("alice", "192.0.2.1")).blockedMs, 0);
  assert.ok((await limits.beginLogin("alice", "192.0.2.1")).blockedMs > 0);
});

Deno.test("local limits: a blocked username does not use up its address; IPv6 counts by /64", async () => {
  const clock = new ManualClock();
  const limits = new LocalLimits(RULES, clock);
  for (let i = 0; i < 5; i++) await limits.beginLogin("alice", "10.0.0.1");
  const blocked = await limits.beginLogin("alice", "10.0.0.9");
  assert.equal(blocked.blockedMs, 12_000, "per username, from any address");
  // 15 more failures from 10.0.0.1 with other names fill its 20; the refused alice took none.
  for (let i = 0; i < 15; i++) {
    assert.equal((await limits.beginLogin(`user${i}`, "10.0.0.1")).blockedMs, 0);
  }
  assert.equal((await limits.beginLogin("fresh", "10.0.0.1")).blockedMs, 3_000);
  assert.equal((await limits.beginLogin("fresh", "10.0.0.2")).blockedMs, 0);
  // IPv6 counts by /64.
  for (let i = 0; i < 3; i++) {
    assert.equal((await limits.beginRegistration(`2001:db8:1:2::${i}`)).blockedMs, 0);
  }
  assert.ok((await limits.beginRegistration("2001:db8:1:2:ffff::9")).blockedMs > 0);
  assert.equal((await limits.beginRegistration("2001:db8:1:3::1")).blockedMs, 0);
});

/** Three servers whose counters are held by `holder`, the calls going through the parsers. */
function threeServers(
  holderOf: (ringKey: string) => Promise<string>,
  clock: ManualClock,
  liveServerCount?: () => number,
) {
  const names = ["http://a", "http://b", "http://c"];
  const held = new Map(names.map((n) => [n, new LocalLimits(RULES, clock)]));
  const down = new Set<string>();
  const hanging = new Set<string>();
  const calls: string[] = [];
  const call: LimitCall = (address, request) => {
    calls.push(`${address} ${request.type} ${request.kind}`);
    if (down.has(address)) return Promise.reject(new Error("connection refused"));
    if (hanging.has(address)) return new Promise(() => {});
    const answer = answerLimitRequest(
      held.get(address)!,
      parseLimitRequest(JSON.stringify(request)),
    );
    return Promise.resolve(parseLimitResponse(JSON.stringify(answer)));
  };
  const metrics = names.map(() => new Metrics());
  const servers = names.map((self, i) =>
    new RingLimits({
      self,
      local: held.get(self)!,
      holderOf,
      isLive: () => true,
      liveServerCount,
      call,
      metrics: metrics[i]!,
      log: silentLog,
      clock,
    }, { holderTimeoutMs: 1500 })
  );
  return { servers, held, down, hanging, calls, metrics };
}

Deno.test("ring limits: a burst spread over three servers gets the limit once, not three times", async () => {
  const clock = new ManualClock();
  const ring = threeServers(() => Promise.resolve("http://b"), clock);
  const charges = await Promise.all(
    Array.from(
      { length: 30 },
      (_, i) => ring.servers[i % 3]!.beginLogin("alice", `198.51.100.${i}`),
    ),
  );
  assert.equal(charges.filter((c) => c.blockedMs === 0).length, 5);
  // b held them: a and c asked it; b charged itself without a call.
  assert.ok(ring.calls.every((c) => c.startsWith("http://b ")));
  assert.match(
    ring.metrics[1]!.render(),
    /p2pchat_limit_charges_total\{kind="login_user",where="self"\} 10/,
  );
  // A success gives the token back on the holder, wherever the login ran.
  await charges[0]!.refund();
  const again = await ring.servers[2]!.beginLogin("alice", "203.0.113.1");
  assert.equal(again.blockedMs, 0);
  assert.ok((await ring.servers[0]!.beginLogin("alice", "203.0.113.2")).blockedMs > 0);

  // Registrations from one address, over all three servers: three in all.
  const regs = await Promise.all(
    Array.from({ length: 12 }, (_, i) => ring.servers[i % 3]!.beginRegistration("192.0.2.7")),
  );
  assert.equal(regs.filter((c) => c.blockedMs === 0).length, 3);
});

Deno.test("ring limits: an unreachable holder is replaced by this server's own counters, never by none", async () => {
  const clock = new ManualClock();
  const ring = threeServers(() => Promise.resolve("http://c"), clock);
  ring.down.add("http://c");
  const viaA = await Promise.all(
    Array.from({ length: 10 }, () => ring.servers[0]!.beginLogin("alice", "192.0.2.1")),
  );
  assert.equal(viaA.filter((c) => c.blockedMs === 0).length, 5, "a's own limit holds");
  assert.match(
    ring.metrics[0]!.render(),
    /p2pchat_limit_charges_total\{kind="login_user",where="fallback"\} 10/,
  );
  // A holder that never answers: after the bound the charge is made here instead.
  ring.down.clear();
  ring.hanging.add("http://c");
  const pending = ring.servers[1]!.beginRegistration("192.0.2.9");
  let settled = false;
  void pending.then(() => settled = true);
  await clock.advance(1499);
  assert.equal(settled, false);
  await clock.advance(1);
  assert.equal((await pending).blockedMs, 0);
  assert.match(
    ring.metrics[1]!.render(),
    /p2pchat_limit_charges_total\{kind="registration_address",where="fallback"\} 1/,
  );
});

Deno.test("ring limits: servers that fall back while three are alive get a third of the budget each", async () => {
  const clock = new ManualClock();
  let live = 3;
  const ring = threeServers(() => Promise.resolve("http://c"), clock, () => live);
  // Each counter (the name's, then the address's) waits the bound for a holder that hangs.
  const settle = async <T>(work: Promise<T>): Promise<T> => {
    let done = false;
    void work.then(() => done = true);
    for (let i = 0; i < 4 && !done; i++) await clock.advance(1500);
    return await work;
  };
  // c is alive but too busy to answer within the bound: a and b each count on their own.
  ring.hanging.add("http://c");
  const guesses = (server: number) =>
    Array.from({ length: 5 }, () => ring.servers[server]!.beginLogin("alice", "192.0.2.1"));
  const all = await settle(Promise.all([...guesses(0), ...guesses(1)]));
  // One guess each (5 / 3, at least one), not five each: with c's own five, 7 in all, not 15.
  assert.equal(all.filter((c) => c.blockedMs === 0).length, 2);
  // A share refills at a third of the rate: nothing more after 12 s, one more after 36 s.
  await clock.advance(12_000);
  const early = await settle(ring.servers[0]!.beginLogin("alice", "192.0.2.1"));
  assert.ok(early.blockedMs > 0, "a third of the refill, not all of it");
  await clock.advance(24_000);
  const later = await settle(ring.servers[0]!.beginLogin("alice", "192.0.2.1"));
  assert.equal(later.blockedMs, 0);
  // A lone survivor keeps the whole budget.
  live = 1;
  const alone = await settle(
    Promise.all(Array.from({ length: 8 }, () => ring.servers[1]!.beginLogin("bob", "192.0.2.2"))),
  );
  assert.equal(alone.filter((c) => c.blockedMs === 0).length, 5);
});

Deno.test("ring limits: a lookup that fails or hangs falls back too", async () => {
  const clock = new ManualClock();
  let fails = true;
  const ring = threeServers(
    () => fails ? Promise.reject(new Error("no route")) : new Promise(() => {}),
    clock,
  );
  assert.equal((await ring.servers[0]!.beginRegistration("192.0.2.9")).blockedMs, 0);
  fails = false;
  const pending = ring.servers[0]!.beginRegistration("192.0.2.9");
  await clock.advance(1500);
  assert.equal((await pending).blockedMs, 0);
  assert.match(
    ring.metrics[0]!.render(),
    /p2pchat_limit_charges_total\{kind="registration_address",where="fallback"\} 2/,
  );
});
