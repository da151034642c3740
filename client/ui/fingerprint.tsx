/**
 * Keys for comparing out of band (by phone, in person): a user's fingerprints, and for a contact
 * the safety number of both users' keys — digits to read aloud and a QR code for the other
 * device's camera — with the button that accepts a changed key once they match.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { encodeQR } from "qr";
import type { ChatModel, SafetyCheck } from "../chat_model.ts";

/** Shows the fingerprints of `user`'s encryption and signing keys once they are loaded. */
export function Fingerprint(
  { model, user, testId }: { model: ChatModel; user: string; testId: string },
) {
  const [text, setText] = useState<{ encryption: string; signing: string } | null | undefined>(
    undefined,
  );
  useEffect(() => {
    let live = true;
    setText(undefined);
    model.fingerprints(user).then(
      (fp) => live && setText(fp),
      () => live && setText(null),
    );
    return () => {
      live = false;
    };
  }, [user, model.trust.value[user]]);
  return (
    <div class="fingerprint" data-testid={testId} data-user={user}>
      {text === undefined ? "Loading the key…" : text === null ? `${user} has no keys` : (
        <>
          <span class="fp-label">Encryption key</span>
          <code data-testid={`${testId}-encryption`}>{text.encryption}</code>
          <span class="fp-label">Signing key</span>
          <code data-testid={`${testId}-signing`}>{text.signing}</code>
        </>
      )}
    </div>
  );
}

/** A QR code of `text`, drawn as SVG squares. */
export function QrCode(
  { text, label, testId = "safety-qr" }: { text: string; label: string; testId?: string },
) {
  const grid = encodeQR(text, "raw", { ecc: "medium" });
  const n = grid.length;
  const cells: preact.JSX.Element[] = [];
  grid.forEach((row, y) =>
    row.forEach((on, x) => {
      if (on) cells.push(<rect key={`${x}.${y}`} x={x + 2} y={y + 2} width="1" height="1" />);
    })
  );
  return (
    <svg
      class="qr"
      data-testid={testId}
      role="img"
      aria-label={label}
      viewBox={`0 0 ${n + 4} ${n + 4}`}
      shape-rendering="crispEdges"
    >
      <rect width={n + 4} height={n + 4} fill="#fff" />
      <g fill="#000">{cells}</g>
    </svg>
  );
}

/** The browser's barcode detector, where it has one (not part of the DOM typings yet). */
interface BarcodeDetectorLike {
  detect(source: HTMLVideoElement): Promise<Array<{ rawValue: string }>>;
}
type BarcodeDetectorClass = new (opts: { formats: string[] }) => BarcodeDetectorLike;

function barcodeDetector(): BarcodeDetectorClass | null {
  return (globalThis as { BarcodeDetector?: BarcodeDetectorClass }).BarcodeDetector ?? null;
}

/** Scans the other device's QR code with the camera and says whether it matches `expected`. */
function Scanner({ expected, onResult }: {
  expected: string;
  onResult(matches: boolean): void;
}) {
  const video = useRef<HTMLVideoElement>(null);
  const [state, setState] = useState("Starting the camera…");
  useEffect(() => {
    const Detector = barcodeDetector();
    if (!Detector) return;
    let stream: MediaStream | null = null;
    let stopped = false;
    void (async () => {
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          video: { facingMode: "environment" },
        });
        const el = video.current;
        if (stopped || !el) return;
        el.srcObject = stream;
        await el.play();
        setState("Point the camera at the QR code on the other device.");
        const detector = new Detector({ formats: ["qr_code"] });
        while (!stopped) {
          const codes = await detector.detect(el).catch(() => []);
          const found = codes.find((c) => c.rawValue.startsWith("p2pchat-safety:"));
          if (found) {
            onResult(found.rawValue === expected);
            return;
          }
          await new Promise((r) => requestAnimationFrame(r));
        }
      } catch (err) {
        setState(`The camera could not be used: ${(err as Error).message}`);
      }
    })();
    return () => {
      stopped = true;
      stream?.getTracks().forEach((t) => t.stop());
    };
  }, [expected]);
  if (!barcodeDetector()) {
    return (
      <p class="note" data-testid="scan-unavailable">
        This browser cannot read QR codes from the camera: compare the numbers aloud instead, or
        scan this device's code with the other one.
      </p>
    );
  }
  return (
    <div class="scanner">
      <video ref={video} muted playsInline aria-label="Camera" />
      <p class="note" role="status">{state}</p>
    </div>
  );
}

/**
 * The safety number of the logged-in user and `peer`, with its QR code and a scanner; when the
 * directory changed `peer`'s keys, the button that accepts the new ones.
 */
export function SafetyNumber({ model, peer }: { model: ChatModel; peer: string }) {
  const trust = model.trust.value[peer];
  const [check, setCheck] = useState<SafetyCheck | null | undefined>(undefined);
  const [scanning, setScanning] = useState(false);
  const [scanned, setScanned] = useState<boolean | null>(null);
  useEffect(() => {
    let live = true;
    setCheck(undefined);
    setScanned(null);
    model.safetyCheck(peer).then((c) => live && setCheck(c), () => live && setCheck(null));
    return () => {
      live = false;
    };
  }, [peer, trust]);
  if (check === undefined) return <div class="safety">Loading the keys…</div>;
  if (check === null) {
    return (
      <div class="safety" data-testid="safety" data-state="none">
        {trust?.pin?.pending && trust.pin.pending.keyId === null
          ? `The servers now say ${peer} has no keys: there is nothing to compare or accept.`
          : `No keys of ${peer} are known: there is nothing to compare.`}
      </div>
    );
  }
  return (
    <div
      class="safety"
      data-testid="safety"
      data-state={check.isPending ? "pending" : "pinned"}
      data-key-id={check.keyId}
    >
      <p>
        {check.isPending
          ? `Compare this safety number with the one ${peer} sees for you (in person or by ` +
            "phone). Accept the new key only if they match."
          : `Your safety number with ${peer}: the same on both devices while nobody is in ` +
            "between."}
      </p>
      <code class="safety-digits" data-testid="safety-number">{check.digits}</code>
      <QrCode text={check.qrText} label={`QR code of the safety number with ${peer}`} />
      <div class="safety-actions">
        <button type="button" class="link" onClick={() => setScanning(!scanning)}>
          {scanning ? "Stop scanning" : "Scan their code"}
        </button>
        {check.isPending && (
          <button
            type="button"
            class="primary"
            data-testid="accept-key"
            onClick={() => void model.acceptKeys(peer, check.keyId)}
          >
            They match: accept the new key
          </button>
        )}
      </div>
      {scanning && (
        <Scanner
          expected={check.qrText}
          onResult={(ok) => {
            setScanning(false);
            setScanned(ok);
          }}
        />
      )}
      {scanned !== null && (
        <p class={scanned ? "note" : "warning"} role="status" data-testid="scan-result">
          {scanned
            ? "The codes match."
            : "The codes do not match: someone may be in between. Do not accept."}
        </p>
      )}
      <details>
        <summary>Fingerprints</summary>
        <span class="fp-label">Encryption key</span>
        <code>{check.fingerprints.encryption}</code>
        <span class="fp-label">Signing key</span>
        <code>{check.fingerprints.signing}</code>
      </details>
    </div>
  );
}
