/**
 * A user's key pairs (DESIGN §4): RSA-OAEP for encryption and RSA-PSS for signatures, 3072-bit,
 * SHA-256, generated in the browser with Web Crypto. Public keys travel as SPKI in base64url;
 * private keys leave the browser only wrapped (AES-256-GCM, random IV) with the wrapping key of
 * `derive.ts`, as a {@link WrappedPrivateKey} record; unwrapped private keys are non-extractable.
 * A {@link fingerprint} lets two people compare a public key out of band.
 */
import { ProtocolError, readObject, readString } from "../validate.ts";
import { BASE64URL_PATTERN, fromBase64Url, toBase64Url, utf8 } from "./encoding.ts";

/** RSA modulus length of generated keys. */
export const RSA_MODULUS_BITS = 3072;

/** Which kind of RSA key: encryption (RSA-OAEP) or signature (RSA-PSS). */
export type KeyAlgorithm = "RSA-OAEP" | "RSA-PSS";

const RSA_PARAMS = {
  modulusLength: RSA_MODULUS_BITS,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: "SHA-256",
} as const;

/** The two key pairs of a user. */
export interface UserKeyPairs {
  /** RSA-OAEP: others wrap message keys for us with the public key. */
  encryption: CryptoKeyPair;
  /** RSA-PSS: we sign what we send; others verify with the public key. */
  signing: CryptoKeyPair;
}

/**
 * Generates both key pairs. The private keys are extractable only so that
 * {@link wrapPrivateKey} can wrap them; keep them in memory and drop them once wrapped.
 */
export async function generateUserKeys(): Promise<UserKeyPairs> {
  const [encryption, signing] = await Promise.all([
    crypto.subtle.generateKey({ name: "RSA-OAEP", ...RSA_PARAMS }, true, ["encrypt", "decrypt"]),
    crypto.subtle.generateKey({ name: "RSA-PSS", ...RSA_PARAMS }, true, ["sign", "verify"]),
  ]);
  return { encryption, signing };
}

/** A public key as SPKI DER in base64url. */
export async function exportPublicKey(key: CryptoKey): Promise<string> {
  if (key.type !== "public") throw new TypeError("exportPublicKey takes a public key");
  return toBase64Url(await crypto.subtle.exportKey("spki", key));
}

/** Imports a public key exported by {@link exportPublicKey}; throws ProtocolError if bad. */
export async function importPublicKey(spki: string, algorithm: KeyAlgorithm): Promise<CryptoKey> {
  try {
    return await crypto.subtle.importKey(
      "spki",
      fromBase64Url(spki),
      { name: algorithm, hash: "SHA-256" },
      true,
      algorithm === "RSA-OAEP" ? ["encrypt"] : ["verify"],
    );
  } catch {
    throw new ProtocolError("bad_frame", "publicKey", `Not an ${algorithm} public key`);
  }
}

/** A private key wrapped with the wrapping key: safe to store on the ring. */
export interface WrappedPrivateKey {
  v: 1;
  /** What the key is; also bound into the AES-GCM additional data. */
  alg: KeyAlgorithm;
  /** 12-byte AES-GCM IV, base64url. */
  iv: string;
  /** AES-GCM encryption of the PKCS#8 key, base64url. */
  data: string;
}

/** The wrapping key cannot unwrap this record: wrong password, or the record was altered. */
export class KeyUnwrapError extends Error {
  override name = "KeyUnwrapError";
}

function wrapAad(alg: KeyAlgorithm): Uint8Array<ArrayBuffer> {
  return utf8(`p2p-chat private key v1 ${alg}`);
}

function algorithmOf(key: CryptoKey): KeyAlgorithm {
  const name = key.algorithm.name;
  if (name !== "RSA-OAEP" && name !== "RSA-PSS") throw new TypeError(`Unexpected key ${name}`);
  return name;
}

/** Wraps an (extractable) private key with `wrappingKey`, under a fresh random IV. */
export async function wrapPrivateKey(
  privateKey: CryptoKey,
  wrappingKey: CryptoKey,
): Promise<WrappedPrivateKey> {
  if (privateKey.type !== "private") throw new TypeError("wrapPrivateKey takes a private key");
  const alg = algorithmOf(privateKey);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const data = await crypto.subtle.wrapKey("pkcs8", privateKey, wrappingKey, {
    name: "AES-GCM",
    iv,
    additionalData: wrapAad(alg),
  });
  return { v: 1, alg, iv: toBase64Url(iv), data: toBase64Url(data) };
}

/**
 * Unwraps a record made by {@link wrapPrivateKey} into a non-extractable private key.
 * Throws {@link KeyUnwrapError} if `wrappingKey` is not the one that wrapped it or the record
 * was altered.
 */
export async function unwrapPrivateKey(
  record: WrappedPrivateKey,
  wrappingKey: CryptoKey,
): Promise<CryptoKey> {
  try {
    return await crypto.subtle.unwrapKey(
      "pkcs8",
      fromBase64Url(record.data),
      wrappingKey,
      { name: "AES-GCM", iv: fromBase64Url(record.iv), additionalData: wrapAad(record.alg) },
      { name: record.alg, hash: "SHA-256" },
      false,
      record.alg === "RSA-OAEP" ? ["decrypt"] : ["sign"],
    );
  } catch {
    throw new KeyUnwrapError(`Cannot unwrap the ${record.alg} private key with this password`);
  }
}

/**
 * The same private key wrapped with `newKey` instead of `oldKey` (a change of salt or password):
 * unwrapped as extractable only for the moment of wrapping it again, never kept. Throws
 * {@link KeyUnwrapError} when `oldKey` does not open `record`.
 */
export async function rewrapPrivateKey(
  record: WrappedPrivateKey,
  oldKey: CryptoKey,
  newKey: CryptoKey,
): Promise<WrappedPrivateKey> {
  let key: CryptoKey;
  try {
    key = await crypto.subtle.unwrapKey(
      "pkcs8",
      fromBase64Url(record.data),
      oldKey,
      { name: "AES-GCM", iv: fromBase64Url(record.iv), additionalData: wrapAad(record.alg) },
      { name: record.alg, hash: "SHA-256" },
      true,
      record.alg === "RSA-OAEP" ? ["decrypt"] : ["sign"],
    );
  } catch {
    throw new KeyUnwrapError(`Cannot unwrap the ${record.alg} private key with this password`);
  }
  return await wrapPrivateKey(key, newKey);
}

/** Validates a {@link WrappedPrivateKey} read from the network or storage. */
export function parseWrappedPrivateKey(value: unknown, path = ""): WrappedPrivateKey {
  const obj = readObject(value, path);
  const at = (key: string) => path ? `${path}.${key}` : key;
  if (obj.v !== 1) {
    throw new ProtocolError("unsupported_version", at("v"), "Unsupported wrapped key version");
  }
  const alg = obj.alg;
  if (alg !== "RSA-OAEP" && alg !== "RSA-PSS") {
    throw new ProtocolError("bad_frame", at("alg"), 'Invalid field "alg"');
  }
  const b64 = { pattern: BASE64URL_PATTERN };
  return {
    v: 1,
    alg,
    iv: readString(obj, "iv", path, { ...b64, min: 16, max: 16 }),
    data: readString(obj, "data", path, { ...b64, min: 16, max: 4096 }),
  };
}

/**
 * The SHA-256 fingerprint of a public key (its SPKI bytes) as 16 groups of 4 upper-case hex
 * digits, e.g. "3F2A 09C1 …", for people to compare out of band.
 */
export async function fingerprint(publicKey: CryptoKey | string): Promise<string> {
  const spki = typeof publicKey === "string"
    ? fromBase64Url(publicKey)
    : new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", spki));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
  return hex.match(/.{4}/g)!.join(" ");
}
