import assert from "node:assert/strict";
import { checkImports, relativeSpecifiers } from "./check_imports.ts";

/** Writes `files` (root-relative path → source) into a fresh temp dir and checks it. */
async function check(files: Record<string, string>) {
  const root = await Deno.makeTempDir({ prefix: "p2pchat-imports-" });
  try {
    for (const [path, source] of Object.entries(files)) {
      await Deno.mkdir(`${root}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
      await Deno.writeTextFile(`${root}/${path}`, source);
    }
    return await checkImports(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const DOWNWARDS = {
  "shared/mod.ts": "export const v = 1;\n",
  "server/chord/mod.ts": 'export { v } from "../../shared/mod.ts";\n',
  "server/chord/_sha1.ts": "export const sha = 1;\n",
  "server/chord/node.ts": 'import { sha } from "./_sha1.ts";\nexport const n = sha;\n',
  "server/cluster/mod.ts": 'import { n } from "../chord/mod.ts";\nexport const c = n;\n',
  "server/api/metrics.ts": 'import { c } from "../cluster/mod.ts";\nexport const m = c;\n',
  "server/main.ts": 'import { m } from "./api/metrics.ts";\nconsole.log(m);\n',
  "client/app.tsx": 'import { v } from "../shared/mod.ts";\nexport const a = v;\n',
};

Deno.test("check:imports passes a tree whose imports all point downwards", async () => {
  assert.deepEqual(await check(DOWNWARDS), []);
});

Deno.test("check:imports reports a lower layer importing a higher one, with file, line and rule", async () => {
  const violations = await check({
    ...DOWNWARDS,
    "server/chord/lookup.ts":
      '// chord must not know the edge\n\nimport {\n  m,\n} from "../api/metrics.ts";\n',
    "client/leak.ts": 'export * from "../server/chord/mod.ts";\n',
    "shared/up.ts": 'const lazy = () => import("../client/app.tsx");\n',
  });
  assert.deepEqual(violations, [
    {
      file: "client/leak.ts",
      line: 1,
      imported: "server/chord/mod.ts",
      rule: "client may import only shared",
    },
    {
      file: "server/chord/lookup.ts",
      line: 5,
      imported: "server/api/metrics.ts",
      rule: "server/chord may import only shared",
    },
    {
      file: "shared/up.ts",
      line: 1,
      imported: "client/app.tsx",
      rule: "shared imports nothing of ours",
    },
  ]);
});

Deno.test("check:imports keeps files starting with _ private to their folder", async () => {
  const violations = await check({
    ...DOWNWARDS,
    "server/api/hash.ts": 'import { sha } from "../chord/_sha1.ts";\n',
  });
  assert.equal(violations.length, 1);
  assert.equal(violations[0]!.imported, "server/chord/_sha1.ts");
  assert.match(violations[0]!.rule, /private to server\/chord\//);
});

Deno.test("check:imports lets tests import across server/ and shared/, never tests/", async () => {
  const violations = await check({
    ...DOWNWARDS,
    "server/chord/node_test.ts": 'import { m } from "../api/metrics.ts";\n',
    "server/chord/testing.ts": 'import { m } from "../api/metrics.ts";\n',
    "server/store/db_test.ts": 'import { waitFor } from "../../tests/support/wait.ts";\n',
  });
  assert.deepEqual(violations.map((v) => `${v.file} → ${v.imported}`), [
    "server/store/db_test.ts → tests/support/wait.ts",
  ]);
});

Deno.test("check:imports reads no import out of comments or template strings", () => {
  const source = [
    "/**",
    ' * @example import { x } from "../api/mod.ts";',
    " */",
    'const code = `import "../api/generated.ts";`;',
    'import type { T } from "./types.ts"; // import "../api/x.ts"',
    'export { b } from "./b.ts";',
  ].join("\n");
  assert.deepEqual(relativeSpecifiers(source), [
    { specifier: "./types.ts", line: 5 },
    { specifier: "./b.ts", line: 6 },
  ]);
});
