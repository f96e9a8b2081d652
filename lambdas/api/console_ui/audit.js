// The audit trail: every console action (who, when, what, before -> after, why), newest
// first, searched and paged on the server, exported as CSV or JSON.

import { byId, h, replaceChildren } from "./dom.js";
import { fetchParts, joinJsonArrays, saveFile } from "./export.js";
import { exactTime, parseTime, relativeTime } from "./format.js";

const ACTION_LABELS = {
  "device.block": "Blocked a device",
  "device.allow": "Allowed a device",
  "device.clear": "Cleared an override",
  "device.note": "Wrote a note",
  "cluster.create": "Registered a cluster",
  "cluster.settings": "Changed cluster settings",
  "cluster.public_key": "Set a sealing key",
  "cluster.credential.rotate": "Issued a cluster credential",
  "cluster.credential.revoke": "Revoked a cluster credential",
  "substitution.upstream_password": "Set an upstream password",
  "substitution.device_password": "Issued a device password",
  "substitution.device_password_revoked": "Withdrew a device password",
  "substitution.unbound_passwords_removed": "Removed unbound device passwords",
  "substitution.remove": "Removed credential substitution",
  "compliance_policy.update": "Changed the compliance policy",
  "notices.update": "Changed the notices to users",
  "signing_key.register": "Announced a signing key",
  "signing_key.activate": "Activated a signing key",
  "signing_key.retire": "Retired a signing key",
};

export function actionLabel(action) {
  return Object.hasOwn(ACTION_LABELS, action) ? ACTION_LABELS[action] : action;
}

/** "before -> after" of the values that changed, in one line. */
export function describeChange(before, after) {
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
  const show = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const changed = keys.filter((k) => show((before || {})[k]) !== show((after || {})[k]));
  return changed
    .map((k) => (before && k in before ? `${k}: ${show(before[k])} → ${show((after || {})[k])}` : `${k}: ${show((after || {})[k])}`))
    .join("; ");
}

export class AuditView {
  constructor({ api, onError }) {
    this.api = api;
    this.onError = onError;
    this.cursors = [null];
    this.controller = null;
    this.body = byId("audit-body");
    this.form = byId("audit-filters");
    const select = byId("audit-action");
    for (const [value, label] of Object.entries(ACTION_LABELS)) {
      select.append(h("option", { value }, label));
    }
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.cursors = [null];
      this.refresh();
    });
    this.form.addEventListener("change", () => {
      this.cursors = [null];
      this.refresh();
    });
    byId("audit-next").addEventListener("click", () => {
      if (this.next) {
        this.cursors.push(this.next);
        this.refresh();
      }
    });
    byId("audit-prev").addEventListener("click", () => {
      if (this.cursors.length > 1) {
        this.cursors.pop();
        this.refresh();
      }
    });
    byId("audit-export-csv").addEventListener("click", () => this.export("csv"));
    byId("audit-export-json").addEventListener("click", () => this.export("json"));
  }

  query() {
    const value = (id) => byId(id).value.trim();
    return { action: value("audit-action"), actor: value("audit-actor"), q: value("audit-q") };
  }

  async refresh() {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    try {
      const page = await this.api.audit(
        { ...this.query(), limit: 50, cursor: this.cursors.at(-1) }, this.controller.signal);
      this.next = page.next_cursor || null;
      this.render(page.items || []);
    } catch (error) {
      if (error.name !== "AbortError") this.onError(error);
    }
  }

  render(items) {
    const now = new Date();
    this.body.replaceChildren(...items.map((item) => {
      const at = parseTime(item.at);
      return h("tr", {},
        h("td", { className: "cell-time" },
          at ? h("time", { dateTime: at.toISOString(), title: exactTime(at) }, relativeTime(at, now)) : item.at),
        h("th", { scope: "row" }, item.actor, h("div", { className: "sub" }, item.role)),
        h("td", {}, actionLabel(item.action), h("div", { className: "sub" }, h("code", {}, item.action))),
        h("td", { className: "cell-id" }, h("code", {}, item.target)),
        h("td", { className: "cell-change" }, describeChange(item.before, item.after) || "—"),
        h("td", {}, item.reason || "—"));
    }));
    byId("audit-empty").hidden = items.length > 0;
    byId("audit-next").disabled = !this.next;
    byId("audit-prev").disabled = this.cursors.length <= 1;
    replaceChildren(byId("audit-page"), `Page ${this.cursors.length}`);
  }

  async export(format) {
    const status = byId("audit-export-status");
    replaceChildren(status, "Exporting…");
    try {
      const parts = await fetchParts(this.api, "v1/audit/export", { ...this.query(), format });
      if (format === "json") saveFile("audit.json", "application/json", [joinJsonArrays(parts)]);
      else saveFile("audit.csv", "text/csv", parts);
      replaceChildren(status, "Exported.");
    } catch (error) {
      replaceChildren(status, `Export failed: ${error.message}`);
    }
  }
}
