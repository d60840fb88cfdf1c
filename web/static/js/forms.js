// Forms generated from the JSON Schemas of GET /v1/methods.
import { h } from "./dom.js";

function resolve(schema, root) {
  if (schema && schema.$ref && root && root.$defs) {
    return root.$defs[schema.$ref.split("/").pop()] || schema;
  }
  return schema;
}

// The non-null branch of an Optional[...] (anyOf [X, null]).
function unwrap(prop, root) {
  prop = resolve(prop, root);
  if (prop.anyOf) {
    const nonNull = prop.anyOf.filter((s) => s.type !== "null");
    if (nonNull.length === 1) return { ...prop, ...resolve(nonNull[0], root), nullable: true, anyOf: undefined };
  }
  return prop;
}

const label = (name, prop) => prop.title || name.replace(/_/g, " ");

// Returns { element, read() -> spec object (throws Error with a message on a bad field) }.
export function methodForm(kind, schema) {
  const required = new Set(schema.required || []);
  const fields = [];
  const body = h("div", { class: "fields" });
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    if (name === "kind" || name === "version" || raw.const !== undefined) continue;
    const prop = unwrap(raw, schema);
    const id = `f-${kind}-${name}-${Math.random().toString(36).slice(2, 7)}`;
    const help = prop.description ? h("small", { class: "help" }, prop.description) : null;
    const req = required.has(name);
    let input;
    let read;
    const dflt = prop.default;
    if (prop.enum) {
      input = h("select", { id, name });
      if (!req) input.append(h("option", { value: "" }, dflt == null ? "(default)" : `(default: ${dflt})`));
      for (const v of prop.enum) input.append(h("option", { value: String(v) }, String(v)));
      if (req && dflt != null) input.value = String(dflt);
      read = () => (input.value === "" ? undefined : input.value);
    } else if (prop.type === "boolean") {
      input = h("input", { id, name, type: "checkbox" });
      input.checked = dflt === true;
      read = () => (input.checked === (dflt === true) && !req ? undefined : input.checked);
    } else if (prop.type === "integer" || prop.type === "number") {
      const attrs = { id, name, type: "number", step: prop.type === "integer" ? "1" : "any", inputmode: "decimal" };
      const min = prop.minimum ?? prop.exclusiveMinimum;
      const max = prop.maximum ?? prop.exclusiveMaximum;
      if (min !== undefined) attrs.min = min;
      if (max !== undefined) attrs.max = max;
      if (dflt != null) attrs.placeholder = String(dflt);
      input = h("input", attrs);
      read = () => {
        if (input.value === "") {
          if (req) throw new Error(`${kind}: ${label(name, prop)} is required`);
          return undefined;
        }
        const v = Number(input.value);
        if (!Number.isFinite(v) || (prop.type === "integer" && !Number.isInteger(v))) {
          throw new Error(`${kind}: ${label(name, prop)} must be a${prop.type === "integer" ? "n integer" : " number"}`);
        }
        if ((prop.minimum !== undefined && v < prop.minimum) || (prop.exclusiveMinimum !== undefined && v <= prop.exclusiveMinimum)
          || (prop.maximum !== undefined && v > prop.maximum) || (prop.exclusiveMaximum !== undefined && v >= prop.exclusiveMaximum)) {
          throw new Error(`${kind}: ${label(name, prop)} is out of range (${min ?? "…"} to ${max ?? "…"})`);
        }
        return v;
      };
    } else if (prop.type === "array" && prop.items && resolve(prop.items, schema).enum) {
      const opts = resolve(prop.items, schema).enum;
      const boxes = opts.map((v) => {
        const box = h("input", { type: "checkbox", value: v, name });
        box.checked = Array.isArray(dflt) ? dflt.includes(v) : false;
        return box;
      });
      input = h("span", { class: "multi", id }, ...boxes.map((b) => h("label", { class: "inline" }, b, ` ${b.value}`)));
      read = () => {
        const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
        return JSON.stringify(chosen) === JSON.stringify(dflt || []) ? undefined : chosen;
      };
    } else if (prop.type === "array") {
      input = h("input", { id, name, type: "text", placeholder: "comma-separated, e.g. fc3, features.0.*" });
      read = () => {
        const items = input.value.split(",").map((s) => s.trim()).filter(Boolean);
        return items.length ? items : undefined;
      };
    } else if (prop.type === "string") {
      input = h("input", { id, name, type: "text", placeholder: dflt ?? "" });
      read = () => (input.value === "" ? undefined : input.value);
    } else {
      // objects and anything else: JSON
      input = h("textarea", { id, name, rows: 2, placeholder: prop.type === "object" ? '{"fc1": 0.9}' : "JSON" });
      read = () => {
        if (!input.value.trim()) return undefined;
        try { return JSON.parse(input.value); } catch (e) { throw new Error(`${kind}: ${label(name, prop)} is not valid JSON`); }
      };
    }
    fields.push({ name, read });
    body.append(h("div", { class: "field" },
      h("label", { for: id }, label(name, prop), req ? h("span", { class: "req", title: "required" }, " *") : null),
      input, help));
  }
  const element = h("div", { class: "method-form" },
    schema.description ? h("p", { class: "help" }, schema.description) : null, body);
  return {
    element,
    read() {
      const spec = { kind };
      for (const f of fields) {
        const v = f.read();
        if (v !== undefined) spec[f.name] = v;
      }
      return spec;
    },
  };
}
