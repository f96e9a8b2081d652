// DOM building without markup strings: every datum goes through textContent or a
// DOM property, never an HTML-parsing sink, so names, device ids and user agents that
// contain HTML or script (they come from devices) always render as text.

/**
 * h("td", {className: "x", title: "t", dataset: {key: "k"}}, "text", childNode, ...)
 * Children may be strings (become text nodes), nodes, null/undefined/false (skipped).
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Same as h() for SVG elements; props are attributes. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name.startsWith("aria-") || name === "role" || name === "scope") {
      el.setAttribute(name, String(value));
    } else if (name === "htmlFor") {
      el.setAttribute("for", String(value)); // a label's control: an id, not markup
    } else if (/html/i.test(name) || name.startsWith("on")) {
      throw new Error(`h(): property ${name} is not allowed (text only)`);
    } else {
      el[name] = value;
    }
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of el (with nodes or text). */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page element #${id} is missing`);
  return el;
}
