/**
 * A UDP socket joined to one multicast group on one explicitly chosen interface, over
 * `node:dgram`. Sending and membership are pinned to that interface's address, and the TTL is 1,
 * so announcements never leave the local link nor go out an interface nobody configured.
 *
 * Deno 2.9's `node:dgram` supports every call used here (`reuseAddr`, `addMembership` with an
 * interface address, `setMulticastInterface`, `setMulticastTTL`, `setMulticastLoopback`); the
 * netns tests exercise them.
 */
import dgram from "node:dgram";
import { Buffer } from "node:buffer";

/** Where a {@link MulticastSocket} sends and listens. */
export interface MulticastSocketOptions {
  /** IPv4 multicast group, e.g. 239.77.77.77. */
  group: string;
  /** UDP port of the group. */
  port: number;
  /** IPv4 address of the local interface to join the group on and send from. */
  interfaceAddress: string;
  /** Told of socket errors after it is open (so none can crash the process). */
  onError?: (err: Error) => void;
}

/** What discovery needs of a datagram socket; tests pass an in-memory one. */
export interface MulticastSocket {
  /** Sends one datagram to the group. */
  send(data: Uint8Array): Promise<void>;
  /** Registers the handler of every datagram received from the group. */
  onMessage(handler: (data: Uint8Array, from: string) => void): void;
  /** Leaves the group and closes the socket. */
  close(): Promise<void>;
}

/** Opens a real socket bound to the group's port, joined on `interfaceAddress` only. */
export async function openMulticastSocket(
  options: MulticastSocketOptions,
): Promise<MulticastSocket> {
  const { group, port, interfaceAddress } = options;
  // reuseAddr lets several servers on one host (one network namespace) share the group's port.
  const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    // Binding to the group address (not 0.0.0.0) delivers only this group's datagrams.
    socket.bind(port, group, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  try {
    socket.addMembership(group, interfaceAddress);
    socket.setMulticastInterface(interfaceAddress);
    socket.setMulticastTTL(1);
    // Loopback on: other servers on the same host must hear us; our own copy is ignored upstream.
    socket.setMulticastLoopback(true);
  } catch (err) {
    socket.close();
    throw new Error(
      `Cannot join multicast group ${group}:${port} on interface ${interfaceAddress}: ${err}`,
    );
  }
  // An 'error' event without a listener would throw out of the event loop and end the server.
  socket.on("error", (err: Error) => options.onError?.(err));
  let handler: (data: Uint8Array, from: string) => void = () => {};
  socket.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    handler(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo.address);
  });
  return {
    send: (data) =>
      new Promise<void>((resolve, reject) => {
        socket.send(Buffer.from(data), port, group, (err) => err ? reject(err) : resolve());
      }),
    onMessage: (h) => handler = h,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
