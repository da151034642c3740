import assert from "node:assert/strict";
import { ConfigError, HELP, parseConfig } from "./config.ts";

const SECRET = "0123456789abcdef";

Deno.test("config: flags win over environment, defaults fill the rest", () => {
  const config = parseConfig(["--port=9000", `--cluster-secret=${SECRET}`], {
    P2P_PORT: "1234",
    P2P_PEERS: "http://10.0.0.2:8000/, http://10.0.0.3:8000",
  });
  assert.ok(config !== "help");
  assert.equal(config.port, 9000);
  assert.equal(config.hostname, "127.0.0.1");
  assert.deepEqual(config.peers, ["http://10.0.0.2:8000", "http://10.0.0.3:8000"]);
  assert.equal(config.bcryptCost, 10);
  assert.equal(config.handoverGraceMs, 30_000);
  assert.equal(config.frameRate, 50);
  assert.equal(config.loginFailuresPerMinute, 5);
  assert.equal(config.loginFailuresPerAddressPerMinute, 20);
  const raised = parseConfig([`--cluster-secret=${SECRET}`, "--login-failures-per-minute=50"], {
    P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "1000",
  });
  assert.ok(raised !== "help");
  assert.equal(raised.loginFailuresPerMinute, 50);
  assert.equal(raised.loginFailuresPerAddressPerMinute, 1000);
  assert.deepEqual(
    [
      config.keyLookupBurst,
      config.keyLookupsPerMinute,
      config.keyMissBurst,
      config.keyMissesPerMinute,
    ],
    [200, 60, 20, 10],
  );
  const lookups = parseConfig([`--cluster-secret=${SECRET}`, "--key-miss-burst=3"], {
    P2P_KEY_MISS_BURST: "9",
    P2P_KEY_LOOKUPS_PER_MINUTE: "600",
  });
  assert.ok(lookups !== "help");
  assert.equal(lookups.keyMissBurst, 3);
  assert.equal(lookups.keyLookupsPerMinute, 600);
  assert.equal(config.limitHolderTimeoutMs, 1500);
  const holder = parseConfig([`--cluster-secret=${SECRET}`], {
    P2P_LIMIT_HOLDER_TIMEOUT_MS: "8000",
  });
  assert.ok(holder !== "help");
  assert.equal(holder.limitHolderTimeoutMs, 8000);
});

Deno.test("config: bad values are typed errors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--port=abc"], /--port must be a whole number/],
    [["--port=70000"], /--port must be a whole number from 0 to 65535/],
    [["--peers=not-a-url"], /--peers must be a base URL/],
    [["--bcrypt-cost=4"], /--bcrypt-cost/],
    [["--handover-grace-seconds=601"], /--handover-grace-seconds must be a whole number from 0/],
    [["--frame-rate=0"], /--frame-rate must be a whole number from 1/],
    [["--login-failures-per-minute=0"], /--login-failures-per-minute must be a whole number/],
    [
      ["--login-failures-per-address-per-minute=x"],
      /--login-failures-per-address-per-minute must be a whole number from 1 to 100000/,
    ],
    [["--key-miss-burst=0"], /--key-miss-burst must be a whole number from 1 to 100000/],
    [["--limit-holder-timeout-ms=50"], /--limit-holder-timeout-ms must be a whole number from 200/],
    [["--key-lookups-per-minute=x"], /--key-lookups-per-minute must be a whole number/],
    [["--browser-url=chat.example.org"], /--browser-url must be a base URL/],
    [["--no-such-flag"], /Unknown option/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseConfig([...args, `--cluster-secret=${SECRET}`], {}), (err) => {
      return err instanceof ConfigError && message.test(err.message);
    });
  }
  assert.throws(() => parseConfig([], {}), /--cluster-secret is required/);
  assert.throws(() => parseConfig(["--cluster-secret=short"], {}), /at least 16 characters/);
});

Deno.test("config: a benchmark's bcrypt cost goes below 10 only by its own, marked option", () => {
  const bench = parseConfig([`--cluster-secret=${SECRET}`, "--bcrypt-cost=12"], {
    P2P_BENCHMARK_BCRYPT_COST: "4",
  });
  assert.ok(bench !== "help");
  assert.equal(bench.bcryptCost, 4);
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--benchmark-bcrypt-cost=3"], {}),
    /--benchmark-bcrypt-cost must be a whole number from 4 to 15/,
  );
});

Deno.test("config: --help is recognised without other flags", () => {
  assert.equal(parseConfig(["--help"], {}), "help");
  assert.equal(parseConfig(["-h"], {}), "help");
});

Deno.test("config: discovery is off unless asked for", () => {
  const config = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(config !== "help");
  assert.deepEqual(config.discovery, { mode: "none" });
});

Deno.test("config: multicast discovery takes its group, port, interface and interval", () => {
  const config = parseConfig([
    `--cluster-secret=${SECRET}`,
    "--discovery=multicast",
    "--multicast-interface=10.78.0.3",
    "--announce-interval-ms=500",
  ], { P2P_MULTICAST_PORT: "40000" });
  assert.ok(config !== "help");
  assert.deepEqual(config.discovery, {
    mode: "multicast",
    group: "239.77.77.77",
    port: 40000,
    interfaceAddress: "10.78.0.3",
    intervalMs: 500,
  });
});

Deno.test("config: DNS discovery defaults to the server's own port and http", () => {
  const config = parseConfig(
    [`--cluster-secret=${SECRET}`, "--port=8100"],
    { P2P_DISCOVERY_DNS: "p2pchat.default.svc.cluster.local" },
  );
  assert.ok(config !== "help");
  assert.deepEqual(config.discovery, {
    mode: "dns",
    name: "p2pchat.default.svc.cluster.local",
    port: 8100,
    scheme: "http",
    intervalMs: 2000,
  });
});

Deno.test("config: bad discovery settings are typed errors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--discovery=carrier-pigeon"], /--discovery must be multicast, dns or none/],
    [["--discovery=multicast"], /--multicast-interface is required with --discovery multicast/],
    [["--discovery=multicast", "--multicast-interface=eth0"], /--multicast-interface must be/],
    [
      ["--discovery=multicast", "--multicast-interface=10.0.0.2", "--multicast-group=10.0.0.1"],
      /--multicast-group must be an IPv4 multicast address/,
    ],
    [
      ["--discovery=multicast", "--multicast-interface=10.0.0.2", "--multicast-port=0"],
      /--multicast-port must be a whole number from 1/,
    ],
    [
      ["--discovery=multicast", "--multicast-interface=10.0.0.2", "--announce-interval-ms=5"],
      /--announce-interval-ms must be a whole number from 100/,
    ],
    [["--discovery=dns"], /--discovery-dns must be a DNS name/],
    [["--discovery-dns=bad name!"], /--discovery-dns must be a DNS name/],
    [
      ["--discovery-dns=svc.local", "--port=0"],
      /--discovery-dns-port is required when --port is 0/,
    ],
    [["--discovery-dns=svc.local", "--discovery-dns-scheme=ftp"], /must be http or https/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseConfig([...args, `--cluster-secret=${SECRET}`], {}), (err) => {
      return err instanceof ConfigError && message.test(err.message);
    }, args.join(" "));
  }
});

Deno.test("config: --help lists every discovery flag", () => {
  for (
    const flag of [
      "--discovery ",
      "--multicast-group",
      "--multicast-port",
      "--multicast-interface",
      "--announce-interval-ms",
      "--discovery-dns ",
      "--discovery-dns-port",
      "--discovery-dns-scheme",
    ]
  ) assert.ok(HELP.includes(flag), flag);
});

Deno.test("config: TLS needs both files; the session lifetime can be set in seconds", () => {
  const config = parseConfig([`--cluster-secret=${SECRET}`, "--session-ttl-seconds=2"], {
    P2P_TLS_CERT: "/tls/cert.pem",
    P2P_TLS_KEY: "/tls/key.pem",
  });
  assert.ok(config !== "help");
  assert.deepEqual(config.tls, { certFile: "/tls/cert.pem", keyFile: "/tls/key.pem" });
  assert.equal(config.sessionTtlMs, 2000);
  const plain = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(plain !== "help");
  assert.equal(plain.tls, undefined);
  assert.equal(plain.sessionTtlMs, 168 * 3_600_000);
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--tls-cert=c.pem"], {}),
    (err) => err instanceof ConfigError && /--tls-cert and --tls-key go together/.test(err.message),
  );
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--session-ttl-seconds=0"], {}),
    (err) => err instanceof ConfigError && /--session-ttl-seconds/.test(err.message),
  );
});

Deno.test("config: mailbox replication defaults to K = 2, W = 2, and W may not exceed K + 1", () => {
  const config = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(config !== "help");
  assert.deepEqual(config.storage, {
    k: 2,
    w: 2,
    quotaPerRecipient: 10_000,
    senderBytes: 64 * 1024 * 1024,
    maxAgeMs: 30 * 86_400_000,
    repairIntervalMs: 1000,
  });
  const files = parseConfig([`--cluster-secret=${SECRET}`], { P2P_MAILBOX_SENDER_MB: "2" });
  assert.equal(files !== "help" && files.storage.senderBytes, 2 * 1024 * 1024);
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--mailbox-sender-mb=0"], {}),
    /--mailbox-sender-mb/,
  );
  const slow = parseConfig([`--cluster-secret=${SECRET}`], { P2P_REPAIR_INTERVAL_MS: "5000" });
  assert.equal(slow !== "help" && slow.storage.repairIntervalMs, 5000);
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--repair-interval-ms=10"], {}),
    /--repair-interval-ms must be a whole number/,
  );
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--replicas=1", "--write-quorum=3"], {}),
    /cannot exceed the 2 copies/,
  );
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--mailbox-quota=0"], {}),
    /--mailbox-quota must be a whole number/,
  );
});

Deno.test("config: the WebSocket message cap defaults to 196,608 bytes and can be set", () => {
  const base = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(base !== "help");
  assert.equal(base.maxWsMessageBytes, 196_608);
  const set = parseConfig([`--cluster-secret=${SECRET}`], { P2P_MAX_WS_MESSAGE_BYTES: "100000" });
  assert.ok(set !== "help");
  assert.equal(set.maxWsMessageBytes, 100_000);
  // Below the hub's 64 KiB frames, the browser's own frames would be cut off: refused.
  assert.throws(
    () => parseConfig([`--cluster-secret=${SECRET}`, "--max-ws-message-bytes=1000"], {}),
    /--max-ws-message-bytes must be a whole number from 65536/,
  );
});

Deno.test("config: the browser URL is the public URL unless set (flag or P2P_BROWSER_URL)", () => {
  const plain = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(plain !== "help");
  assert.equal(plain.browserUrl, undefined);
  const set = parseConfig([`--cluster-secret=${SECRET}`], {
    P2P_PUBLIC_URL: "http://172.28.77.11:8000",
    P2P_BROWSER_URL: "https://chat.example.org/",
  });
  assert.ok(set !== "help");
  assert.equal(set.publicUrl, "http://172.28.77.11:8000");
  assert.equal(set.browserUrl, "https://chat.example.org");
});

Deno.test("config: STUN and TURN servers from flags or environment; TURN needs its secret", () => {
  const config = parseConfig([
    `--cluster-secret=${SECRET}`,
    "--stun-urls=stun:203.0.113.5:3478",
    "--turn-ttl-seconds=600",
  ], {
    P2P_TURN_URLS: "turn:203.0.113.5:3478?transport=udp, turn:203.0.113.5:3478?transport=tcp",
    P2P_TURN_SECRET: "coturn-static-auth-secret",
  });
  assert.ok(config !== "help");
  assert.deepEqual(config.ice, {
    stunUrls: ["stun:203.0.113.5:3478"],
    turnUrls: ["turn:203.0.113.5:3478?transport=udp", "turn:203.0.113.5:3478?transport=tcp"],
    turnSecret: "coturn-static-auth-secret",
    turnTtlMs: 600_000,
  });
  const none = parseConfig([`--cluster-secret=${SECRET}`], {});
  assert.ok(none !== "help");
  assert.deepEqual(none.ice, {
    stunUrls: [],
    turnUrls: [],
    turnSecret: undefined,
    turnTtlMs: 86_400_000,
  });
  const cases: [string[], RegExp][] = [
    [["--turn-urls=turn:10.0.0.1:3478"], /--turn-urls needs --turn-secret/],
    [["--turn-urls=turn:10.0.0.1:3478", "--turn-secret=short"], /at least 16 characters/],
    [["--stun-urls=http://10.0.0.1"], /--stun-urls must list URLs like stun:/],
    [["--turn-urls=stun:10.0.0.1", `--turn-secret=${SECRET}`], /--turn-urls must list URLs/],
    [["--turn-ttl-seconds=5"], /--turn-ttl-seconds must be a whole number from 60/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => parseConfig([`--cluster-secret=${SECRET}`, ...args], {}), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, pattern);
      return true;
    });
  }
});

Deno.test("config: the mailbox time scales of tests are taken only with P2P_TEST_TIMINGS=1", () => {
  const args = [`--cluster-secret=${SECRET}`];
  const timings = {
    P2P_TEST_MAILBOX_MAX_AGE_MS: "4000",
    P2P_TEST_TOMBSTONE_GC_EVERY_MS: "200",
    P2P_TEST_TOMBSTONE_MARGIN_MS: "0",
  };
  const test = parseConfig(args, { ...timings, P2P_TEST_TIMINGS: "1" });
  assert.ok(test !== "help");
  assert.equal(test.storage.maxAgeMs, 4000);
  assert.equal(test.storage.tombstoneGcEveryMs, 200);
  assert.equal(test.storage.tombstoneMarginMs, 0);
  // The gate alone changes nothing; the test's retention wins over the operator's days.
  const gateOnly = parseConfig(args, { P2P_TEST_TIMINGS: "1", P2P_MAILBOX_MAX_AGE_DAYS: "2" });
  assert.ok(gateOnly !== "help");
  assert.equal(gateOnly.storage.maxAgeMs, 2 * 86_400_000);
  assert.equal(gateOnly.storage.tombstoneGcEveryMs, undefined);
  assert.equal(gateOnly.storage.tombstoneMarginMs, undefined);
  const both = parseConfig([...args, "--mailbox-max-age-days=2"], {
    P2P_TEST_TIMINGS: "1",
    P2P_TEST_MAILBOX_MAX_AGE_MS: "5000",
  });
  assert.equal(both !== "help" && both.storage.maxAgeMs, 5000);

  // Without the gate each one is refused, naming itself and what to do.
  for (const [name, value] of Object.entries(timings)) {
    assert.throws(
      () => parseConfig(args, { [name]: value }),
      (err) =>
        err instanceof ConfigError && err.message.startsWith(`${name} is for tests only`) &&
        err.message.includes("P2P_TEST_TIMINGS=1") &&
        err.message.includes("--mailbox-max-age-days"),
      name,
    );
  }
  for (const gate of ["0", "yes", "true", ""]) {
    assert.throws(
      () => parseConfig(args, { ...timings, P2P_TEST_TIMINGS: gate }),
      (err) =>
        err instanceof ConfigError &&
        err.message ===
          `P2P_TEST_TIMINGS must be 1 (tests that shorten the mailbox time scales) or unset, got "${gate}"`,
      `gate "${gate}"`,
    );
  }

  // Bad values are refused with their bounds, gate or not.
  const bad: [string, string, RegExp][] = [
    ["P2P_TEST_MAILBOX_MAX_AGE_MS", "999", /from 1000 to 86400000, got "999"/],
    ["P2P_TEST_MAILBOX_MAX_AGE_MS", "5s", /from 1000 to 86400000, got "5s"/],
    ["P2P_TEST_MAILBOX_MAX_AGE_MS", "86400001", /from 1000 to 86400000/],
    ["P2P_TEST_TOMBSTONE_GC_EVERY_MS", "9", /from 10 to 600000, got "9"/],
    ["P2P_TEST_TOMBSTONE_GC_EVERY_MS", "", /from 10 to 600000, got ""/],
    ["P2P_TEST_TOMBSTONE_MARGIN_MS", "-1", /from 0 to 86400000, got "-1"/],
    ["P2P_TEST_TOMBSTONE_MARGIN_MS", "1.5", /from 0 to 86400000, got "1.5"/],
  ];
  for (const [name, value, message] of bad) {
    assert.throws(
      () => parseConfig(args, { P2P_TEST_TIMINGS: "1", [name]: value }),
      (err) =>
        err instanceof ConfigError && err.message.startsWith(`${name} must be a whole number`) &&
        message.test(err.message),
      `${name}=${value}`,
    );
  }
  // The operator's option is still checked when a test overrides it.
  assert.throws(
    () =>
      parseConfig([...args, "--mailbox-max-age-days=0"], {
        P2P_TEST_TIMINGS: "1",
        P2P_TEST_MAILBOX_MAX_AGE_MS: "5000",
      }),
    /--mailbox-max-age-days must be a whole number/,
  );
  for (const name of Object.keys(timings)) assert.ok(HELP.includes(name), name);
  assert.ok(HELP.includes("P2P_TEST_TIMINGS=1"));
});
