// Pure formatting helpers (no DOM): relative times, labels for states, numbers.

import { CLUSTER_RULE_LABEL, CLUSTER_RULE_PREFIX, RULE_LABELS } from "./rules.js";

const ACCESS_LABELS = {
  allow: "Allowed",
  block: "Blocked",
  quarantine: "Quarantined",
  unknown: "Unknown",
};

export function accessLabel(state) {
  return ACCESS_LABELS[state] || ACCESS_LABELS.unknown;
}

/** A known access state for styling, never a raw value from the API. */
export function accessClass(state) {
  return Object.hasOwn(ACCESS_LABELS, state) ? state : "unknown";
}

const WORDS = {
  compliant: "Compliant",
  noncompliant: "Non-compliant",
  non_compliant: "Non-compliant",
  enrolled: "Enrolled",
  unenrolled: "Unenrolled",
  not_enrolled: "Not enrolled",
  unmanaged: "Not enrolled",
  unknown: "Unknown",
  allow: "Allow",
  block: "Block",
};

/** "noncompliant" -> "Non-compliant"; unknown words are shown as sent, capitalised. */
export function stateLabel(value) {
  if (!value) return "Unknown";
  if (Object.hasOwn(WORDS, value)) return WORDS[value];
  const text = String(value).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function complianceClass(value) {
  if (value === "compliant") return "ok";
  if (value === "noncompliant" || value === "non_compliant") return "bad";
  return "neutral";
}

/** Parse an ISO time; null when absent or invalid. */
export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "just now", "42 s ago", "2 min ago", "3 h ago", "5 d ago" (or "in 1 min" for clock skew). */
export function relativeTime(date, now = new Date()) {
  if (!date) return "never";
  const seconds = Math.round((now.getTime() - date.getTime()) / 1000);
  const ahead = seconds < 0;
  const abs = Math.abs(seconds);
  let text;
  if (abs < 5) return "just now";
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return ahead ? `in ${text}` : `${text} ago`;
}

/** A duration in seconds, short: "8 s", "4 min", "2 h 5 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
  const s = Math.max(0, Math.round(Number(seconds)));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

const exact = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "medium",
});

export function exactTime(date) {
  return date ? exact.format(date) : "";
}

const integer = new Intl.NumberFormat();

export function count(value) {
  return value === null || value === undefined ? "—" : integer.format(value);
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export function clockTime(date) {
  return clock.format(date);
}

/** "rule:ios-old" -> "Cluster rule ios-old"; unknown rule names are shown as sent. */
export function ruleLabel(rule) {
  if (!rule) return "";
  if (Object.hasOwn(RULE_LABELS, rule)) return RULE_LABELS[rule];
  if (rule.startsWith(CLUSTER_RULE_PREFIX)) {
    return `${CLUSTER_RULE_LABEL} ${rule.slice(CLUSTER_RULE_PREFIX.length)}`;
  }
  return rule;
}

/** The override actions offered for a device, given its current override. */
export function overrideActions(override) {
  const actions = [];
  if (override !== "block") actions.push(["block", "Block"]);
  if (override !== "allow") actions.push(["allow", "Allow"]);
  if (override) actions.push(["clear", "Clear override"]);
  return actions;
}
