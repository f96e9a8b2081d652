// Notices to users: whether they are sent, the e-mail's subject and body (placeholders
// such as $reason and $remediation), the mail domain for bare user names, and what to do
// per cluster. Admins edit; other roles see it read-only.

import { byId, h, replaceChildren } from "./dom.js";

export class NoticesView {
  constructor({ api, onError }) {
    this.api = api;
    this.onError = onError;
    this.canEdit = false;
    this.clusters = [];
    this.settings = null;
    this.form = byId("notices-form");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
  }

  setClusters(clusters) {
    this.clusters = clusters;
  }

  async refresh() {
    try {
      this.settings = await this.api.notices();
      this.render();
    } catch (error) {
      this.onError(error);
    }
  }

  render() {
    const s = this.settings;
    byId("notices-enabled").checked = s.enabled;
    byId("notices-domain").value = s.mail_domain || "";
    byId("notices-subject").value = s.subject;
    byId("notices-body").value = s.body;
    byId("notices-default").value = s.default_remediation || "";
    const list = byId("notices-clusters");
    list.replaceChildren(...this.clusters.map((cluster) => {
      const id = `notices-cluster-${cluster.cluster_id}`;
      return h("div", { className: "field" },
        h("label", { htmlFor: id }, `What to do: users of ${cluster.name || cluster.cluster_id}`),
        h("textarea", {
          id, rows: 2, maxLength: 2000, dataset: { cluster: cluster.cluster_id },
          value: (s.remediation || {})[cluster.cluster_id] || "",
          placeholder: "The default text applies",
        }));
    }));
    for (const el of this.form.querySelectorAll("input, textarea")) el.disabled = !this.canEdit;
    byId("notices-save").hidden = !this.canEdit;
    byId("notices-readonly").hidden = this.canEdit;
  }

  async save() {
    const status = byId("notices-status");
    const remediation = {};
    for (const area of byId("notices-clusters").querySelectorAll("textarea")) {
      if (area.value.trim()) remediation[area.dataset.cluster] = area.value.trim();
    }
    const settings = {
      enabled: byId("notices-enabled").checked,
      mail_domain: byId("notices-domain").value.trim(),
      subject: byId("notices-subject").value,
      body: byId("notices-body").value,
      default_remediation: byId("notices-default").value.trim(),
      remediation,
    };
    try {
      this.settings = await this.api.saveNotices(settings);
      replaceChildren(status, "Saved.");
      status.className = "ok";
    } catch (error) {
      replaceChildren(status, `Not saved: ${error.message}`);
      status.className = "alert";
    }
  }
}
