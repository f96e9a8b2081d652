// The console API client. Every call carries the user's bearer token; a 401 raises
// AuthError so the page returns to sign-in (a 403 is an action the role may not take). URLs are relative to the page
// (/console/), so the same files work behind any stage or path prefix.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `request failed (HTTP ${status})`);
    this.status = status;
  }
}

export class AuthError extends ApiError {}

export class Api {
  /** @param {() => string|null} tokenSource */
  constructor(tokenSource) {
    this.tokenSource = tokenSource;
  }

  /** A text download (CSV, JSON export) and the cursor of its next part. */
  async download(path, { query, signal } = {}) {
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const headers = {};
    const token = this.tokenSource();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url, { headers, cache: "no-store", credentials: "omit", signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "the control plane is unreachable");
    }
    const text = await response.text();
    if (!response.ok) {
      let detail = "";
      try { detail = describeDetail(JSON.parse(text)); } catch { detail = text.slice(0, 200); }
      if (response.status === 401) throw new AuthError(response.status, detail);
      throw new ApiError(response.status, detail || response.statusText);
    }
    return { text, next: response.headers.get("X-Next-Cursor") };
  }

  async request(method, path, { query, body, signal, headers: extra } = {}) {
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json", ...(extra || {}) };
    const token = this.tokenSource();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "the control plane is unreachable; retrying");
    }
    const payload = await readJson(response);
    if (response.ok) return payload;
    const detail = describeDetail(payload) || response.statusText;
    // 401: the token is gone. A 403 on sign-in (whoami) is a token without a role; on
    // any other call it is an action the role may not take: said, not signed out.
    if (response.status === 401 || (response.status === 403 && path === "v1/whoami")) {
      throw new AuthError(response.status, detail);
    }
    throw new ApiError(response.status, detail);
  }

  whoami() {
    return this.request("GET", "v1/whoami");
  }

  emailDevices(query, signal) {
    return this.request("GET", "v1/email-devices", { query, signal });
  }

  summary(signal) {
    return this.request("GET", "v1/email-devices/summary", { signal });
  }

  emailDevice(user, deviceId) {
    return this.request("GET", devicePath(user, deviceId));
  }

  override(user, deviceId, action, reason) {
    return this.request("POST", `${devicePath(user, deviceId)}/override`, { body: { action, reason } });
  }

  setNote(user, deviceId, text) {
    return this.request("PUT", `${devicePath(user, deviceId)}/note`, { body: { text } });
  }

  audit(query, signal) {
    return this.request("GET", "v1/audit", { query, signal });
  }

  notices(signal) {
    return this.request("GET", "v1/notices", { signal });
  }

  saveNotices(settings) {
    return this.request("PUT", "v1/notices", { body: settings });
  }

  clusters(signal) {
    return this.request("GET", "v1/clusters", { signal });
  }

  nodes(clusterId, signal) {
    return this.request("GET", `v1/clusters/${encodeURIComponent(clusterId)}/nodes`, { signal });
  }
}

function devicePath(user, deviceId) {
  return `v1/email-devices/${encodeURIComponent(user)}/${encodeURIComponent(deviceId)}`;
}

async function readJson(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 200) };
  }
}

function describeDetail(payload) {
  if (!payload) return "";
  const { detail } = payload;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
  return detail ? JSON.stringify(detail) : "";
}
