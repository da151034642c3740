/**
 * A server started with a bad setting says which option is wrong and what to do, in one line,
 * and exits with status 2: no stack trace, nothing left running.
 */
import assert from "node:assert/strict";

async function startFails(args: string[], allowWrite = "data") {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      `--allow-write=${allowWrite}`,
      "server/main.ts",
      "--port",
      "0",
      "--cluster-secret",
      "startup-errors-test-secret-0123456789",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  return {
    code: out.code,
    errors: stderr.split("\n").filter((l) => l.startsWith("Error:")),
    stderr,
  };
}

Deno.test("startup: a multicast interface that is on no interface is a configuration error", async () => {
  // 192.0.2.0/24 is reserved for documentation: no machine has it, so the join fails at once
  // and nothing is ever sent.
  const r = await startFails(["--discovery", "multicast", "--multicast-interface", "192.0.2.77"]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.errors.length, 1, r.stderr);
  assert.match(r.errors[0]!, /--multicast-interface/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
});

Deno.test("startup: a data folder the process may not write says how to allow it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await startFails(["--data-dir", `${dir}/node`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.errors[0] ?? "", /--data-dir .* cannot be written: .*--allow-write=/);
    assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
