/**
 * The server's edge towards browsers and operators: HTTP routing, the WebSocket session hub,
 * session tokens, static PWA files and metrics. It maps frames to calls on the cluster and store
 * and keeps no ring or storage logic of its own.
 */
export { ClientHub, type ClientHubDeps, type ClientHubOptions } from "./client_hub.ts";
export { createHandler, type HttpDeps, type HttpOptions } from "./http.ts";
export { Metrics } from "./metrics.ts";
export { type SessionClaims, TokenError, Tokens } from "./tokens.ts";
export { MailboxFrames, type MailboxFramesDeps } from "./mailbox_frames.ts";
