/**
 * Builds the PWA into `dist/`: bundles `client/main.tsx` → `app.js` and `client/sw.ts` → `sw.js`
 * with esbuild (minified, with source maps), copies `index.html`, `app.css`, the manifest and
 * sql.js's `sql-wasm.wasm`, and draws the icons. Prints each file it wrote.
 *
 * Usage: `deno run -A client/build.ts [--watch]`
 *
 * simple-peer is bundled from its prebuilt `simplepeer.min.js` (a browserify bundle that carries
 * its own Buffer/stream shims), so the app needs no Node polyfills.
 */
import * as esbuild from "esbuild";
import { iconPng, iconSvg } from "./icons.ts";

const root = new URL("../", import.meta.url);
const client = new URL("client/", root);
const dist = new URL("dist/", root);
const modules = new URL("node_modules/", root);
const path = (u: URL) => decodeURIComponent(u.pathname);

/** Redirects the bare `simple-peer` import to the prebuilt browser bundle. */
const simplePeerPrebuilt: esbuild.Plugin = {
  name: "simple-peer-prebuilt",
  setup(build) {
    build.onResolve({ filter: /^simple-peer$/ }, () => ({
      path: path(new URL("simple-peer/simplepeer.min.js", modules)),
    }));
  },
};

function buildId(): string {
  return Date.now().toString(36);
}

function options(id: string): esbuild.BuildOptions[] {
  const common: esbuild.BuildOptions = {
    bundle: true,
    minify: true,
    sourcemap: true,
    target: ["es2022"],
    platform: "browser",
    absWorkingDir: path(root),
    nodePaths: [path(modules)],
    logLevel: "warning",
    legalComments: "none",
  };
  return [
    {
      ...common,
      entryPoints: [path(new URL("main.tsx", client))],
      outfile: path(new URL("app.js", dist)),
      format: "esm",
      jsx: "automatic",
      jsxImportSource: "preact",
      plugins: [simplePeerPrebuilt],
      define: { "process.env.NODE_ENV": '"production"' },
    },
    {
      ...common,
      entryPoints: [path(new URL("sw.ts", client))],
      outfile: path(new URL("sw.js", dist)),
      format: "iife",
      define: { BUILD_ID: JSON.stringify(id) },
    },
  ];
}

async function write(name: string, data: Uint8Array | string): Promise<void> {
  const target = new URL(name, dist);
  if (typeof data === "string") await Deno.writeTextFile(target, data);
  else await Deno.writeFile(target, data);
  report(name);
}

async function copy(from: URL, name: string): Promise<void> {
  await Deno.copyFile(from, new URL(name, dist));
  report(name);
}

function report(name: string): void {
  const size = Deno.statSync(new URL(name, dist)).size;
  console.log(`wrote dist/${name} (${(size / 1024).toFixed(1)} KiB)`);
}

async function copyStatic(): Promise<void> {
  await copy(new URL("index.html", client), "index.html");
  await copy(new URL("app.css", client), "app.css");
  await copy(new URL("manifest.webmanifest", client), "manifest.webmanifest");
  await copy(new URL("sql.js/dist/sql-wasm.wasm", modules), "sql-wasm.wasm");
  await write("icon.svg", iconSvg());
  await write("icon-192.png", await iconPng(192));
  await write("icon-512.png", await iconPng(512));
}

function reportBundles(): void {
  for (const name of ["app.js", "app.js.map", "sw.js", "sw.js.map"]) report(name);
}

/** Builds once; with `watch`, keeps rebuilding on changes until the process is stopped. */
export async function build({ watch = false } = {}): Promise<void> {
  await Deno.mkdir(dist, { recursive: true });
  await copyStatic();
  const id = buildId();
  if (!watch) {
    try {
      for (const opts of options(id)) await esbuild.build(opts);
      reportBundles();
    } finally {
      await esbuild.stop();
    }
    return;
  }
  const rebuilt: esbuild.Plugin = {
    name: "report",
    setup(b) {
      b.onEnd((result) => {
        if (result.errors.length === 0) console.log(`rebuilt ${b.initialOptions.outfile}`);
      });
    },
  };
  for (const opts of options(id)) {
    const ctx = await esbuild.context({ ...opts, plugins: [...(opts.plugins ?? []), rebuilt] });
    await ctx.watch();
  }
  console.log("watching client/ for changes (Ctrl-C to stop)");
}

if (import.meta.main) {
  await build({ watch: Deno.args.includes("--watch") });
}
