// One email device's page: what each cluster's gateways saw, its last access events,
// the entry each cluster enforces and whether each gateway node holds it, its MDM
// compliance and history, the operators' note, the last notice to its user, and the
// actions the signed-in role may take.

import { byId, h, replaceChildren } from "./dom.js";
import {
  accessClass,
  accessLabel,
  complianceClass,
  exactTime,
  overrideActions,
  parseTime,
  relativeTime,
  ruleLabel,
  stateLabel,
} from "./format.js";

const HOLDS = {
  current: ["Holds it", "badge-allow"],
  behind: ["Behind: enforces an older decision", "badge-quarantine"],
  unknown: ["Not reported", "badge-unknown"],
};

function when(value, now) {
  const at = parseTime(value);
  return at
    ? h("time", { dateTime: at.toISOString(), title: exactTime(at) }, relativeTime(at, now))
    : "—";
}

function badge(state) {
  const css = accessClass(state);
  return h("span", { className: `badge badge-${css}` }, accessLabel(css));
}

function section(title, ...children) {
  return h("section", { className: "card device-section" }, h("h2", {}, title), ...children);
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { className: "empty" }, empty);
  return h("table", { className: "nodes" },
    h("caption", { className: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, ...headers.map((label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, ...rows));
}

export class DeviceView {
  constructor({ api, onAction, onError, onClose }) {
    this.api = api;
    this.onAction = onAction;
    this.onError = onError;
    this.permissions = new Set();
    this.clusterNames = new Map();
    this.target = null;
    this.detail = null;
    this.container = byId("device");
    byId("device-back").addEventListener("click", () => onClose());
  }

  open(user, deviceId) {
    this.target = { user, deviceId };
    this.detail = null;
    replaceChildren(this.container, h("p", { className: "muted" }, "Loading…"));
    return this.refresh();
  }

  async refresh() {
    if (!this.target) return;
    const { user, deviceId } = this.target;
    try {
      const detail = await this.api.emailDevice(user, deviceId);
      if (!this.target || this.target.user !== user || this.target.deviceId !== deviceId) return;
      this.detail = detail;
      this.render(detail);
    } catch (error) {
      if (error.status === 404) {
        replaceChildren(this.container, h("p", { className: "empty card" }, `No device ${user} / ${deviceId}.`));
        return;
      }
      this.onError(error);
    }
  }

  clusterName(id) {
    return this.clusterNames.get(id) || id;
  }

  render(d) {
    const now = new Date();
    const focused = document.activeElement && this.container.contains(document.activeElement)
      ? document.activeElement.id : null;
    const actions = this.permissions.has("device.override") ? this.actionButtons(d) : [];
    this.container.replaceChildren(
      h("header", { className: "device-head card" },
        h("div", {},
          h("h1", { id: "device-title" }, d.user, h("span", { className: "muted" }, " · "), h("code", {}, d.device_id)),
          h("div", { className: "badges" },
            badge(d.access_state),
            d.override ? h("span", { className: "badge badge-override" }, `Manual ${d.override}`) : null,
            d.pending ? h("span", { className: "badge badge-pending" }, "Pending") : null,
            h("span", { className: `badge badge-${complianceClass(d.compliance_state)}` }, stateLabel(d.compliance_state))),
          h("div", { className: "sub" },
            [d.device_type, d.model, d.os].filter(Boolean).join(" · ") || "No device details yet")),
        h("div", { className: "actions", id: "device-actions" }, ...actions)),
      this.observations(d, now),
      this.enforcement(d),
      this.history(d, now),
      this.compliance(d, now),
      this.note(d, now),
      this.notice(d, now));
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
  }

  actionButtons(d) {
    const button = (action, label) => h("button", {
      type: "button", id: `device-${action}`, className: `btn btn-small btn-${action}`,
      on: { click: () => this.onAction(d, action) },
    }, label);
    return overrideActions(d.override).map(([action, label]) => button(action, label));
  }

  observations(d, now) {
    return section("What each cluster's gateways saw",
      table("Per cluster", ["Cluster", "Access", "Reason", "Last sync", "Node", "Command", "Email client"],
        (d.observations || []).map((o) => h("tr", {},
          h("th", { scope: "row" }, this.clusterName(o.cluster_id)),
          h("td", {}, badge(o.access_state), h("div", { className: "sub" }, ruleLabel(o.rule))),
          h("td", {}, o.reason || "—"),
          h("td", {}, when(o.last_seen, now)),
          h("td", {}, o.last_node || "—"),
          h("td", {}, o.last_command || "—"),
          h("td", { className: "cell-agent" }, o.user_agent || "—"))),
        "No gateway has seen this device yet."));
  }

  enforcement(d) {
    const entries = (d.entries || []).map((e) => h("tr", {},
      h("th", { scope: "row" }, this.clusterName(e.cluster_id)),
      h("td", {}, badge(e.access)),
      h("td", {}, stateLabel(e.source)),
      h("td", {}, String(e.version)),
      h("td", {}, e.reason || "—")));
    const nodes = (d.nodes || []).map((n) => {
      const [text, css] = HOLDS[n.holds] || HOLDS.unknown;
      return h("tr", {},
        h("th", { scope: "row" }, h("code", {}, n.node_id)),
        h("td", {}, this.clusterName(n.cluster_id)),
        h("td", {}, h("span", { className: `badge ${n.connected ? "badge-allow" : "badge-block"}` },
          n.connected ? "Connected" : "Disconnected")),
        h("td", {}, n.policy_version === null ? "—" : String(n.policy_version)),
        h("td", {}, h("span", { className: `badge ${css}` }, text)));
    });
    return section("What the gateways enforce",
      table("Entry per cluster", ["Cluster", "Access", "Source", "Policy version", "Reason"], entries,
        "No entry yet: each cluster's unknown-device action applies."),
      h("h3", {}, "Per gateway node"),
      table("Per node", ["Node", "Cluster", "Connection", "Applied version", "This device's entry"], nodes,
        "No gateway node has reported yet."));
  }

  history(d, now) {
    const blocks = (d.history || []).map((cluster) => h("div", { className: "history" },
      h("h3", {}, this.clusterName(cluster.cluster_id)),
      table(`Recent access events via ${cluster.cluster_id}`,
        ["Time", "Node", "Command", "Decision", "Rule", "Reason"],
        cluster.events.map((e) => h("tr", {},
          // A folded event (a node that could not deliver) stands for e.count requests.
          h("td", {}, when(e.at, now), e.count > 1
            ? h("div", { className: "sub" }, `${e.count} requests since ${when(e.first_at, now)}`)
            : null),
          h("td", {}, e.node || "—"),
          h("td", {}, e.command || "—"),
          h("td", {}, badge(e.decision), e.enforced ? null : h("div", { className: "sub" }, "test mode: let through")),
          h("td", {}, ruleLabel(e.rule) || "—"),
          h("td", {}, e.reason || "—"))),
        "No access events kept.")));
    return section("Recent access events", ...(blocks.length ? blocks : [h("p", { className: "empty" }, "No access events kept.")]));
  }

  compliance(d, now) {
    const mdm = d.mdm;
    const current = mdm
      ? h("p", {},
        h("span", { className: `badge badge-${complianceClass(mdm.compliance_state)}` }, stateLabel(mdm.compliance_state)),
        " ", (mdm.compliance_reasons || []).map(stateLabel).join(", "),
        h("span", { className: "muted" }, " · evaluated "), when(mdm.evaluated_at, now),
        h("span", { className: "muted" }, " · last check-in "), when(mdm.last_checkin_at, now))
      : h("p", { className: "empty" }, "The MDM does not know this device.");
    return section("Compliance", current,
      table("MDM events", ["Received", "Event", "What it said"],
        (d.compliance_history || []).map((c) => h("tr", {},
          h("td", {}, when(c.received_at, now)),
          h("td", {}, stateLabel(c.kind)),
          h("td", {}, c.summary))),
        mdm ? "No MDM events kept." : ""));
  }

  note(d, now) {
    const note = d.note;
    const shown = note
      ? h("p", { className: "note-text" }, note.text,
        h("span", { className: "sub" }, ` — ${note.author}, `), when(note.updated_at, now))
      : h("p", { className: "empty" }, "No note.");
    if (!this.permissions.has("device.note")) return section("Note", shown);
    // A note being typed survives the page's refreshes (the element is moved, not rebuilt).
    const typed = document.getElementById("note-input");
    const input = typed && typed.dataset.dirty === "1"
      ? typed
      : h("textarea", {
        id: "note-input", rows: 2, maxLength: 2000, value: note ? note.text : "",
        on: { input: (event) => { event.target.dataset.dirty = "1"; } },
      });
    const status = h("p", { id: "note-status", role: "status" });
    const save = h("button", {
      type: "button", id: "note-save", className: "btn btn-small",
      on: {
        click: async () => {
          try {
            await this.api.setNote(d.user, d.device_id, input.value.trim());
            delete input.dataset.dirty;
            replaceChildren(status, "Saved.");
            this.refresh();
          } catch (error) {
            replaceChildren(status, `Not saved: ${error.message}`);
          }
        },
      },
    }, "Save note");
    return section("Note", shown, h("label", { htmlFor: "note-input" }, "Note for operators"), input, save, status);
  }

  notice(d, now) {
    const n = d.notice;
    if (!n) return section("Notice to the user", h("p", { className: "empty" }, "No notice sent."));
    const outcome = n.outcome || "queued";
    return section("Notice to the user",
      h("p", {}, `Became ${stateLabel(n.state).toLowerCase()} `, when(n.observed_at, now),
        `: ${outcome}`, n.outcome_at ? h("span", { className: "muted" }, " · ") : null,
        n.outcome_at ? when(n.outcome_at, now) : null));
  }
}
