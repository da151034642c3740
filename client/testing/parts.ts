/**
 * Real collaborators of one user's session, for unit tests of its parts (outbox, inbox): an
 * in-memory history on sql.js, and keyrings over the pre-generated test keys of alice, bob and
 * eve, each seeing the others' public keys as the directory would hand them out.
 */
import { exportPublicKey, seal, type UserKeyPairs } from "../../shared/crypto/mod.ts";
import { testKeys } from "../../shared/crypto/test_keys.ts";
import { createMemoryRowStores, History } from "../history.ts";
import { createMemoryKeyStore, Keyring, type OwnKeys } from "../keyring.ts";
import { loadSqlJs } from "../sql_loader.ts";

/** A user of the test keys. */
export type TestUser = "alice" | "bob" | "eve";

let sql: ReturnType<typeof loadSqlJs> | null = null;

/** A fresh, empty history of `owner`, in memory. */
export async function memoryHistory(owner: string): Promise<History> {
  sql ??= loadSqlJs(
    decodeURIComponent(
      new URL("../../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
    ),
  );
  return await History.open({ sql: await sql, openStore: createMemoryRowStores() }, owner);
}

async function pairsOf(user: TestUser): Promise<UserKeyPairs> {
  return (await testKeys())[user];
}

/** `user`'s keys as a logged-in session holds them. */
export async function ownKeysOf(user: TestUser): Promise<OwnKeys> {
  const pairs = await pairsOf(user);
  return {
    encryption: pairs.encryption.privateKey,
    signing: pairs.signing.privateKey,
    encryptionPublic: await exportPublicKey(pairs.encryption.publicKey),
    signingPublic: await exportPublicKey(pairs.signing.publicKey),
  };
}

/**
 * The keyring of `me`, whose directory knows the test users' keys (and no one else's). A lying
 * directory: `directory[user]` answers another test user's keys for `user`, or null ("no
 * keys"); the test may change it at any time.
 */
export async function keyringOf(
  me: TestUser,
  directory: Record<string, TestUser | null> = {},
): Promise<Keyring> {
  return new Keyring({
    me,
    own: await ownKeysOf(me),
    store: createMemoryKeyStore(),
    async fetchKeys(user) {
      const answer = user in directory ? directory[user] : user;
      if (answer !== "alice" && answer !== "bob" && answer !== "eve") return null;
      const own = await ownKeysOf(answer);
      return { encryption: own.encryptionPublic, signing: own.signingPublic };
    },
  });
}

/** An envelope sealed by `from` for `to`, as their clients would make it. */
export async function sealedBy(
  from: TestUser,
  to: TestUser,
  message: { id: string; sentAt: number; text: string },
) {
  const [sender, recipient] = [await pairsOf(from), await pairsOf(to)];
  return await seal(
    { ...message, from, to },
    sender.signing.privateKey,
    recipient.encryption.publicKey,
    sender.encryption.publicKey,
  );
}
