/**
 * End-to-end cryptography of P2P-Chat (DESIGN §4), on Web Crypto only, so the same code runs in
 * browsers and in Deno. A password is stretched into an auth secret for the server and a
 * wrapping key that never leaves the browser (`derive.ts`); each user has RSA-OAEP and RSA-PSS
 * key pairs whose private halves are stored only wrapped with that key (`keys.ts`); and every
 * message travels as an envelope encrypted under a fresh AES-256-GCM key, readable only by the
 * recipient and the sender, and signed by the sender (`envelope.ts`). Servers relay and store
 * these records without being able to read or forge them.
 */
export * from "./encoding.ts";
export * from "./derive.ts";
export * from "./keys.ts";
export * from "./envelope.ts";
export * from "./handover_batch.ts";
export * from "./handover_claim.ts";
