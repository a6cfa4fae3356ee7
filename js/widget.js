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
/** Wait this long after the tiles arrive before asking for the λ mark, so the first click wins. */
const CALIBRATE_DELAY_MS = 1500;
const CALIBRATE_BUDGET_MS = 150;
/** Pause between calibration chunks: the kernel is idle for other messages (and looks idle) in between. */
const CALIBRATE_GAP_MS = 400;
/** Files larger than this are refused in the browser (Python has the same limit). */
const MAX_UPLOAD_BYTES = 40 * 1024 * 1024;
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
 * @property {number[]} snapshot_steps
 */

/**
 * Custom messages JS → Python.
 * @typedef {{ type: "ready" } | { type: "start" } | { type: "chunk", budget_ms: number } | { type: "stop" }
 *   | { type: "reset" } | { type: "set_target", index: number }
 *   | { type: "set_latent", layer: string, channel: number } | { type: "search", query: string }
 *   | { type: "gallery", mode: GalleryMode } | { type: "download" } | { type: "scrub", index: number }
 *   | { type: "calibrate", budget_ms: number } | { type: "load_image", name: string }
 *   | { type: "export_gif" }} Request
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
 * @typedef {{ type: "scrub", index: number, step: number, count: number }} ScrubMessage
 * @typedef {{ type: "image", tile: "accent", index: number | null }} ImageMessage
 * @typedef {{ type: "calibration", done: boolean, progress?: number, value: number | null, error?: string }}
 *   CalibrationMessage
 */

/**
 * Custom messages Python → JS (with `buffers`).
 * @typedef {FrameMessage | SearchResultsMessage | GalleryMessage | DownloadMessage | ErrorMessage
 *   | ScrubMessage | ImageMessage | CalibrationMessage} Message
 */

/**
 * The part of anywidget's model that the panel uses, typed by the traits.
 * @typedef {object} Model
 * @property {<K extends keyof Traits>(name: K) => Traits[K] | undefined} get
 * @property {<K extends keyof Traits>(name: K, value: Traits[K]) => void} set
 * @property {() => void} save_changes
 * @property {(msg: Request, callbacks?: unknown, buffers?: ArrayBuffer[]) => void} send
 * @property {(event: string, fn: (...args: any[]) => void) => void} on
 * @property {(event: string, fn: (...args: any[]) => void) => void} off
 */

/** @typedef {"seed" | "gradcam" | "mask" | "accent"} TileKey */
/** @typedef {"seed_png" | "gradcam_png" | "mask_png" | "accent_png"} TileTrait */

/** @type {{ key: TileKey, trait: TileTrait, caption: string, title: string }[]} */
const TILES = [
  { key: "seed", trait: "seed_png", caption: "Seed", title: "The image the model sees" },
  {
    key: "gradcam",
    trait: "gradcam_png",
    caption: "Grad-CAM",
    title: "Where the target's evidence is, according to Grad-CAM",
  },
  {
    key: "mask",
    trait: "mask_png",
    caption: "Mask (collective)",
    title: "Grad-CAM normalised against the reference images: where the accentuation is shown",
  },
  {
    key: "accent",
    trait: "accent_png",
    caption: "Accentuation",
    title: "The seed changed to raise the target, kept close to the seed inside the model",
  },
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
  if (bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46 && bytes[3] === 0x38) {
    return "image/gif";
  }
  return "image/png";
}

/**
 * The latent layer to offer first: the block that holds the default regularisation layer (the
 * longest layer name that is `regLayer` or a dotted prefix of it), else the layer sharing the
 * longest dotted prefix with it, else the first layer.
 * @param {unknown} layers
 * @param {unknown} regLayer
 * @returns {string}
 */
export function defaultLatent(layers, regLayer) {
  const list = Array.isArray(layers) ? layers.map(String) : [];
  if (list.length === 0) return "";
  const reg = String(regLayer ?? "");
  if (!reg) return list[0];
  const holders = list.filter((l) => reg === l || reg.startsWith(`${l}.`));
  if (holders.length > 0) return holders.reduce((a, b) => (b.length > a.length ? b : a));
  const parts = reg.split(".");
  let best = list[0];
  let bestShared = 0;
  for (const l of list) {
    const lp = l.split(".");
    let k = 0;
    while (k < lp.length && k < parts.length && lp[k] === parts[k]) k += 1;
    if (k > bestShared) {
      best = l;
      bestShared = k;
    }
  }
  return best;
}

/**
 * Slider position (0..count-1) for a scrub over `count` positions, clamped; -1 when empty.
 * @param {unknown} value
 * @param {number} count
 */
export function clampIndex(value, count) {
  if (!(count > 0)) return -1;
  const v = Math.round(finite(value, count - 1));
  return Math.min(count - 1, Math.max(0, v));
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
 * @property {() => Uint8Array<ArrayBuffer> | null} bytes  what is painted now
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
  /** @type {Uint8Array<ArrayBuffer> | null} */
  let current = null;
  return {
    show(data) {
      const bytes = toBytes(data);
      const old = url;
      if (bytes && bytes.byteLength > 0) {
        url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
        img.src = url;
        current = bytes;
      } else {
        url = null;
        current = null;
        img.removeAttribute("src");
      }
      if (old) URL.revokeObjectURL(old);
      return url !== null;
    },
    bytes() {
      return current;
    },
    dispose() {
      if (url) URL.revokeObjectURL(url);
      url = null;
      current = null;
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
  /** @type {HTMLDivElement} */ dropHint;
  /** @type {HTMLImageElement} */ compareImg;
  /** @type {ImageSlot} */ compareSlot;
  /** @type {HTMLElement} */ accentTile;
  /** @type {HTMLButtonElement} */ compareBtn;
  /** @type {HTMLInputElement} */ scrubInput;
  /** @type {HTMLOutputElement} */ scrubValue;
  /** @type {HTMLSpanElement} */ lamNote;
  /** @type {HTMLButtonElement} */ gifBtn;
  /** @type {HTMLInputElement} */ fileInput;
  /** @type {HTMLDetailsElement} */ advanced;
  /** @type {HTMLDivElement} */ overlay;
  /** @type {HTMLButtonElement} */ overlayClose;
  /** @type {{ img: HTMLImageElement, cap: HTMLElement, slot: ImageSlot, fig: HTMLElement }[]} */ overlayPanes;
  /** @type {HTMLImageElement} */ galleryLive;
  /** @type {ImageSlot} */ galleryLiveSlot;

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
    this.destroyed = false;
    /** Scrub state: `follow` = the slider sits at its right end and live frames are painted. */
    /** @type {{ follow: boolean, inFlight: boolean, pending: number | null }} */
    this.scrub = { follow: true, inFlight: false, pending: null };
    /** λ-mark calibration driven by the browser in small chunks while no run is going. */
    this.calib = { active: false, waiting: false, done: false };
    /** @type {{ key: TileKey | null, opener: HTMLElement | null }} */
    this.overlayState = { key: null, opener: null };
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
    this.root = h(d, "div", { class: "faccent", "data-lm-suppress-shortcuts": "true" });
    this.triageEl = h(d, "p", { class: "faccent-triage", "data-testid": "triage", hidden: true });
    this.dropHint = h(d, "div", {
      class: "faccent-drop-hint",
      "aria-hidden": "true",
      text: "Drop an image to use it as the seed",
    });
    this.root.append(
      this.triageEl,
      this.buildTiles(),
      this.buildStats(),
      this.buildControls(),
      this.buildAdvanced(),
      this.buildGallery(),
      this.buildMessages(),
      this.buildOverlay(),
      this.dropHint,
    );
    this.el.append(this.root);
    this.bindDrop();
    this.bindTraits();
    this.onModel("msg:custom", (/** @type {Message} */ msg, /** @type {unknown[]} */ buffers) =>
      this.onMessage(msg, buffers),
    );
    this.send({ type: "ready" });
    this.later(() => this.maybeCalibrate(), CALIBRATE_DELAY_MS);
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
      // the image is a button: click (or Enter) opens it large, with the seed beside it
      const zoom = this.button("", { class: "faccent-zoom", "aria-label": `Enlarge ${t.caption}`, title: t.title }, () =>
        this.openOverlay(t.key, zoom),
      );
      zoom.append(img);
      const frame = h(d, "div", { class: "faccent-frame" }, zoom);
      const fig = h(d, "figure", { class: `faccent-tile faccent-tile-${t.key}`, "data-testid": `${t.key}-tile` }, frame);
      fig.append(h(d, "figcaption", { text: t.caption, title: t.title }));
      if (t.key === "seed") {
        img.addEventListener("load", this.onSeedLoad);
        this.domListeners.push([img, "load", this.onSeedLoad]);
        this.topList = h(d, "ol", { class: "faccent-top", "aria-label": "Top-5 classes on the seed" });
        fig.append(this.topList);
      }
      if (t.key === "accent") {
        // the seed, stacked on the accentuation, shown while "compare" is held
        this.compareImg = h(d, "img", {
          class: "faccent-img faccent-compare-img",
          alt: "Seed (comparing)",
          "data-testid": "compare-img",
        });
        this.compareSlot = imageSlot(this.compareImg);
        frame.append(this.compareImg);
        this.accentTile = fig;
        fig.append(h(d, "div", { class: "faccent-tile-tools" }, this.buildViewToggle(), this.buildCompare()));
      }
      grid.append(fig);
    }
    return grid;
  }

  /** Seed loaded: every tile takes the seed's aspect ratio. */
  onSeedLoad = () => {
    const img = /** @type {HTMLImageElement} */ (this.root.querySelector("[data-testid=seed-img]"));
    if (img && img.naturalWidth > 0 && img.naturalHeight > 0) {
      this.root.style.setProperty("--fa-aspect", `${img.naturalWidth} / ${img.naturalHeight}`);
    }
  };

  buildCompare() {
    this.compareBtn = this.button("Hold to compare", {
      class: "faccent-btn faccent-compare",
      "aria-pressed": "false",
      "data-testid": "compare",
      title: "Press and hold (mouse, touch, Space or Enter) to see the seed in place of the accentuation",
    });
    // (event types, not `instanceof KeyboardEvent`: the page's constructors may not be this realm's)
    const on = (/** @type {Event} */ e) => {
      if (e.type === "keydown") {
        const k = /** @type {KeyboardEvent} */ (e);
        if ((k.key !== " " && k.key !== "Enter") || k.repeat) return;
        e.preventDefault();
      }
      this.setComparing(true);
    };
    const off = (/** @type {Event} */ e) => {
      const key = /** @type {KeyboardEvent} */ (e).key;
      if (e.type === "keyup" && key !== " " && key !== "Enter") return;
      this.setComparing(false);
    };
    this.listen(this.compareBtn, "pointerdown", on);
    this.listen(this.compareBtn, "keydown", on);
    for (const type of ["pointerup", "pointerleave", "pointercancel", "keyup", "blur"]) {
      this.listen(this.compareBtn, type, off);
    }
    return this.compareBtn;
  }

  /** @param {boolean} on */
  setComparing(on) {
    this.accentTile.classList.toggle("faccent-comparing", on);
    this.compareBtn.setAttribute("aria-pressed", String(on));
  }

  buildViewToggle() {
    const group = h(this.doc, "div", {
      class: "faccent-views",
      role: "group",
      "aria-label": "Accentuation view",
    });
    /** @type {Record<View, string>} */
    const titles = {
      masked: "The accentuation inside the mask, the seed outside it",
      unmasked: "The whole accentuation",
      diff: "What changed: grey = unchanged, brighter or darker = colour added or removed",
    };
    this.viewButtons = VIEWS.map(([value, text]) => {
      const b = this.button(text, { "aria-pressed": "false", "data-view": value, title: titles[value] }, () =>
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
    // scrub: a slider over the run's snapshots (0 = the seed); at its right end it follows the run
    this.scrubInput = h(d, "input", {
      type: "range",
      id: this.uid("scrub"),
      min: 0,
      max: 0,
      step: 1,
      value: 0,
      disabled: true,
      class: "faccent-scrub",
      "data-testid": "scrub",
      title: "Step back through the run: left end = the seed, right end = the latest image",
    });
    this.scrubValue = h(d, "output", { for: this.scrubInput.id, class: "faccent-scrub-value", "data-testid": "scrub-value" });
    this.listen(this.scrubInput, "input", () => this.onScrubInput());
    const scrub = this.field(
      h(d, "label", { for: this.scrubInput.id, text: "Snapshot" }),
      this.scrubInput,
      this.scrubValue,
    );
    return h(
      d,
      "div",
      { class: "faccent-stats" },
      scrub,
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
    const strip = h(d, "div", { class: "faccent-controls", "data-testid": "controls" });
    strip.append(this.buildTargetRow(), this.buildMainRow(), this.buildIoRow());
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
      placeholder: "search all classes…",
      autocomplete: "off",
      "aria-label": "Search target classes",
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
    return h(
      d,
      "div",
      { class: "faccent-row" },
      h(d, "span", { class: "faccent-label", text: "Target" }),
      this.targetEl,
      this.chipsEl,
      this.searchInput,
      this.resultsEl,
    );
  }

  buildMainRow() {
    const d = this.doc;
    const row = h(d, "div", { class: "faccent-row faccent-actions" });
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
    this.lamNote = h(d, "span", { class: "faccent-muted faccent-lam-note", "data-testid": "lam-note" });
    this.listen(this.lamInput, "input", () => this.showLam(sliderToLam(this.lamInput.value)));
    this.listen(this.lamInput, "change", () => this.setTrait("lam", sliderToLam(this.lamInput.value)));
    const track = h(d, "span", { class: "faccent-lam-track" }, this.lamInput, this.lamMark);
    const lamLabel = h(d, "label", {
      for: this.lamInput.id,
      text: "λ",
      title: "How strongly the accentuation is kept close to the seed: small λ = bolder changes",
    });
    row.append(this.field(lamLabel, track, this.lamValue), this.lamRec, this.lamNote);

    this.accentBtn = this.button(
      "Accentuate",
      { class: "faccent-btn faccent-primary", "data-testid": "accentuate" },
      () => this.accentuate(),
    );
    this.stopBtn = this.button("Stop", { "data-testid": "stop" }, () => this.stop());
    this.resetBtn = this.button("Reset", { "data-testid": "reset", title: "Discard the run and show the seed" }, () =>
      this.reset(),
    );
    const topk = this.button(
      "Top-k gallery",
      { "data-testid": "gallery-topk", title: "Accentuate each of the top-5 classes (below the tiles)" },
      () => this.runGallery("topk"),
    );
    const inhib = this.button(
      "Most inhibited",
      { "data-testid": "gallery-inhibited", title: "Accentuate the 5 least likely classes" },
      () => this.runGallery("inhibited"),
    );
    this.triageBtn = this.button("Predicted vs true", { "data-testid": "gallery-triage", hidden: true }, () =>
      this.runGallery("triage"),
    );
    row.append(
      h(d, "span", { class: "faccent-group faccent-run-group" }, this.accentBtn, this.stopBtn, this.resetBtn),
      h(d, "span", { class: "faccent-group" }, topk, inhib, this.triageBtn),
    );
    return row;
  }

  buildIoRow() {
    const d = this.doc;
    this.downloadBtn = this.button("Download PNG", { "data-testid": "download", title: "The four tiles as one PNG" }, () =>
      this.send({ type: "download" }),
    );
    this.gifBtn = this.button(
      "Download GIF",
      { "data-testid": "export-gif", title: "An animation of the run, seed → accentuation, in the chosen view" },
      () => this.send({ type: "export_gif" }),
    );
    this.fileInput = h(d, "input", {
      type: "file",
      accept: "image/*",
      id: this.uid("file"),
      class: "faccent-file",
      "data-testid": "file",
      "aria-label": "Open your own image",
    });
    this.listen(this.fileInput, "change", () => {
      const file = this.fileInput.files && this.fileInput.files[0];
      if (file) this.loadFile(file);
      this.fileInput.value = "";
    });
    const pick = this.button(
      "Your image…",
      { "data-testid": "pick-file", title: "Use your own photo as the seed (or drop it onto the panel)" },
      () => this.fileInput.click(),
    );
    return h(
      d,
      "div",
      { class: "faccent-row faccent-io" },
      pick,
      this.fileInput,
      this.downloadBtn,
      this.gifBtn,
    );
  }

  buildAdvanced() {
    const d = this.doc;
    this.advanced = h(d, "details", { class: "faccent-advanced", "data-testid": "advanced" });
    this.advanced.append(h(d, "summary", { text: "Advanced" }));
    const row = h(d, "div", { class: "faccent-row" });
    this.regSelect = this.selectControl(
      row,
      "Keep close at layer",
      "reg_layer",
      "The layer where the accentuation is kept close to the seed (the regulariser). Earlier layers keep " +
        "more of the seed's pixels; later layers allow larger changes.",
    );
    this.presetSelect = this.selectControl(
      row,
      "Quality",
      "preset",
      "preview: fewer, smaller crops (quick on a CPU); paper: the paper's settings (meant for a GPU)",
    );
    this.stepsInput = this.numberControl(
      row,
      "Steps",
      "steps",
      { min: 1, step: 1 },
      "How many optimisation steps one run takes",
      true,
    );
    // the two mask percentiles wrap as one unit: "Mask ramps from percentile [50] to [98]"
    const mask = h(d, "span", { class: "faccent-field" });
    row.append(mask);
    this.p1Input = this.numberControl(
      mask,
      "Mask ramps from percentile",
      "p1",
      { min: 0, max: 100, step: 0.5 },
      "Grad-CAM values below this percentile of the reference images get mask 0 (the seed shows)",
    );
    this.p2Input = this.numberControl(
      mask,
      "to",
      "p2",
      { min: 0, max: 100, step: 0.5 },
      "Grad-CAM values above this percentile of the reference images get mask 1 (the accentuation shows)",
    );
    this.advanced.append(row, this.buildLatentRow());
    return this.advanced;
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
    const use = this.button(
      "Use",
      { "aria-label": "Use latent target", "data-testid": "use-latent", title: "Accentuate this channel" },
      () => this.useLatent(),
    );
    const tip = "Accentuate one channel of a hidden layer instead of a class";
    return h(
      d,
      "div",
      { class: "faccent-row" },
      this.field(h(d, "label", { for: this.latentSelect.id, text: "Hidden unit: layer", title: tip }), this.latentSelect),
      this.field(h(d, "label", { for: this.channelInput.id, text: "channel", title: tip }), this.channelInput),
      use,
    );
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
   * @param {string} title
   */
  selectControl(row, text, trait, title) {
    const select = h(this.doc, "select", { id: this.uid(trait), "data-testid": trait, title });
    this.listen(select, "change", () => this.setTrait(trait, select.value));
    row.append(this.field(h(this.doc, "label", { for: select.id, text, title }), select));
    return select;
  }

  /**
   * @param {HTMLElement} row
   * @param {string} text
   * @param {"steps" | "p1" | "p2"} trait
   * @param {Record<string, unknown>} attrs
   * @param {string} title
   * @param {boolean} [integer]
   */
  numberControl(row, text, trait, attrs, title, integer = false) {
    const input = h(this.doc, "input", {
      type: "number",
      id: this.uid(trait),
      class: "faccent-num",
      "data-testid": trait,
      title,
      ...attrs,
    });
    this.listen(input, "change", () => {
      const v = integer ? parseInt(input.value, 10) : parseFloat(input.value);
      if (Number.isFinite(v)) this.setTrait(trait, v);
      else input.value = String(this.get(trait, ""));
    });
    row.append(this.field(h(this.doc, "label", { for: input.id, text, title }), input));
    return input;
  }

  buildOverlay() {
    const d = this.doc;
    const pane = (/** @type {string} */ testid) => {
      const img = h(d, "img", { class: "faccent-overlay-img", alt: "", "data-testid": testid });
      const cap = h(d, "figcaption", {});
      return { img, cap, slot: imageSlot(img), fig: h(d, "figure", { class: "faccent-overlay-fig" }, img, cap) };
    };
    this.overlayPanes = [pane("overlay-main"), pane("overlay-seed")];
    this.overlayClose = this.button("Close", { class: "faccent-btn faccent-overlay-close", "data-testid": "overlay-close" });
    this.overlay = h(
      d,
      "div",
      {
        class: "faccent-overlay",
        role: "dialog",
        "aria-modal": "true",
        "aria-label": "Enlarged image",
        "data-testid": "overlay",
        hidden: true,
      },
      h(d, "div", { class: "faccent-overlay-body" }, this.overlayPanes[0].fig, this.overlayPanes[1].fig),
      this.overlayClose,
    );
    this.listen(this.overlay, "click", () => this.closeOverlay());
    this.listen(this.overlay, "keydown", (e) => {
      if (/** @type {KeyboardEvent} */ (e).key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        this.closeOverlay();
      }
    });
    return this.overlay;
  }

  /**
   * @param {TileKey} key
   * @param {HTMLElement} opener
   */
  openOverlay(key, opener) {
    const other = key === "seed" ? "accent" : "seed";
    this.overlayState = { key, opener };
    const caption = (/** @type {TileKey} */ k) => {
      const t = TILES.find((x) => x.key === k);
      const base = t ? t.caption : k;
      return k === "accent" ? `${base} (${String(this.get("view", "masked"))})` : base;
    };
    const [a, b] = this.overlayPanes;
    a.slot.show(this.slots[key].bytes());
    a.img.alt = `${caption(key)}, enlarged`;
    a.cap.textContent = caption(key);
    b.slot.show(this.slots[other].bytes());
    b.img.alt = `${caption(other)}, enlarged`;
    b.cap.textContent = caption(other);
    this.overlay.hidden = false;
    this.overlayClose.focus();
  }

  closeOverlay() {
    if (this.overlay.hidden) return;
    this.overlay.hidden = true;
    for (const p of this.overlayPanes) p.slot.show(null);
    const opener = this.overlayState.opener;
    this.overlayState = { key: null, opener: null };
    if (opener) opener.focus();
  }

  bindDrop() {
    const over = (/** @type {Event} */ e) => {
      const dt = /** @type {DragEvent} */ (e).dataTransfer;
      if (!dt || !Array.from(dt.types || []).includes("Files")) return;
      e.preventDefault();
      dt.dropEffect = "copy";
      this.root.classList.add("faccent-dragover");
    };
    this.listen(this.root, "dragenter", over);
    this.listen(this.root, "dragover", over);
    this.listen(this.root, "dragleave", (e) => {
      const related = /** @type {Node | null} */ (/** @type {DragEvent} */ (e).relatedTarget);
      if (!related || !this.root.contains(related)) this.root.classList.remove("faccent-dragover");
    });
    this.listen(this.root, "drop", (e) => {
      const dt = /** @type {DragEvent} */ (e).dataTransfer;
      this.root.classList.remove("faccent-dragover");
      if (!dt || !dt.files || dt.files.length === 0) return;
      e.preventDefault();
      e.stopPropagation(); // JupyterLab would otherwise open the file as a document
      this.loadFile(dt.files[0]);
    });
  }

  /** @param {File} file */
  loadFile(file) {
    const name = String(file.name || "image");
    if (file.size > MAX_UPLOAD_BYTES) {
      this.showError(`${name}: the file is too large (at most ${MAX_UPLOAD_BYTES >> 20} MB); the previous image stays`);
      return;
    }
    this.status.push(`reading ${name}…`);
    file.arrayBuffer().then(
      (buf) => {
        if (this.destroyed) return;
        this.endLoop();
        this.model.send({ type: "load_image", name }, undefined, [buf]);
      },
      (err) => {
        if (!this.destroyed) this.showError(`${name}: could not read the file (${String(err)}); the previous image stays`);
      },
    );
  }

  buildGallery() {
    const d = this.doc;
    this.galleryEl = h(d, "div", {
      class: "faccent-gallery",
      "data-testid": "gallery",
      "aria-label": "Gallery",
      role: "group",
      hidden: true,
    });
    this.galleryLive = h(d, "img", {
      class: "faccent-gallery-live",
      alt: "Gallery in progress",
      "data-testid": "gallery-live",
      hidden: true,
    });
    this.galleryLiveSlot = imageSlot(this.galleryLive);
    return h(d, "div", { class: "faccent-gallery-wrap" }, this.galleryLive, this.galleryEl);
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
    for (const t of TILES) {
      this.bind([t.trait], () => {
        // a scrubbed-back accentuation stays until the user scrubs again or a new run starts
        if (t.key === "accent" && !this.scrub.follow) return;
        this.paint(t.key, this.get(t.trait, null));
      });
    }
    this.bind(["seed_png"], () => this.compareSlot.show(this.get("seed_png", null)));
    this.bind(["snapshot_steps", "step"], () => this.renderScrub());
    this.onModel("change:lam_recommended", () => {
      if (this.get("lam_recommended", null) == null) {
        this.calib.done = false; // the regularisation layer changed: a new mark is needed
        this.later(() => this.maybeCalibrate(), 0);
      }
    });
    this.bind(["top"], () => this.renderTop());
    this.onModel("change:top", () => {
      // a new seed: the gallery and the sparkline belong to the old one
      this.clearGallery();
      this.galleryEl.hidden = true;
      this.history = { objective: [], distance: [] };
      this.renderHistory(null, null);
    });
    this.bind(["top", "target"], () => this.renderChips());
    this.bind(["view"], () => {
      const view = this.get("view", "masked");
      for (const b of this.viewButtons) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    });
    this.bind(["latent_layers", "default_reg_layer"], () => {
      const layers = this.get("latent_layers", []);
      const current = this.latentSelect.value || defaultLatent(layers, this.get("default_reg_layer", ""));
      fillSelect(this.latentSelect, layers, current || null);
    });
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
    this.followLive();
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
    if (!this.loop.active) this.setInFlight(0);
    this.loop.active = true;
    this.loop.mode = mode;
    this.requestChunk();
    this.renderRunning();
  }

  requestChunk() {
    this.setInFlight(this.loop.inFlight + 1);
    this.send({ type: "chunk", budget_ms: CHUNK_BUDGET_MS });
  }

  /**
   * Chunks asked for and not yet answered; `el.dataset.chunksInFlight` mirrors it (a test hook: after
   * Stop, the last frame has landed when it reads 0).
   * @param {number} n
   */
  setInFlight(n) {
    this.loop.inFlight = Math.max(0, n);
    this.el.dataset.chunksInFlight = String(this.loop.inFlight);
  }

  endLoop() {
    this.loop.active = false;
    this.loop.awaitingFirst = false;
    this.renderRunning();
    if (this.calib.waiting) {
      this.calib.waiting = false;
      this.later(() => this.maybeCalibrate(), 0);
    }
  }

  stop() {
    this.endLoop();
    this.send({ type: "stop" });
  }

  reset() {
    this.endLoop();
    this.followLive();
    this.paint("accent", this.get("seed_png", null));
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
      case "scrub":
        return this.onScrub(msg, buffers || []);
      case "image":
        return this.onImage(msg, buffers || []);
      case "calibration":
        return this.onCalibration(msg);
      default:
        return undefined;
    }
  }

  /**
   * @param {FrameMessage} msg
   * @param {unknown[]} buffers
   */
  onFrame(msg, buffers) {
    this.setInFlight(this.loop.inFlight - 1);
    if (buffers.length > 0) {
      if (msg.gallery) {
        // the gallery batch never draws into the main tiles: its progress strip shows in the gallery
        if (this.galleryLiveSlot.show(buffers[0])) {
          this.galleryLive.hidden = false;
          this.countFrame();
        }
      } else if (this.scrub.follow && this.paint("accent", buffers[0])) {
        this.countFrame();
      }
    }
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
    this.galleryLiveSlot.show(null);
    this.galleryLive.hidden = true;
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
    this.scrub.inFlight = false; // a refused scrub gets no scrub reply
    this.scrub.pending = null;
    // A chunk answered with an error gets no frame: stop asking, the user can start again.
    if (this.loop.active) {
      this.setInFlight(this.loop.inFlight - 1);
      this.endLoop();
    }
  }

  // -- painting, scrub, compare, λ mark -------------------------------------------------------
  /**
   * Paint a tile (and the enlarged view when it shows that tile).
   * @param {TileKey} key
   * @param {unknown} data
   */
  paint(key, data) {
    const painted = this.slots[key].show(data);
    const open = this.overlayState.key;
    if (open && !this.overlay.hidden) {
      if (open === key) this.overlayPanes[0].slot.show(data);
      else if ((open === "seed" ? "accent" : "seed") === key) this.overlayPanes[1].slot.show(data);
    }
    return painted;
  }

  /** Put the scrub slider back at its right end: live frames are painted again. */
  followLive() {
    this.scrub.follow = true;
    this.scrub.pending = null;
    this.renderScrub();
  }

  renderScrub() {
    const steps = this.get("snapshot_steps", []) || [];
    const count = steps.length;
    this.scrubInput.max = String(Math.max(0, count - 1));
    this.scrubInput.disabled = count < 2;
    if (this.scrub.follow) this.scrubInput.value = String(Math.max(0, count - 1));
    const idx = clampIndex(this.scrubInput.value, count);
    // the right end shows the latest image, which may be newer than the last snapshot
    const step = idx === count - 1 ? Math.max(steps[idx], finite(this.get("step", 0), 0)) : steps[idx];
    const text = idx < 0 ? "–" : idx === 0 ? "seed" : `step ${step}`;
    this.scrubValue.textContent = text;
    this.scrubInput.setAttribute("aria-valuetext", text);
  }

  onScrubInput() {
    const count = (this.get("snapshot_steps", []) || []).length;
    const idx = clampIndex(this.scrubInput.value, count);
    if (idx < 0) return;
    this.scrub.follow = idx === count - 1;
    this.renderScrub();
    this.requestScrub(idx);
  }

  /** @param {number} index */
  requestScrub(index) {
    if (this.scrub.inFlight) {
      this.scrub.pending = index; // one scrub in flight; only the latest position is asked for next
      return;
    }
    this.scrub.inFlight = true;
    this.send({ type: "scrub", index });
  }

  /**
   * @param {ScrubMessage} msg
   * @param {unknown[]} buffers
   */
  onScrub(msg, buffers) {
    this.scrub.inFlight = false;
    const pending = this.scrub.pending;
    this.scrub.pending = null;
    if (pending != null && pending !== msg.index) {
      this.requestScrub(pending);
      return;
    }
    // following a live run: its frames take over again
    if (!(this.scrub.follow && this.loop.active) && buffers.length > 0) this.paint("accent", buffers[0]);
  }

  /**
   * Python redrew the accentuation (a view change with no frame coming, or a new seed).
   * @param {ImageMessage} msg
   * @param {unknown[]} buffers
   */
  onImage(msg, buffers) {
    if (msg.index == null) this.followLive();
    else if (this.scrub.follow) return; // a scrub position the slider has left
    if (buffers.length > 0) this.paint("accent", buffers[0]);
  }

  maybeCalibrate() {
    if (this.destroyed || this.calib.active || this.calib.done) return;
    if (this.get("lam_recommended", null) != null) {
      this.calib.done = true;
      return;
    }
    if (this.loop.active) {
      this.calib.waiting = true; // never compete with a run: resume when it ends
      return;
    }
    this.calib.active = true;
    this.send({ type: "calibrate", budget_ms: CALIBRATE_BUDGET_MS });
  }

  /** @param {CalibrationMessage} msg */
  onCalibration(msg) {
    this.calib.active = false;
    if (msg.error) {
      this.calib.done = true;
      this.lamNote.textContent = "no λ mark";
      this.lamNote.title = `The recommended λ could not be computed: ${String(msg.error)}`;
      return;
    }
    if (msg.done) {
      this.calib.done = true;
      this.lamNote.textContent = "";
      this.lamNote.removeAttribute("title");
      return;
    }
    const pct = Math.round(100 * Math.min(1, Math.max(0, finite(msg.progress, 0))));
    this.lamNote.textContent = `finding the recommended λ… ${pct}%`;
    this.lamNote.title = "A short λ calibration on two sample images; it pauses while a run is going";
    this.later(() => this.maybeCalibrate(), CALIBRATE_GAP_MS);
  }

  // -- teardown -------------------------------------------------------------------------------
  destroy() {
    this.destroyed = true;
    this.loop.active = false;
    for (const [event, fn] of this.modelHandlers) this.model.off(event, fn);
    this.modelHandlers = [];
    for (const [node, type, fn] of this.domListeners) node.removeEventListener(type, fn);
    this.domListeners = [];
    this.status.cancel();
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    for (const slot of Object.values(this.slots)) slot.dispose();
    this.compareSlot.dispose();
    this.galleryLiveSlot.dispose();
    for (const p of this.overlayPanes) p.slot.dispose();
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
