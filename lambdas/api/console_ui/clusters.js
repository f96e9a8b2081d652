// The gateway cluster panel: each cluster's nodes, whether each is connected, the
// policy version it enforces (and how far behind the cluster's committed version it
// is), whether its policy digest matched the control plane's at its last report (and
// when it last did), how fresh that policy is, and the access-event spool depth each
// node reports.

import { byId, h } from "./dom.js";
import { count, duration, exactTime, parseTime, relativeTime } from "./format.js";

export class ClustersView {
  constructor({ api, onError, onNames }) {
    this.api = api;
    this.onError = onError;
    this.onNames = onNames;
    this.container = byId("clusters");
    this.controller = null;
  }

  /** Only the cluster list, for the names the devices table shows. */
  async refreshNames() {
    try {
      this.onNames(listOf(await this.api.clusters()));
    } catch (error) {
      if (error.name !== "AbortError") this.onError(error);
    }
  }

  async refresh() {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    const { signal } = this.controller;
    try {
      const clusters = listOf(await this.api.clusters(signal));
      this.onNames(clusters);
      const nodes = await Promise.all(
        clusters.map((c) => this.api.nodes(c.cluster_id, signal).then(listOf)),
      );
      this.render(clusters, nodes);
    } catch (error) {
      if (error.name !== "AbortError") this.onError(error);
    }
  }

  render(clusters, nodeLists) {
    const now = new Date();
    byId("clusters-empty").hidden = clusters.length > 0;
    this.container.replaceChildren(
      ...clusters.map((cluster, i) => clusterCard(cluster, nodeLists[i], now)),
    );
  }
}

/** The API may answer a bare list or {"items": [...]}: accept both. */
function listOf(payload) {
  if (Array.isArray(payload)) return payload;
  if (payload && Array.isArray(payload.items)) return payload.items;
  if (payload && Array.isArray(payload.nodes)) return payload.nodes;
  return [];
}

function clusterCard(cluster, nodes, now) {
  const id = cluster.cluster_id;
  const version = Number.isFinite(cluster.policy_version) ? cluster.policy_version : cluster.version;
  const connected = nodes.filter((n) => n.connected).length;
  const titleId = `cluster-${cssSafe(id)}`;
  return h("section", { className: "card cluster", "aria-labelledby": titleId },
    h("header", { className: "cluster-head" },
      h("h2", { id: titleId }, cluster.name || id),
      h("span", { className: "muted" }, cluster.name ? id : null),
      h("span", { className: "cluster-facts" },
        version === undefined || version === null ? null : h("span", {}, "Policy version ", h("strong", {}, String(version))),
        h("span", {}, `${connected} of ${nodes.length} node${nodes.length === 1 ? "" : "s"} connected`))),
    nodes.length
      ? h("table", { className: "nodes" },
          h("caption", { className: "visually-hidden" }, `Nodes of cluster ${cluster.name || id}`),
          h("thead", {}, h("tr", {},
            ...["Node", "Connection", "Policy version", "Policy age", "Spool depth", "Last seen",
              "Policy check", "Last verified", "Refused policy"]
              .map((label) => h("th", { scope: "col" }, label)))),
          h("tbody", {}, ...nodes.map((node) => nodeRow(node, version, now))))
      : h("p", { className: "empty" }, "No node has connected yet."));
}

// The verdict on the node's policy digest at its last keepalive.
const CHECKS = {
  in_sync: ["badge-allow", "In sync", "Its policy digest matched the control plane's"],
  diverged: ["badge-block", "Diverged",
    "Its policy digest differed: the node was told to replace its policy"],
  unchecked: ["badge-quarantine", "Unchecked",
    "No digest to compare at its last report (the node was catching up)"],
};

function checkCell(node) {
  const known = CHECKS[node.digest_check];
  const mismatches = node.digest_mismatches > 0
    ? ` (${count(node.digest_mismatches)} mismatch${node.digest_mismatches === 1 ? "" : "es"})`
    : "";
  if (!known) return h("td", { title: "Not reported yet" }, "—");
  const [badge, label, title] = known;
  return h("td", { title: title + mismatches }, h("span", { className: `badge ${badge}` }, label));
}

// An alert: signed policy input the node refused since it started (forged, altered or
// replayed on the way, or signed by a key it does not trust).
function refusedCell(node, now) {
  const refused = node.policy_rejections || 0;
  if (refused === 0) return h("td", { title: "Every signed policy input verified" }, "none");
  const at = parseTime(node.last_rejection_at);
  const when = at ? `, ${relativeTime(at, now)}` : "";
  const reason = node.last_rejection || "unknown";
  return h("td", { title: `Last refusal: ${reason}${when}. The node kept its verified policy.` },
    h("span", { className: "badge badge-block" }, `${count(refused)} refused`),
    " ", h("code", {}, reason));
}

function timeCell(time, now, never) {
  return h("td", {}, time
    ? h("time", { dateTime: time.toISOString(), title: exactTime(time) }, relativeTime(time, now))
    : never);
}

function nodeRow(node, clusterVersion, now) {
  const seen = parseTime(node.last_seen);
  const behind = Number.isFinite(clusterVersion) && Number.isFinite(node.policy_version)
    ? clusterVersion - node.policy_version : 0;
  return h("tr", {},
    h("th", { scope: "row" }, h("code", {}, node.node_id || "—")),
    h("td", {},
      h("span", { className: `badge ${node.connected ? "badge-allow" : "badge-block"}` },
        node.connected ? "Connected" : "Disconnected")),
    h("td", { title: node.policy_version === null ? "Not reported yet (keepalive pending)" : "" },
      node.policy_version ?? "—",
      behind > 0 ? h("span", { className: "badge badge-quarantine behind" }, `${behind} behind`) : null),
    h("td", {}, duration(node.policy_age_s)),
    h("td", { className: node.spool_depth > 0 ? "warn" : "" }, count(node.spool_depth ?? null)),
    timeCell(seen, now, "never"),
    checkCell(node),
    timeCell(parseTime(node.last_verified_at), now, "never"),
    refusedCell(node, now));
}

function cssSafe(value) {
  return String(value).replace(/[^A-Za-z0-9_-]/g, "_");
}
