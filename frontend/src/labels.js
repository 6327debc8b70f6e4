/**
 * User-visible text comes from the page (imaging/viewer_labels.py, translated by Django):
 * nothing shown to a user is written in this code. A missing key shows the key itself, so a
 * forgotten label is visible in review rather than silently English.
 */
export function makeTranslator(labels = {}) {
  return function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(labels, key) ? String(labels[key]) : key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, (whole, name) =>
        Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
      );
    }
    return text;
  };
}

/** A small DOM helper: el('button', {class: 'x', dataset: {testid: 'y'}}, 'text', child...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
