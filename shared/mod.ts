/**
 * Code shared by browsers and servers: the wire protocols (browser ↔ server, browser ↔ browser,
 * server ↔ server) with their runtime validators, and the username rules. Nothing here does I/O;
 * every parser takes `unknown` and returns a typed message or throws a {@link ProtocolError}.
 */
export * from "./validate.ts";
export * from "./username.ts";
export * from "./protocol.ts";
export * from "./peer_protocol.ts";
export * from "./file_protocol.ts";
export * from "./cluster_protocol.ts";
export * from "./sealed_frame.ts";
