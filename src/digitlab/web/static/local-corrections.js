// Corrections on a static site (no server to store them): kept in this browser's IndexedDB,
// downloaded as the same NDJSON a digitlab server exports (GET /api/corrections/export,
// `digitlab.corrections.Correction.to_dict`): one JSON object a line, oldest first.

const DB_NAME = "digitlab";
const STORE = "corrections";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transaction(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/**
 * Store one correction: {label, predicted, confidence, drawing, image_png, model_sha256}.
 * Returns it with its ``id`` and ``created`` (UTC, ISO 8601 to the second, as the server's).
 */
export async function addCorrection(correction) {
  const created = `${new Date().toISOString().slice(0, 19)}+00:00`;
  const row = { created, ...correction };
  const id = await transaction("readwrite", (store) => store.add(row));
  return { id, ...row };
}

/** Every stored correction, oldest first. */
export function allCorrections() {
  return transaction("readonly", (store) => store.getAll());
}

/** The NDJSON text of ``corrections``: the server's export format, key for key. */
export function toNdjson(corrections) {
  return corrections.map((c) => `${JSON.stringify({
    id: c.id,
    created: c.created,
    label: c.label,
    predicted: c.predicted,
    confidence: c.confidence,
    drawing: c.drawing,
    image_png: c.image_png,
    model_sha256: c.model_sha256,
  })}\n`).join("");
}
