// HTTP to the relay that served this page: its JSON API and the small helpers around it.

/** An error answer from the relay; `status` lets the caller tell "refused" from "try again". */
export class HttpError extends Error {
  /** @param {string} message @param {number} status */
  constructor(message, status) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/**
 * JSON in, JSON out. A non-2xx answer throws an HttpError carrying the relay's own message
 * (its `error` field) when it sent one, since that says more than the status line.
 * @param {string} path
 * @param {RequestInit} [options]
 * @returns {Promise<any>}
 */
export async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new HttpError(body.error || body.detail || `${response.status} ${response.statusText}`,
                        response.status);
  }
  return body;
}

/**
 * Asks the relay to end a session. Best effort: the relay may already have dropped it or be
 * down, and either way there is nothing left for the page to do, so this never rejects.
 * @param {string} sessionId
 */
export function endSession(sessionId) {
  return fetch(`/api/v1/webrtc/offer/${sessionId}`, { method: "DELETE" }).catch(() => {});
}

/**
 * Rejects after `ms` unless `promise` settles first, so a hung camera prompt or offer cannot
 * leave the page waiting forever. `what` names the step in the error message.
 * @template T
 * @param {Promise<T>} promise @param {number} ms @param {string} what
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
