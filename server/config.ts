/**
 * Server configuration from command-line flags and environment variables (flags win). Invalid
 * configuration is reported as a {@link ConfigError} naming the flag and what to do.
 */
import { parseArgs } from "node:util";

/** Everything a server process needs to start. */
export interface ServerConfig {
  port: number;
  hostname: string;
  /** Base URL other servers and browsers use; derived from hostname and port when absent. */
  publicUrl: string | undefined;
  peers: string[];
  clusterSecret: string;
  /** Directory of the SQLite database; derived from the port when absent. */
  dataDir: string | undefined;
  distDir: string;
  bcryptCost: number;
  sessionTtlMs: number;
}

/** A configuration value is missing or malformed. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The `--help` text. */
export const HELP = `P2P-Chat server: one node of the ring; serves the PWA and browser WebSockets.

Usage: deno task server [options]

Options (environment variable in brackets; flags win):
  --port N             TCP port, 0 for any free port             [P2P_PORT]          default 8000
  --hostname H         address to listen on                      [P2P_HOSTNAME]      default 127.0.0.1
  --public-url URL     base URL others reach this server at      [P2P_PUBLIC_URL]    default http://H:PORT
  --peers URL,URL      servers to contact at start (seed list)   [P2P_PEERS]         default none
  --cluster-secret S   shared secret of the cluster, ≥16 chars   [P2P_CLUSTER_SECRET] required
  --data-dir DIR       where the SQLite database lives           [P2P_DATA_DIR]      default data/node-PORT
  --dist DIR           the built client to serve                 [P2P_DIST_DIR]      default dist
  --bcrypt-cost N      bcrypt cost factor, 10–15                 [P2P_BCRYPT_COST]   default 10
  --session-ttl-hours N  lifetime of a login session             [P2P_SESSION_TTL_HOURS] default 168
  -h, --help           show this text

On start the server prints one line "ready <url>" on stdout; logs are JSON lines on stderr.`;

const URL_PATTERN = /^https?:\/\/[^\s/]+$/;

function integer(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    throw new ConfigError(`--${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return n;
}

function url(name: string, raw: string): string {
  const value = raw.trim().replace(/\/$/, "");
  if (!URL_PATTERN.test(value)) {
    throw new ConfigError(`--${name} must be a base URL like http://10.0.0.2:8000, got "${raw}"`);
  }
  return value;
}

/** Parses flags and environment; returns "help" when help was asked for. */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined>,
): ServerConfig | "help" {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        hostname: { type: "string" },
        "public-url": { type: "string" },
        peers: { type: "string" },
        "cluster-secret": { type: "string" },
        "data-dir": { type: "string" },
        dist: { type: "string" },
        "bcrypt-cost": { type: "string" },
        "session-ttl-hours": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) return "help";
  const pick = (flag: string, envName: string): string | undefined => {
    const v = values[flag];
    return typeof v === "string" ? v : env[envName];
  };
  const secret = pick("cluster-secret", "P2P_CLUSTER_SECRET");
  if (!secret || secret.length < 16) {
    throw new ConfigError(
      "--cluster-secret is required and must be at least 16 characters: every server of one cluster uses the same secret",
    );
  }
  const peersRaw = pick("peers", "P2P_PEERS") ?? "";
  const publicUrl = pick("public-url", "P2P_PUBLIC_URL");
  return {
    port: integer("port", pick("port", "P2P_PORT") ?? "8000", 0, 65535),
    hostname: pick("hostname", "P2P_HOSTNAME") ?? "127.0.0.1",
    publicUrl: publicUrl === undefined ? undefined : url("public-url", publicUrl),
    peers: peersRaw.split(",").map((p) => p.trim()).filter((p) => p).map((p) => url("peers", p)),
    clusterSecret: secret,
    dataDir: pick("data-dir", "P2P_DATA_DIR"),
    distDir: pick("dist", "P2P_DIST_DIR") ?? "dist",
    bcryptCost: integer("bcrypt-cost", pick("bcrypt-cost", "P2P_BCRYPT_COST") ?? "10", 10, 15),
    sessionTtlMs: integer(
      "session-ttl-hours",
      pick("session-ttl-hours", "P2P_SESSION_TTL_HOURS") ?? "168",
      1,
      24 * 365,
    ) * 3_600_000,
  };
}
