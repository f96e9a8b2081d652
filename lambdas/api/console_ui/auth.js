// Sign-in state: the admin's bearer token lives in sessionStorage (this tab only, gone
// when it closes). Two ways to get one:
// - paste it (locally the token `seg up` prints; in AWS any Cognito ID/access token);
// - the Cognito hosted UI (OAuth 2.0 implicit grant), when config.json names it: the
//   browser goes to the authorize URL and comes back to this page with the tokens in
//   the URL fragment, which we read once and wipe from the address bar.

const TOKEN_KEY = "seg.console.token";
const STATE_KEY = "seg.console.oauth_state";

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The page's configuration; a missing or broken config.json means "paste a token". */
export async function loadConfig() {
  try {
    const response = await fetch("static/config.json", { cache: "no-store", credentials: "omit" });
    if (!response.ok) return { oauth: null, refresh_seconds: 5 };
    const config = await response.json();
    return { oauth: config.oauth || null, refresh_seconds: Number(config.refresh_seconds) || 5 };
  } catch {
    return { oauth: null, refresh_seconds: 5 };
  }
}

/** Send the browser to the hosted UI. */
export function startOAuth(oauth) {
  const state = randomState();
  sessionStorage.setItem(STATE_KEY, state);
  const url = new URL(oauth.authorize_url);
  url.searchParams.set("response_type", "token");
  url.searchParams.set("client_id", oauth.client_id);
  url.searchParams.set("redirect_uri", redirectUri());
  url.searchParams.set("scope", oauth.scopes || "openid email");
  url.searchParams.set("state", state);
  location.assign(url.toString());
}

/**
 * If the page was opened by the hosted UI's redirect, take the token from the fragment.
 * @returns {{token?: string, error?: string} | null} null when there was no redirect
 */
export function takeOAuthRedirect() {
  if (!location.hash || location.hash.length < 2) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("access_token") && !params.has("id_token") && !params.has("error")) return null;
  // Wipe the tokens from the address bar and history at once.
  history.replaceState(null, "", location.pathname + location.search);
  const expected = sessionStorage.getItem(STATE_KEY);
  sessionStorage.removeItem(STATE_KEY);
  if (params.has("error")) {
    return { error: `Sign-in was refused: ${params.get("error_description") || params.get("error")}` };
  }
  if (!expected || params.get("state") !== expected) {
    return { error: "Sign-in answer did not match this browser's request; sign in again." };
  }
  return { token: params.get("access_token") || params.get("id_token") };
}

function redirectUri() {
  return new URL(location.pathname, location.origin).toString();
}

function randomState() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Seconds until a JWT's exp claim, or null for a token that is not a JWT. Unverified:
 *  only used to return to sign-in on time; the API does the checking. */
export function secondsUntilExpiry(token, now = Date.now()) {
  const parts = String(token).split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replaceAll("-", "+").replaceAll("_", "/"));
    const { exp } = JSON.parse(json);
    return Number.isFinite(exp) ? exp - now / 1000 : null;
  } catch {
    return null;
  }
}
