import assert from "node:assert/strict";
import {
  addressKey,
  DEFAULT_KEY_LOOKUPS,
  KeyedLimiter,
  KeyLookupLimiter,
  TokenBucket,
} from "./rate_limit.ts";

function fakeClock(start = 1_000_000) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

Deno.test("rate limit: a bucket allows its burst, then refills at its rate", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket({ capacity: 3, perSecond: 2 }, clock.read);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  assert.equal(bucket.retryAfterMs(), 500);
  clock.now += 499;
  assert.equal(bucket.take(), false);
  clock.now += 1;
  assert.equal(bucket.take(), true);
  clock.now += 60_000;
  assert.equal(bucket.full, true);
  assert.equal(bucket.tokens, 3, "never above capacity");
});

Deno.test("rate limit: keys are independent and idle keys are pruned", () => {
  const clock = fakeClock();
  const limiter = new KeyedLimiter({ capacity: 1, perSecond: 1 }, clock.read, 2);
  assert.equal(limiter.take("a"), true);
  assert.equal(limiter.take("a"), false);
  assert.equal(limiter.take("b"), true);
  assert.equal(limiter.retryAfterMs("a"), 1000);
  assert.equal(limiter.retryAfterMs("never-seen"), 0);
  clock.now += 1000;
  limiter.prune();
  assert.equal(limiter.size, 0);
  // Bounded: a third busy key evicts the oldest rather than growing the map.
  limiter.take("x");
  limiter.take("y");
  limiter.take("z");
  assert.equal(limiter.size, 2);
});

Deno.test("rate limit: IPv6 addresses count by their /64, IPv4 by the address", () => {
  assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
  assert.equal(addressKey("[2001:0db8:0001:0002::9]"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.notEqual(addressKey("2001:db8:1:3::1"), addressKey("2001:db8:1:2::1"));
});

Deno.test("key lookups: misses run out before hits, and a refusal does not depend on the name", () => {
  const clock = fakeClock();
  const limiter = new KeyLookupLimiter({
    lookups: { capacity: 5, perSecond: 1 },
    misses: { capacity: 2, perSecond: 1 / 6 },
  }, clock.read);
  // Two misses use up the miss budget: the next lookup is refused, hit or miss alike.
  for (let i = 0; i < 2; i++) {
    assert.equal(limiter.admit("mallory"), 0);
    limiter.miss("mallory");
  }
  const wait = limiter.admit("mallory");
  assert.ok(wait > 0 && wait <= 6000, `waits for one miss token (${wait} ms)`);
  assert.equal(limiter.admit("alice"), 0, "other users keep their budget");
  clock.now += 6000;
  assert.equal(limiter.admit("mallory"), 0, "a miss token is back after 6 s");
  // Hits only use the (larger) lookup budget: 5 in a burst, then one per second.
  for (let i = 0; i < 5; i++) assert.equal(limiter.admit("alice"), 0);
  assert.equal(limiter.admit("alice"), 1000);
  clock.now += 1000;
  assert.equal(limiter.admit("alice"), 0);
});

Deno.test("key lookups: the defaults allow 200 hits but only 20 misses in a burst", () => {
  const clock = fakeClock();
  const limiter = new KeyLookupLimiter({}, clock.read);
  assert.deepEqual(DEFAULT_KEY_LOOKUPS.misses.capacity, 20);
  let hits = 0;
  while (limiter.admit("bob") === 0) hits++;
  assert.equal(hits, 200);
  let misses = 0;
  while (limiter.admit("eve") === 0) {
    limiter.miss("eve");
    misses++;
  }
  assert.equal(misses, 20);
  assert.equal(Math.ceil(limiter.admit("eve") / 1000), 6, "then one miss every 6 s (10/min)");
});
