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
/** The difference view's amplification (Python's `Session.compose`: `difference_image(..., gain=4.0)`). */
const DIFF_GAIN = 4;

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
/** @typedef {"topk" | "inhibited" | "predicted_vs_true"} GalleryMode */

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
 * @property {boolean} away
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
 * @property {string} predicted_vs_true
 * @property {string} device
 * @property {number[]} snapshot_steps
 * @property {boolean} explain
 * @property {boolean} presentation
 * @property {Shown | Record<string, never>} shown
 * @property {boolean} resumable
 * @property {string} rerun_hint
 * @property {Judge | Record<string, never>} judge
 */

/**
 * The numbers of the accentuation as shown, all at the shown step (Python's `Session.numbers`): set at
 * the end of a run, at Stop and when scrubbing; `{}` while a run is followed live.
 * @typedef {object} Shown
 * @property {number} index
 * @property {number} step
 * @property {number} steps
 * @property {number | null} prob
 * @property {number | null} seed_prob
 * @property {number | null} objective
 * @property {number | null} distance
 * @property {boolean} p_fell
 * @property {{ index: number, label: string, prob: number, before: number }[]} top
 */

/**
 * The judge model's p(target) of the seed and of the shown image (`FaccentWidget(judge=...)`).
 * @typedef {{ name: string, label: string | null, seed_prob: number | null, prob: number | null }} Judge
 */

/**
 * Custom messages JS → Python. The requests Python answers (search, gallery, download, scrub, calibrate,
 * export_gif) carry an `id` that the reply echoes.
 * @typedef {{ type: "ready" } | { type: "start" } | { type: "continue" } | { type: "chunk", budget_ms: number } | { type: "stop" }
 *   | { type: "reset" } | { type: "set_target", index: number }
 *   | { type: "set_latent", layer: string, channel: number } | { type: "search", query: string, id?: number }
 *   | { type: "gallery", mode: GalleryMode, id?: number } | { type: "download", id?: number }
 *   | { type: "scrub", index: number, id?: number } | { type: "calibrate", budget_ms: number, id?: number }
 *   | { type: "load_image", name: string } | { type: "export_gif", id?: number }} Request
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
 * Replies carry the request's `id` (absent for a request sent without one).
 * @typedef {number | string | null} ReplyId
 * @typedef {{ type: "search_results", query: string, items: ClassItem[], id?: ReplyId }} SearchResultsMessage
 * @typedef {{ label: string, index: number, prob_before: number | null, prob_after: number | null,
 *   role?: "predicted" | "true" | null }} GalleryItem
 * @typedef {{ type: "gallery", mode?: GalleryMode, items: GalleryItem[], id?: ReplyId }} GalleryMessage
 * @typedef {{ type: "download", filename?: string, id?: ReplyId }} DownloadMessage
 * @typedef {{ type: "error", message: string, id?: ReplyId }} ErrorMessage
 * @typedef {{ type: "scrub", index: number, step: number, count: number, numbers?: Shown | {}, id?: ReplyId }} ScrubMessage
 * @typedef {{ type: "image", tile: "accent", index: number | null }} ImageMessage
 * @typedef {{ type: "calibration", done: boolean, progress?: number, value: number | null, error?: string,
 *   id?: ReplyId }} CalibrationMessage
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
  { key: "seed", trait: "seed_png", caption: "Photo (seed)", title: "The image the model sees: the starting point" },
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

/**
 * @typedef {{ cls: string, explain: string[] }} TileText  the class a tile shows, and its plain-words
 *   caption as alternating [text, class name, text, …] parts (the class names are emphasised)
 */

/**
 * What each tile shows, in plain words that name the class (explain mode) — for the target, the
 * direction (toward or away) and the accentuation's view.
 * @param {unknown} target  the `target` trait
 * @param {boolean} away
 * @param {unknown} view
 * @param {unknown} top  the `top` trait (the model's guesses on the photo)
 * @returns {Record<TileKey, TileText>}
 */
export function tileTexts(target, away, view, top) {
  const t = /** @type {{ label?: unknown }} */ (target && typeof target === "object" ? target : {});
  const name = t.label != null && String(t.label) !== "" ? String(t.label) : "";
  const guesses = Array.isArray(top) ? top : [];
  const first = guesses.length > 0 && guesses[0] && guesses[0].label != null ? String(guesses[0].label) : "";
  const more = away ? "less" : "more";
  /** @type {string[]} */
  let accent;
  if (!name) accent = ["Pick a target class, then press Accentuate"];
  else if (view === "diff") {
    accent = [`What changed to make it ${more} `, name, ` — the difference from the photo, amplified ×${DIFF_GAIN} (grey = unchanged)`];
  } else if (view === "unmasked") accent = [`What would make it ${more} `, name, " — the whole image, without the mask"];
  else accent = [`What would make it ${more} `, name, " — shown where the mask is white"];
  return {
    seed: {
      cls: "",
      explain: first ? ["The photo the model sees; its top guess is ", first] : ["The photo the model sees"],
    },
    gradcam: { cls: name, explain: name ? ["Where the model looks for ", name] : ["Where the model looks for the target"] },
    mask: { cls: name, explain: ["White = where the change is shown; black = the photo is kept"] },
    accent: { cls: name, explain: accent },
  };
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
// The panel: a coordinator (Panel) and its parts, each with one job and its own teardown (destroy):
// Tiles (the four images, compare, view), Stats (numbers, sparkline, scrub slider), Controls (target,
// λ, buttons, advanced settings), Gallery, Overlay (the enlarged view) and Messages (error, status).

let idCounter = 0;

/**
 * A unique element id (labels point at their controls by id).
 * @param {string} name
 */
function uid(name) {
  idCounter += 1;
  return `faccent-${name}-${idCounter}`;
}

/** The listeners, model handlers and timers of one part, removed together by `dispose()`. */
class Scope {
  /**
   * @param {Model} model
   * @param {Document} doc
   */
  constructor(model, doc) {
    this.model = model;
    this.doc = doc;
    /** @type {[EventTarget, string, EventListener][]} */
    this.domListeners = [];
    /** @type {[string, (...args: any[]) => void][]} */
    this.modelHandlers = [];
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
  }

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

  /** @param {ReturnType<typeof setTimeout> | null} id */
  cancel(id) {
    if (id == null) return;
    clearTimeout(id);
    this.timers.delete(id);
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

  /**
   * A label and its control(s) that wrap as one unit, so a label never ends a line without its input.
   * @param {...Node} children
   */
  field(...children) {
    return h(this.doc, "span", { class: "faccent-field" }, ...children);
  }

  dispose() {
    for (const [event, fn] of this.modelHandlers) this.model.off(event, fn);
    this.modelHandlers = [];
    for (const [node, type, fn] of this.domListeners) node.removeEventListener(type, fn);
    this.domListeners = [];
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
  }
}

// -- Tiles: seed, Grad-CAM, mask and accentuation; the top-5 under the seed; compare; the view toggle

class Tiles {
  // DOM parts of the presentation view, created by buildPresentation.
  /** @type {{ seed: HTMLImageElement, accent: HTMLImageElement }} the swipe's images (they show the tiles' URLs) */ swipeImgs;
  /** @type {HTMLSpanElement} */ swipeLine;
  /** @type {HTMLSpanElement} */ swipeRightLabel;
  /** @type {HTMLInputElement} */ swipeInput;
  /** @type {HTMLParagraphElement} */ presentCaption;

  /**
   * @param {Scope} scope
   * @param {{ zoom: (key: TileKey, opener: HTMLElement) => void, painted: (key: TileKey, data: unknown) => void,
   *   following: () => boolean }} hooks  open the enlarged view; a tile was painted; the accent tile follows the run
   */
  constructor(scope, hooks) {
    this.scope = scope;
    this.hooks = hooks;
    this.slots = /** @type {Record<TileKey, ImageSlot>} */ ({});
    /** @type {Partial<Record<TileKey, HTMLImageElement>>} */
    this.imgs = {};
    /** @type {Partial<Record<TileKey, HTMLElement>>} the frames (marked empty until their image is painted) */
    this.frames = {};
    /** @type {Partial<Record<TileKey, { cls: HTMLElement, explain: HTMLElement }>>} */
    this.texts = {};
    const d = scope.doc;
    this.el = h(d, "div", { class: "faccent-tiles" });
    /** @type {HTMLOListElement} */
    this.topList = h(d, "ol", { class: "faccent-top", "aria-label": "Top-5 classes on the seed" });
    /** @type {HTMLImageElement} */
    this.compareImg = h(d, "img", {
      class: "faccent-img faccent-compare-img",
      alt: "Seed (comparing)",
      "data-testid": "compare-img",
    });
    this.compareSlot = imageSlot(this.compareImg);
    /** @type {HTMLButtonElement[]} */
    this.viewButtons = [];
    /** @type {HTMLElement | null} */
    this.accentTile = null;
    this.compareBtn = this.buildCompare();
    this.bar = this.buildModeBar();
    this.present = this.buildPresentation();
    for (const t of TILES) this.el.append(this.buildTile(t));
    this.bindTraits();
  }

  /** Explain and Presentation: two toggles above the tiles (traits `explain`, `presentation`). */
  buildModeBar() {
    const s = this.scope;
    /**
     * @param {"explain" | "presentation"} trait
     * @param {string} text
     * @param {string} title
     */
    const toggle = (trait, text, title) => {
      const fallback = trait === "explain"; // Python's defaults: explain on, presentation off
      const b = s.button(text, { "aria-pressed": "false", "data-testid": `toggle-${trait}`, title }, () =>
        s.setTrait(trait, !s.get(trait, fallback)),
      );
      s.bind([trait], () => b.setAttribute("aria-pressed", String(Boolean(s.get(trait, fallback)))));
      return b;
    };
    return h(
      s.doc,
      "div",
      { class: "faccent-modebar", role: "group", "aria-label": "Display" },
      toggle("explain", "Explain", "Plain-words captions, a colour bar and a key under each image (for teaching)"),
      toggle("presentation", "Presentation", "A large photo | accentuation comparison with a swipe slider, larger text"),
    );
  }

  /** The large photo | accentuation comparison with a swipe slider across the cell (presentation mode). */
  buildPresentation() {
    const d = this.scope.doc;
    const s = this.scope;
    const base = h(d, "img", { class: "faccent-swipe-img", alt: "The photo", "data-testid": "swipe-seed" });
    const top = h(d, "img", { class: "faccent-swipe-img faccent-swipe-top", alt: "The accentuation", "data-testid": "swipe-accent" });
    this.swipeImgs = { seed: base, accent: top };
    this.swipeLine = h(d, "span", { class: "faccent-swipe-line", "aria-hidden": "true" });
    this.swipeRightLabel = h(d, "span", { class: "faccent-swipe-label faccent-swipe-label-right" });
    const box = h(
      d,
      "div",
      { class: "faccent-swipe" },
      base,
      top,
      this.swipeLine,
      h(d, "span", { class: "faccent-swipe-label faccent-swipe-label-left", text: "Photo" }),
      this.swipeRightLabel,
    );
    this.swipeInput = h(d, "input", {
      type: "range",
      min: 0,
      max: 100,
      step: 0.5,
      value: 50,
      class: "faccent-swipe-range",
      "data-testid": "swipe",
      "aria-label": "Compare: left shows the photo, right the accentuation",
    });
    this.presentCaption = h(d, "p", { class: "faccent-present-caption", "data-testid": "present-caption" });
    const setSplit = () => {
      const v = Math.min(100, Math.max(0, finite(this.swipeInput.value, 50)));
      box.style.setProperty("--fa-split", `${v}%`);
      this.swipeInput.setAttribute("aria-valuetext", `${Math.round(v)}% photo`);
    };
    s.listen(this.swipeInput, "input", setSplit);
    // drag on the picture itself moves the split too
    const drag = (/** @type {Event} */ e) => {
      const pe = /** @type {PointerEvent} */ (e);
      if (e.type !== "pointerdown" && !(pe.buttons & 1)) return;
      const r = box.getBoundingClientRect();
      if (r.width <= 0) return;
      this.swipeInput.value = String(Math.min(100, Math.max(0, (100 * (pe.clientX - r.left)) / r.width)));
      setSplit();
    };
    s.listen(box, "pointerdown", drag);
    s.listen(box, "pointermove", drag);
    setSplit();
    return h(d, "section", { class: "faccent-present", "data-testid": "present", "aria-label": "Presentation view" }, box, this.swipeInput, this.presentCaption);
  }

  /** @param {(typeof TILES)[number]} t */
  buildTile(t) {
    const d = this.scope.doc;
    const img = h(d, "img", { class: "faccent-img", alt: `${t.caption} image`, "data-testid": `${t.key}-img` });
    this.slots[t.key] = imageSlot(img);
    this.imgs[t.key] = img;
    // the image is a button: click (or Enter) opens it large, with the seed beside it
    const zoom = this.scope.button("", { class: "faccent-zoom", "aria-label": `Enlarge ${t.caption}`, title: t.title }, () =>
      this.hooks.zoom(t.key, zoom),
    );
    zoom.append(img);
    // until its image arrives a tile shows a quiet placeholder, not a broken-image icon
    const placeholder = h(d, "span", { class: "faccent-placeholder", "aria-hidden": "true", text: `${t.caption}…` });
    const frame = h(d, "div", { class: "faccent-frame faccent-empty" }, zoom, placeholder);
    this.frames[t.key] = frame;
    const fig = h(d, "figure", { class: `faccent-tile faccent-tile-${t.key}`, "data-testid": `${t.key}-tile` }, frame);
    const cls = h(d, "span", { class: "faccent-tile-class", "data-testid": `${t.key}-class` });
    fig.append(h(d, "figcaption", { title: t.title }, h(d, "span", { class: "faccent-tile-name", text: t.caption }), cls));
    const explain = h(d, "p", { class: "faccent-explain", "data-testid": `${t.key}-explain` });
    this.texts[t.key] = { cls, explain };
    if (t.key === "seed") {
      this.scope.listen(img, "load", () => this.onSeedLoad(img));
      fig.append(explain, this.topList);
    }
    if (t.key === "gradcam") fig.append(explain, this.colourBar());
    if (t.key === "mask") fig.append(explain, this.maskKey());
    if (t.key === "accent") {
      // the seed, stacked on the accentuation, shown while "compare" is held
      frame.append(this.compareImg);
      this.accentTile = fig;
      fig.append(explain, h(d, "div", { class: "faccent-tile-tools" }, this.buildViewToggle(), this.compareBtn));
    }
    return fig;
  }

  /** Grad-CAM's colour bar (the tile's "jet" colours, low → high). */
  colourBar() {
    const d = this.scope.doc;
    return h(
      d,
      "div",
      { class: "faccent-explain faccent-legend", "data-testid": "gradcam-legend" },
      h(d, "span", { text: "less" }),
      h(d, "span", { class: "faccent-colourbar", role: "img", "aria-label": "Colour bar: blue = little evidence, red = most evidence" }),
      h(d, "span", { text: "more evidence" }),
    );
  }

  /** The mask's key: black keeps the photo, white shows the change. */
  maskKey() {
    const d = this.scope.doc;
    return h(
      d,
      "div",
      { class: "faccent-explain faccent-legend", "data-testid": "mask-legend" },
      h(d, "span", { class: "faccent-swatch faccent-swatch-black", "aria-hidden": "true" }),
      h(d, "span", { text: "photo kept" }),
      h(d, "span", { class: "faccent-swatch faccent-swatch-white", "aria-hidden": "true" }),
      h(d, "span", { text: "change shown" }),
    );
  }

  /**
   * Seed loaded: every tile takes the seed's aspect ratio.
   * @param {HTMLImageElement} img
   */
  onSeedLoad(img) {
    const root = /** @type {HTMLElement | null} */ (this.el.closest(".faccent"));
    if (root && img.naturalWidth > 0 && img.naturalHeight > 0) {
      root.style.setProperty("--fa-aspect", `${img.naturalWidth} / ${img.naturalHeight}`);
      root.style.setProperty("--fa-aspect-num", (img.naturalWidth / img.naturalHeight).toFixed(4));
    }
  }

  buildCompare() {
    const btn = this.scope.button("Hold to compare", {
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
    this.scope.listen(btn, "pointerdown", on);
    this.scope.listen(btn, "keydown", on);
    for (const type of ["pointerup", "pointerleave", "pointercancel", "keyup", "blur"]) this.scope.listen(btn, type, off);
    return btn;
  }

  /** @param {boolean} on */
  setComparing(on) {
    if (this.accentTile) this.accentTile.classList.toggle("faccent-comparing", on);
    this.compareBtn.setAttribute("aria-pressed", String(on));
  }

  buildViewToggle() {
    const group = h(this.scope.doc, "div", { class: "faccent-views", role: "group", "aria-label": "Accentuation view" });
    /** @type {Record<View, string>} */
    const titles = {
      masked: "The accentuation inside the mask, the seed outside it",
      unmasked: "The whole accentuation",
      diff: `What changed, amplified ×${DIFF_GAIN}: grey = unchanged, brighter or darker = colour added or removed`,
    };
    this.viewButtons = VIEWS.map(([value, text]) => {
      const b = this.scope.button(text, { "aria-pressed": "false", "data-view": value, title: titles[value] }, () =>
        this.scope.setTrait("view", value),
      );
      group.append(b);
      return b;
    });
    return group;
  }

  bindTraits() {
    const s = this.scope;
    for (const t of TILES) {
      s.bind([t.trait], () => {
        // a scrubbed-back accentuation stays until the user scrubs again or a new run starts
        if (t.key === "accent" && !this.hooks.following()) return;
        this.paint(t.key, s.get(t.trait, null));
      });
    }
    s.bind(["seed_png"], () => this.compareSlot.show(s.get("seed_png", null)));
    s.bind(["top"], () => this.renderTop());
    s.bind(["view"], () => {
      const view = s.get("view", "masked");
      for (const b of this.viewButtons) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    });
    s.bind(["target", "away", "view", "top"], () => this.renderTexts());
  }

  /** The class each tile shows, in its caption and in plain words under it (explain mode). */
  renderTexts() {
    const s = this.scope;
    const d = s.doc;
    const t = tileTexts(s.get("target", null), Boolean(s.get("away", false)), s.get("view", "masked"), s.get("top", []));
    for (const key of /** @type {TileKey[]} */ (["seed", "gradcam", "mask", "accent"])) {
      const parts = this.texts[key];
      if (!parts) continue;
      parts.cls.textContent = t[key].cls ? `: ${t[key].cls}` : "";
      parts.explain.replaceChildren(
        ...t[key].explain.map((p, i) => (i % 2 === 1 ? h(d, "em", { class: "faccent-class-name", text: p }) : d.createTextNode(p))),
      );
    }
    this.swipeRightLabel.textContent = t.accent.cls ? `Accentuation: ${t.accent.cls}` : "Accentuation";
    this.presentCaption.replaceChildren(
      ...t.accent.explain.map((p, i) => (i % 2 === 1 ? h(d, "em", { class: "faccent-class-name", text: p }) : d.createTextNode(p))),
    );
  }

  renderTop() {
    const d = this.scope.doc;
    const items = this.scope.get("top", []) || [];
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

  /**
   * Paint a tile (the enlarged view follows); true when an image is shown.
   * @param {TileKey} key
   * @param {unknown} data
   */
  paint(key, data) {
    const painted = this.slots[key].show(data);
    const frame = this.frames[key];
    if (frame) frame.classList.toggle("faccent-empty", !painted);
    if (key === "accent" || key === "seed") {
      // the presentation view shows the same object URL (the tile's slot revokes it when it moves on)
      const src = this.imgs[key]?.getAttribute("src");
      if (src) this.swipeImgs[key].src = src;
      else this.swipeImgs[key].removeAttribute("src");
    }
    this.hooks.painted(key, data);
    return painted;
  }

  /** @param {TileKey} key */
  bytes(key) {
    return this.slots[key].bytes();
  }

  destroy() {
    this.scope.dispose();
    for (const slot of Object.values(this.slots)) slot.dispose();
    this.compareSlot.dispose();
    this.el.remove();
    this.bar.remove();
    this.present.remove();
  }
}

// -- Stats: step and progress, p(target), objective and distance with their sparkline, the device, and
// the scrub slider over the run's snapshots

class Stats {
  /**
   * @param {Scope} scope
   * @param {{ scrubTo: (index: number) => void }} hooks  the user moved the scrub slider
   */
  constructor(scope, hooks) {
    this.scope = scope;
    this.hooks = hooks;
    /** `follow` = the slider sits at its right end and live frames are painted. */
    this.follow = true;
    /** @type {{ objective: number[], distance: number[] }} */
    this.history = { objective: [], distance: [] };
    const d = scope.doc;
    this.stepEl = h(d, "span", { class: "faccent-step", "data-testid": "step", text: "step 0 / 0" });
    this.progressEl = h(d, "progress", { max: 1, value: 0, "aria-label": "Run progress", "data-testid": "progress" });
    // the headline: "p(tiger cat) 0.090 → 0.830", with a mark when p fell
    this.probEl = h(d, "strong", { class: "faccent-prob", "data-testid": "prob", text: "p – → –" });
    this.fellEl = h(d, "span", {
      class: "faccent-fell",
      "data-testid": "p-fell",
      text: "▼ p fell",
      title: "The accentuation lowered p(target): try a smaller λ or more steps",
      hidden: true,
    });
    this.objEl = h(d, "span", { class: "faccent-obj", text: "objective – · distance –" });
    this.judgeEl = h(d, "span", { class: "faccent-judge", "data-testid": "judge", hidden: true });
    // the top-5 of the shown image, each with its p on the seed
    this.topEl = h(d, "span", { class: "faccent-top-now", "data-testid": "top-now", hidden: true });
    /** The last live frame's numbers (shown while following a run). */
    /** @type {{ prob: number | null, objective: number | null, distance: number | null }} */
    this.live = { prob: null, objective: null, distance: null };
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
      id: uid("scrub"),
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
    scope.listen(this.scrubInput, "input", () => this.onScrubInput());
    const scrub = scope.field(h(d, "label", { for: this.scrubInput.id, text: "Snapshot" }), this.scrubInput, this.scrubValue);
    this.el = h(
      d,
      "div",
      { class: "faccent-stats" },
      scrub,
      this.stepEl,
      this.progressEl,
      this.probEl,
      this.fellEl,
      this.judgeEl,
      this.objEl,
      this.spark,
      this.topEl,
      this.deviceEl,
    );
    this.bindTraits();
  }

  bindTraits() {
    const s = this.scope;
    s.bind(["snapshot_steps", "step"], () => this.renderScrub());
    s.bind(["step", "steps"], () => {
      if (!this.shown()) this.renderStep(s.get("step", 0), s.get("steps", 0));
    });
    s.bind(["seed_prob", "prob", "target", "away"], () => this.renderProb());
    s.bind(["shown"], () => this.renderShown());
    s.bind(["judge"], () => this.renderJudge());
    s.bind(["device"], () => (this.deviceEl.textContent = s.get("device", "") ? `device: ${s.get("device", "")}` : ""));
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

  /** The `shown` numbers when Python set them (end of a run, Stop, scrub), else null: live frames rule. */
  shown() {
    const shown = this.scope.get("shown", null);
    return shown && typeof shown === "object" && "step" in shown ? /** @type {Shown} */ (shown) : null;
  }

  /**
   * The headline p(target) seed → now; the `shown` numbers win over the live ones.
   * @param {number | null} [now]
   */
  renderProb(now = this.scope.get("prob", null)) {
    const shown = this.shown();
    const target = /** @type {{ label?: string }} */ (this.scope.get("target", {}) || {});
    const label = target.label ? String(target.label) : "target";
    const before = shown ? shown.seed_prob : this.scope.get("seed_prob", null);
    const after = shown ? shown.prob : now;
    this.probEl.textContent = `p(${label}) ${formatProb(before)} → ${formatProb(after)}`;
    const fell = before != null && after != null && Number(after) < Number(before);
    this.fellEl.hidden = !(fell && after != null && !this.scope.get("away", false));
  }

  /** The numbers at the shown step (Python's `shown`), or the live run's when it is `{}`. */
  renderShown() {
    const shown = this.shown();
    if (shown) {
      this.renderStep(shown.step, shown.steps);
      this.objEl.textContent = `objective ${formatNum(shown.objective)} · distance ${formatNum(shown.distance)}`;
    } else {
      this.renderStep(this.scope.get("step", 0), this.scope.get("steps", 0));
      this.objEl.textContent = `objective ${formatNum(this.live.objective)} · distance ${formatNum(this.live.distance)}`;
    }
    this.renderProb(shown ? null : (this.live.prob ?? this.scope.get("prob", null)));
    const top = shown && Array.isArray(shown.top) ? shown.top : [];
    this.topEl.hidden = top.length === 0;
    this.topEl.textContent = top.length
      ? `model now sees: ${top.map((t) => `${t.label} ${formatProb(t.prob)} (seed ${formatProb(t.before)})`).join(" · ")}`
      : "";
    this.renderJudge();
  }

  /** "judge (efficientnet_lite2): 0.120 → 0.550", or nothing without a judge. */
  renderJudge() {
    const judge = /** @type {Partial<Judge>} */ (this.scope.get("judge", {}) || {});
    const name = typeof judge.name === "string" ? judge.name : "";
    this.judgeEl.hidden = !name;
    this.judgeEl.textContent = name ? `judge (${name}): ${formatProb(judge.seed_prob)} → ${formatProb(judge.prob)}` : "";
  }

  /** Forget the sparkline and the live numbers (a new run, a reset, a new seed). */
  clearHistory() {
    this.history = { objective: [], distance: [] };
    this.live = { prob: null, objective: null, distance: null };
  }

  /**
   * @param {number | null | undefined} objective
   * @param {number | null | undefined} distance
   */
  renderHistory(objective, distance) {
    this.live.objective = objective ?? null;
    this.live.distance = distance ?? null;
    const shown = this.shown();
    const [o, dist] = shown ? [shown.objective, shown.distance] : [objective, distance];
    this.objEl.textContent = `objective ${formatNum(o)} · distance ${formatNum(dist)}`;
    this.sparkLines[0].setAttribute("points", sparklinePoints(this.history.objective, 80, 20));
    this.sparkLines[1].setAttribute("points", sparklinePoints(this.history.distance, 80, 20));
  }

  /**
   * A frame's numbers: its step, p(target) and sparkline data.
   * @param {FrameMessage} msg
   */
  showFrame(msg) {
    // a scrubbed-back slider keeps the numbers of its step (Python's `shown`); the run's go on underneath
    const live = !this.shown();
    if (live && (msg.step != null || msg.steps != null)) {
      this.renderStep(msg.step ?? this.scope.get("step", 0), msg.steps ?? this.scope.get("steps", 0));
    }
    if (msg.prob != null) this.live.prob = Number(msg.prob);
    if (live && msg.prob != null) this.renderProb(msg.prob);
    if (Array.isArray(msg.objective_history)) this.history.objective = msg.objective_history.slice();
    else if (msg.objective != null) this.history.objective.push(Number(msg.objective));
    if (Array.isArray(msg.distance_history)) this.history.distance = msg.distance_history.slice();
    else if (msg.distance != null) this.history.distance.push(Number(msg.distance));
    this.renderHistory(msg.objective, msg.distance);
  }

  /** Put the scrub slider back at its right end: live frames are painted again. */
  followLive() {
    this.follow = true;
    this.renderScrub();
  }

  renderScrub() {
    const steps = this.scope.get("snapshot_steps", []) || [];
    const count = steps.length;
    this.scrubInput.max = String(Math.max(0, count - 1));
    this.scrubInput.disabled = count < 2;
    if (this.follow) this.scrubInput.value = String(Math.max(0, count - 1));
    const idx = clampIndex(this.scrubInput.value, count);
    // the right end shows the latest image, which may be newer than the last snapshot
    const step = idx === count - 1 ? Math.max(steps[idx], finite(this.scope.get("step", 0), 0)) : steps[idx];
    const text = idx < 0 ? "–" : idx === 0 ? "seed" : `step ${step}`;
    this.scrubValue.textContent = text;
    this.scrubInput.setAttribute("aria-valuetext", text);
  }

  onScrubInput() {
    const count = (this.scope.get("snapshot_steps", []) || []).length;
    const idx = clampIndex(this.scrubInput.value, count);
    if (idx < 0) return;
    this.follow = idx === count - 1;
    this.renderScrub();
    this.hooks.scrubTo(idx);
  }

  destroy() {
    this.scope.dispose();
    this.el.remove();
  }
}

// -- Messages: the error box and the status line (the aria-live region)

class Messages {
  /** @param {Scope} scope */
  constructor(scope) {
    this.scope = scope;
    const d = scope.doc;
    this.errorText = h(d, "span", { class: "faccent-error-text", "data-testid": "error" });
    const dismiss = scope.button("×", { class: "faccent-btn faccent-dismiss", "aria-label": "Dismiss error" }, () =>
      this.showError(""),
    );
    // role=alert: the error is announced from its box, once (the status line does not repeat it)
    this.errorBox = h(d, "div", { class: "faccent-error", role: "alert", hidden: true }, this.errorText, dismiss);
    this.statusEl = h(d, "div", { class: "faccent-status", role: "status", "aria-live": "polite", "data-testid": "status" });
    this.statusLine = throttle((/** @type {string} */ text) => {
      this.statusEl.textContent = text;
    }, STATUS_THROTTLE_MS);
    this.el = h(d, "div", { class: "faccent-messages" }, this.errorBox, this.statusEl);
    scope.bind(["error"], () => this.showError(String(scope.get("error", "") || "")));
    scope.bind(["status"], () => this.status(String(scope.get("status", "") || "")));
  }

  /** @param {string} text */
  status(text) {
    this.statusLine.push(text);
  }

  /** @param {string} text */
  showError(text) {
    this.errorText.textContent = text;
    this.errorBox.hidden = !text;
  }

  destroy() {
    this.scope.dispose();
    this.statusLine.cancel();
    this.el.remove();
  }
}

// -- Gallery: the live strip of a batch in progress, then one figure per target (click to enlarge)

/** @type {Record<GalleryMode, { title: string, intro: string }>} */
const GALLERY_TEXT = {
  topk: {
    title: "Top-5 gallery",
    intro: "The model's five best guesses for this photo, each accentuated. Click one to enlarge it or make it the target.",
  },
  inhibited: {
    title: "Most inhibited",
    intro:
      "The five classes the model sees least in this photo. Their masks are black (no evidence for them here), so " +
      "the masked images look like the photo: the unmasked image beside each shows what the model was pushed toward.",
  },
  predicted_vs_true: {
    title: "Predicted vs true",
    intro: "The class the model predicted next to the true class, each accentuated. Click one to enlarge it.",
  },
};

class Gallery {
  /**
   * @param {Scope} scope
   * @param {{ open: (entry: GalleryEntry, opener: HTMLElement) => void }} hooks  enlarge an item
   */
  constructor(scope, hooks) {
    this.scope = scope;
    this.hooks = hooks;
    const d = scope.doc;
    /** @type {string[]} */
    this.urls = [];
    /** @type {GalleryMode} */
    this.mode = "topk";
    this.heading = h(d, "h3", { class: "faccent-gallery-title", "data-testid": "gallery-title" });
    this.intro = h(d, "p", { class: "faccent-gallery-intro", "data-testid": "gallery-intro" });
    this.list = h(d, "div", { class: "faccent-gallery", "data-testid": "gallery", "aria-label": "Gallery", role: "group", hidden: true });
    this.live = h(d, "img", { class: "faccent-gallery-live", alt: "Gallery in progress", "data-testid": "gallery-live", hidden: true });
    this.liveSlot = imageSlot(this.live);
    this.head = h(d, "div", { class: "faccent-gallery-head", hidden: true }, this.heading, this.intro);
    this.el = h(d, "div", { class: "faccent-gallery-wrap" }, this.head, this.live, this.list);
    scope.onModel("change:top", () => this.hide()); // a new seed: the gallery belongs to the old one
  }

  clear() {
    for (const u of this.urls) URL.revokeObjectURL(u);
    this.urls = [];
    this.list.replaceChildren();
  }

  hide() {
    this.clear();
    this.list.hidden = true;
    this.head.hidden = true;
  }

  /** @param {GalleryMode} mode */
  showRunning(mode) {
    this.clear();
    this.mode = mode in GALLERY_TEXT ? mode : "topk";
    const text = GALLERY_TEXT[this.mode];
    this.heading.textContent = text.title;
    this.intro.textContent = text.intro;
    this.head.hidden = false;
    this.list.hidden = false;
    this.list.append(h(this.scope.doc, "p", { class: "faccent-muted", text: `running the ${text.title.toLowerCase()}: the strip above shows each image as it changes…` }));
  }

  /**
   * The batch's progress strip; true when painted.
   * @param {unknown} data
   */
  showLive(data) {
    const painted = this.liveSlot.show(data);
    if (painted) this.live.hidden = false;
    return painted;
  }

  /**
   * An object URL for the bytes (revoked with the gallery), or null.
   * @param {unknown} data
   */
  url(data) {
    const bytes = toBytes(data);
    if (!bytes || bytes.byteLength === 0) return null;
    const url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
    this.urls.push(url);
    return url;
  }

  /**
   * A gallery image as a button that opens the enlarged view.
   * @param {string | null} src
   * @param {string} alt
   * @param {GalleryEntry} entry
   * @param {string} cls
   */
  imageButton(src, alt, entry, cls) {
    const d = this.scope.doc;
    const img = h(d, "img", { class: `faccent-gallery-img ${cls}`, alt });
    if (src) img.src = src;
    const btn = this.scope.button("", { class: "faccent-zoom faccent-gallery-zoom", "aria-label": `Enlarge: ${alt}`, title: "Click to enlarge, with the photo beside it" }, () =>
      this.hooks.open(entry, btn),
    );
    btn.append(img);
    return btn;
  }

  /**
   * The finished batch: buffers are n masked accentuations, then n masks, then (newer kernels) n unmasked
   * accentuations.
   * @param {GalleryItem[]} items
   * @param {unknown[]} buffers
   */
  show(items, buffers) {
    const d = this.scope.doc;
    this.clear();
    this.liveSlot.show(null);
    this.live.hidden = true;
    this.list.hidden = false;
    this.head.hidden = false;
    const n = items.length;
    const paired = this.mode === "inhibited";
    this.list.classList.toggle("faccent-gallery-paired", paired);
    items.forEach((it, i) => {
      const label = String(it.label ?? "");
      const role = it.role === "predicted" ? "Predicted" : it.role === "true" ? "True" : "";
      const name = role ? `${role}: ${label}` : label;
      const prob = `p(${label}) ${formatProb(it.prob_before)} → ${formatProb(it.prob_after)}`;
      /** @type {GalleryEntry} */
      const entry = {
        name,
        label,
        index: it.index == null ? null : Number(it.index),
        prob,
        masked: this.url(buffers[i]),
        mask: this.url(buffers[n + i]),
        unmasked: this.url(buffers[2 * n + i]),
      };
      const images = h(d, "div", { class: "faccent-gallery-images" });
      const masked = h(d, "div", { class: "faccent-gallery-cell" }, this.imageButton(entry.masked, `${name}, masked`, entry, ""));
      if (entry.mask) {
        masked.append(h(d, "img", { class: "faccent-gallery-mask", alt: `Mask for ${label}`, src: entry.mask, title: "The mask: white = where the change is shown" }));
      }
      images.append(masked);
      if (paired && entry.unmasked) {
        images.append(h(d, "div", { class: "faccent-gallery-cell" }, this.imageButton(entry.unmasked, `${name}, unmasked`, entry, "")));
      }
      const caption = h(
        d,
        "figcaption",
        {},
        h(d, "span", { class: `faccent-gallery-label${role ? ` faccent-role-${it.role}` : ""}`, text: name, title: name }),
        h(d, "span", { class: "faccent-gallery-prob", text: prob }),
      );
      if (paired && entry.unmasked) caption.append(h(d, "span", { class: "faccent-muted", text: "left: masked · right: unmasked" }));
      const fig = h(d, "figure", { class: "faccent-gallery-item", "data-testid": "gallery-item" }, images, caption);
      this.list.append(fig);
    });
  }

  destroy() {
    this.scope.dispose();
    this.clear();
    this.liveSlot.dispose();
    this.el.remove();
  }
}

// -- Overlay: a tile or a gallery image enlarged over the whole window, with the photo beside it

/**
 * A finished gallery item as the enlarged view needs it (object URLs owned by the gallery).
 * @typedef {object} GalleryEntry
 * @property {string} name  "Predicted: tabby", or the label
 * @property {string} label
 * @property {number | null} index  the class, for "make this the target"
 * @property {string} prob
 * @property {string | null} masked
 * @property {string | null} mask
 * @property {string | null} unmasked
 */

class Overlay {
  /**
   * @param {Scope} scope
   * @param {{ tileBytes: (key: TileKey) => Uint8Array<ArrayBuffer> | null, setTarget: (index: number) => void }} hooks
   *   what a tile shows now; make a class the target
   */
  constructor(scope, hooks) {
    this.scope = scope;
    this.hooks = hooks;
    /** @type {{ key: TileKey | null, entry: GalleryEntry | null, opener: HTMLElement | null }} */
    this.state = { key: null, entry: null, opener: null };
    const d = scope.doc;
    const pane = (/** @type {string} */ testid) => {
      const img = h(d, "img", { class: "faccent-overlay-img", alt: "", "data-testid": testid });
      const cap = h(d, "figcaption", {});
      return { img, cap, slot: imageSlot(img), fig: h(d, "figure", { class: "faccent-overlay-fig" }, img, cap) };
    };
    this.panes = [pane("overlay-main"), pane("overlay-seed"), pane("overlay-unmasked")];
    this.title = h(d, "span", { class: "faccent-overlay-title", "data-testid": "overlay-title" });
    this.closeBtn = scope.button("Close", { class: "faccent-btn faccent-overlay-close", "data-testid": "overlay-close" });
    this.targetBtn = scope.button(
      "Make this the target",
      { class: "faccent-btn faccent-primary", "data-testid": "overlay-target", hidden: true },
      () => this.makeTarget(),
    );
    /** @type {HTMLButtonElement[]} */
    this.viewButtons = VIEWS.map(([value, text]) =>
      scope.button(text, { "aria-pressed": "false", "data-view": value }, () => scope.setTrait("view", value)),
    );
    this.views = h(d, "span", { class: "faccent-views", role: "group", "aria-label": "Accentuation view" }, ...this.viewButtons);
    this.holdBtn = scope.button("Hold to compare", {
      class: "faccent-btn faccent-compare",
      "aria-pressed": "false",
      "data-testid": "overlay-compare",
      title: "Press and hold to see the photo in place of the accentuation",
    });
    const hold = (/** @type {boolean} */ on) => () => this.holdCompare(on);
    scope.listen(this.holdBtn, "pointerdown", hold(true));
    for (const type of ["pointerup", "pointerleave", "pointercancel", "blur"]) scope.listen(this.holdBtn, type, hold(false));
    this.tools = h(d, "span", { class: "faccent-overlay-tools" }, this.views, this.holdBtn);
    this.el = h(
      d,
      "div",
      { class: "faccent-overlay", role: "dialog", "aria-modal": "true", "aria-label": "Enlarged image", "data-testid": "overlay", hidden: true },
      h(d, "div", { class: "faccent-overlay-bar" }, this.title, this.tools, this.targetBtn, this.closeBtn),
      h(d, "div", { class: "faccent-overlay-body" }, this.panes[1].fig, this.panes[0].fig, this.panes[2].fig),
    );
    // over the whole window, not just the panel: the dialog lives in its own themed host on <body> while open
    this.host = h(d, "div", { class: "faccent-portal", "data-lm-suppress-shortcuts": "true" }, this.el);
    scope.listen(this.el, "click", (e) => {
      const t = /** @type {Element | null} */ (e.target);
      if (t && t !== this.closeBtn && typeof t.closest === "function" && t.closest("button, input, select")) return;
      this.close();
    });
    scope.listen(this.el, "keydown", (e) => {
      if (/** @type {KeyboardEvent} */ (e).key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        this.close();
      }
    });
    scope.bind(["view"], () => {
      const view = scope.get("view", "masked");
      for (const b of this.viewButtons) b.setAttribute("aria-pressed", String(b.dataset.view === view));
      if (this.state.key && !this.el.hidden) this.captionTiles();
    });
  }

  /** @param {TileKey} k */
  caption(k) {
    const t = TILES.find((x) => x.key === k);
    const base = t ? t.caption : k;
    const target = /** @type {{ label?: unknown }} */ (this.scope.get("target", null) || {});
    const name = target.label != null ? String(target.label) : "";
    if (k === "accent") return `${base} (${String(this.scope.get("view", "masked"))})${name ? `: ${name}` : ""}`;
    return k === "seed" || !name ? base : `${base}: ${name}`;
  }

  captionTiles() {
    const key = this.state.key;
    if (!key) return;
    const other = key === "seed" ? "accent" : "seed";
    const [a, b] = this.panes;
    a.img.alt = `${this.caption(key)}, enlarged`;
    a.cap.textContent = this.caption(key);
    b.img.alt = `${this.caption(other)}, enlarged`;
    b.cap.textContent = this.caption(other);
    this.title.textContent = this.caption(key);
  }

  /**
   * Show the dialog over the window and focus it. Its host goes to <body>, or to the shadow root the panel
   * lives in (marimo), where the panel's stylesheet applies.
   * @param {HTMLElement} opener
   */
  reveal(opener) {
    const root = opener.getRootNode();
    const parent = root && root.nodeType === 11 ? /** @type {ShadowRoot} */ (root) : this.scope.doc.body;
    if (this.host.parentNode !== parent) parent.append(this.host);
    this.el.hidden = false;
    this.closeBtn.focus();
  }

  /**
   * A tile, large, with the photo (or the accentuation, for the photo) beside it.
   * @param {TileKey} key
   * @param {HTMLElement} opener
   */
  open(key, opener) {
    const other = key === "seed" ? "accent" : "seed";
    this.state = { key, entry: null, opener };
    const [a, b, c] = this.panes;
    a.slot.show(this.hooks.tileBytes(key));
    b.slot.show(this.hooks.tileBytes(other));
    c.slot.show(null);
    c.fig.hidden = true;
    b.fig.hidden = false;
    this.captionTiles();
    this.tools.hidden = key !== "accent";
    this.targetBtn.hidden = true;
    this.reveal(opener);
  }

  /**
   * A gallery image, large, beside the photo (and its unmasked version), with "make this the target".
   * @param {GalleryEntry} entry
   * @param {HTMLElement} opener
   */
  openGallery(entry, opener) {
    this.state = { key: null, entry, opener };
    const [a, b, c] = this.panes;
    a.slot.show(null);
    c.slot.show(null);
    if (entry.masked) a.img.src = entry.masked; // the gallery owns these URLs
    a.img.alt = `${entry.name}, masked, enlarged`;
    a.cap.textContent = `${entry.name} (masked) · ${entry.prob}`;
    b.slot.show(this.hooks.tileBytes("seed"));
    b.img.alt = "Photo (seed), enlarged";
    b.cap.textContent = "Photo (seed)";
    b.fig.hidden = false;
    c.fig.hidden = !entry.unmasked;
    if (entry.unmasked) c.img.src = entry.unmasked;
    c.img.alt = `${entry.name}, unmasked, enlarged`;
    c.cap.textContent = `${entry.name} (unmasked)`;
    this.title.textContent = entry.name;
    this.tools.hidden = true;
    this.targetBtn.hidden = entry.index == null;
    this.targetBtn.textContent = `Make ${entry.label} the target`;
    this.reveal(opener);
  }

  makeTarget() {
    const entry = this.state.entry;
    if (!entry || entry.index == null) return;
    this.state.opener = null; // the gallery goes (a new target): focus returns to the panel's Accentuate
    this.hooks.setTarget(entry.index);
    this.close();
  }

  /** @param {boolean} on */
  holdCompare(on) {
    if (this.el.hidden || this.state.key !== "accent") return;
    this.holdBtn.setAttribute("aria-pressed", String(on));
    this.panes[0].slot.show(this.hooks.tileBytes(on ? "seed" : "accent"));
    this.panes[0].cap.textContent = on ? "Photo (seed) — release to see the accentuation" : this.caption("accent");
  }

  close() {
    if (this.el.hidden) return;
    this.el.hidden = true;
    for (const p of this.panes) {
      p.slot.show(null);
      p.img.removeAttribute("src");
    }
    this.holdBtn.setAttribute("aria-pressed", "false");
    this.host.remove();
    const opener = this.state.opener;
    this.state = { key: null, entry: null, opener: null };
    if (opener && opener.isConnected) opener.focus();
  }

  /**
   * A tile was painted: the open enlarged view shows the same bytes.
   * @param {TileKey} key
   * @param {unknown} data
   */
  sync(key, data) {
    if (this.el.hidden) return;
    const open = this.state.key;
    if (!open) {
      if (this.state.entry && key === "seed") this.panes[1].slot.show(data);
      return;
    }
    if (open === key) {
      if (this.holdBtn.getAttribute("aria-pressed") !== "true") this.panes[0].slot.show(data);
    } else if ((open === "seed" ? "accent" : "seed") === key) this.panes[1].slot.show(data);
  }

  destroy() {
    this.scope.dispose();
    for (const p of this.panes) p.slot.dispose();
    this.el.remove();
    this.host.remove();
  }
}

// -- Controls: the target (chips, search, a hidden unit), λ, the run and gallery buttons, your own
// image and the downloads, the advanced settings

/**
 * What the controls ask the panel to do.
 * @typedef {object} Actions
 * @property {() => void} accentuate
 * @property {() => void} resume  go on with the stopped run (Continue)
 * @property {() => void} stop
 * @property {() => void} reset
 * @property {(mode: GalleryMode) => void} gallery
 * @property {() => void} download
 * @property {() => void} exportGif
 * @property {(file: File) => void} loadFile
 * @property {(index: number) => void} setTarget
 * @property {(query: string) => void} search
 * @property {(layer: string, channel: number) => void} latent
 * @property {(text: string) => void} error
 */

class Controls {
  // DOM parts, created by the build methods the constructor calls.
  /** @type {HTMLSpanElement} */ targetEl;
  /** @type {HTMLDivElement} */ chipsEl;
  /** @type {HTMLInputElement} */ searchInput;
  /** @type {HTMLDivElement} */ resultsEl;
  /** @type {HTMLInputElement} */ lamInput;
  /** @type {HTMLOutputElement} */ lamValue;
  /** @type {HTMLSpanElement} */ lamMark;
  /** @type {HTMLButtonElement} */ lamRec;
  /** @type {HTMLSpanElement} */ lamNote;
  /** @type {HTMLButtonElement} */ accentBtn;
  /** @type {HTMLButtonElement} */ stopBtn;
  /** @type {HTMLButtonElement} */ continueBtn;
  /** @type {HTMLSpanElement} */ rerunHint;
  /** @type {HTMLButtonElement} */ resetBtn;
  /** @type {HTMLButtonElement} */ predictedVsTrueBtn;
  /** @type {HTMLSelectElement} */ regSelect;
  /** @type {HTMLSelectElement} */ presetSelect;
  /** @type {HTMLInputElement} */ stepsInput;
  /** @type {HTMLInputElement} */ p1Input;
  /** @type {HTMLInputElement} */ p2Input;
  /** @type {HTMLInputElement} */ awayInput;
  /** @type {HTMLSelectElement} */ latentSelect;
  /** @type {HTMLInputElement} */ channelInput;
  /** A run (or gallery batch) is going: the Accentuate button shows its progress. */
  running = false;

  /**
   * @param {Scope} scope
   * @param {Actions} actions
   */
  constructor(scope, actions) {
    this.scope = scope;
    this.actions = actions;
    const d = scope.doc;
    /** The predicted-vs-true line shown above the tiles when the model gets a known label wrong. */
    this.predictedVsTrue = h(d, "p", { class: "faccent-triage", "data-testid": "triage", hidden: true });
    this.el = h(d, "div", { class: "faccent-controls", "data-testid": "controls" });
    this.el.append(this.buildTargetRow(), this.buildMainRow(), this.buildIoRow());
    this.advanced = this.buildAdvanced();
    this.bindTraits();
  }

  buildTargetRow() {
    const d = this.scope.doc;
    this.targetEl = h(d, "span", { class: "faccent-target", "data-testid": "target" });
    this.chipsEl = h(d, "div", { class: "faccent-chips", role: "group", "aria-label": "Top-5 target classes", "data-testid": "chips" });
    this.searchInput = h(d, "input", {
      type: "search",
      id: uid("search"),
      class: "faccent-search",
      placeholder: "search all classes…",
      autocomplete: "off",
      "aria-label": "Search target classes",
    });
    this.resultsEl = h(d, "div", { class: "faccent-results", role: "group", "aria-label": "Search results", "data-testid": "search-results" });
    /** @type {ReturnType<typeof setTimeout> | null} */
    let debounce = null;
    this.scope.listen(this.searchInput, "input", () => {
      this.scope.cancel(debounce);
      debounce = this.scope.later(() => this.runSearch(), SEARCH_DEBOUNCE_MS);
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
    const d = this.scope.doc;
    const s = this.scope;
    const row = h(d, "div", { class: "faccent-row faccent-actions" });
    // λ log slider with its value and a mark at the recommended λ.
    this.lamInput = h(d, "input", { type: "range", id: uid("lam"), step: 0.01, class: "faccent-lam", "data-testid": "lam" });
    this.lamValue = h(d, "output", { for: this.lamInput.id, class: "faccent-lam-value", "data-testid": "lam-value" });
    this.lamMark = h(d, "span", { class: "faccent-lam-mark", "aria-hidden": "true", hidden: true });
    this.lamRec = s.button("recommended", { class: "faccent-btn faccent-lam-rec", hidden: true, "data-testid": "lam-rec" }, () => {
      const rec = s.get("lam_recommended", null);
      if (rec != null) s.setTrait("lam", Number(rec));
    });
    this.lamNote = h(d, "span", { class: "faccent-muted faccent-lam-note", "data-testid": "lam-note" });
    s.listen(this.lamInput, "input", () => this.showLam(sliderToLam(this.lamInput.value)));
    s.listen(this.lamInput, "change", () => s.setTrait("lam", sliderToLam(this.lamInput.value)));
    // explain mode: what the two ends of the slider mean, in plain words
    const ends = h(
      d,
      "span",
      { class: "faccent-lam-ends faccent-explain", "data-testid": "lam-ends" },
      h(d, "span", { text: "← let it change" }),
      h(d, "span", { text: "keep it close to the photo →" }),
    );
    const track = h(d, "span", { class: "faccent-lam-track" }, this.lamInput, this.lamMark, ends);
    const lamLabel = h(d, "label", {
      for: this.lamInput.id,
      text: "λ",
      title: "How strongly the accentuation is kept close to the seed: small λ = bolder changes",
    });
    row.append(s.field(lamLabel, track, this.lamValue), this.lamRec, this.lamNote);

    const a = this.actions;
    this.accentBtn = s.button(
      "Accentuate",
      { class: "faccent-btn faccent-primary", "data-testid": "accentuate", "aria-label": "Accentuate", "data-running": "false" },
      () => a.accentuate(),
    );
    this.stopBtn = s.button("Stop", { "data-testid": "stop" }, () => a.stop());
    this.continueBtn = s.button(
      "Continue",
      { "data-testid": "continue", title: "Go on from the step the run was stopped at", hidden: true },
      () => a.resume(),
    );
    this.rerunHint = h(d, "span", { class: "faccent-rerun-hint", "data-testid": "rerun-hint", hidden: true });
    this.resetBtn = s.button("Reset", { "data-testid": "reset", title: "Discard the run and show the seed" }, () => a.reset());
    const topk = s.button(
      "Top-k gallery",
      { "data-testid": "gallery-topk", title: "Accentuate each of the top-5 classes (below the tiles)" },
      () => a.gallery("topk"),
    );
    const inhib = s.button(
      "Most inhibited",
      { "data-testid": "gallery-inhibited", title: "Accentuate the 5 least likely classes" },
      () => a.gallery("inhibited"),
    );
    this.predictedVsTrueBtn = s.button(
      "Predicted vs true",
      { "data-testid": "gallery-triage", title: "Accentuate the predicted class and the true class", hidden: true },
      () => a.gallery("predicted_vs_true"),
    );
    row.append(
      h(d, "span", { class: "faccent-group faccent-run-group" }, this.accentBtn, this.stopBtn, this.continueBtn, this.resetBtn),
      this.rerunHint,
      h(d, "span", { class: "faccent-group faccent-gallery-group" }, topk, inhib, this.predictedVsTrueBtn),
    );
    return row;
  }

  buildIoRow() {
    const d = this.scope.doc;
    const s = this.scope;
    const download = s.button("Download PNG", { "data-testid": "download", title: "The four tiles as one PNG" }, () =>
      this.actions.download(),
    );
    const gif = s.button(
      "Download GIF",
      { "data-testid": "export-gif", title: "An animation of the run, seed → accentuation, in the chosen view" },
      () => this.actions.exportGif(),
    );
    const fileInput = h(d, "input", {
      type: "file",
      accept: "image/*",
      id: uid("file"),
      class: "faccent-file",
      "data-testid": "file",
      "aria-label": "Open your own image",
    });
    s.listen(fileInput, "change", () => {
      const file = fileInput.files && fileInput.files[0];
      if (file) this.actions.loadFile(file);
      fileInput.value = "";
    });
    const pick = s.button(
      "Your image…",
      { "data-testid": "pick-file", title: "Use your own photo as the seed (or drop it onto the panel)" },
      () => fileInput.click(),
    );
    return h(d, "div", { class: "faccent-row faccent-io" }, pick, fileInput, download, gif);
  }

  buildAdvanced() {
    const d = this.scope.doc;
    const advanced = h(d, "details", { class: "faccent-advanced", "data-testid": "advanced" });
    advanced.append(h(d, "summary", { text: "Advanced" }));
    const row = h(d, "div", { class: "faccent-row" });
    this.regSelect = this.selectControl(
      row,
      "Keep close at layer",
      "reg_layer",
      "The layer where the accentuation is kept close to the seed (the regulariser). Earlier layers keep " +
        "more of the seed's pixels; later layers allow larger changes.",
    );
    row.append(
      h(d, "span", {
        class: "faccent-explain faccent-muted",
        "data-testid": "layer-explain",
        text: "(the layer where the image is kept close to the photo: earlier = keeps more of its pixels, later = allows bigger changes)",
      }),
    );
    this.presetSelect = this.selectControl(
      row,
      "Quality",
      "preset",
      "preview: fewer, smaller crops (quick on a CPU); paper: the paper's settings (meant for a GPU)",
    );
    this.stepsInput = this.numberControl(row, "Steps", "steps", { min: 1, step: 1 }, "How many optimisation steps one run takes", true);
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
    advanced.append(row, this.buildAwayRow(), this.buildLatentRow());
    return advanced;
  }

  buildAwayRow() {
    const d = this.scope.doc;
    const s = this.scope;
    const tip =
      "Drive the image away from the target instead of toward it (suppress): what fades is what argued " +
      "for the class. The mask still shows where the class's own evidence is.";
    this.awayInput = h(d, "input", { type: "checkbox", id: uid("away"), "data-testid": "away", title: tip });
    s.listen(this.awayInput, "change", () => s.setTrait("away", this.awayInput.checked));
    return h(
      d,
      "div",
      { class: "faccent-row" },
      s.field(h(d, "label", { for: this.awayInput.id, text: "Away from the target (suppress)", title: tip }), this.awayInput),
    );
  }

  buildLatentRow() {
    const d = this.scope.doc;
    const s = this.scope;
    this.latentSelect = h(d, "select", { id: uid("latent-layer"), "data-testid": "latent-layer" });
    this.channelInput = h(d, "input", {
      type: "number",
      id: uid("channel"),
      min: 0,
      step: 1,
      value: 0,
      class: "faccent-num",
      "data-testid": "channel",
    });
    const use = s.button(
      "Use",
      { "aria-label": "Use latent target", "data-testid": "use-latent", title: "Accentuate this channel" },
      () => this.useLatent(),
    );
    const tip = "Accentuate one channel of a hidden layer instead of a class";
    return h(
      d,
      "div",
      { class: "faccent-row" },
      s.field(h(d, "label", { for: this.latentSelect.id, text: "Hidden unit: layer", title: tip }), this.latentSelect),
      s.field(h(d, "label", { for: this.channelInput.id, text: "channel", title: tip }), this.channelInput),
      use,
    );
  }

  /**
   * @param {HTMLElement} row
   * @param {string} text
   * @param {"reg_layer" | "preset"} trait
   * @param {string} title
   */
  selectControl(row, text, trait, title) {
    const select = h(this.scope.doc, "select", { id: uid(trait), "data-testid": trait, title });
    this.scope.listen(select, "change", () => this.scope.setTrait(trait, select.value));
    row.append(this.scope.field(h(this.scope.doc, "label", { for: select.id, text, title }), select));
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
    const s = this.scope;
    const input = h(s.doc, "input", { type: "number", id: uid(trait), class: "faccent-num", "data-testid": trait, title, ...attrs });
    s.listen(input, "change", () => {
      const v = integer ? parseInt(input.value, 10) : parseFloat(input.value);
      if (Number.isFinite(v)) s.setTrait(trait, v);
      else input.value = String(s.get(trait, ""));
    });
    row.append(s.field(h(s.doc, "label", { for: input.id, text, title }), input));
    return input;
  }

  bindTraits() {
    const s = this.scope;
    s.bind(["top", "target"], () => this.renderChips());
    s.bind(["resumable", "rerun_hint"], () => this.renderResume());
    s.bind(["latent_layers", "default_reg_layer"], () => {
      const layers = s.get("latent_layers", []);
      const current = this.latentSelect.value || defaultLatent(layers, s.get("default_reg_layer", ""));
      fillSelect(this.latentSelect, layers, current || null);
    });
    s.bind(["lam", "lam_min", "lam_max", "lam_recommended"], () => this.renderLam());
    s.bind(["reg_layer", "reg_layers", "default_reg_layer"], () => {
      const def = s.get("default_reg_layer", "");
      fillSelect(this.regSelect, s.get("reg_layers", []), s.get("reg_layer", ""), (v) => (v === def ? `${v} (default)` : v));
    });
    s.bind(["preset", "presets"], () => fillSelect(this.presetSelect, s.get("presets", []), s.get("preset", "")));
    s.bind(["steps"], () => (this.stepsInput.value = String(s.get("steps", ""))));
    s.bind(["away"], () => (this.awayInput.checked = Boolean(s.get("away", false))));
    s.bind(["p1"], () => (this.p1Input.value = String(s.get("p1", ""))));
    s.bind(["p2"], () => (this.p2Input.value = String(s.get("p2", ""))));
    s.bind(["step", "steps"], () => this.renderAccentLabel());
    s.bind(["predicted_vs_true"], () => {
      const text = String(s.get("predicted_vs_true", "") || "");
      this.predictedVsTrue.textContent = text;
      this.predictedVsTrue.hidden = !text;
      this.predictedVsTrueBtn.hidden = !text;
    });
  }

  renderChips() {
    /** @type {Traits["target"]} */
    const target = this.scope.get("target", null) || {};
    this.targetEl.textContent = target.label != null ? String(target.label) : "–";
    const items = this.scope.get("top", []) || [];
    this.chipsEl.replaceChildren(
      ...items.map((it) => {
        const selected = target.kind === "class" && Number(target.index) === Number(it.index);
        return this.scope.button(
          String(it.label),
          { class: "faccent-btn faccent-chip", "aria-pressed": String(selected), "data-index": it.index, title: `p = ${formatProb(it.prob)}` },
          () => this.actions.setTarget(it.index),
        );
      }),
    );
  }

  renderLam() {
    const s = this.scope;
    const lamMin = s.get("lam_min", LAM_MIN);
    const lamMax = s.get("lam_max", LAM_MAX);
    const [lo, hi] = lamBounds(lamMin, lamMax);
    this.lamInput.min = String(lo);
    this.lamInput.max = String(hi);
    const lam = s.get("lam", 1);
    this.lamInput.value = String(lamToSlider(lam, lamMin, lamMax));
    this.showLam(lam);
    const rec = s.get("lam_recommended", null);
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
   * The hint next to the λ slider ("" clears it).
   * @param {string} text
   * @param {string | null} title
   */
  lamHint(text, title) {
    this.lamNote.textContent = text;
    if (title) this.lamNote.title = title;
    else this.lamNote.removeAttribute("title");
  }

  /** @param {boolean} running */
  renderRunning(running) {
    this.stopBtn.disabled = !running;
    this.running = running;
    this.renderAccentLabel();
    this.renderResume(running);
  }

  /**
   * The Accentuate button's label: "Accentuate", or "Running… 12/40" while a run goes (its step count
   * comes from the `step` / `steps` traits, which every chunk updates). The accessible name stays the
   * action's ("Accentuate"); the progress is its description.
   */
  renderAccentLabel() {
    const s = this.scope;
    const btn = this.accentBtn;
    if (!this.running) {
      btn.textContent = "Accentuate";
      btn.dataset.running = "false";
      btn.removeAttribute("aria-description");
      btn.style.removeProperty("--fa-progress");
      return;
    }
    const steps = Math.max(0, finite(s.get("steps", 0), 0));
    const step = Math.min(steps || Infinity, Math.max(0, finite(s.get("step", 0), 0)));
    const text = steps > 0 ? `Running… ${step}/${steps}` : "Running…";
    btn.textContent = text;
    btn.dataset.running = "true";
    btn.setAttribute("aria-description", text);
    btn.style.setProperty("--fa-progress", `${steps > 0 ? ((100 * step) / steps).toFixed(1) : 0}%`);
  }

  /**
   * Continue shows after a Stop while the stopped run can go on; the hint while the settings differ from
   * the last run's.
   * @param {boolean} [running]
   */
  renderResume(running = Boolean(this.scope.get("running", false))) {
    this.continueBtn.hidden = running || !this.scope.get("resumable", false);
    const hint = String(this.scope.get("rerun_hint", "") || "");
    this.rerunHint.textContent = hint;
    this.rerunHint.hidden = running || !hint;
  }

  /** The search box's query, trimmed. */
  query() {
    return this.searchInput.value.trim();
  }

  runSearch() {
    const query = this.query();
    if (!query) {
      this.resultsEl.replaceChildren();
      return;
    }
    this.actions.search(query);
  }

  /** @param {ClassItem[]} items */
  showResults(items) {
    if (items.length === 0) {
      this.resultsEl.replaceChildren(h(this.scope.doc, "span", { class: "faccent-muted", text: "no match" }));
      return;
    }
    this.resultsEl.replaceChildren(
      ...items.map((it) =>
        this.scope.button(String(it.label), { class: "faccent-btn faccent-chip", "data-index": it.index }, () =>
          this.actions.setTarget(it.index),
        ),
      ),
    );
  }

  useLatent() {
    const layer = this.latentSelect.value;
    const channel = parseInt(this.channelInput.value, 10);
    if (!layer || !Number.isInteger(channel) || channel < 0) {
      this.actions.error("Latent mode needs a layer and a channel ≥ 0.");
      return;
    }
    this.actions.latent(layer, channel);
  }

  destroy() {
    this.scope.dispose();
    this.predictedVsTrue.remove();
    this.advanced.remove();
    this.el.remove();
  }
}

// -- Panel: builds the parts, drives the chunk loop, sends the requests (with ids) and routes the replies

/**
 * @typedef {object} Loop  the browser-driven chunk loop
 * @property {boolean} active  asking for chunks
 * @property {"accent" | "gallery" | null} mode
 * @property {number} inFlight  chunks asked for and not yet answered (kept at most 1)
 * @property {number | null} clickAt  performance.now() of the last Accentuate click
 * @property {boolean} awaitingFirst  no frame painted since that click
 */

/** @typedef {"search" | "scrub" | "calibrate" | "gallery" | "download" | "export_gif"} RequestKind */

class Panel {
  /**
   * @param {Model} model
   * @param {HTMLElement} el
   */
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.doc = el.ownerDocument;
    this.scope = new Scope(model, this.doc);
    /** @type {Set<string>} */
    this.downloadUrls = new Set();
    /** @type {Loop} */
    this.loop = { active: false, mode: null, inFlight: 0, clickAt: null, awaitingFirst: false };
    this.frames = 0;
    this.destroyed = false;
    /** The last request id sent, and per kind the id whose reply is awaited (older replies are stale). */
    this.lastId = 0;
    /** @type {Partial<Record<RequestKind, number>>} */
    this.latest = {};
    /** One scrub request in flight; only the latest position is asked for next. */
    /** @type {{ inFlight: boolean, pending: number | null }} */
    this.scrub = { inFlight: false, pending: null };
    /** λ-mark calibration driven by the browser in small chunks while no run is going. */
    this.calib = { active: false, waiting: false, done: false };
    const part = () => new Scope(model, this.doc);
    this.overlay = new Overlay(part(), {
      tileBytes: (key) => this.tiles.bytes(key),
      setTarget: (index) => this.send({ type: "set_target", index: Number(index) }),
    });
    this.stats = new Stats(part(), { scrubTo: (index) => this.requestScrub(index) });
    this.tiles = new Tiles(part(), {
      zoom: (key, opener) => this.overlay.open(key, opener),
      painted: (key, data) => this.overlay.sync(key, data),
      following: () => this.stats.follow,
    });
    this.messages = new Messages(part());
    this.gallery = new Gallery(part(), { open: (entry, opener) => this.overlay.openGallery(entry, opener) });
    this.controls = new Controls(part(), {
      accentuate: () => this.accentuate(),
      resume: () => this.resume(),
      stop: () => this.stop(),
      reset: () => this.reset(),
      gallery: (mode) => this.runGallery(mode),
      download: () => this.request({ type: "download" }),
      exportGif: () => this.request({ type: "export_gif" }),
      loadFile: (file) => this.loadFile(file),
      setTarget: (index) => this.send({ type: "set_target", index: Number(index) }),
      search: (query) => this.request({ type: "search", query }),
      latent: (layer, channel) => this.send({ type: "set_latent", layer, channel }),
      error: (text) => this.messages.showError(text),
    });
    this.root = h(this.doc, "div", { class: "faccent", "data-lm-suppress-shortcuts": "true" });
    this.dropHint = h(this.doc, "div", {
      class: "faccent-drop-hint",
      "aria-hidden": "true",
      text: "Drop an image to use it as the seed",
    });
  }

  build() {
    this.root.append(
      this.controls.predictedVsTrue,
      this.tiles.bar,
      this.tiles.present,
      this.tiles.el,
      this.stats.el,
      this.controls.el,
      this.controls.advanced,
      this.gallery.el,
      this.dropHint,
    );
    // the action row holds λ and the run buttons only, so it stays on one line in a 930 px panel (1366 px
    // laptop, file browser open): the gallery buttons open the row below, beside the downloads
    const galleries = this.controls.el.querySelector(".faccent-gallery-group");
    const io = this.controls.el.querySelector(".faccent-io");
    if (galleries && io) io.prepend(galleries);
    // the status line and the error box sit right under the Accentuate button's row, where the eye is
    const actions = this.controls.el.querySelector(".faccent-actions");
    if (actions) actions.after(this.messages.el);
    else this.controls.el.append(this.messages.el);
    this.el.append(this.root);
    this.bindDrop();
    const s = this.scope;
    s.onModel("change:lam_recommended", () => {
      if (s.get("lam_recommended", null) == null) {
        this.calib.done = false; // the regularisation layer changed: a new mark is needed
        s.later(() => this.maybeCalibrate(), 0);
      }
    });
    s.onModel("change:top", () => {
      // a new seed: the sparkline belongs to the old one (the gallery clears itself)
      this.stats.clearHistory();
      this.stats.renderHistory(null, null);
    });
    s.bind(["running"], () => this.renderRunning());
    s.bind(["explain"], () => this.root.classList.toggle("faccent-explaining", Boolean(s.get("explain", true))));
    s.bind(["presentation"], () => this.root.classList.toggle("faccent-presenting", Boolean(s.get("presentation", false))));
    s.onModel("msg:custom", (/** @type {Message} */ msg, /** @type {unknown[]} */ buffers) => this.onMessage(msg, buffers));
    this.send({ type: "ready" });
    s.later(() => this.maybeCalibrate(), CALIBRATE_DELAY_MS);
  }

  /** @param {Request} msg */
  send(msg) {
    this.model.send(msg);
  }

  /**
   * Send a request that Python answers, with a fresh `id`; its reply is awaited, older ones are stale.
   * @param {Extract<Request, { type: RequestKind }>} msg
   */
  request(msg) {
    this.lastId += 1;
    this.latest[msg.type] = this.lastId;
    this.send({ ...msg, id: this.lastId });
  }

  /**
   * A reply to an older request of `kind` than the one awaited (replies without an id are never stale).
   * @param {RequestKind} kind
   * @param {{ id?: number | string | null }} msg
   */
  stale(kind, msg) {
    return msg.id != null && msg.id !== this.latest[kind];
  }

  bindDrop() {
    const s = this.scope;
    const root = this.root;
    const over = (/** @type {Event} */ e) => {
      const dt = /** @type {DragEvent} */ (e).dataTransfer;
      if (!dt || !Array.from(dt.types || []).includes("Files")) return;
      e.preventDefault();
      dt.dropEffect = "copy";
      root.classList.add("faccent-dragover");
    };
    s.listen(root, "dragenter", over);
    s.listen(root, "dragover", over);
    s.listen(root, "dragleave", (e) => {
      const related = /** @type {Node | null} */ (/** @type {DragEvent} */ (e).relatedTarget);
      if (!related || !root.contains(related)) root.classList.remove("faccent-dragover");
    });
    s.listen(root, "drop", (e) => {
      const dt = /** @type {DragEvent} */ (e).dataTransfer;
      root.classList.remove("faccent-dragover");
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
      this.messages.showError(`${name}: the file is too large (at most ${MAX_UPLOAD_BYTES >> 20} MB); the previous image stays`);
      return;
    }
    this.messages.status(`reading ${name}…`);
    file.arrayBuffer().then(
      (buf) => {
        if (this.destroyed) return;
        this.endLoop();
        this.model.send({ type: "load_image", name }, undefined, [buf]);
      },
      (err) => {
        if (!this.destroyed) this.messages.showError(`${name}: could not read the file (${String(err)}); the previous image stays`);
      },
    );
  }

  renderRunning() {
    const running = this.loop.active || Boolean(this.scope.get("running", false));
    this.controls.renderRunning(running);
    this.root.classList.toggle("faccent-running", running);
  }

  // -- the loop -------------------------------------------------------------------------------
  accentuate() {
    this.followLive();
    this.loop.clickAt = performance.now();
    this.loop.awaitingFirst = true;
    this.stats.clearHistory();
    this.send({ type: "start" });
    this.startLoop("accent");
  }

  /** Continue: the stopped run goes on from its step (its sparkline stays). */
  resume() {
    this.followLive();
    this.send({ type: "continue" });
    this.startLoop("accent");
  }

  /** @param {GalleryMode} mode */
  runGallery(mode) {
    this.loop.awaitingFirst = false;
    this.gallery.showRunning(mode);
    this.request({ type: "gallery", mode });
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
      this.scope.later(() => this.maybeCalibrate(), 0);
    }
  }

  stop() {
    this.endLoop();
    this.send({ type: "stop" });
  }

  reset() {
    this.endLoop();
    this.followLive();
    this.tiles.paint("accent", this.scope.get("seed_png", null));
    this.stats.clearHistory();
    this.stats.renderHistory(null, null);
    this.send({ type: "reset" });
  }

  // -- messages from Python -------------------------------------------------------------------
  /**
   * @param {Message} msg
   * @param {unknown[]} [buffers]
   */
  onMessage(msg, buffers = []) {
    if (!msg || typeof msg !== "object") return;
    const bufs = buffers || [];
    switch (msg.type) {
      case "frame":
        return this.onFrame(msg, bufs);
      case "search_results":
        return this.onSearchResults(msg);
      case "gallery":
        return this.onGallery(msg, bufs);
      case "download":
        return this.onDownload(msg, bufs);
      case "error":
        return this.onErrorMsg(msg);
      case "scrub":
        return this.onScrub(msg, bufs);
      case "image":
        return this.onImage(msg, bufs);
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
      // the gallery batch never draws into the main tiles: its progress strip shows in the gallery
      const painted = msg.gallery ? this.gallery.showLive(buffers[0]) : this.stats.follow && this.tiles.paint("accent", buffers[0]);
      if (painted) this.countFrame();
    }
    // a gallery frame's numbers are the batch's: the stats row keeps the single run's (its sparkline too)
    if (!msg.gallery) this.stats.showFrame(msg);
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

  /** @param {SearchResultsMessage} msg */
  onSearchResults(msg) {
    if (this.stale("search", msg)) return;
    if (String(msg.query ?? "").trim() !== this.controls.query()) return; // the box changed since
    this.controls.showResults(Array.isArray(msg.items) ? msg.items : []);
  }

  /**
   * @param {GalleryMessage} msg
   * @param {unknown[]} buffers
   */
  onGallery(msg, buffers) {
    if (this.stale("gallery", msg)) return; // a batch replaced by a newer one
    this.gallery.show(Array.isArray(msg.items) ? msg.items : [], buffers);
    if (this.loop.mode === "gallery") this.endLoop();
  }

  /**
   * @param {DownloadMessage} msg
   * @param {unknown[]} buffers
   */
  onDownload(msg, buffers) {
    if (this.stale("download", msg) && this.stale("export_gif", msg)) return;
    const bytes = toBytes(buffers[0]);
    if (!bytes || bytes.byteLength === 0) {
      this.messages.showError("Download failed: no image data.");
      return;
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: sniffType(bytes) }));
    this.downloadUrls.add(url);
    const a = h(this.doc, "a", { href: url, download: String(msg.filename || "faccent.png"), hidden: true });
    this.root.append(a);
    a.click();
    a.remove();
    this.scope.later(() => {
      this.downloadUrls.delete(url);
      URL.revokeObjectURL(url);
    }, DOWNLOAD_REVOKE_MS);
  }

  /** @param {ErrorMessage} msg */
  onErrorMsg(msg) {
    this.messages.showError(String(msg.message ?? "error"));
    if (msg.id == null || msg.id === this.latest.scrub) {
      this.scrub.inFlight = false; // a refused scrub gets no scrub reply
      this.scrub.pending = null;
    }
    if (msg.id === this.latest.calibrate) this.calib.active = false;
    // A chunk answered with an error gets no frame: stop asking, the user can start again. (An error
    // with an id answers another request: the chunk's own reply still comes.)
    if (this.loop.active && msg.id == null) {
      this.setInFlight(this.loop.inFlight - 1);
      this.endLoop();
    }
  }

  // -- scrub, redraw, λ mark ------------------------------------------------------------------
  /** Put the scrub slider back at its right end: live frames are painted again. */
  followLive() {
    this.scrub.pending = null;
    this.stats.followLive();
  }

  /** @param {number} index */
  requestScrub(index) {
    if (this.scrub.inFlight) {
      this.scrub.pending = index; // one scrub in flight; only the latest position is asked for next
      return;
    }
    this.scrub.inFlight = true;
    this.request({ type: "scrub", index });
  }

  /**
   * @param {ScrubMessage} msg
   * @param {unknown[]} buffers
   */
  onScrub(msg, buffers) {
    if (this.stale("scrub", msg)) return;
    this.scrub.inFlight = false;
    const pending = this.scrub.pending;
    this.scrub.pending = null;
    if (pending != null && pending !== msg.index) {
      this.requestScrub(pending);
      return;
    }
    // following a live run: its frames take over again
    if (!(this.stats.follow && this.loop.active) && buffers.length > 0) this.tiles.paint("accent", buffers[0]);
  }

  /**
   * Python redrew the accentuation (a view change with no frame coming, or a new seed).
   * @param {ImageMessage} msg
   * @param {unknown[]} buffers
   */
  onImage(msg, buffers) {
    if (msg.index == null) this.followLive();
    else if (this.stats.follow) return; // a scrub position the slider has left
    if (buffers.length > 0) this.tiles.paint("accent", buffers[0]);
  }

  maybeCalibrate() {
    if (this.destroyed || this.calib.active || this.calib.done) return;
    if (this.scope.get("lam_recommended", null) != null) {
      this.calib.done = true;
      return;
    }
    if (this.loop.active) {
      this.calib.waiting = true; // never compete with a run: resume when it ends
      return;
    }
    this.calib.active = true;
    this.request({ type: "calibrate", budget_ms: CALIBRATE_BUDGET_MS });
  }

  /** @param {CalibrationMessage} msg */
  onCalibration(msg) {
    if (this.stale("calibrate", msg)) return;
    this.calib.active = false;
    if (msg.error) {
      this.calib.done = true;
      this.controls.lamHint("no λ mark", `The recommended λ could not be computed: ${String(msg.error)}`);
      return;
    }
    if (msg.done) {
      this.calib.done = true;
      this.controls.lamHint("", null);
      return;
    }
    const pct = Math.round(100 * Math.min(1, Math.max(0, finite(msg.progress, 0))));
    this.controls.lamHint(
      `finding the recommended λ… ${pct}%`,
      "A short λ calibration on two sample images; it pauses while a run is going",
    );
    this.scope.later(() => this.maybeCalibrate(), CALIBRATE_GAP_MS);
  }

  // -- teardown -------------------------------------------------------------------------------
  destroy() {
    this.destroyed = true;
    this.loop.active = false;
    this.scope.dispose();
    for (const part of [this.tiles, this.stats, this.controls, this.gallery, this.overlay, this.messages]) part.destroy();
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
