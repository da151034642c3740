import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "./config.ts";

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
});

Deno.test("config: bad values are typed errors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--port=abc"], /--port must be a whole number/],
    [["--port=70000"], /--port must be a whole number from 0 to 65535/],
    [["--peers=not-a-url"], /--peers must be a base URL/],
    [["--bcrypt-cost=4"], /--bcrypt-cost/],
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

Deno.test("config: --help is recognised without other flags", () => {
  assert.equal(parseConfig(["--help"], {}), "help");
  assert.equal(parseConfig(["-h"], {}), "help");
});
