/**
 * Key pairs for the unit tests of this folder, generated once per test process (3072-bit RSA
 * generation takes a while) and shared by every test that needs them.
 */
import { generateUserKeys, type UserKeyPairs } from "./keys.ts";

let cached: Promise<Record<"alice" | "bob" | "eve", UserKeyPairs>> | null = null;

/** The key pairs of alice, bob and eve. */
export function testKeys(): Promise<Record<"alice" | "bob" | "eve", UserKeyPairs>> {
  cached ??= (async () => {
    const [alice, bob, eve] = await Promise.all([
      generateUserKeys(),
      generateUserKeys(),
      generateUserKeys(),
    ]);
    return { alice, bob, eve };
  })();
  return cached;
}
