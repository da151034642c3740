/**
 * The app icon, drawn in code so the build needs no image files or network: an SVG, and PNGs at
 * any size (for the manifest and iOS home screens) rasterised from the same shapes.
 */

import { concatBytes } from "../shared/bytes.ts";

const BLUE = [37, 99, 235] as const;
const WHITE = [255, 255, 255] as const;

/** The icon as SVG text (a white chat bubble on a rounded blue square). */
export function iconSvg(): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">
<rect width="100" height="100" rx="22" fill="rgb(${BLUE.join(",")})"/>
<ellipse cx="50" cy="46" rx="30" ry="23" fill="#fff"/>
<path d="M30 58 L24 80 L46 66 Z" fill="#fff"/>
<circle cx="38" cy="46" r="4" fill="rgb(${BLUE.join(",")})"/>
<circle cx="50" cy="46" r="4" fill="rgb(${BLUE.join(",")})"/>
<circle cx="62" cy="46" r="4" fill="rgb(${BLUE.join(",")})"/>
</svg>
`;
}

/** Colour (RGBA) of the icon at point (x, y) in the 100×100 design space. */
function shade(x: number, y: number): readonly number[] {
  // Rounded square, corner radius 22.
  const r = 22;
  const cx = Math.min(Math.max(x, r), 100 - r);
  const cy = Math.min(Math.max(y, r), 100 - r);
  if ((x - cx) ** 2 + (y - cy) ** 2 > r * r) return [0, 0, 0, 0];
  for (const dx of [38, 50, 62]) {
    if ((x - dx) ** 2 + (y - 46) ** 2 <= 16) return [...BLUE, 255];
  }
  const inBubble = ((x - 50) / 30) ** 2 + ((y - 46) / 23) ** 2 <= 1;
  if (inBubble || inTriangle(x, y, [30, 58], [24, 80], [46, 66])) return [...WHITE, 255];
  return [...BLUE, 255];
}

function inTriangle(
  x: number,
  y: number,
  a: [number, number],
  b: [number, number],
  c: [number, number],
): boolean {
  const s = (p: [number, number], q: [number, number]) =>
    (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1]);
  const d1 = s(a, b), d2 = s(b, c), d3 = s(c, a);
  const neg = d1 < 0 || d2 < 0 || d3 < 0;
  const pos = d1 > 0 || d2 > 0 || d3 > 0;
  return !(neg && pos);
}

/** The icon as a PNG of `size`×`size` pixels (4× supersampled). */
export async function iconPng(size: number): Promise<Uint8Array> {
  const raw = new Uint8Array(size * (size * 4 + 1));
  const n = 4;
  for (let py = 0; py < size; py++) {
    const row = py * (size * 4 + 1);
    raw[row] = 0; // filter: none
    for (let px = 0; px < size; px++) {
      const acc = [0, 0, 0, 0];
      for (let sy = 0; sy < n; sy++) {
        for (let sx = 0; sx < n; sx++) {
          const c = shade(
            ((px + (sx + 0.5) / n) / size) * 100,
            ((py + (sy + 0.5) / n) / size) * 100,
          );
          // Premultiply so transparent samples do not darken the edge.
          const a = c[3]! / 255;
          acc[0]! += c[0]! * a;
          acc[1]! += c[1]! * a;
          acc[2]! += c[2]! * a;
          acc[3]! += a;
        }
      }
      const alpha = acc[3]! / (n * n);
      const o = row + 1 + px * 4;
      for (let k = 0; k < 3; k++) {
        raw[o + k] = alpha > 0 ? Math.round(acc[k]! / acc[3]!) : 0;
      }
      raw[o + 3] = Math.round(alpha * 255);
    }
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, size);
  view.setUint32(4, size);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA, deflate, no filter, no interlace
  const idat = await zlib(raw);
  return concatBytes([
    new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", header),
    chunk("IDAT", idat),
    chunk("IEND", new Uint8Array()),
  ]);
}

async function zlib(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

let crcTable: Uint32Array | null = null;

function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = crcTable[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
