// The email devices list: filters, search, server-side sort and cursor paging, rows
// rendered with createElement/textContent only. The view state lives in the page's
// query string, so a refresh (or a reload) never loses the admin's filters, sort or page.

import { byId, h, replaceChildren } from "./dom.js";
import { fetchParts, saveFile } from "./export.js";
import {
  accessClass,
  accessLabel,
  complianceClass,
  count,
  exactTime,
  overrideActions,
  parseTime,
  relativeTime,
  ruleLabel,
  stateLabel,
} from "./format.js";

const DEFAULT_SORT = "last_seen";
const DESC_FIRST = new Set(["last_seen"]);
const PAGE_SIZES = new Set([25, 50, 100, 200]);
const FILTER_KEYS = ["q", "access_state", "compliance_state", "cluster_id", "node", "not_seen_days"];
// What the API accepts (GET /console/v1/email-devices); anything else in a hand-edited
// address is dropped rather than sent (it would only earn a 422).
const ACCESS_STATES = new Set(["allow", "block", "quarantine", "unknown"]);
const COMPLIANCE_STATES = new Set(["compliant", "non_compliant", "unknown"]);
const SORT_COLUMNS = new Set([
  "user", "device_id", "device_type", "user_agent", "compliance_state", "access_state",
  "last_seen", "last_command", "last_node", "cluster_id", "model", "os", "enrollment_state",
  "reason", "rule", "override", "pending", "mdm_device_id",
]);
const CLUSTER_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function oneOf(value, allowed) {
  return allowed.has(value) ? value : "";
}

/** The view state, read from and written to the query string. */
export function readViewState(search) {
  const params = new URLSearchParams(search);
  const limit = Number(params.get("limit"));
  const sort = oneOf(params.get("sort"), SORT_COLUMNS) || DEFAULT_SORT;
  const order = params.get("order");
  const days = Number(params.get("not_seen_days"));
  const cluster = params.get("cluster_id") || "";
  const node = params.get("node") || "";
  return {
    q: (params.get("q") || "").slice(0, 256),
    access_state: oneOf(params.get("access_state"), ACCESS_STATES),
    compliance_state: oneOf(params.get("compliance_state"), COMPLIANCE_STATES),
    cluster_id: CLUSTER_ID.test(cluster) ? cluster : "",
    node: NODE_ID.test(node) ? node : "",
    not_seen_days: Number.isInteger(days) && days >= 1 && days <= 3650 ? String(days) : "",
    sort,
    order: order === "asc" || order === "desc" ? order : DESC_FIRST.has(sort) ? "desc" : "asc",
    limit: PAGE_SIZES.has(limit) ? limit : 50,
    cursors: [params.get("cursor") || null],
    pageNumber: Math.max(1, Number(params.get("page")) || 1),
  };
}

export function writeViewState(state) {
  const params = new URLSearchParams();
  for (const key of FILTER_KEYS) if (state[key]) params.set(key, state[key]);
  if (state.sort !== DEFAULT_SORT) params.set("sort", state.sort);
  if (state.order !== (DESC_FIRST.has(state.sort) ? "desc" : "asc")) params.set("order", state.order);
  if (state.limit !== 50) params.set("limit", String(state.limit));
  const cursor = state.cursors.at(-1);
  if (cursor) {
    params.set("cursor", cursor);
    params.set("page", String(state.pageNumber));
  }
  const query = params.toString();
  return query ? `?${query}` : "";
}

export class DevicesView {
  /**
   * @param {{api: import("./api.js").Api, onAction: Function, onError: Function,
   *          announce: Function, pending: Map<string, {action: string}>}} deps
   */
  constructor({ api, onAction, onOpen, onError, announce, pending }) {
    this.api = api;
    this.onAction = onAction;
    this.onOpen = onOpen;
    this.canAct = false; // the signed-in role may block, allow and clear
    this.choices = { clusters: [], nodes: [] };
    this.onError = onError;
    this.announce = announce;
    this.pending = pending;
    this.clusterNames = new Map(); // cluster_id -> name, from the cluster panel's data
    this.state = readViewState(location.search);
    this.items = [];
    this.previous = new Map(); // key -> signature, to announce what changed
    this.loaded = false;
    this.sequence = 0;
    this.controller = null;
    this.searchTimer = null;

    this.body = byId("devices-body");
    this.form = byId("filters");
    this.search = byId("search");
    this.accessFilter = byId("filter-access");
    this.complianceFilter = byId("filter-compliance");
    this.clusterFilter = byId("filter-cluster");
    this.nodeFilter = byId("filter-node");
    this.staleFilter = byId("filter-stale");
    this.pageSize = byId("page-size");
    this.headers = [...document.querySelectorAll("#devices-table th[data-sort]")];
    this.bindControls();
    this.syncControls();
  }

  bindControls() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.applyFilters();
    });
    this.form.addEventListener("reset", () => {
      // After the browser resets the fields.
      setTimeout(() => this.applyFilters(), 0);
    });
    this.search.addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.applyFilters(), 300);
    });
    for (const select of [this.accessFilter, this.complianceFilter, this.clusterFilter,
      this.nodeFilter, this.staleFilter, this.pageSize]) {
      select.addEventListener("change", () => this.applyFilters());
    }
    byId("export-csv").addEventListener("click", () => this.exportCsv());
    for (const th of this.headers) {
      const label = th.textContent.trim();
      const button = h("button", { type: "button", className: "sort" }, label,
        h("span", { className: "sort-icon", "aria-hidden": "true" }));
      button.addEventListener("click", () => this.sortBy(th.dataset.sort));
      th.replaceChildren(button);
    }
    byId("page-next").addEventListener("click", () => this.nextPage());
    byId("page-prev").addEventListener("click", () => this.previousPage());
    byId("page-first").addEventListener("click", () => this.firstPage());
  }

  /** Put the state into the form (once, at start: later the form is the source). */
  syncControls() {
    const { state } = this;
    this.search.value = state.q;
    this.accessFilter.value = state.access_state;
    this.complianceFilter.value = state.compliance_state;
    this.setChoices(this.choices.clusters, this.choices.nodes);
    this.staleFilter.value = state.not_seen_days;
    this.pageSize.value = String(state.limit);
    this.syncSortHeaders();
  }

  syncSortHeaders() {
    const { state } = this;
    for (const th of this.headers) {
      if (th.dataset.sort === state.sort) {
        th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
  }

  /** The clusters and nodes the rows name (from the summary), as filter choices; the
   *  current choice stays even when no row names it any more. */
  setChoices(clusters, nodes, names = new Map()) {
    this.choices = { clusters, nodes };
    const fill = (select, values, current, label) => {
      const all = [...new Set([...values, ...(current ? [current] : [])])];
      const key = JSON.stringify([all, [...names]]);
      if (select.dataset.choices === key) return;
      select.dataset.choices = key;
      select.replaceChildren(h("option", { value: "" }, "All"),
        ...all.map((v) => h("option", { value: v }, label(v))));
      select.value = current;
    };
    fill(this.clusterFilter, clusters, this.state.cluster_id, (v) => names.get(v) || v);
    fill(this.nodeFilter, nodes, this.state.node, (v) => v);
  }

  applyFilters() {
    clearTimeout(this.searchTimer);
    const days = Number(this.staleFilter.value);
    const next = {
      q: this.search.value.trim(),
      access_state: this.accessFilter.value,
      compliance_state: this.complianceFilter.value,
      cluster_id: this.clusterFilter.value,
      node: this.nodeFilter.value,
      not_seen_days: Number.isInteger(days) && days >= 1 ? String(Math.min(days, 3650)) : "",
      limit: Number(this.pageSize.value) || 50,
    };
    const unchanged = Object.entries(next).every(([k, v]) => this.state[k] === v);
    if (unchanged) return;
    Object.assign(this.state, next);
    this.resetPaging();
    this.refresh();
  }

  sortBy(column) {
    const { state } = this;
    if (state.sort === column) {
      state.order = state.order === "asc" ? "desc" : "asc";
    } else {
      state.sort = column;
      state.order = DESC_FIRST.has(column) ? "desc" : "asc";
    }
    this.resetPaging();
    this.refresh();
  }

  resetPaging() {
    this.state.cursors = [null];
    this.state.pageNumber = 1;
  }

  nextPage() {
    if (!this.nextCursor) return;
    this.state.cursors.push(this.nextCursor);
    this.state.pageNumber += 1;
    this.refresh({ focusTable: true });
  }

  previousPage() {
    const { state } = this;
    if (state.pageNumber <= 1) return;
    if (state.cursors.length > 1) {
      state.cursors.pop();
      state.pageNumber -= 1;
    } else {
      // Arrived by a bookmarked cursor: the way back is only from the start.
      this.resetPaging();
    }
    this.refresh({ focusTable: true });
  }

  firstPage() {
    this.resetPaging();
    this.refresh({ focusTable: true });
  }

  filters() {
    const { state } = this;
    return Object.fromEntries(FILTER_KEYS.map((k) => [k, state[k]]));
  }

  query() {
    const { state } = this;
    return {
      ...this.filters(),
      sort: state.sort,
      order: state.order,
      limit: state.limit,
      cursor: state.cursors.at(-1),
    };
  }

  /** Fetch the current page; a newer call cancels an older one in flight. */
  async refresh({ focusTable = false, background = false } = {}) {
    this.syncSortHeaders();
    // The fragment (an open device page) stays.
    history.replaceState(null, "", (writeViewState(this.state) || location.pathname) + location.hash);
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    const sequence = ++this.sequence;
    if (!background) byId("devices-table").setAttribute("aria-busy", "true");
    try {
      const page = await this.api.emailDevices(this.query(), this.controller.signal);
      if (sequence !== this.sequence) return;
      this.nextCursor = page.next_cursor || null;
      this.total = page.total;
      this.render(page.items || [], { background });
      if (focusTable) byId("devices-table").focus();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error.status === 422 && this.state.cursors.at(-1)) {
        // A cursor from a bookmark or an older sort: start again from the first page.
        this.resetPaging();
        this.refresh({ focusTable, background });
        return;
      }
      this.onError(error);
    } finally {
      if (sequence === this.sequence) byId("devices-table").removeAttribute("aria-busy");
    }
  }

  render(items, { background }) {
    const focus = rememberFocus(this.body);
    this.items = items;
    const now = new Date();
    const rows = items.map((item) => this.row(item, now));
    this.body.replaceChildren(...rows);
    restoreFocus(this.body, focus);
    byId("devices-empty").hidden = items.length > 0;

    const { state } = this;
    const first = (state.pageNumber - 1) * state.limit + 1;
    const last = first + items.length - 1;
    const total = Number.isFinite(this.total) ? this.total : null;
    replaceChildren(byId("devices-total"), total === null ? "" : count(total));
    replaceChildren(byId("page-info"),
      items.length
        ? `Page ${state.pageNumber} · rows ${count(first)}–${count(last)}${total === null ? "" : ` of ${count(total)}`}`
        : `Page ${state.pageNumber}`);
    byId("page-next").disabled = !this.nextCursor;
    byId("page-prev").disabled = state.pageNumber <= 1;
    byId("page-first").disabled = state.pageNumber <= 1;

    if (background && this.loaded) {
      const changed = items.filter((item) => this.previous.get(item.row_key) !== signature(item));
      if (changed.length) {
        this.announce(changed.length === 1 ? "1 device updated" : `${changed.length} devices updated`);
      }
    }
    this.previous = new Map(items.map((item) => [item.row_key, signature(item)]));
    this.loaded = true;
  }

  /** The whole current view (every page of it) as one CSV file. */
  async exportCsv() {
    const status = byId("export-status");
    replaceChildren(status, "Exporting…");
    try {
      const query = { ...this.filters(), sort: this.state.sort, order: this.state.order };
      const parts = await fetchParts(this.api, "v1/email-devices/export", query,
        (n) => replaceChildren(status, `Exporting… part ${n}`));
      saveFile("email-devices.csv", "text/csv", parts);
      replaceChildren(status, "Exported.");
    } catch (error) {
      replaceChildren(status, `Export failed: ${error.message}`);
    }
  }

  /** Re-render the current rows (pending state changed locally). */
  rerender() {
    this.render(this.items, { background: false });
  }

  row(item, now) {
    const key = item.email_device_key;
    const access = accessClass(item.access_state);
    const pending = isPending(item, this.pending.get(key));
    if (!pending) this.pending.delete(key);
    const seen = parseTime(item.last_seen);

    const deviceBits = [item.model, item.os].filter(Boolean).join(" · ");
    const accessCell = h("td", { className: "cell-access" },
      h("div", { className: "badges" },
        h("span", { className: `badge badge-${access}` }, accessLabel(access)),
        item.override ? h("span", { className: "badge badge-override", title: "Manual override from the console" },
          `Manual ${stateLabel(item.override).toLowerCase()}`) : null,
        pending ? h("span", { className: "badge badge-pending", title: "Waiting for the gateways to report the new state" },
          "Pending") : null),
      item.reason ? h("div", { className: "sub", title: item.reason }, item.reason) : null,
      item.rule ? h("div", { className: "sub rule", title: `Decided by: ${item.rule}` }, ruleLabel(item.rule)) : null);

    const open = h("a", {
      href: deviceHash(item.user, item.device_id),
      className: "device-link",
      title: `Open ${item.user} / ${item.device_id}`,
      on: {
        click: (event) => {
          event.preventDefault();
          this.onOpen(item.user, item.device_id);
        },
      },
    }, ...breakable(item.user || "—"));
    return h("tr", { dataset: { key, row: item.row_key || key }, className: pending ? "row-pending" : "" },
      h("th", { scope: "row", className: "cell-user" }, open),
      h("td", { className: "cell-id" }, h("code", {}, item.device_id || "—")),
      h("td", { className: "cell-device" },
        h("div", {}, item.device_type || "—"),
        deviceBits ? h("div", { className: "sub" }, deviceBits) : null),
      h("td", { className: "cell-agent" },
        h("span", { className: "truncate", title: item.user_agent || "" }, item.user_agent || "—")),
      h("td", {},
        h("span", { className: `badge badge-${complianceClass(item.compliance_state)}` },
          stateLabel(item.compliance_state)),
        h("div", { className: "sub" }, stateLabel(item.enrollment_state))),
      accessCell,
      h("td", { className: "cell-time" },
        seen
          ? h("time", { dateTime: seen.toISOString(), title: exactTime(seen) }, relativeTime(seen, now))
          : "never"),
      h("td", {}, item.last_command || "—"),
      h("td", {},
        h("div", {}, item.last_node || "—"),
        item.cluster_id
          ? h("div", { className: "sub", title: `Cluster ${item.cluster_id}` },
            this.clusterNames.get(item.cluster_id) || item.cluster_id)
          : null),
      h("td", { className: "cell-actions" },
        h("div", { className: "actions" }, ...this.actionButtons(item, pending))));
  }

  actionButtons(item, pending) {
    if (!this.canAct) return []; // the role may not: no buttons (the API refuses anyway)
    const who = `${item.user} device ${item.device_id}`;
    const button = (action, label) =>
      h("button", {
        type: "button",
        className: `btn btn-small btn-${action}`,
        dataset: { key: item.email_device_key, action },
        disabled: pending,
        "aria-label": `${label} ${who}`,
        on: { click: () => this.onAction(item, action) },
      }, label);
    return overrideActions(item.override).map(([action, label]) => button(action, label));
  }
}

/** The address of a device's page (the fragment: the view's query string stays). */
export function deviceHash(user, deviceId) {
  return `#device=${encodeURIComponent(user)}&id=${encodeURIComponent(deviceId)}`;
}

/** (user, device id) of a device page's fragment, or null. */
export function readDeviceHash(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const user = params.get("device");
  const deviceId = params.get("id");
  return user && deviceId ? { user, deviceId } : null;
}

/** Pending while the API says so, or while our own request is not yet reflected. */
export function isPending(item, local) {
  if (item.pending) return true;
  if (!local) return false;
  const wanted = local.action === "clear" ? null : local.action;
  return (item.override ?? null) !== wanted;
}

/** A user name as text nodes with a line-break opportunity before "@" (and "\\"). */
function breakable(text) {
  const parts = String(text).split(/(?=[@\\])/);
  return parts.flatMap((part, i) => (i ? [document.createElement("wbr"), part] : [part]));
}

function signature(item) {
  return [item.access_state, item.compliance_state, item.last_seen, item.override, item.pending].join("|");
}

function rememberFocus(container) {
  const active = document.activeElement;
  if (!active || !container.contains(active)) return null;
  return { key: active.dataset.key, action: active.dataset.action };
}

function restoreFocus(container, focus) {
  if (!focus || !focus.key) return;
  for (const el of container.querySelectorAll("button[data-key]")) {
    if (el.dataset.key === focus.key && el.dataset.action === focus.action && !el.disabled) {
      el.focus();
      return;
    }
  }
}
