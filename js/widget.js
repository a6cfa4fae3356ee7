// @ts-check
// faccent-widget front end: vanilla ESM for anywidget, no build step, no runtime dependencies.
// Protocol: docs/widget-protocol.md. The browser drives the optimisation loop: it asks Python for a
// time-budgeted chunk of steps, paints the frame that comes back, and asks again while running.
//
// Safety rule: every string that comes from the model (labels, errors, layer names, status) enters
// the DOM through textContent / option.text / setAttribute, never through innerHTML.

const CHUNK_BUDGET_MS = 200;
const STATUS_THROTTLE_MS = 500;
const SEARCH_DEBOUNCE_MS = 250;
const DOWNLOAD_REVOKE_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

/** λ slider bounds when the traits are missing or bad: the defaults of Python's `lam_min` / `lam_max`. */
const LAM_MIN = 1e-2;
const LAM_MAX = 1e2;

// ---------------------------------------------------------------------------------------------
// Types (JSDoc, checked by `npm run typecheck`; the protocol itself is docs/widget-protocol.md)

/**
 * Image bytes as a kernel sends them: DataView (JupyterLab), Uint8Array (Colab), ArrayBuffer or numbers.
 * @typedef {ArrayBufferView | ArrayBuffer | number[]} BytesLike
 */

/**
 * A class in `top`, `inhibited`, `search_results` and `gallery` items.
 * @typedef {{ index: number, label: string, prob?: number }} ClassItem
 */

/**
 * @typedef {{ kind: "class", index: number, label: string }} ClassTarget
 * @typedef {{ kind: "latent", layer: string, channel: number, label: string }} LatentTarget
 * @typedef {{ kind?: undefined, label?: undefined }} NoTarget  `{}` before a target is set
 */

/** @typedef {"masked" | "unmasked" | "diff"} View */
/** @typedef {"topk" | "inhibited" | "triage"} GalleryMode */

/**
 * The synced traits of `FaccentWidget` (faccent_widget/widget/panel.py).
 * @typedef {object} Traits
 * @property {ClassItem[]} top
 * @property {ClassItem[]} inhibited
 * @property {ClassTarget | LatentTarget | NoTarget} target
 * @property {number} lam
 * @property {number} lam_min
 * @property {number} lam_max
 * @property {number | null} lam_recommended
 * @property {string} reg_layer
 * @property {string[]} reg_layers
 * @property {string} default_reg_layer
 * @property {string[]} latent_layers
 * @property {string} preset
 * @property {string[]} presets
 * @property {number} steps
 * @property {number} p1
 * @property {number} p2
 * @property {View} view
 * @property {BytesLike | null} seed_png
 * @property {BytesLike | null} gradcam_png
 * @property {BytesLike | null} mask_png
 * @property {BytesLike | null} accent_png
 * @property {boolean} running
 * @property {number} step
 * @property {number | null} seed_prob
 * @property {number | null} prob
 * @property {string} status
 * @property {string} error
 * @property {string} triage
 * @property {string} device
 */

/**
 * Custom messages JS → Python.
 * @typedef {{ type: "ready" } | { type: "start" } | { type: "chunk", budget_ms: number } | { type: "stop" }
 *   | { type: "reset" } | { type: "set_target", index: number }
 *   | { type: "set_latent", layer: string, channel: number } | { type: "search", query: string }
 *   | { type: "gallery", mode: GalleryMode } | { type: "download" }} Request
 */

/**
 * One chunk's reply. Every field but `done` may be null or absent.
 * @typedef {object} FrameMessage
 * @property {"frame"} type
 * @property {number | null} [step]
 * @property {number | null} [steps]
 * @property {number | null} [objective]
 * @property {number | null} [distance]
 * @property {number | null} [prob]
 * @property {boolean} done
 * @property {boolean} [gallery]
 * @property {number[]} [objective_history]
 * @property {number[]} [distance_history]
 */

/**
 * @typedef {{ type: "search_results", query: string, items: ClassItem[] }} SearchResultsMessage
 * @typedef {{ label: string, index: number, prob_before: number | null, prob_after: number | null }}
 *   GalleryItem
 * @typedef {{ type: "gallery", mode?: GalleryMode, items: GalleryItem[] }} GalleryMessage
 * @typedef {{ type: "download", filename?: string }} DownloadMessage
 * @typedef {{ type: "error", message: string }} ErrorMessage
 */

/**
 * Custom messages Python → JS (with `buffers`).
 * @typedef {FrameMessage | SearchResultsMessage | GalleryMessage | DownloadMessage | ErrorMessage} Message
 */

/**
 * The part of anywidget's model that the panel uses, typed by the traits.
 * @typedef {object} Model
 * @property {<K extends keyof Traits>(name: K) => Traits[K] | undefined} get
 * @property {<K extends keyof Traits>(name: K, value: Traits[K]) => void} set
 * @property {() => void} save_changes
 * @property {(msg: Request) => void} send
 * @property {(event: string, fn: (...args: any[]) => void) => void} on
 * @property {(event: string, fn: (...args: any[]) => void) => void} off
 */

/** @typedef {"seed" | "gradcam" | "mask" | "accent"} TileKey */
/** @typedef {"seed_png" | "gradcam_png" | "mask_png" | "accent_png"} TileTrait */

/** @type {{ key: TileKey, trait: TileTrait, caption: string }[]} */
const TILES = [
  { key: "seed", trait: "seed_png", caption: "Seed" },
  { key: "gradcam", trait: "gradcam_png", caption: "Grad-CAM" },
  { key: "mask", trait: "mask_png", caption: "Mask (collective)" },
  { key: "accent", trait: "accent_png", caption: "Accentuation" },
];
/** @type {[View, string][]} */
const VIEWS = [
  ["masked", "masked"],
  ["unmasked", "unmasked"],
  ["diff", "difference"],
];

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for the tests)

/**
 * Bytes from a DataView (JupyterLab), Uint8Array (Colab), ArrayBuffer or number array; else null.
 * @param {unknown} b
 * @returns {Uint8Array<ArrayBuffer> | null}
 */
export function toBytes(b) {
  if (b == null) return null;
  // Kernel buffers are plain ArrayBuffers (never shared), which is what a Blob takes.
  if (ArrayBuffer.isView(b)) {
    return new Uint8Array(/** @type {ArrayBuffer} */ (b.buffer), b.byteOffset, b.byteLength);
  }
  if (Object.prototype.toString.call(b) === "[object ArrayBuffer]") {
    return new Uint8Array(/** @type {ArrayBuffer} */ (b));
  }
  if (Array.isArray(b)) return Uint8Array.from(b);
  return null;
}

/**
 * MIME type from the magic bytes; PNG when unsure.
 * @param {Uint8Array} bytes
 */
export function sniffType(bytes) {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return "image/jpeg";
  }
  return "image/png";
}

/**
 * @param {unknown} x
 * @param {number} fallback
 */
function finite(x, fallback) {
  const v = Number(x);
  return Number.isFinite(v) ? v : fallback;
}

/**
 * Log-slider bounds [log10(lam_min), log10(lam_max)], robust against bad values.
 * @param {unknown} lamMin
 * @param {unknown} lamMax
 * @returns {[number, number]}
 */
export function lamBounds(lamMin, lamMax) {
  let lo = Math.log10(finite(lamMin, LAM_MIN) > 0 ? finite(lamMin, LAM_MIN) : LAM_MIN);
  let hi = Math.log10(finite(lamMax, LAM_MAX) > 0 ? finite(lamMax, LAM_MAX) : LAM_MAX);
  if (!(hi > lo)) hi = lo + 1;
  return [lo, hi];
}

/**
 * λ → slider position (log10, clamped to the bounds).
 * @param {unknown} lam
 * @param {unknown} lamMin
 * @param {unknown} lamMax
 */
export function lamToSlider(lam, lamMin, lamMax) {
  const [lo, hi] = lamBounds(lamMin, lamMax);
  const v = finite(lam, 0) > 0 ? Math.log10(Number(lam)) : lo;
  return Math.min(hi, Math.max(lo, v));
}

/**
 * Slider position → λ.
 * @param {unknown} x
 */
export function sliderToLam(x) {
  return Math.pow(10, Number(x));
}

/** @param {unknown} lam */
export function formatLam(lam) {
  const v = Number(lam);
  if (!Number.isFinite(v)) return "–";
  if (v !== 0 && (Math.abs(v) < 0.01 || Math.abs(v) >= 1000)) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/** @param {unknown} p */
export function formatProb(p) {
  const v = Number(p);
  if (p == null || !Number.isFinite(v)) return "–";
  return v.toFixed(3);
}

/** @param {unknown} x */
function formatNum(x) {
  const v = Number(x);
  if (x == null || !Number.isFinite(v)) return "–";
  if (v !== 0 && (Math.abs(v) < 0.001 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

/**
 * SVG polyline points for values scaled into a w×h box (y up).
 * @param {readonly unknown[] | null | undefined} values
 * @param {number} w
 * @param {number} h
 */
export function sparklinePoints(values, w, h) {
  const vs = (values || []).map(Number).filter(Number.isFinite);
  if (vs.length === 0) return "";
  const lo = Math.min(...vs);
  const hi = Math.max(...vs);
  const span = hi - lo || 1;
  const dx = vs.length > 1 ? w / (vs.length - 1) : 0;
  return vs
    .map((v, i) => `${(i * dx).toFixed(1)},${(h - 1 - ((v - lo) / span) * (h - 2)).toFixed(1)}`)
    .join(" ");
}

// ---------------------------------------------------------------------------------------------
// DOM helpers

/**
 * Create an element; props are attributes except `text` (textContent); children are nodes or text.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {Document} doc
 * @param {K} tag
 * @param {Record<string, unknown>} [props]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(doc, tag, props = {}, ...children) {
  const node = doc.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c == null) continue;
    node.append(typeof c === "string" ? doc.createTextNode(c) : c);
  }
  return node;
}

/**
 * @typedef {object} ImageSlot
 * @property {(data: unknown) => boolean} show  paint the bytes (or clear on none); true when painted
 * @property {() => void} dispose
 */

/**
 * An <img> fed from bytes through object URLs; revokes the URL it replaces.
 * @param {HTMLImageElement} img
 * @returns {ImageSlot}
 */
function imageSlot(img) {
  /** @type {string | null} */
  let url = null;
  return {
    show(data) {
      const bytes = toBytes(data);
      const old = url;
      if (bytes && bytes.byteLength > 0) {
        url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
        img.src = url;
      } else {
        url = null;
        img.removeAttribute("src");
      }
      if (old) URL.revokeObjectURL(old);
      return url !== null;
    },
    dispose() {
      if (url) URL.revokeObjectURL(url);
      url = null;
    },
  };
}

/**
 * Calls fn at most every `ms`, always delivering the latest value.
 * @template T
 * @param {(value: T) => void} fn
 * @param {number} ms
 * @returns {{ push: (value: T) => void, cancel: () => void }}
 */
function throttle(fn, ms) {
  let last = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  /** @type {T} */
  let pending;
  return {
    push(value) {
      pending = value;
      if (timer) return;
      const wait = last + ms - performance.now();
      if (wait <= 0) {
        last = performance.now();
        fn(pending);
      } else {
        timer = setTimeout(() => {
          timer = null;
          last = performance.now();
          fn(pending);
        }, wait);
      }
    },
    cancel() {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}

/**
 * Replace a <select>'s options by `values` (keeping `current` as an option) and select `current`.
 * @param {HTMLSelectElement} select
 * @param {unknown} values
 * @param {unknown} current
 * @param {(value: string) => string} [decorate]  the option's text
 */
function fillSelect(select, values, current, decorate = (v) => v) {
  const doc = select.ownerDocument;
  const list = Array.isArray(values) ? values.map(String) : [];
  if (current && !list.includes(String(current))) list.unshift(String(current));
  select.replaceChildren(
    ...list.map((v) => {
      const opt = doc.createElement("option");
      opt.value = v;
      opt.text = decorate(v);
      return opt;
    }),
  );
  if (current != null && current !== "") select.value = String(current);
}

// ---------------------------------------------------------------------------------------------
// The panel

/**
 * @typedef {object} Loop  the browser-driven chunk loop
 * @property {boolean} active  asking for chunks
 * @property {"accent" | "gallery" | null} mode
 * @property {number} inFlight  chunks asked for and not yet answered (kept at most 1)
 * @property {number | null} clickAt  performance.now() of the last Accentuate click
 * @property {boolean} awaitingFirst  no frame painted since that click
 */

class Panel {
  /** Counter for unique element ids (labels point at their controls by id). */
  static counter = 0;

  // The DOM parts, created by build() (render() calls it right after the constructor).
  /** @type {HTMLDivElement} */ root;
  /** @type {HTMLParagraphElement} */ triageEl;
  /** @type {HTMLOListElement} */ topList;
  /** @type {HTMLButtonElement[]} */ viewButtons;
  /** @type {HTMLSpanElement} */ stepEl;
  /** @type {HTMLProgressElement} */ progressEl;
  /** @type {HTMLSpanElement} */ probEl;
  /** @type {HTMLSpanElement} */ objEl;
  /** @type {SVGSVGElement} */ spark;
  /** @type {SVGPolylineElement[]} */ sparkLines;
  /** @type {HTMLSpanElement} */ deviceEl;
  /** @type {HTMLSpanElement} */ targetEl;
  /** @type {HTMLDivElement} */ chipsEl;
  /** @type {HTMLInputElement} */ searchInput;
  /** @type {HTMLDivElement} */ resultsEl;
  /** @type {HTMLSelectElement} */ latentSelect;
  /** @type {HTMLInputElement} */ channelInput;
  /** @type {HTMLInputElement} */ lamInput;
  /** @type {HTMLOutputElement} */ lamValue;
  /** @type {HTMLSpanElement} */ lamMark;
  /** @type {HTMLButtonElement} */ lamRec;
  /** @type {HTMLSelectElement} */ regSelect;
  /** @type {HTMLSelectElement} */ presetSelect;
  /** @type {HTMLInputElement} */ stepsInput;
  /** @type {HTMLInputElement} */ p1Input;
  /** @type {HTMLInputElement} */ p2Input;
  /** @type {HTMLButtonElement} */ accentBtn;
  /** @type {HTMLButtonElement} */ stopBtn;
  /** @type {HTMLButtonElement} */ resetBtn;
  /** @type {HTMLButtonElement} */ downloadBtn;
  /** @type {HTMLButtonElement} */ triageBtn;
  /** @type {HTMLDivElement} */ galleryEl;
  /** @type {HTMLSpanElement} */ errorText;
  /** @type {HTMLDivElement} */ errorBox;
  /** @type {HTMLDivElement} */ statusEl;

  /**
   * @param {Model} model
   * @param {HTMLElement} el
   */
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.doc = el.ownerDocument;
    /** @type {[EventTarget, string, EventListener][]} */
    this.domListeners = [];
    /** @type {[string, (...args: any[]) => void][]} */
    this.modelHandlers = [];
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    this.slots = /** @type {Record<TileKey, ImageSlot>} */ ({});
    /** @type {string[]} */
    this.galleryUrls = [];
    /** @type {Set<string>} */
    this.downloadUrls = new Set();
    /** @type {Loop} */
    this.loop = { active: false, mode: null, inFlight: 0, clickAt: null, awaitingFirst: false };
    this.frames = 0;
    /** @type {{ objective: number[], distance: number[] }} */
    this.history = { objective: [], distance: [] };
    this.status = throttle((/** @type {string} */ text) => {
      this.statusEl.textContent = text;
    }, STATUS_THROTTLE_MS);
  }

  // -- small utilities ------------------------------------------------------------------------
  /**
   * A trait's value, or `fallback` while the model has none.
   * @template {keyof Traits} K
   * @template F
   * @param {K} name
   * @param {F} fallback
   * @returns {Traits[K] | F}
   */
  get(name, fallback) {
    const v = this.model.get(name);
    return v === undefined ? fallback : v;
  }

  /**
   * @template {keyof Traits} K
   * @param {K} name
   * @param {Traits[K]} value
   */
  setTrait(name, value) {
    this.model.set(name, value);
    this.model.save_changes();
  }

  /** @param {Request} msg */
  send(msg) {
    this.model.send(msg);
  }

  /**
   * @param {EventTarget} node
   * @param {string} type
   * @param {EventListener} fn
   */
  listen(node, type, fn) {
    node.addEventListener(type, fn);
    this.domListeners.push([node, type, fn]);
  }

  /**
   * @param {string} event
   * @param {(...args: any[]) => void} fn
   */
  onModel(event, fn) {
    this.model.on(event, fn);
    this.modelHandlers.push([event, fn]);
  }

  /**
   * Run `fn` now and whenever any of the traits changes.
   * @param {(keyof Traits)[]} traits
   * @param {() => void} fn
   */
  bind(traits, fn) {
    for (const t of traits) this.onModel(`change:${t}`, () => fn());
    fn();
  }

  /**
   * @param {() => void} fn
   * @param {number} ms
   */
  later(fn, ms) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  /**
   * @param {string} text
   * @param {Record<string, unknown>} [props]
   * @param {(() => void) | null} [onClick]
   */
  button(text, props = {}, onClick = null) {
    const b = h(this.doc, "button", { type: "button", class: "faccent-btn", ...props, text });
    if (onClick) this.listen(b, "click", onClick);
    return b;
  }

  // -- building -------------------------------------------------------------------------------
  build() {
    const d = this.doc;
    this.root = h(d, "div", { class: "faccent" });
    this.triageEl = h(d, "p", { class: "faccent-triage", "data-testid": "triage", hidden: true });
    this.root.append(
      this.triageEl,
      this.buildTiles(),
      this.buildStats(),
      this.buildControls(),
      this.buildGallery(),
      this.buildMessages(),
    );
    this.el.append(this.root);
    this.bindTraits();
    this.onModel("msg:custom", (/** @type {Message} */ msg, /** @type {unknown[]} */ buffers) =>
      this.onMessage(msg, buffers),
    );
    this.send({ type: "ready" });
  }

  buildTiles() {
    const d = this.doc;
    const grid = h(d, "div", { class: "faccent-tiles" });
    for (const t of TILES) {
      const img = h(d, "img", {
        class: "faccent-img",
        alt: `${t.caption} image`,
        "data-testid": `${t.key}-img`,
      });
      this.slots[t.key] = imageSlot(img);
      const fig = h(d, "figure", { class: `faccent-tile faccent-tile-${t.key}` }, img);
      fig.append(h(d, "figcaption", { text: t.caption }));
      if (t.key === "seed") {
        this.topList = h(d, "ol", { class: "faccent-top", "aria-label": "Top-5 classes on the seed" });
        fig.append(this.topList);
      }
      if (t.key === "accent") fig.append(this.buildViewToggle());
      grid.append(fig);
    }
    return grid;
  }

  buildViewToggle() {
    const group = h(this.doc, "div", {
      class: "faccent-views",
      role: "group",
      "aria-label": "Accentuation view",
    });
    this.viewButtons = VIEWS.map(([value, text]) => {
      const b = this.button(text, { "aria-pressed": "false", "data-view": value }, () =>
        this.setTrait("view", value),
      );
      group.append(b);
      return b;
    });
    return group;
  }

  buildStats() {
    const d = this.doc;
    this.stepEl = h(d, "span", { class: "faccent-step", "data-testid": "step", text: "step 0 / 0" });
    this.progressEl = h(d, "progress", {
      max: 1,
      value: 0,
      "aria-label": "Run progress",
      "data-testid": "progress",
    });
    this.probEl = h(d, "span", { class: "faccent-prob", "data-testid": "prob", text: "seed – → now –" });
    this.objEl = h(d, "span", { class: "faccent-obj", text: "objective – · distance –" });
    this.spark = d.createElementNS(SVG_NS, "svg");
    this.spark.setAttribute("class", "faccent-spark");
    this.spark.setAttribute("viewBox", "0 0 80 20");
    this.spark.setAttribute("width", "80");
    this.spark.setAttribute("height", "20");
    this.spark.setAttribute("role", "img");
    this.spark.setAttribute("aria-label", "Objective (solid) and distance (dashed) history");
    this.sparkLines = ["objective", "distance"].map((name) => {
      const line = d.createElementNS(SVG_NS, "polyline");
      line.setAttribute("class", `faccent-spark-${name}`);
      line.setAttribute("fill", "none");
      this.spark.append(line);
      return line;
    });
    this.deviceEl = h(d, "span", { class: "faccent-device", "data-testid": "device" });
    return h(
      d,
      "div",
      { class: "faccent-stats" },
      this.stepEl,
      this.progressEl,
      this.probEl,
      this.objEl,
      this.spark,
      this.deviceEl,
    );
  }

  buildControls() {
    const d = this.doc;
    const strip = h(d, "div", { class: "faccent-controls", "data-lm-suppress-shortcuts": "true" });
    strip.append(this.buildTargetRow(), this.buildLatentRow(), this.buildParamRow(), this.buildActionRow());
    return strip;
  }

  buildTargetRow() {
    const d = this.doc;
    this.targetEl = h(d, "span", { class: "faccent-target", "data-testid": "target" });
    this.chipsEl = h(d, "div", {
      class: "faccent-chips",
      role: "group",
      "aria-label": "Top-5 target classes",
      "data-testid": "chips",
    });
    this.searchInput = h(d, "input", {
      type: "search",
      id: this.uid("search"),
      class: "faccent-search",
      placeholder: "search labels…",
      autocomplete: "off",
    });
    this.resultsEl = h(d, "div", {
      class: "faccent-results",
      role: "group",
      "aria-label": "Search results",
      "data-testid": "search-results",
    });
    /** @type {ReturnType<typeof setTimeout> | null} */
    let debounce = null;
    this.listen(this.searchInput, "input", () => {
      if (debounce) {
        clearTimeout(debounce);
        this.timers.delete(debounce);
      }
      debounce = this.later(() => this.runSearch(), SEARCH_DEBOUNCE_MS);
    });
    const row = h(
      d,
      "div",
      { class: "faccent-row" },
      h(d, "span", { class: "faccent-label", text: "Target" }),
      this.targetEl,
      this.chipsEl,
    );
    const searchRow = h(
      d,
      "div",
      { class: "faccent-row" },
      h(d, "label", { for: this.searchInput.id, text: "Search" }),
      this.searchInput,
      this.resultsEl,
    );
    return h(d, "div", {}, row, searchRow);
  }

  buildLatentRow() {
    const d = this.doc;
    this.latentSelect = h(d, "select", { id: this.uid("latent-layer"), "data-testid": "latent-layer" });
    this.channelInput = h(d, "input", {
      type: "number",
      id: this.uid("channel"),
      min: 0,
      step: 1,
      value: 0,
      class: "faccent-num",
      "data-testid": "channel",
    });
    const use = this.button("Use", { "aria-label": "Use latent target", "data-testid": "use-latent" }, () =>
      this.useLatent(),
    );
    return h(
      d,
      "div",
      { class: "faccent-row" },
      this.field(h(d, "label", { for: this.latentSelect.id, text: "Latent layer" }), this.latentSelect),
      this.field(h(d, "label", { for: this.channelInput.id, text: "channel" }), this.channelInput),
      use,
    );
  }

  buildParamRow() {
    const d = this.doc;
    const row = h(d, "div", { class: "faccent-row" });
    // λ log slider with its value and a mark at the recommended λ.
    this.lamInput = h(d, "input", {
      type: "range",
      id: this.uid("lam"),
      step: 0.01,
      class: "faccent-lam",
      "data-testid": "lam",
    });
    this.lamValue = h(d, "output", {
      for: this.lamInput.id,
      class: "faccent-lam-value",
      "data-testid": "lam-value",
    });
    this.lamMark = h(d, "span", { class: "faccent-lam-mark", "aria-hidden": "true", hidden: true });
    this.lamRec = this.button(
      "recommended",
      { class: "faccent-btn faccent-lam-rec", hidden: true, "data-testid": "lam-rec" },
      () => {
        const rec = this.get("lam_recommended", null);
        if (rec != null) this.setTrait("lam", Number(rec));
      },
    );
    this.listen(this.lamInput, "input", () => this.showLam(sliderToLam(this.lamInput.value)));
    this.listen(this.lamInput, "change", () => this.setTrait("lam", sliderToLam(this.lamInput.value)));
    const track = h(d, "span", { class: "faccent-lam-track" }, this.lamInput, this.lamMark);
    const lamLabel = h(d, "label", { for: this.lamInput.id, text: "λ" });
    row.append(this.field(lamLabel, track, this.lamValue), this.lamRec);

    this.regSelect = this.selectControl(row, "reg layer", "reg_layer");
    this.presetSelect = this.selectControl(row, "preset", "preset");
    this.stepsInput = this.numberControl(row, "steps", "steps", { min: 1, step: 1 }, true);
    this.p1Input = this.numberControl(row, "p1", "p1", { min: 0, max: 100, step: 0.5 });
    this.p2Input = this.numberControl(row, "p2", "p2", { min: 0, max: 100, step: 0.5 });
    return row;
  }

  /**
   * A label and its control(s) that wrap as one unit, so a label never ends a line without its input.
   * @param {...Node} children
   */
  field(...children) {
    return h(this.doc, "span", { class: "faccent-field" }, ...children);
  }

  /**
   * @param {HTMLElement} row
   * @param {string} text
   * @param {"reg_layer" | "preset"} trait
   */
  selectControl(row, text, trait) {
    const select = h(this.doc, "select", { id: this.uid(trait), "data-testid": trait });
    this.listen(select, "change", () => this.setTrait(trait, select.value));
    row.append(this.field(h(this.doc, "label", { for: select.id, text }), select));
    return select;
  }

  /**
   * @param {HTMLElement} row
   * @param {string} text
   * @param {"steps" | "p1" | "p2"} trait
   * @param {Record<string, unknown>} attrs
   * @param {boolean} [integer]
   */
  numberControl(row, text, trait, attrs, integer = false) {
    const input = h(this.doc, "input", {
      type: "number",
      id: this.uid(trait),
      class: "faccent-num",
      "data-testid": trait,
      ...attrs,
    });
    this.listen(input, "change", () => {
      const v = integer ? parseInt(input.value, 10) : parseFloat(input.value);
      if (Number.isFinite(v)) this.setTrait(trait, v);
      else input.value = String(this.get(trait, ""));
    });
    row.append(this.field(h(this.doc, "label", { for: input.id, text }), input));
    return input;
  }

  buildActionRow() {
    const d = this.doc;
    this.accentBtn = this.button(
      "Accentuate",
      { class: "faccent-btn faccent-primary", "data-testid": "accentuate" },
      () => this.accentuate(),
    );
    this.stopBtn = this.button("Stop", { "data-testid": "stop" }, () => this.stop());
    this.resetBtn = this.button("Reset", { "data-testid": "reset" }, () => this.reset());
    this.downloadBtn = this.button("Download PNG", { "data-testid": "download" }, () =>
      this.send({ type: "download" }),
    );
    const topk = this.button("Top-k gallery", { "data-testid": "gallery-topk" }, () =>
      this.runGallery("topk"),
    );
    const inhib = this.button("Most inhibited", { "data-testid": "gallery-inhibited" }, () =>
      this.runGallery("inhibited"),
    );
    this.triageBtn = this.button("Predicted vs true", { "data-testid": "gallery-triage", hidden: true }, () =>
      this.runGallery("triage"),
    );
    return h(
      d,
      "div",
      { class: "faccent-row faccent-actions" },
      this.accentBtn,
      this.stopBtn,
      this.resetBtn,
      this.downloadBtn,
      topk,
      inhib,
      this.triageBtn,
    );
  }

  buildGallery() {
    this.galleryEl = h(this.doc, "div", {
      class: "faccent-gallery",
      "data-testid": "gallery",
      "aria-label": "Gallery",
      role: "group",
      hidden: true,
    });
    return this.galleryEl;
  }

  buildMessages() {
    const d = this.doc;
    this.errorText = h(d, "span", { class: "faccent-error-text", "data-testid": "error" });
    const dismiss = this.button(
      "×",
      { class: "faccent-btn faccent-dismiss", "aria-label": "Dismiss error" },
      () => this.showError(""),
    );
    this.errorBox = h(d, "div", { class: "faccent-error", hidden: true }, this.errorText, dismiss);
    this.statusEl = h(d, "div", {
      class: "faccent-status",
      role: "status",
      "aria-live": "polite",
      "data-testid": "status",
    });
    return h(d, "div", { class: "faccent-messages" }, this.errorBox, this.statusEl);
  }

  /** @param {string} name */
  uid(name) {
    Panel.counter += 1;
    return `faccent-${name}-${Panel.counter}`;
  }

  // -- traits → DOM ---------------------------------------------------------------------------
  bindTraits() {
    for (const t of TILES) this.bind([t.trait], () => this.slots[t.key].show(this.get(t.trait, null)));
    this.bind(["top"], () => this.renderTop());
    this.bind(["top", "target"], () => this.renderChips());
    this.bind(["view"], () => {
      const view = this.get("view", "masked");
      for (const b of this.viewButtons) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    });
    this.bind(["latent_layers"], () =>
      fillSelect(this.latentSelect, this.get("latent_layers", []), this.latentSelect.value || null),
    );
    this.bind(["lam", "lam_min", "lam_max", "lam_recommended"], () => this.renderLam());
    this.bind(["reg_layer", "reg_layers", "default_reg_layer"], () => {
      const def = this.get("default_reg_layer", "");
      fillSelect(this.regSelect, this.get("reg_layers", []), this.get("reg_layer", ""), (v) =>
        v === def ? `${v} (default)` : v,
      );
    });
    this.bind(["preset", "presets"], () =>
      fillSelect(this.presetSelect, this.get("presets", []), this.get("preset", "")),
    );
    this.bind(["steps"], () => (this.stepsInput.value = String(this.get("steps", ""))));
    this.bind(["p1"], () => (this.p1Input.value = String(this.get("p1", ""))));
    this.bind(["p2"], () => (this.p2Input.value = String(this.get("p2", ""))));
    this.bind(["step", "steps"], () => this.renderStep(this.get("step", 0), this.get("steps", 0)));
    this.bind(["seed_prob", "prob"], () => this.renderProb());
    this.bind(
      ["device"],
      () => (this.deviceEl.textContent = this.get("device", "") ? `device: ${this.get("device", "")}` : ""),
    );
    this.bind(["triage"], () => {
      const text = String(this.get("triage", "") || "");
      this.triageEl.textContent = text;
      this.triageEl.hidden = !text;
      this.triageBtn.hidden = !text;
    });
    this.bind(["error"], () => this.showError(String(this.get("error", "") || "")));
    this.bind(["status"], () => this.status.push(String(this.get("status", "") || "")));
    this.bind(["running"], () => this.renderRunning());
  }

  renderTop() {
    const d = this.doc;
    const items = this.get("top", []) || [];
    this.topList.replaceChildren(
      ...items.map((it) => {
        const p = Math.max(0, Math.min(1, finite(it.prob, 0)));
        const bar = h(d, "span", { class: "faccent-bar", "aria-hidden": "true" });
        bar.style.width = `${(p * 100).toFixed(1)}%`;
        return h(
          d,
          "li",
          {},
          h(d, "span", { class: "faccent-top-label", text: it.label }),
          h(d, "span", { class: "faccent-bar-track" }, bar),
          h(d, "span", { class: "faccent-top-prob", text: formatProb(it.prob) }),
        );
      }),
    );
  }

  renderChips() {
    /** @type {Traits["target"]} */
    const target = this.get("target", null) || {};
    this.targetEl.textContent = target.label != null ? String(target.label) : "–";
    const items = this.get("top", []) || [];
    this.chipsEl.replaceChildren(
      ...items.map((it) => {
        const selected = target.kind === "class" && Number(target.index) === Number(it.index);
        return this.button(
          String(it.label),
          {
            class: "faccent-btn faccent-chip",
            "aria-pressed": String(selected),
            "data-index": it.index,
            title: `p = ${formatProb(it.prob)}`,
          },
          () => this.setTarget(it.index),
        );
      }),
    );
  }

  renderLam() {
    const lamMin = this.get("lam_min", LAM_MIN);
    const lamMax = this.get("lam_max", LAM_MAX);
    const [lo, hi] = lamBounds(lamMin, lamMax);
    this.lamInput.min = String(lo);
    this.lamInput.max = String(hi);
    const lam = this.get("lam", 1);
    this.lamInput.value = String(lamToSlider(lam, lamMin, lamMax));
    this.showLam(lam);
    const rec = this.get("lam_recommended", null);
    const hasRec = rec != null && Number(rec) > 0;
    this.lamMark.hidden = !hasRec;
    this.lamRec.hidden = !hasRec;
    if (hasRec) {
      const frac = (lamToSlider(rec, lamMin, lamMax) - lo) / (hi - lo);
      this.lamMark.style.setProperty("--pos", frac.toFixed(4));
      this.lamMark.title = `recommended λ = ${formatLam(rec)}`;
      this.lamRec.textContent = `recommended ${formatLam(rec)}`;
      this.lamRec.setAttribute("aria-label", `Set λ to the recommended ${formatLam(rec)}`);
    }
  }

  /** @param {number} lam */
  showLam(lam) {
    this.lamValue.textContent = formatLam(lam);
    this.lamInput.setAttribute("aria-valuetext", `λ = ${formatLam(lam)}`);
  }

  /**
   * @param {number} step
   * @param {number} steps
   */
  renderStep(step, steps) {
    const k = Math.max(0, finite(step, 0));
    const n = Math.max(0, finite(steps, 0));
    this.stepEl.textContent = `step ${k} / ${n}`;
    this.progressEl.max = Math.max(1, n);
    this.progressEl.value = Math.min(k, Math.max(1, n));
  }

  /** @param {number | null} [now] */
  renderProb(now = this.get("prob", null)) {
    this.probEl.textContent = `seed ${formatProb(this.get("seed_prob", null))} → now ${formatProb(now)}`;
  }

  renderRunning() {
    const running = this.loop.active || Boolean(this.get("running", false));
    this.stopBtn.disabled = !running;
    this.root.classList.toggle("faccent-running", running);
  }

  /**
   * @param {number | null | undefined} objective
   * @param {number | null | undefined} distance
   */
  renderHistory(objective, distance) {
    this.objEl.textContent = `objective ${formatNum(objective)} · distance ${formatNum(distance)}`;
    this.sparkLines[0].setAttribute("points", sparklinePoints(this.history.objective, 80, 20));
    this.sparkLines[1].setAttribute("points", sparklinePoints(this.history.distance, 80, 20));
  }

  /** @param {string} text */
  showError(text) {
    this.errorText.textContent = text;
    this.errorBox.hidden = !text;
    if (text) this.status.push(`Error: ${text}`);
  }

  // -- actions --------------------------------------------------------------------------------
  /** @param {number} index */
  setTarget(index) {
    this.send({ type: "set_target", index: Number(index) });
  }

  runSearch() {
    const query = this.searchInput.value.trim();
    if (!query) {
      this.resultsEl.replaceChildren();
      return;
    }
    this.send({ type: "search", query });
  }

  useLatent() {
    const layer = this.latentSelect.value;
    const channel = parseInt(this.channelInput.value, 10);
    if (!layer || !Number.isInteger(channel) || channel < 0) {
      this.showError("Latent mode needs a layer and a channel ≥ 0.");
      return;
    }
    this.send({ type: "set_latent", layer, channel });
  }

  accentuate() {
    this.loop.clickAt = performance.now();
    this.loop.awaitingFirst = true;
    this.history = { objective: [], distance: [] };
    this.send({ type: "start" });
    this.startLoop("accent");
  }

  /** @param {GalleryMode} mode */
  runGallery(mode) {
    this.loop.awaitingFirst = false;
    this.clearGallery();
    this.galleryEl.hidden = false;
    this.galleryEl.append(h(this.doc, "p", { class: "faccent-muted", text: `running ${mode} gallery…` }));
    this.send({ type: "gallery", mode });
    this.startLoop("gallery");
  }

  /** @param {"accent" | "gallery"} mode */
  startLoop(mode) {
    // Restarting mid-run: the outstanding chunk will be answered, so keep counting it (one in flight).
    // Starting after a stop/done/error: forget replies that may never come, so a lost one cannot stall us.
    if (!this.loop.active) this.loop.inFlight = 0;
    this.loop.active = true;
    this.loop.mode = mode;
    this.requestChunk();
    this.renderRunning();
  }

  requestChunk() {
    this.loop.inFlight += 1;
    this.send({ type: "chunk", budget_ms: CHUNK_BUDGET_MS });
  }

  endLoop() {
    this.loop.active = false;
    this.loop.awaitingFirst = false;
    this.renderRunning();
  }

  stop() {
    this.endLoop();
    this.send({ type: "stop" });
  }

  reset() {
    this.endLoop();
    this.history = { objective: [], distance: [] };
    this.renderHistory(null, null);
    this.send({ type: "reset" });
  }

  // -- messages from Python -------------------------------------------------------------------
  /**
   * @param {Message} msg
   * @param {unknown[]} [buffers]
   */
  onMessage(msg, buffers = []) {
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "frame":
        return this.onFrame(msg, buffers || []);
      case "search_results":
        return this.onSearchResults(msg);
      case "gallery":
        return this.onGallery(msg, buffers || []);
      case "download":
        return this.onDownload(msg, buffers || []);
      case "error":
        return this.onErrorMsg(msg);
      default:
        return undefined;
    }
  }

  /**
   * @param {FrameMessage} msg
   * @param {unknown[]} buffers
   */
  onFrame(msg, buffers) {
    this.loop.inFlight = Math.max(0, this.loop.inFlight - 1);
    if (buffers.length > 0 && this.slots.accent.show(buffers[0])) this.countFrame();
    if (msg.step != null || msg.steps != null) {
      this.renderStep(msg.step ?? this.get("step", 0), msg.steps ?? this.get("steps", 0));
    }
    if (msg.prob != null) this.renderProb(msg.prob);
    this.recordHistory(msg);
    if (msg.done) {
      this.endLoop(); // a gallery frame is `done` only when the whole batch has finished
    } else if (this.loop.active && this.loop.inFlight === 0) {
      this.requestChunk();
    }
  }

  countFrame() {
    this.frames += 1;
    this.el.dataset.frames = String(this.frames);
    if (this.loop.awaitingFirst && this.loop.clickAt != null) {
      this.loop.awaitingFirst = false;
      this.el.dataset.firstFrameMs = (performance.now() - this.loop.clickAt).toFixed(1);
    }
  }

  /** @param {FrameMessage} msg */
  recordHistory(msg) {
    if (Array.isArray(msg.objective_history)) this.history.objective = msg.objective_history.slice();
    else if (msg.objective != null) this.history.objective.push(Number(msg.objective));
    if (Array.isArray(msg.distance_history)) this.history.distance = msg.distance_history.slice();
    else if (msg.distance != null) this.history.distance.push(Number(msg.distance));
    this.renderHistory(msg.objective, msg.distance);
  }

  /** @param {SearchResultsMessage} msg */
  onSearchResults(msg) {
    if (String(msg.query ?? "").trim() !== this.searchInput.value.trim()) return; // stale answer
    const items = Array.isArray(msg.items) ? msg.items : [];
    if (items.length === 0) {
      this.resultsEl.replaceChildren(h(this.doc, "span", { class: "faccent-muted", text: "no match" }));
      return;
    }
    this.resultsEl.replaceChildren(
      ...items.map((it) =>
        this.button(String(it.label), { class: "faccent-btn faccent-chip", "data-index": it.index }, () =>
          this.setTarget(it.index),
        ),
      ),
    );
  }

  clearGallery() {
    for (const u of this.galleryUrls) URL.revokeObjectURL(u);
    this.galleryUrls = [];
    this.galleryEl.replaceChildren();
  }

  /**
   * @param {unknown} data
   * @param {string} alt
   */
  galleryImage(data, alt) {
    const img = h(this.doc, "img", { class: "faccent-gallery-img", alt });
    const bytes = toBytes(data);
    if (bytes && bytes.byteLength > 0) {
      const url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
      this.galleryUrls.push(url);
      img.src = url;
    }
    return img;
  }

  /**
   * @param {GalleryMessage} msg
   * @param {unknown[]} buffers
   */
  onGallery(msg, buffers) {
    const d = this.doc;
    const items = Array.isArray(msg.items) ? msg.items : [];
    this.clearGallery();
    this.galleryEl.hidden = false;
    items.forEach((it, i) => {
      const label = String(it.label ?? "");
      const fig = h(
        d,
        "figure",
        { class: "faccent-gallery-item" },
        h(
          d,
          "div",
          { class: "faccent-gallery-pair" },
          this.galleryImage(buffers[i], `Accentuation for ${label}`),
          this.galleryImage(buffers[items.length + i], `Mask for ${label}`),
        ),
        h(
          d,
          "figcaption",
          {},
          h(d, "span", { class: "faccent-gallery-label", text: label }),
          h(d, "span", {
            class: "faccent-gallery-prob",
            text: `p ${formatProb(it.prob_before)} → ${formatProb(it.prob_after)}`,
          }),
        ),
      );
      this.galleryEl.append(fig);
    });
    if (this.loop.mode === "gallery") this.endLoop();
  }

  /**
   * @param {DownloadMessage} msg
   * @param {unknown[]} buffers
   */
  onDownload(msg, buffers) {
    const bytes = toBytes(buffers[0]);
    if (!bytes || bytes.byteLength === 0) {
      this.showError("Download failed: no image data.");
      return;
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
    this.downloadUrls.add(url);
    const a = h(this.doc, "a", { href: url, download: String(msg.filename || "faccent.png"), hidden: true });
    this.root.append(a);
    a.click();
    a.remove();
    this.later(() => {
      this.downloadUrls.delete(url);
      URL.revokeObjectURL(url);
    }, DOWNLOAD_REVOKE_MS);
  }

  /** @param {ErrorMessage} msg */
  onErrorMsg(msg) {
    this.showError(String(msg.message ?? "error"));
    // A chunk answered with an error gets no frame: stop asking, the user can start again.
    if (this.loop.active) {
      this.loop.inFlight = Math.max(0, this.loop.inFlight - 1);
      this.endLoop();
    }
  }

  // -- teardown -------------------------------------------------------------------------------
  destroy() {
    this.loop.active = false;
    for (const [event, fn] of this.modelHandlers) this.model.off(event, fn);
    this.modelHandlers = [];
    for (const [node, type, fn] of this.domListeners) node.removeEventListener(type, fn);
    this.domListeners = [];
    this.status.cancel();
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    for (const slot of Object.values(this.slots)) slot.dispose();
    for (const u of this.galleryUrls) URL.revokeObjectURL(u);
    this.galleryUrls = [];
    for (const u of this.downloadUrls) URL.revokeObjectURL(u);
    this.downloadUrls.clear();
    this.root.remove();
  }
}

export default {
  /** @param {{ model: Model, el: HTMLElement }} props */
  render({ model, el }) {
    const panel = new Panel(model, el);
    panel.build();
    return () => panel.destroy();
  },
};
