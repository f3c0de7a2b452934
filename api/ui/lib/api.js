// The one door to the query API: bearer token (localStorage), typed errors, and the API's health for the banner.

const TOKEN_KEY = "panopticon.token";
const listeners = new Set();
let lastProblem = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
  } catch { /* storage refused (private mode): the token lasts as long as the page */ }
}

export function onHealth(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function report(problem) {
  if (problem === lastProblem) return;
  lastProblem = problem;
  for (const listener of listeners) listener(problem);
}

function describe(status, body) {
  if (status === 401) return "The API needs a token: use the Token button above.";
  if (status === 503) return "The search cluster is unavailable (503); showing the last data and retrying.";
  if (status === 404) return "Not found.";
  const detail = body && (body.message || body.description || body.title);
  return `The API answered ${status}${detail ? `: ${detail}` : ""}.`;
}

export async function get(path, params = {}, { signal } = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const url = `${path}${query.toString() ? `?${query}` : ""}`;
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(url, { headers, signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    const problem = "The query API cannot be reached; retrying.";
    report(problem);
    throw new ApiError(0, problem);
  }
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const message = describe(response.status, body);
    if (response.status === 401 || response.status >= 500) report(message);
    throw new ApiError(response.status, message);
  }
  report(null);
  return body;
}

let configPromise = null;

export function config() {
  configPromise ??= fetch("/ui/config.json", { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`config ${r.status}`))))
    .catch(() => { configPromise = null; return null; });
  return configPromise;
}

export function enc(segment) {
  return encodeURIComponent(segment);
}
