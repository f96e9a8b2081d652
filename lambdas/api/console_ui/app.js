// The email management dashboard: sign-in, then the devices view, summary and cluster
// panel, refreshed by polling every few seconds without reloading the page.

import { Api, AuthError } from "./api.js";
import { AuditView } from "./audit.js";
import {
  forgetToken,
  loadConfig,
  secondsUntilExpiry,
  startOAuth,
  storedToken,
  storeToken,
  takeOAuthRedirect,
} from "./auth.js";
import { drawChart } from "./chart.js";
import { ClustersView } from "./clusters.js";
import { DeviceView } from "./device.js";
import { deviceHash, DevicesView, readDeviceHash } from "./devices.js";
import { byId, h, replaceChildren } from "./dom.js";
import { accessClass, accessLabel, count, stateLabel } from "./format.js";
import { NoticesView } from "./notices.js";

const MESSAGES = {
  refused: "That token was refused. Paste a token that \"seg up\" printed, or a current console token.",
  expired: "Your session has ended (the token expired or was revoked). Sign in again.",
  signedOut: "You are signed out.",
};

class Console {
  constructor(config) {
    this.config = config;
    this.api = new Api(() => storedToken());
    this.pending = new Map(); // email_device_key -> {action}: overrides we asked for
    this.timer = null;
    this.expiryTimer = null;
    this.running = false;
    this.ticking = false;
    this.tickAgain = false;
    this.lastSummary = null;
    this.permissions = new Set();
    this.devices = new DevicesView({
      api: this.api,
      pending: this.pending,
      onAction: (item, action) => this.confirmAction(item, action),
      onOpen: (user, deviceId) => this.openDevice(user, deviceId),
      onError: (error) => this.handleError(error),
      announce: (text) => this.announce(text),
    });
    this.device = new DeviceView({
      api: this.api,
      onAction: (item, action) => this.confirmAction(item, action),
      onError: (error) => this.handleError(error),
      onClose: () => this.closeDevice(),
    });
    this.audit = new AuditView({ api: this.api, onError: (error) => this.handleError(error) });
    this.notices = new NoticesView({ api: this.api, onError: (error) => this.handleError(error) });
    this.clusterList = [];
    this.clusters = new ClustersView({
      api: this.api,
      onError: (error) => this.handleError(error),
      onNames: (clusters) => {
        const names = new Map(clusters.map((c) => [c.cluster_id, c.name || c.cluster_id]));
        const before = JSON.stringify([...this.devices.clusterNames]);
        this.devices.clusterNames = names;
        this.device.clusterNames = names;
        this.clusterList = clusters;
        this.notices.setClusters(clusters);
        if (before !== JSON.stringify([...names]) && this.devices.loaded) this.devices.rerender();
      },
    });
    this.ticks = 0;
    this.bindSignIn();
    this.bindTabs();
    this.bindDialog();
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.running) this.tick();
    });
    window.addEventListener("resize", () => {
      if (this.lastSummary) drawChart(byId("chart"), this.lastSummary.series);
    });
    window.addEventListener("hashchange", () => this.followHash());
  }

  // --- sign-in ------------------------------------------------------------------

  bindSignIn() {
    byId("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = byId("token-input").value.trim();
      if (!token) {
        this.showSignIn("Paste a token first.");
        byId("token-input").focus();
        return;
      }
      storeToken(token);
      byId("token-input").value = "";
      this.stop();
      this.start(MESSAGES.refused);
    });
    byId("sign-out").addEventListener("click", () => this.signOut(MESSAGES.signedOut));
    if (this.config.oauth) {
      byId("oauth-signin").hidden = false;
      byId("oauth-button").addEventListener("click", () => startOAuth(this.config.oauth));
    }
  }

  showSignIn(message) {
    this.stop();
    byId("main").hidden = true;
    byId("session").hidden = true;
    byId("signin-view").hidden = false;
    const box = byId("signin-message");
    box.hidden = !message;
    replaceChildren(box, message || "");
    byId("token-input").focus();
  }

  signOut(message) {
    forgetToken();
    this.pending.clear();
    this.showSignIn(message);
  }

  /** Check the stored token with whoami, then show the console. */
  async start(refusedMessage) {
    if (!storedToken()) {
      this.showSignIn("");
      return;
    }
    let who;
    try {
      who = await this.api.whoami();
    } catch (error) {
      if (error instanceof AuthError) {
        this.signOut(`${refusedMessage} (${error.message})`);
      } else {
        // Not the token's fault: keep it and try again shortly.
        this.showSignIn(`Could not reach the control plane (${error.message}). Retrying…`);
        this.timer = setTimeout(() => this.start(refusedMessage), this.config.refresh_seconds * 2000);
      }
      return;
    }
    replaceChildren(byId("subject"), (who && who.subject) || "");
    replaceChildren(byId("role"), (who && who.role) || "");
    this.applyRole(who);
    byId("signin-view").hidden = true;
    byId("session").hidden = false;
    byId("main").hidden = false;
    byId("main").focus();
    this.watchExpiry();
    this.running = true;
    this.followHash();
    this.tick();
  }

  /** What the role may do: the page offers only that (the API refuses the rest). */
  applyRole(who) {
    this.permissions = new Set((who && who.permissions) || []);
    document.body.dataset.role = (who && who.role) || "";
    this.devices.canAct = this.permissions.has("device.override");
    this.device.permissions = this.permissions;
    this.notices.canEdit = this.permissions.has("settings.manage");
    if (this.devices.loaded) this.devices.rerender();
  }

  // --- the device page ------------------------------------------------------------

  openDevice(user, deviceId) {
    const hash = deviceHash(user, deviceId);
    if (location.hash !== hash) history.pushState(null, "", location.pathname + location.search + hash);
    this.showDevice(user, deviceId);
  }

  showDevice(user, deviceId) {
    for (const panel of document.querySelectorAll("[role=tabpanel]")) panel.hidden = true;
    byId("panel-device").hidden = false;
    this.device.open(user, deviceId).then(() => {
      const title = document.getElementById("device-title");
      if (title) title.setAttribute("tabindex", "-1");
    });
    byId("device-back").focus();
  }

  closeDevice() {
    if (readDeviceHash(location.hash)) history.pushState(null, "", location.pathname + location.search);
    this.device.target = null;
    byId("panel-device").hidden = true;
    const selected = document.querySelector("[role=tab][aria-selected=true]");
    byId(selected.getAttribute("aria-controls")).hidden = false;
    selected.focus();
  }

  followHash() {
    const target = readDeviceHash(location.hash);
    if (target) this.showDevice(target.user, target.deviceId);
    else if (!byId("panel-device").hidden) this.closeDevice();
  }

  watchExpiry() {
    clearTimeout(this.expiryTimer);
    const left = secondsUntilExpiry(storedToken());
    if (left === null) return;
    this.expiryTimer = setTimeout(() => this.signOut(MESSAGES.expired), Math.max(0, left * 1000));
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
  }

  // --- refresh loop -------------------------------------------------------------

  /** One refresh of everything visible, then the next one after refresh_seconds. Never
   *  two at once: a tick asked for while one runs (tab shown again, an action done) runs
   *  right after it instead. */
  async tick() {
    clearTimeout(this.timer);
    if (!this.running) return;
    if (this.ticking) {
      this.tickAgain = true;
      return;
    }
    this.ticking = true;
    try {
      if (!document.hidden) await this.refreshAll();
    } finally {
      this.ticking = false;
    }
    if (!this.running) return;
    if (this.tickAgain) {
      this.tickAgain = false;
      this.tick();
      return;
    }
    this.timer = setTimeout(() => this.tick(), this.config.refresh_seconds * 1000);
  }

  async refreshAll() {
    const background = this.devices.loaded;
    const jobs = [this.devices.refresh({ background }), this.refreshSummary()];
    if (!byId("panel-clusters").hidden) jobs.push(this.clusters.refresh());
    else if (this.ticks % 10 === 0) jobs.push(this.clusters.refreshNames()); // names change rarely
    if (!byId("panel-device").hidden) jobs.push(this.device.refresh());
    if (!byId("panel-audit").hidden) jobs.push(this.audit.refresh());
    this.ticks += 1;
    this.errorSeen = false;
    await Promise.all(jobs);
    if (this.running && !this.errorSeen) {
      byId("error-banner").hidden = true;
      replaceChildren(byId("refresh-state"), `Live · updated ${new Date().toLocaleTimeString()}`);
    }
  }

  async refreshSummary() {
    try {
      const summary = await this.api.summary();
      this.lastSummary = summary;
      const counts = summary.counts || {};
      for (const state of ["allow", "block", "quarantine", "unknown"]) {
        replaceChildren(byId(`count-${state}`), count(counts[state] ?? 0));
      }
      replaceChildren(byId("blocked-last-hour"), count(summary.blocked_last_hour ?? 0));
      drawChart(byId("chart"), summary.series);
      this.devices.setChoices(summary.clusters || [], summary.nodes || [], this.devices.clusterNames);
    } catch (error) {
      this.handleError(error);
    }
  }

  handleError(error) {
    if (error instanceof AuthError) {
      this.signOut(`${MESSAGES.expired} (${error.message})`);
      return;
    }
    this.errorSeen = true;
    const banner = byId("error-banner");
    replaceChildren(banner, `Could not refresh: ${error.message}`);
    banner.hidden = false;
    replaceChildren(byId("refresh-state"), "Reconnecting…");
  }

  announce(text) {
    replaceChildren(byId("live-status"), text);
  }

  // --- tabs ---------------------------------------------------------------------

  bindTabs() {
    const tabs = [byId("tab-devices"), byId("tab-clusters"), byId("tab-audit"), byId("tab-notices")];
    const select = (tab) => {
      if (!byId("panel-device").hidden) this.closeDevice();
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        byId(other.getAttribute("aria-controls")).hidden = !selected;
      }
      tab.focus();
      if (!this.running) return;
      if (tab.id === "tab-clusters") this.clusters.refresh();
      if (tab.id === "tab-audit") this.audit.refresh();
      if (tab.id === "tab-notices") this.clusters.refreshNames().then(() => this.notices.refresh());
    };
    for (const tab of tabs) {
      tab.addEventListener("click", () => select(tab));
      tab.addEventListener("keydown", (event) => {
        const i = tabs.indexOf(tab);
        const moves = { ArrowRight: 1, ArrowLeft: -1 };
        if (event.key in moves) {
          event.preventDefault();
          select(tabs[(i + moves[event.key] + tabs.length) % tabs.length]);
        } else if (event.key === "Home" || event.key === "End") {
          event.preventDefault();
          select(event.key === "Home" ? tabs[0] : tabs.at(-1));
        }
      });
    }
  }

  // --- block / allow / clear ----------------------------------------------------

  bindDialog() {
    const dialog = byId("confirm-dialog");
    byId("confirm-form").addEventListener("submit", async (event) => {
      const choice = event.submitter ? event.submitter.value : "cancel";
      if (choice !== "confirm" || !this.target) return; // the dialog closes itself
      event.preventDefault();
      await this.submitAction();
    });
    dialog.addEventListener("close", () => {
      this.restoreFocusAfterDialog();
      this.target = null;
    });
  }

  /** Back to the button that opened the dialog; a refresh may have re-rendered its row
   *  meanwhile, so find the same row's button again by key and action. */
  restoreFocusAfterDialog() {
    const opener = this.returnFocus;
    if (opener && opener.isConnected) {
      opener.focus();
      return;
    }
    const { key, action } = (opener && opener.dataset) || {};
    const buttons = [...byId("devices-body").querySelectorAll("button[data-key]")]
      .filter((b) => b.dataset.key === key && !b.disabled);
    const same = buttons.find((b) => b.dataset.action === action) || buttons[0]
      || document.querySelector("#device-actions button");
    if (same) same.focus();
  }

  confirmAction(item, action) {
    const words = {
      block: ["Block this device?", "The gateways will refuse its mail sync until you allow it or clear the override.", "Block"],
      allow: ["Allow this device?", "The gateways will let it sync mail even if the MDM says it is not compliant.", "Allow"],
      clear: ["Clear the manual override?", "The device goes back to what its MDM compliance decides.", "Clear override"],
    }[action];
    this.target = { item, action };
    this.returnFocus = document.activeElement;
    replaceChildren(byId("confirm-title"), words[0]);
    replaceChildren(byId("confirm-text"), words[1]);
    replaceChildren(byId("confirm-user"), item.user);
    replaceChildren(byId("confirm-device"), item.device_id);
    replaceChildren(byId("confirm-ok"), words[2]);
    byId("confirm-ok").className = `btn ${action === "block" ? "btn-danger" : "btn-primary"}`;
    byId("confirm-ok").disabled = false;
    byId("confirm-reason").value = "";
    byId("confirm-error").hidden = true;
    byId("confirm-dialog").showModal();
    byId("confirm-reason").focus();
    this.showEntries(item);
  }

  /** The per-cluster entries the gateways enforce for the device (with versions). */
  async showEntries(item) {
    const list = byId("confirm-entries");
    replaceChildren(list, h("li", { className: "muted" }, "Loading…"));
    let entries;
    try {
      entries = (await this.api.emailDevice(item.user, item.device_id)).entries || [];
    } catch (error) {
      if (this.target && this.target.item === item) {
        replaceChildren(list, h("li", { className: "muted" }, `Not available: ${error.message}`));
      }
      return;
    }
    if (!this.target || this.target.item !== item) return; // the dialog moved on
    if (!entries.length) {
      replaceChildren(list, h("li", { className: "muted" },
        "No entry yet: the cluster's unknown-device action applies."));
      return;
    }
    replaceChildren(list, ...entries.map((e) =>
      h("li", {},
        h("span", { className: `badge badge-${accessClass(e.access)}` }, accessLabel(e.access)),
        " ",
        h("strong", {}, this.devices.clusterNames.get(e.cluster_id) || e.cluster_id),
        h("span", { className: "muted" }, ` · ${stateLabel(e.source)} · policy version ${e.version}`),
        e.reason ? h("div", { className: "sub" }, e.reason) : null)));
  }

  async submitAction() {
    const { item, action } = this.target;
    const reason = byId("confirm-reason").value.trim() || `${action} from the console`;
    const ok = byId("confirm-ok");
    ok.disabled = true;
    try {
      await this.api.override(item.user, item.device_id, action, reason);
    } catch (error) {
      if (error instanceof AuthError) {
        byId("confirm-dialog").close();
        this.signOut(`${MESSAGES.expired} (${error.message})`);
        return;
      }
      ok.disabled = false;
      const box = byId("confirm-error");
      replaceChildren(box, `Not done: ${error.message}`);
      box.hidden = false;
      return;
    }
    this.pending.set(item.email_device_key, { action });
    byId("confirm-dialog").close();
    this.devices.rerender();
    if (!byId("panel-device").hidden) this.device.refresh();
    this.announce(`${action === "clear" ? "Clearing the override of" : action === "block" ? "Blocking" : "Allowing"} ` +
      `${item.user} device ${item.device_id}: pending until the gateways report it.`);
    this.tick();
  }
}

async function main() {
  const config = await loadConfig();
  const app = new Console(config);
  const redirect = takeOAuthRedirect();
  if (redirect && redirect.token) storeToken(redirect.token);
  if (redirect && redirect.error) {
    app.showSignIn(redirect.error);
    return;
  }
  app.start(redirect ? MESSAGES.refused : MESSAGES.expired);
}

main();
