import assert from "node:assert/strict";
import { ManualClock } from "../../shared/clock.ts";
import { validateServerFrame } from "../../shared/mod.ts";
import { IceServers } from "./ice_servers.ts";

const SECRET = "north-wind-turn-secret";

Deno.test("ice servers: TURN credentials follow the TURN REST convention coturn checks", async () => {
  const ice = new IceServers({ clock: { now: () => 1_700_000_000_000 } }, {
    stunUrls: ["stun:turn.example.org:3478"],
    turnUrls: [
      "turn:turn.example.org:3478?transport=udp",
      "turn:turn.example.org:3478?transport=tcp",
    ],
    turnSecret: SECRET,
    turnTtlMs: 86_400_000,
  });
  const grant = await ice.forUser("alice");
  assert.deepEqual(grant, {
    iceServers: [
      { urls: ["stun:turn.example.org:3478"] },
      {
        urls: [
          "turn:turn.example.org:3478?transport=udp",
          "turn:turn.example.org:3478?transport=tcp",
        ],
        username: "1700086400:alice",
        // echo -n "1700086400:alice" | openssl dgst -sha1 -hmac "$SECRET" -binary | base64
        credential: "jj3Da71S/DXBVrUDd8AShS6RIu4=",
      },
    ],
    expiresAt: 1_700_086_400_000,
  });
  // What the server sends passes the browser's parser.
  const frame = validateServerFrame({ v: 1, type: "ice_servers", reqId: 3, ...grant });
  assert.equal(frame.type, "ice_servers");
});

Deno.test("ice servers: a later request gets a later expiry; STUN alone never expires", async () => {
  let now = 1_000_000;
  const ice = new IceServers({ clock: { now: () => now } }, {
    turnUrls: ["turn:10.0.0.1:3478"],
    turnSecret: SECRET,
    turnTtlMs: 600_000,
  });
  const first = await ice.forUser("bob");
  now += 300_000;
  const second = await ice.forUser("bob");
  assert.equal(second.expiresAt - first.expiresAt, 300_000);
  assert.notEqual(second.iceServers[0]!.credential, first.iceServers[0]!.credential);
  const stunOnly = new IceServers({ clock: { now: () => now } }, { stunUrls: ["stun:10.0.0.1"] });
  assert.deepEqual(await stunOnly.forUser("bob"), {
    iceServers: [{ urls: ["stun:10.0.0.1"] }],
    expiresAt: 0,
  });
});

Deno.test("ice servers: TURN URLs without a secret are refused", () => {
  assert.throws(
    () => new IceServers({ clock: new ManualClock() }, { turnUrls: ["turn:10.0.0.1:3478"] }),
    /no TURN secret/,
  );
});

Deno.test("ice servers: the browser's parser refuses a URL that is not STUN or TURN", () => {
  assert.throws(
    () =>
      validateServerFrame({
        v: 1,
        type: "ice_servers",
        reqId: 1,
        iceServers: [{ urls: ["http://evil.example/"] }],
        expiresAt: 0,
      }),
    /iceServers\.0\.urls\.0/,
  );
});
