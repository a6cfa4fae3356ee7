// Tests for js/widget.js with node:test + jsdom, a fake anywidget model and stubbed object URLs.
import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { JSDOM, VirtualConsole } from "jsdom";

import widget, {
  lamBounds,
  lamToSlider,
  sliderToLam,
  toBytes,
  sniffType,
  sparklinePoints,
  defaultLatent,
  clampIndex,
  tileTexts,
} from "../widget.js";

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3];
const JPEG = [0xff, 0xd8, 0xff, 0xe0, 4, 5, 6];
const XSS = "<img src=x onerror=alert(1)>";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A DataView over the middle of a larger buffer (as JupyterLab hands it). */
function dataView(bytes) {
  const buf = new ArrayBuffer(bytes.length + 8);
  new Uint8Array(buf, 4, bytes.length).set(bytes);
  return new DataView(buf, 4, bytes.length);
}

function defaults() {
  return {
    top: [
      { index: 207, label: "golden retriever", prob: 0.62 },
      { index: 208, label: "Labrador retriever", prob: 0.21 },
      { index: 222, label: "kuvasz", prob: 0.05 },
      { index: 257, label: "Great Pyrenees", prob: 0.03 },
      { index: 852, label: "tennis ball", prob: 0.02 },
    ],
    inhibited: [],
    target: { kind: "class", index: 207, label: "golden retriever" },
    lam: 1,
    lam_min: 0.001,
    lam_max: 1000,
    lam_recommended: null,
    reg_layer: "layer3",
    reg_layers: ["layer2", "layer3", "layer4"],
    default_reg_layer: "layer3",
    latent_layers: ["layer3", "layer4"],
    preset: "fast",
    presets: ["fast", "paper"],
    steps: 64,
    p1: 50,
    p2: 95,
    view: "masked",
    seed_png: new DataView(new ArrayBuffer(0)),
    gradcam_png: null,
    mask_png: null,
    accent_png: null,
    running: false,
    step: 0,
    seed_prob: 0.62,
    prob: 0.62,
    status: "ready",
    error: "",
    predicted_vs_true: "",
    device: "cpu",
  };
}

class FakeModel {
  constructor(overrides = {}) {
    this.state = { ...defaults(), ...overrides };
    this.handlers = new Map();
    this.sent = [];
    this.raw = [];
    this.buffers = [];
    this.saves = 0;
  }
  get(name) {
    return this.state[name];
  }
  set(name, value) {
    this.state[name] = value;
    this.emit(`change:${name}`); // Backbone fires change events for local sets too
  }
  save_changes() {
    this.saves += 1;
  }
  send(msg, _callbacks, buffers) {
    // `sent` keeps the messages without their request ids (most tests compare contents); `raw` keeps them as sent
    this.raw.push(msg);
    const { id: _id, ...content } = msg;
    this.sent.push(content);
    this.buffers.push(buffers);
  }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
  }
  off(event, fn) {
    this.handlers.get(event)?.delete(fn);
  }
  emit(event, ...args) {
    for (const fn of [...(this.handlers.get(event) || [])]) fn(...args);
  }
  /** Python-side trait change. */
  change(name, value) {
    this.state[name] = value;
    this.emit(`change:${name}`);
  }
  /** Python → JS custom message. */
  msg(msg, buffers = []) {
    this.emit("msg:custom", msg, buffers);
  }
  listenerCount() {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }
  sentOfType(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

let dom, doc, el, model, cleanup, created, revoked, origCreate, origRevoke;

function mount(overrides) {
  model = new FakeModel(overrides);
  el = doc.createElement("div");
  doc.body.append(el);
  cleanup = widget.render({ model, el });
  return { model, el };
}

const q = (id) => el.querySelector(`[data-testid="${id}"]`);
/** Anywhere in the document (the enlarged view sits on <body> while open). */
const dq = (id) => doc.querySelector(`[data-testid="${id}"]`);
const click = (node) => node.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true }));
function fire(node, type) {
  node.dispatchEvent(new dom.window.Event(type, { bubbles: true }));
}

beforeEach(() => {
  const virtualConsole = new VirtualConsole(); // swallow jsdom "not implemented: navigation"
  dom = new JSDOM("<!doctype html><html><body></body></html>", { virtualConsole });
  doc = dom.window.document;
  created = [];
  revoked = [];
  origCreate = URL.createObjectURL;
  origRevoke = URL.revokeObjectURL;
  URL.createObjectURL = (blob) => {
    const url = `blob:fake/${created.length + 1}`;
    created.push({ url, blob });
    return url;
  };
  URL.revokeObjectURL = (url) => revoked.push(url);
  cleanup = null;
});

afterEach(() => {
  if (cleanup) cleanup();
  URL.createObjectURL = origCreate;
  URL.revokeObjectURL = origRevoke;
  dom.window.close();
});

describe("pure helpers", () => {
  it("toBytes handles DataView, Uint8Array, ArrayBuffer and null", () => {
    const dv = dataView(PNG);
    const a = toBytes(dv);
    assert.equal(a.byteLength, PNG.length);
    assert.deepEqual([...a], PNG);
    const u = new Uint8Array(JPEG);
    assert.deepEqual([...toBytes(u)], JPEG);
    assert.deepEqual([...toBytes(new Uint8Array(PNG).buffer)], PNG);
    assert.equal(toBytes(null), null);
    assert.equal(toBytes("nope"), null);
  });

  it("sniffType tells JPEG from PNG", () => {
    assert.equal(sniffType(new Uint8Array(JPEG)), "image/jpeg");
    assert.equal(sniffType(new Uint8Array(PNG)), "image/png");
  });

  it("lamToSlider / sliderToLam are inverse log10 maps, clamped to the bounds", () => {
    assert.equal(lamToSlider(100, 0.001, 1000), 2);
    assert.equal(lamToSlider(0.01, 0.001, 1000), -2);
    assert.equal(lamToSlider(1e9, 0.001, 1000), 3);
    assert.equal(lamToSlider(1e-9, 0.001, 1000), -3);
    assert.ok(Math.abs(sliderToLam(-1) - 0.1) < 1e-12);
    assert.ok(Math.abs(sliderToLam(lamToSlider(0.37, 0.001, 1000)) - 0.37) < 1e-12);
  });

  it("lamBounds falls back to Python's trait defaults (1e-2 .. 1e2) for missing or bad bounds", () => {
    assert.deepEqual(lamBounds(undefined, undefined), [-2, 2]);
    assert.deepEqual(lamBounds(0, -5), [-2, 2]);
    assert.deepEqual(lamBounds("x", 10), [-2, 1]);
    assert.deepEqual(lamBounds(0.001, 1000), [-3, 3]);
    assert.deepEqual(lamBounds(10, 10), [1, 2]); // an empty range still gives the slider one decade
  });

  it("sparklinePoints scales values into the box", () => {
    assert.equal(sparklinePoints([], 80, 20), "");
    const pts = sparklinePoints([0, 1], 80, 20).split(" ");
    assert.equal(pts.length, 2);
    assert.equal(pts[0], "0.0,19.0");
    assert.equal(pts[1], "80.0,1.0");
  });
});

describe("render", () => {
  it("builds the four tiles with captions and sends ready once", () => {
    mount();
    const captions = [...el.querySelectorAll(".faccent-tiles figcaption")].map((c) => c.textContent);
    // each caption names the class it shows (the target), the photo is called a photo
    assert.deepEqual(captions, [
      "Photo (seed)",
      "Grad-CAM: golden retriever",
      "Mask (collective): golden retriever",
      "Accentuation: golden retriever",
    ]);
    for (const id of ["seed-img", "gradcam-img", "mask-img", "accent-img"]) assert.ok(q(id), id);
    for (const id of [
      "accentuate",
      "stop",
      "reset",
      "step",
      "error",
      "status",
      "chips",
      "gallery",
      "download",
    ]) {
      assert.ok(q(id), id);
    }
    assert.deepEqual(model.sentOfType("ready"), [{ type: "ready" }]);
    assert.equal(model.sent.length, 1);
    assert.ok(el.querySelector(".faccent[class]"));
    assert.ok(el.querySelector("[data-lm-suppress-shortcuts]"));
  });

  it("lists the top-5 under the seed with probabilities", () => {
    mount();
    const items = [...el.querySelectorAll(".faccent-top li")];
    assert.equal(items.length, 5);
    assert.match(items[0].textContent, /golden retriever/);
    assert.match(items[0].textContent, /0\.620/);
  });

  it("every form control has a label or aria-label", () => {
    mount();
    for (const c of el.querySelectorAll("input, select, button, progress")) {
      const labelled =
        c.hasAttribute("aria-label") ||
        (c.id && el.querySelector(`label[for="${c.id}"]`)) ||
        (c.tagName === "BUTTON" && c.textContent.trim());
      assert.ok(labelled, `unlabelled ${c.outerHTML}`);
    }
  });

  it("marks the default reg layer and fills preset choices", () => {
    mount();
    const reg = q("reg_layer");
    assert.deepEqual(
      [...reg.options].map((o) => o.text),
      ["layer2", "layer3 (default)", "layer4"],
    );
    assert.equal(reg.value, "layer3");
    reg.value = "layer4";
    fire(reg, "change");
    assert.equal(model.state.reg_layer, "layer4");
    assert.deepEqual(
      [...q("preset").options].map((o) => o.value),
      ["fast", "paper"],
    );
  });
});

describe("images", () => {
  it("paints a frame from a DataView and then a Uint8Array, revoking the previous URL", () => {
    mount();
    const img = q("accent-img");
    model.msg({ type: "frame", step: 3, steps: 64, objective: 1.5, distance: 0.2, prob: 0.7, done: false }, [
      dataView(JPEG),
    ]);
    assert.equal(created.length, 1);
    assert.equal(img.getAttribute("src"), created[0].url);
    assert.equal(created[0].blob.type, "image/jpeg");
    assert.equal(created[0].blob.size, JPEG.length);

    model.msg({ type: "frame", step: 64, steps: 64, objective: 2, distance: 0.3, prob: 0.9, done: true }, [
      new Uint8Array(PNG),
    ]);
    assert.equal(created.length, 2);
    assert.equal(img.getAttribute("src"), created[1].url);
    assert.equal(created[1].blob.type, "image/png");
    assert.deepEqual(revoked, [created[0].url]);
    assert.equal(el.dataset.frames, "2");
    assert.equal(q("step").textContent, "step 64 / 64");
    assert.match(q("prob").textContent, /p\(golden retriever\) 0\.620 → 0\.900/);
  });

  it("updates tiles from *_png trait changes and clears them on empty bytes", () => {
    mount();
    const seed = q("seed-img");
    assert.equal(seed.getAttribute("src"), null); // empty DataView at first
    model.change("seed_png", dataView(PNG));
    const first = seed.getAttribute("src");
    assert.ok(first.startsWith("blob:fake/"));
    // the compare layer on the accentuation gets the seed too (its own URL)
    assert.ok(q("compare-img").getAttribute("src").startsWith("blob:fake/"));
    assert.notEqual(q("compare-img").getAttribute("src"), first);
    model.change("mask_png", new Uint8Array(PNG));
    assert.equal(q("mask-img").getAttribute("src"), created.at(-1).url);
    model.change("seed_png", new Uint8Array(JPEG));
    const second = seed.getAttribute("src");
    assert.notEqual(second, first);
    assert.ok(revoked.includes(first) && !revoked.includes(second));
    model.change("seed_png", null);
    assert.equal(seed.getAttribute("src"), null);
    assert.ok(revoked.includes(second));
  });
});

describe("run loop", () => {
  it("Accentuate sends start then chunk", () => {
    mount();
    click(q("accentuate"));
    assert.deepEqual(model.sent.slice(1), [{ type: "start" }, { type: "chunk", budget_ms: 200 }]);
  });

  it("a non-done frame asks for the next chunk, a done frame does not", () => {
    mount();
    click(q("accentuate"));
    model.msg({ type: "frame", step: 5, steps: 10, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 2);
    assert.ok(Number(el.dataset.firstFrameMs) >= 0);
    model.msg({ type: "frame", step: 10, steps: 10, done: true }, [new Uint8Array(PNG)]);
    assert.equal(model.sentOfType("chunk").length, 2);
    assert.equal(el.dataset.frames, "2");
    assert.equal(q("stop").disabled, true);
  });

  it("Stop sends stop and no chunk follows a later frame", () => {
    mount();
    click(q("accentuate"));
    assert.equal(q("stop").disabled, false);
    click(q("stop"));
    assert.equal(model.sentOfType("stop").length, 1);
    model.msg({ type: "frame", step: 5, steps: 10, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 1);
    assert.equal(el.dataset.frames, "1"); // the late frame is still painted
  });

  it("keeps one chunk in flight when Accentuate is pressed again mid-run", () => {
    mount();
    click(q("accentuate"));
    click(q("accentuate")); // restart while the first chunk is outstanding
    assert.equal(model.sentOfType("chunk").length, 2);
    model.msg({ type: "frame", step: 3, steps: 10, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 2); // the other chunk is still pending
    model.msg({ type: "frame", step: 1, steps: 10, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 3);
  });

  it("a chunk whose reply never came does not stall the next run", () => {
    mount();
    click(q("accentuate"));
    click(q("stop")); // the first chunk is never answered
    click(q("accentuate"));
    model.msg({ type: "frame", step: 1, steps: 10, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 3);
  });

  it("frames feed the sparkline and the objective/distance numbers", () => {
    mount();
    click(q("accentuate"));
    model.msg({ type: "frame", step: 1, steps: 3, objective: 1, distance: 0.1, done: false }, []);
    model.msg({ type: "frame", step: 2, steps: 3, objective: 2, distance: 0.2, done: false }, []);
    const line = el.querySelector(".faccent-spark-objective");
    assert.equal(line.getAttribute("points").split(" ").length, 2);
    assert.match(el.querySelector(".faccent-obj").textContent, /objective 2 · distance 0\.2/);
    model.msg(
      {
        type: "frame",
        step: 3,
        steps: 3,
        objective_history: [1, 2, 3, 4],
        distance_history: [0, 1, 2, 3],
        done: true,
      },
      [],
    );
    assert.equal(line.getAttribute("points").split(" ").length, 4);
  });

  it("an error message ends the local loop and shows in the error box", () => {
    mount();
    click(q("accentuate"));
    model.msg({ type: "error", message: "CUDA out of memory" });
    assert.equal(q("error").textContent, "CUDA out of memory");
    assert.equal(q("error").parentElement.hidden, false);
    model.msg({ type: "frame", step: 1, steps: 10, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 1);
  });

  it("Reset sends reset and stops asking", () => {
    mount();
    click(q("accentuate"));
    click(q("reset"));
    assert.equal(model.sentOfType("reset").length, 1);
    model.msg({ type: "frame", step: 1, steps: 10, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 1);
  });
});

describe("targets", () => {
  it("a chip click sends set_target with the chip's index", () => {
    mount();
    const chips = [...q("chips").querySelectorAll("button")];
    assert.equal(chips.length, 5);
    assert.equal(chips[0].getAttribute("aria-pressed"), "true");
    click(chips[2]);
    assert.deepEqual(model.sent.at(-1), { type: "set_target", index: 222 });
    model.change("target", { kind: "class", index: 222, label: "kuvasz" });
    const again = [...q("chips").querySelectorAll("button")];
    assert.equal(again[2].getAttribute("aria-pressed"), "true");
    assert.equal(again[0].getAttribute("aria-pressed"), "false");
    assert.equal(q("target").textContent, "kuvasz");
  });

  it("search is debounced, sends search, and results become set_target buttons", async () => {
    mount();
    const input = el.querySelector('input[type="search"]');
    input.value = "te";
    fire(input, "input");
    input.value = "tench";
    fire(input, "input");
    assert.equal(model.sentOfType("search").length, 0);
    await sleep(320);
    assert.deepEqual(model.sentOfType("search"), [{ type: "search", query: "tench" }]);
    model.msg({ type: "search_results", query: "te", items: [{ index: 1, label: "stale" }] });
    assert.equal(q("search-results").querySelectorAll("button").length, 0);
    model.msg({
      type: "search_results",
      query: "tench",
      items: [
        { index: 0, label: "tench" },
        { index: 5, label: XSS },
      ],
    });
    const buttons = [...q("search-results").querySelectorAll("button")];
    assert.equal(buttons.length, 2);
    assert.equal(buttons[1].textContent, XSS);
    assert.equal(q("search-results").querySelector("img"), null);
    click(buttons[0]);
    assert.deepEqual(model.sent.at(-1), { type: "set_target", index: 0 });
  });

  it("latent mode sends set_latent with layer and integer channel", () => {
    mount();
    const select = q("latent-layer");
    assert.deepEqual(
      [...select.options].map((o) => o.text),
      ["layer3", "layer4"],
    );
    select.value = "layer4";
    const channel = q("channel");
    channel.value = "17";
    click(q("use-latent"));
    assert.deepEqual(model.sent.at(-1), { type: "set_latent", layer: "layer4", channel: 17 });
    channel.value = "-2";
    click(q("use-latent"));
    assert.deepEqual(model.sent.at(-1), { type: "set_latent", layer: "layer4", channel: 17 });
    assert.match(q("error").textContent, /channel/);
  });
});

describe("safety", () => {
  it("labels, errors, layer names and the predicted-vs-true line with markup are shown as text", () => {
    mount({
      top: [{ index: 3, label: XSS, prob: 0.5 }],
      target: { kind: "class", index: 3, label: XSS },
      reg_layers: [XSS],
      reg_layer: XSS,
      default_reg_layer: XSS,
      predicted_vs_true: XSS,
      error: XSS,
      device: XSS,
    });
    const KNOWN = ["faccent-img", "faccent-swipe-img", "faccent-gallery-live", "faccent-gallery-img"];
    const imgs = [...el.querySelectorAll("img")];
    // four tiles, the compare layer, the presentation view's two and the gallery's progress strip
    assert.equal(imgs.length, 8);
    assert.ok(imgs.every((i) => KNOWN.some((c) => i.classList.contains(c))));
    assert.equal(q("chips").querySelector("button").textContent, XSS);
    assert.equal(q("error").textContent, XSS);
    assert.equal(q("triage").textContent, XSS);
    assert.equal(q("reg_layer").options[0].text, `${XSS} (default)`);
    assert.ok(el.querySelector(".faccent-top-label").textContent === XSS);
    model.msg({ type: "error", message: XSS });
    model.msg({ type: "gallery", items: [{ index: 1, label: XSS, prob_before: 0.1, prob_after: 0.2 }] }, []);
    assert.equal(el.querySelectorAll("img").length, 8 + 1); // the gallery's image (no mask sent), no injected ones
    assert.equal(q("gradcam-explain").textContent, `Where the model looks for ${XSS}`);
    assert.equal(q("gallery").querySelector(".faccent-gallery-label").textContent, XSS);
    assert.equal(el.querySelector('img[src="x"]'), null);
  });
});

describe("controls", () => {
  it("the λ slider maps log scale both ways and shows the value", () => {
    mount();
    const slider = q("lam");
    assert.equal(slider.min, "-3");
    assert.equal(slider.max, "3");
    assert.equal(Number(slider.value), 0);
    slider.value = "-1";
    fire(slider, "input");
    assert.equal(q("lam-value").textContent, "0.1");
    fire(slider, "change");
    assert.ok(Math.abs(model.state.lam - 0.1) < 1e-12);
    assert.ok(model.saves >= 1);
    model.change("lam", 100);
    assert.equal(Number(slider.value), 2);
    assert.equal(q("lam-value").textContent, "100");
    assert.equal(slider.getAttribute("aria-valuetext"), "λ = 100");
  });

  it("the λ slider range falls back to Python's defaults while lam_min / lam_max are missing", () => {
    mount({ lam_min: undefined, lam_max: undefined, lam: 1e6 });
    const slider = q("lam");
    assert.equal(slider.min, "-2");
    assert.equal(slider.max, "2");
    assert.equal(Number(slider.value), 2); // clamped to lam_max = 1e2
    model.change("lam_min", 0.001);
    assert.equal(slider.min, "-3");
  });

  it("shows a mark at lam_recommended when it is known", () => {
    mount();
    const mark = el.querySelector(".faccent-lam-mark");
    assert.equal(mark.hidden, true);
    model.change("lam_recommended", 10);
    assert.equal(mark.hidden, false);
    assert.equal(mark.style.getPropertyValue("--pos"), "0.6667");
    click(q("lam-rec"));
    assert.equal(model.state.lam, 10);
    model.change("lam_recommended", null);
    assert.equal(mark.hidden, true);
  });

  it("view toggles use aria-pressed and set the view trait", () => {
    mount();
    const buttons = [...el.querySelectorAll(".faccent-views button")];
    assert.deepEqual(
      buttons.map((b) => b.getAttribute("aria-pressed")),
      ["true", "false", "false"],
    );
    click(buttons[2]);
    assert.equal(model.state.view, "diff");
    assert.deepEqual(
      buttons.map((b) => b.getAttribute("aria-pressed")),
      ["false", "false", "true"],
    );
  });

  it("steps / p1 / p2 inputs set their traits and revert bad input", () => {
    mount();
    const steps = q("steps");
    steps.value = "128";
    fire(steps, "change");
    assert.equal(model.state.steps, 128);
    steps.value = "";
    fire(steps, "change");
    assert.equal(steps.value, "128");
    const p1 = q("p1");
    p1.value = "42.5";
    fire(p1, "change");
    assert.equal(model.state.p1, 42.5);
  });

  it("the predicted-vs-true button and text appear only when predicted_vs_true is set", () => {
    mount();
    assert.equal(q("gallery-triage").hidden, true);
    assert.equal(q("triage").hidden, true);
    model.change("predicted_vs_true", "predicted tabby (0.41) — true tiger cat (0.12)");
    assert.equal(q("gallery-triage").hidden, false);
    assert.equal(q("triage").textContent, "predicted tabby (0.41) — true tiger cat (0.12)");
    click(q("gallery-triage"));
    assert.deepEqual(model.sent.slice(-2), [
      { type: "gallery", mode: "predicted_vs_true" },
      { type: "chunk", budget_ms: 200 },
    ]);
  });
});

describe("gallery and download", () => {
  it("gallery buttons drive chunks and the gallery message shows items side by side", () => {
    mount();
    click(q("gallery-topk"));
    assert.deepEqual(model.sent.slice(-2), [
      { type: "gallery", mode: "topk" },
      { type: "chunk", budget_ms: 200 },
    ]);
    model.msg({ type: "frame", gallery: true, step: 1, steps: 5, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(model.sentOfType("chunk").length, 2);
    const items = [
      { index: 1, label: "a", prob_before: 0.1, prob_after: 0.8 },
      { index: 2, label: "b", prob_before: 0.2, prob_after: 0.9 },
    ];
    const bufs = [PNG, PNG, PNG, PNG].map((b) => new Uint8Array(b));
    model.msg({ type: "gallery", items }, bufs);
    const figs = q("gallery").querySelectorAll("figure");
    assert.equal(figs.length, 2);
    assert.equal(figs[0].querySelectorAll("img").length, 2);
    assert.match(figs[1].textContent, /b/);
    assert.match(figs[1].textContent, /0\.200 → 0\.900/);
    model.msg({ type: "frame", gallery: true, step: 5, steps: 5, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 2); // loop ended with the gallery message
    click(q("gallery-inhibited"));
    assert.equal(figs[0].isConnected, false); // old gallery replaced, its URLs revoked
    for (const f of created.slice(1, 5)) assert.ok(revoked.includes(f.url));
  });

  it("Download PNG asks Python and saves the reply through <a download>", () => {
    mount();
    click(q("download"));
    assert.deepEqual(model.sent.at(-1), { type: "download" });
    const clicked = [];
    dom.window.HTMLAnchorElement.prototype.click = function () {
      clicked.push({ href: this.getAttribute("href"), download: this.getAttribute("download") });
    };
    model.msg({ type: "download", filename: "faccent_golden.png" }, [dataView(PNG)]);
    assert.equal(clicked.length, 1);
    assert.equal(clicked[0].download, "faccent_golden.png");
    assert.equal(clicked[0].href, created.at(-1).url);
    assert.equal(el.querySelector("a"), null);
  });
});

describe("messages", () => {
  it("an error message shows in the error box and can be dismissed", () => {
    mount();
    model.msg({ type: "error", message: "bad layer" });
    assert.equal(q("error").textContent, "bad layer");
    click(el.querySelector('[aria-label="Dismiss error"]'));
    assert.equal(q("error").parentElement.hidden, true);
    model.change("error", "λ out of range");
    assert.equal(q("error").textContent, "λ out of range");
    model.change("error", "");
    assert.equal(q("error").parentElement.hidden, true);
  });

  it("the aria-live status is throttled to one update per 500 ms", async () => {
    mount();
    const status = q("status");
    assert.equal(status.getAttribute("aria-live"), "polite");
    assert.equal(status.textContent, "ready");
    model.change("status", "step 1");
    model.change("status", "step 2");
    assert.equal(status.textContent, "ready");
    await sleep(560);
    assert.equal(status.textContent, "step 2");
  });
});

describe("cleanup", () => {
  it("revokes all URLs, removes model listeners and the panel", () => {
    mount();
    const before = model.listenerCount();
    assert.ok(before > 0);
    model.change("seed_png", new Uint8Array(PNG));
    model.msg({ type: "frame", step: 1, steps: 2, done: false }, [new Uint8Array(JPEG)]);
    model.msg({ type: "gallery", items: [{ index: 1, label: "a", prob_before: 0, prob_after: 1 }] }, [
      new Uint8Array(PNG),
      new Uint8Array(PNG),
    ]);
    cleanup();
    cleanup = null;
    for (const c of created) assert.ok(revoked.includes(c.url), c.url);
    assert.equal(model.listenerCount(), 0);
    assert.equal(el.querySelector(".faccent"), null);
    const sent = model.sent.length;
    model.msg({ type: "frame", step: 2, steps: 2, done: false }, []);
    assert.equal(model.sent.length, sent);
  });
});

// ------------------------------------------------------------------------------------------ second pass
const GIF = [0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 2];
const keyEvent = (type, key, extra = {}) => new dom.window.KeyboardEvent(type, { key, bubbles: true, ...extra });
const pointer = (node, type) => node.dispatchEvent(new dom.window.Event(type, { bubbles: true }));
function setRange(node, value) {
  node.value = String(value);
  fire(node, "input");
}

describe("second pass: helpers", () => {
  it("defaultLatent picks the block holding the default reg layer, not the stem", () => {
    const layers = ["conv_stem", "blocks.0", "blocks.1", "blocks.1.0", "blocks.2", "conv_head"];
    assert.equal(defaultLatent(layers, "blocks.1.0.bn1.act"), "blocks.1.0");
    assert.equal(defaultLatent(layers, "blocks.2"), "blocks.2");
    assert.equal(defaultLatent(["conv_stem", "layer1", "layer2"], "layer2.1.relu"), "layer2");
    // no block holds it: the one sharing the longest dotted prefix
    assert.equal(defaultLatent(["stem", "stages.0.blocks.0", "stages.1.blocks.0"], "stages.1.norm"), "stages.1.blocks.0");
    assert.equal(defaultLatent(["a", "b"], "zzz"), "a");
    assert.equal(defaultLatent([], "x"), "");
    assert.equal(defaultLatent(null, "x"), "");
  });

  it("clampIndex and sniffType(GIF)", () => {
    assert.equal(clampIndex(7, 5), 4);
    assert.equal(clampIndex(-2, 5), 0);
    assert.equal(clampIndex("2", 5), 2);
    assert.equal(clampIndex("x", 5), 4);
    assert.equal(clampIndex(0, 0), -1);
    assert.equal(sniffType(new Uint8Array(GIF)), "image/gif");
  });
});

describe("second pass: layout", () => {
  it("main strip holds targets, λ and run buttons; the rest is in the Advanced disclosure", () => {
    mount();
    const strip = q("controls");
    for (const id of ["chips", "lam", "accentuate", "stop", "reset", "gallery-topk", "gallery-inhibited"]) {
      assert.ok(strip.querySelector(`[data-testid="${id}"]`), id);
    }
    assert.ok(strip.querySelector("input[type=search]"));
    const adv = q("advanced");
    assert.equal(adv.tagName, "DETAILS");
    assert.equal(adv.open, false);
    assert.equal(adv.querySelector("summary").textContent, "Advanced");
    for (const id of ["reg_layer", "preset", "steps", "p1", "p2", "latent-layer", "channel", "use-latent"]) {
      assert.ok(adv.querySelector(`[data-testid="${id}"]`), id);
      assert.equal(strip.querySelector(`[data-testid="${id}"]`), null, id);
    }
    // plain words, and a tooltip saying what each does
    for (const label of adv.querySelectorAll("label")) {
      assert.ok(label.title.length > 20, label.textContent);
      assert.doesNotMatch(label.textContent, /^p[12]$|reg layer/);
    }
  });

  it("the latent picker starts at the default reg layer's block", () => {
    mount({ latent_layers: ["conv_stem", "layer2", "layer3", "layer4"], default_reg_layer: "layer3.1.relu" });
    assert.equal(q("latent-layer").value, "layer3");
  });

  it("tiles take the seed's aspect ratio when it loads", () => {
    mount();
    const seed = q("seed-img");
    Object.defineProperty(seed, "naturalWidth", { value: 450 });
    Object.defineProperty(seed, "naturalHeight", { value: 300 });
    fire(seed, "load");
    assert.equal(el.querySelector(".faccent").style.getPropertyValue("--fa-aspect"), "450 / 300");
  });
});

describe("second pass: gallery and the main tile", () => {
  it("gallery frames never paint into the accentuation tile", () => {
    mount();
    model.msg({ type: "frame", step: 4, steps: 4, done: true }, [new Uint8Array(PNG)]);
    const accentSrc = q("accent-img").getAttribute("src");
    click(q("gallery-topk"));
    model.msg({ type: "frame", gallery: true, step: 1, steps: 5, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(q("accent-img").getAttribute("src"), accentSrc);
    assert.equal(q("gallery-live").hidden, false);
    assert.ok(q("gallery-live").getAttribute("src"));
    model.msg({ type: "gallery", items: [{ index: 1, label: "a", prob_before: 0, prob_after: 1 }] }, [
      new Uint8Array(PNG),
      new Uint8Array(PNG),
    ]);
    assert.equal(q("gallery-live").hidden, true);
    assert.equal(q("accent-img").getAttribute("src"), accentSrc);
  });
});

describe("second pass: scrub", () => {
  it("follows the run at its right end, asks Python for a snapshot when moved back", () => {
    mount();
    const scrub = q("scrub");
    assert.equal(scrub.disabled, true);
    click(q("accentuate"));
    model.change("snapshot_steps", [0, 2, 4]);
    assert.equal(scrub.disabled, false);
    assert.equal(scrub.max, "2");
    assert.equal(scrub.value, "2");
    assert.equal(q("scrub-value").textContent, "step 4");
    model.change("snapshot_steps", [0, 2, 4, 6]);
    assert.equal(scrub.value, "3"); // still following
    model.change("step", 7);
    assert.equal(q("scrub-value").textContent, "step 7"); // the right end is the latest image
    setRange(scrub, 0);
    assert.deepEqual(model.sentOfType("scrub"), [{ type: "scrub", index: 0 }]);
    assert.equal(q("scrub-value").textContent, "seed");
    model.msg({ type: "scrub", index: 0, step: 0, count: 4 }, [new Uint8Array(PNG)]);
    const scrubbed = q("accent-img").getAttribute("src");
    // live frames keep coming (counter advances) but do not replace the scrubbed image
    model.msg({ type: "frame", step: 7, steps: 20, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(q("accent-img").getAttribute("src"), scrubbed);
    assert.equal(q("step").textContent, "step 7 / 20");
    model.change("snapshot_steps", [0, 2, 4, 6, 8]);
    assert.equal(scrub.value, "0"); // not following: stays put
    model.change("accent_png", new Uint8Array(PNG)); // e.g. the final PNG: not while scrubbed back
    assert.equal(q("accent-img").getAttribute("src"), scrubbed);
    // back to the right end: follows again
    setRange(scrub, 4);
    model.msg({ type: "scrub", index: 4, step: 8, count: 5 }, [new Uint8Array(PNG)]);
    model.msg({ type: "frame", step: 9, steps: 20, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(q("accent-img").getAttribute("src"), created.at(-1).url);
  });

  it("keeps one scrub request in flight and asks for the latest position next", () => {
    mount({ snapshot_steps: [0, 2, 4, 6, 8] });
    const scrub = q("scrub");
    setRange(scrub, 3);
    setRange(scrub, 2);
    setRange(scrub, 1);
    assert.deepEqual(model.sentOfType("scrub"), [{ type: "scrub", index: 3 }]);
    model.msg({ type: "scrub", index: 3, step: 6, count: 5 }, [new Uint8Array(PNG)]);
    assert.deepEqual(model.sentOfType("scrub").at(-1), { type: "scrub", index: 1 });
    assert.equal(model.sentOfType("scrub").length, 2);
    // an error reply (no snapshots) does not block later scrubs
    model.msg({ type: "error", message: "nothing to scrub" });
    setRange(scrub, 0);
    assert.equal(model.sentOfType("scrub").length, 3);
  });

  it("a new run and Reset go back to following; Reset shows the seed at once", () => {
    mount({ snapshot_steps: [0, 2, 4] });
    model.change("seed_png", new Uint8Array(PNG));
    setRange(q("scrub"), 0);
    click(q("reset"));
    assert.equal(q("accent-img").getAttribute("src") !== null, true);
    assert.equal(created.at(-1).blob.size, PNG.length);
    model.change("snapshot_steps", []);
    assert.equal(q("scrub").disabled, true);
    assert.equal(q("scrub-value").textContent, "–");
  });

  it("el.dataset.chunksInFlight says when the last chunk after Stop has landed", () => {
    mount();
    click(q("accentuate"));
    assert.equal(el.dataset.chunksInFlight, "1");
    click(q("stop"));
    assert.equal(el.dataset.chunksInFlight, "1");
    model.msg({ type: "frame", step: 2, steps: 9, done: false }, [new Uint8Array(JPEG)]);
    assert.equal(el.dataset.chunksInFlight, "0");
    assert.equal(model.sentOfType("chunk").length, 1);
  });

  it("a new seed (new top-5) clears the old gallery", () => {
    mount();
    model.msg({ type: "gallery", items: [{ index: 1, label: "a", prob_before: 0, prob_after: 1 }] }, [
      new Uint8Array(PNG),
      new Uint8Array(PNG),
    ]);
    assert.equal(q("gallery").querySelectorAll("figure").length, 1);
    model.change("top", [{ index: 967, label: "espresso", prob: 0.8 }]);
    assert.equal(q("gallery").querySelectorAll("figure").length, 0);
    assert.equal(q("gallery").hidden, true);
  });

  it("Python's redraw (image message) paints the accentuation", () => {
    mount();
    model.msg({ type: "image", tile: "accent", index: null }, [new Uint8Array(PNG)]);
    assert.equal(q("accent-img").getAttribute("src"), created.at(-1).url);
  });
});

describe("second pass: compare", () => {
  it("press and hold shows the seed over the accentuation, in every view", () => {
    mount({ seed_png: new Uint8Array(PNG) });
    const btn = q("compare");
    const tile = q("accent-tile");
    for (const view of ["masked", "unmasked", "diff"]) {
      model.change("view", view);
      pointer(btn, "pointerdown");
      assert.ok(tile.classList.contains("faccent-comparing"), view);
      assert.equal(btn.getAttribute("aria-pressed"), "true");
      assert.ok(q("compare-img").getAttribute("src"));
      pointer(btn, "pointerup");
      assert.ok(!tile.classList.contains("faccent-comparing"));
      assert.equal(btn.getAttribute("aria-pressed"), "false");
    }
    btn.dispatchEvent(keyEvent("keydown", " "));
    assert.ok(tile.classList.contains("faccent-comparing"));
    btn.dispatchEvent(keyEvent("keyup", " "));
    assert.ok(!tile.classList.contains("faccent-comparing"));
    pointer(btn, "pointerdown");
    pointer(btn, "pointerleave");
    assert.ok(!tile.classList.contains("faccent-comparing"));
  });
});

describe("second pass: enlarged view", () => {
  it("opens an image large with the seed beside it; Escape and click close it", () => {
    mount({ seed_png: new Uint8Array(PNG), accent_png: new Uint8Array(JPEG) });
    const zoom = q("accent-img").closest("button");
    assert.equal(zoom.getAttribute("aria-label"), "Enlarge Accentuation");
    click(zoom);
    const overlay = dq("overlay");
    assert.equal(overlay.hidden, false);
    assert.equal(overlay.getAttribute("role"), "dialog");
    assert.equal(doc.activeElement, dq("overlay-close"));
    assert.equal(created.find((c) => c.url === dq("overlay-main").getAttribute("src")).blob.type, "image/jpeg");
    assert.equal(created.find((c) => c.url === dq("overlay-seed").getAttribute("src")).blob.type, "image/png");
    assert.match(overlay.textContent, /Accentuation \(masked\)/);
    // a live frame updates the enlarged accentuation too
    model.msg({ type: "frame", step: 1, steps: 4, done: false }, [new Uint8Array(PNG)]);
    assert.equal(created.find((c) => c.url === dq("overlay-main").getAttribute("src")).blob.type, "image/png");
    const main = dq("overlay-main");
    // over the whole window: the dialog is on <body>, outside the panel, while open
    assert.equal(el.contains(overlay), false);
    assert.ok(overlay.closest(".faccent-portal[data-lm-suppress-shortcuts]"));
    dq("overlay-close").dispatchEvent(keyEvent("keydown", "Escape"));
    assert.equal(overlay.hidden, true);
    assert.equal(overlay.isConnected, false);
    assert.equal(doc.activeElement, zoom);
    assert.equal(main.getAttribute("src"), null);
    click(q("seed-img").closest("button"));
    assert.equal(overlay.hidden, false);
    click(overlay);
    assert.equal(overlay.hidden, true);
  });

  it("captions with markup stay text", () => {
    mount({ seed_png: new Uint8Array(PNG), view: XSS });
    click(q("accent-img").closest("button"));
    assert.match(dq("overlay").textContent, /<img src=x/);
    assert.equal(dq("overlay").querySelector('img[src="x"]'), null);
  });
});

describe("second pass: your own photo", () => {
  const fileLike = (bytes, name = "cat.png", size = bytes.length) => ({
    name,
    size,
    arrayBuffer: async () => Uint8Array.from(bytes).buffer,
  });

  it("dropping an image sends its bytes to Python", async () => {
    mount();
    const root = el.querySelector(".faccent");
    const drop = new dom.window.Event("drop", { bubbles: true, cancelable: true });
    Object.defineProperty(drop, "dataTransfer", { value: { types: ["Files"], files: [fileLike(PNG)] } });
    root.dispatchEvent(drop);
    assert.equal(drop.defaultPrevented, true);
    await sleep(0);
    const i = model.sent.findIndex((m) => m.type === "load_image");
    assert.deepEqual(model.sent[i], { type: "load_image", name: "cat.png" });
    assert.deepEqual([...new Uint8Array(model.buffers[i][0])], PNG);
  });

  it("dragging files over the panel shows the drop hint", () => {
    mount();
    const root = el.querySelector(".faccent");
    const over = new dom.window.Event("dragover", { bubbles: true, cancelable: true });
    Object.defineProperty(over, "dataTransfer", { value: { types: ["Files"], files: [] } });
    root.dispatchEvent(over);
    assert.ok(root.classList.contains("faccent-dragover"));
    assert.equal(over.defaultPrevented, true);
    const drop = new dom.window.Event("drop", { bubbles: true, cancelable: true });
    Object.defineProperty(drop, "dataTransfer", { value: { types: [], files: [] } });
    root.dispatchEvent(drop);
    assert.ok(!root.classList.contains("faccent-dragover"));
  });

  it("a file too large is refused in the browser with a clear message", async () => {
    mount();
    const root = el.querySelector(".faccent");
    const drop = new dom.window.Event("drop", { bubbles: true, cancelable: true });
    const big = fileLike(PNG, "huge.tif", 41 * 1024 * 1024);
    Object.defineProperty(drop, "dataTransfer", { value: { types: ["Files"], files: [big] } });
    root.dispatchEvent(drop);
    await sleep(0);
    assert.equal(model.sentOfType("load_image").length, 0);
    assert.match(q("error").textContent, /huge\.tif.*too large.*previous image stays/);
  });

  it("the file picker is labelled and the button opens it", () => {
    mount();
    const input = q("file");
    assert.equal(input.type, "file");
    assert.equal(input.accept, "image/*");
    let opened = 0;
    input.click = () => (opened += 1);
    click(q("pick-file"));
    assert.equal(opened, 1);
  });
});

describe("second pass: λ mark and GIF", () => {
  it("asks for the λ calibration in chunks after ready, and pauses while a run is going", async () => {
    mount();
    assert.equal(model.sentOfType("calibrate").length, 0); // not before the first click can happen
    await sleep(1600);
    assert.deepEqual(model.sentOfType("calibrate"), [{ type: "calibrate", budget_ms: 150 }]);
    model.msg({ type: "calibration", done: false, progress: 0.25, value: null });
    assert.equal(model.sentOfType("calibrate").length, 1); // a pause between chunks leaves the kernel idle
    assert.match(q("lam-note").textContent, /25%/);
    await sleep(450);
    assert.equal(model.sentOfType("calibrate").length, 2);
    click(q("accentuate"));
    model.msg({ type: "calibration", done: false, progress: 0.3, value: null });
    await sleep(450);
    assert.equal(model.sentOfType("calibrate").length, 2); // waits for the run
    model.msg({ type: "frame", step: 4, steps: 4, done: true }, [new Uint8Array(PNG)]);
    await sleep(0);
    assert.equal(model.sentOfType("calibrate").length, 3);
    model.change("lam_recommended", 0.7);
    model.msg({ type: "calibration", done: true, progress: 1, value: 0.7 });
    assert.equal(q("lam-note").textContent, "");
    assert.equal(q("lam-rec").hidden, false);
    assert.equal(model.sentOfType("calibrate").length, 3);
    // a new reg layer without a cached mark: Python clears it, the browser asks again
    model.change("lam_recommended", null);
    await sleep(0);
    assert.equal(model.sentOfType("calibrate").length, 4);
    model.msg({ type: "calibration", done: true, value: null, error: "ValueError: flat curve" });
    assert.equal(q("lam-note").textContent, "no λ mark");
    assert.match(q("lam-note").title, /flat curve/);
  });

  it("a λ mark that is already known is not recomputed", async () => {
    mount({ lam_recommended: 2 });
    await sleep(1600);
    assert.equal(model.sentOfType("calibrate").length, 0);
  });

  it("Download GIF asks Python and saves the GIF it sends back", () => {
    mount();
    click(q("export-gif"));
    assert.deepEqual(model.sentOfType("export_gif"), [{ type: "export_gif" }]);
    model.msg({ type: "download", filename: "faccent_diff.gif" }, [new Uint8Array(GIF)]);
    assert.equal(created.at(-1).blob.type, "image/gif");
  });

  it("cleanup revokes the compare, overlay and gallery-progress URLs", () => {
    mount({ seed_png: new Uint8Array(PNG), accent_png: new Uint8Array(JPEG) });
    click(q("accent-img").closest("button"));
    model.msg({ type: "frame", gallery: true, step: 1, steps: 5, done: false }, [new Uint8Array(JPEG)]);
    cleanup();
    cleanup = null;
    for (const c of created) assert.ok(revoked.includes(c.url), c.url);
    assert.equal(model.listenerCount(), 0);
  });
});

describe("request ids", () => {
  it("requests that Python answers carry increasing ids; the loop's own messages carry none", async () => {
    mount();
    const input = el.querySelector('input[type="search"]');
    input.value = "tench";
    fire(input, "input");
    await sleep(320);
    click(q("download"));
    click(q("export-gif"));
    click(q("gallery-topk"));
    const ids = model.raw.filter((m) => ["search", "download", "export_gif", "gallery"].includes(m.type)).map((m) => m.id);
    assert.deepEqual(ids, [1, 2, 3, 4]);
    for (const m of model.raw.filter((m) => ["ready", "chunk"].includes(m.type))) assert.equal("id" in m, false);
  });

  it("a reply to an older request is dropped: search, gallery, scrub, download", async () => {
    mount({ snapshot_steps: [0, 2, 4], step: 4 });
    const input = el.querySelector('input[type="search"]');
    input.value = "tench";
    fire(input, "input");
    await sleep(320);
    fire(input, "input"); // the same query again: a second request
    await sleep(320);
    const [first, second] = model.raw.filter((m) => m.type === "search").map((m) => m.id);
    model.msg({ type: "search_results", query: "tench", id: first, items: [{ index: 1, label: "old" }] });
    assert.equal(q("search-results").querySelectorAll("button").length, 0);
    model.msg({ type: "search_results", query: "tench", id: second, items: [{ index: 0, label: "tench" }] });
    assert.equal(q("search-results").querySelectorAll("button").length, 1);

    click(q("gallery-topk"));
    const oldGallery = model.raw.at(-2).id;
    click(q("gallery-inhibited"));
    const item = { index: 1, label: "a", prob_before: 0, prob_after: 1 };
    model.msg({ type: "gallery", id: oldGallery, items: [item] }, [new Uint8Array(PNG), new Uint8Array(PNG)]);
    assert.equal(q("gallery").querySelectorAll("figure").length, 0); // still "running inhibited gallery…"
    model.msg({ type: "frame", gallery: true, step: 1, steps: 5, done: false }, []); // the first batch's chunk
    model.msg({ type: "frame", gallery: true, step: 1, steps: 5, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 3); // the newer batch's loop goes on
    model.msg({ type: "frame", gallery: true, step: 5, steps: 5, done: true }, []);

    const scrub = q("scrub");
    scrub.value = "0";
    fire(scrub, "input");
    const scrubId = model.raw.filter((m) => m.type === "scrub").at(-1).id;
    model.msg({ type: "scrub", index: 0, step: 0, count: 3, id: scrubId - 100 }, [new Uint8Array(PNG)]);
    assert.equal(q("accent-img").getAttribute("src"), null); // stale: not painted
    model.msg({ type: "scrub", index: 0, step: 0, count: 3, id: scrubId }, [new Uint8Array(PNG)]);
    assert.ok(q("accent-img").getAttribute("src"));

    click(q("download"));
    const before = created.length;
    model.msg({ type: "download", filename: "old.png", id: 0 }, [new Uint8Array(PNG)]);
    assert.equal(created.length, before);
  });

  it("an error answering a request (with its id) does not end the run loop; a chunk's error does", () => {
    mount();
    click(q("accentuate"));
    click(q("download"));
    const id = model.raw.at(-1).id;
    model.msg({ type: "error", message: "no panel", id });
    assert.equal(q("error").textContent, "no panel");
    model.msg({ type: "frame", step: 1, steps: 10, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 2); // still running
    model.msg({ type: "error", message: "CUDA out of memory" });
    model.msg({ type: "frame", step: 2, steps: 10, done: false }, []);
    assert.equal(model.sentOfType("chunk").length, 2); // stopped
  });
});

describe("parts", () => {
  it("each part tears down its own listeners: after cleanup nothing is left on the model or the page", () => {
    mount({ seed_png: new Uint8Array(PNG) });
    assert.ok(model.listenerCount() > 10);
    const root = el.querySelector(".faccent");
    cleanup();
    cleanup = null;
    assert.equal(model.listenerCount(), 0);
    assert.equal(root.isConnected, false);
    assert.equal(el.children.length, 0);
  });
});

describe("third pass: the Accentuate button", () => {
  it("reads 'Running… k/n' while a run goes and 'Accentuate' after, keeping its accessible name", () => {
    mount({ steps: 40 });
    const btn = q("accentuate");
    assert.equal(btn.textContent, "Accentuate");
    click(btn);
    assert.equal(btn.textContent, "Running… 0/40");
    assert.equal(btn.dataset.running, "true");
    model.change("step", 12);
    assert.equal(btn.textContent, "Running… 12/40");
    assert.equal(btn.getAttribute("aria-label"), "Accentuate");
    assert.equal(btn.style.getPropertyValue("--fa-progress"), "30.0%");
    model.msg({ type: "frame", step: 40, steps: 40, done: true }, [new Uint8Array(PNG)]);
    assert.equal(btn.textContent, "Accentuate");
    assert.equal(btn.dataset.running, "false");
  });

  it("a gallery batch shows its progress on the button too, and the status sits right under the action row", () => {
    mount({ steps: 3 });
    click(q("gallery-topk"));
    model.change("step", 2);
    assert.equal(q("accentuate").textContent, "Running… 2/3");
    const actions = q("controls").querySelector(".faccent-actions");
    assert.ok(actions.nextElementSibling.contains(q("status")));
    assert.ok(actions.nextElementSibling.contains(q("error")));
    // the action row keeps λ and the run buttons; the galleries open the row below, with the downloads
    assert.ok(actions.contains(q("accentuate")) && actions.contains(q("lam")));
    assert.equal(actions.contains(q("gallery-topk")), false);
    assert.ok(q("gallery-topk").closest(".faccent-io").contains(q("download")));
  });
});

describe("third pass: placeholders", () => {
  it("a tile shows a placeholder (no broken image) until its image is painted", () => {
    mount({ seed_png: new Uint8Array(PNG) });
    const frame = (key) => q(`${key}-img`).closest(".faccent-frame");
    assert.equal(frame("seed").classList.contains("faccent-empty"), false);
    assert.equal(frame("gradcam").classList.contains("faccent-empty"), true);
    assert.equal(frame("gradcam").querySelector(".faccent-placeholder").textContent, "Grad-CAM…");
    model.change("gradcam_png", new Uint8Array(PNG));
    assert.equal(frame("gradcam").classList.contains("faccent-empty"), false);
    model.change("gradcam_png", new Uint8Array(0));
    assert.equal(frame("gradcam").classList.contains("faccent-empty"), true);
  });
});

describe("third pass: explain mode", () => {
  it("captions name the class, and follow a new target, the direction and the view", () => {
    mount({ explain: true, top: [{ index: 285, label: "Egyptian cat", prob: 0.8 }] });
    assert.ok(el.querySelector(".faccent").classList.contains("faccent-explaining"));
    assert.equal(q("gradcam-explain").textContent, "Where the model looks for golden retriever");
    assert.equal(q("seed-explain").textContent, "The photo the model sees; its top guess is Egyptian cat");
    assert.match(q("mask-explain").textContent, /^White = where the change is shown/);
    model.change("target", { kind: "class", index: 282, label: "tiger cat" });
    assert.equal(q("gradcam-explain").textContent, "Where the model looks for tiger cat");
    assert.equal(q("gradcam-class").textContent, ": tiger cat");
    assert.equal(q("gradcam-explain").querySelector("em").textContent, "tiger cat");
    assert.match(q("accent-explain").textContent, /^What would make it more tiger cat/);
    model.change("away", true);
    assert.match(q("accent-explain").textContent, /^What would make it less tiger cat/);
    model.change("view", "diff");
    assert.match(q("accent-explain").textContent, /amplified ×4/);
    assert.ok(q("gradcam-legend").querySelector(".faccent-colourbar"));
    assert.match(q("mask-legend").textContent, /photo kept.*change shown/);
    assert.match(q("lam-ends").textContent, /let it change.*keep it close to the photo/);
    assert.match(q("layer-explain").textContent, /earlier = keeps more/);
  });

  it("the Explain and Presentation toggles set their traits and the panel's classes", () => {
    mount({ explain: true, presentation: false, seed_png: new Uint8Array(PNG), accent_png: new Uint8Array(JPEG) });
    const root = el.querySelector(".faccent");
    click(q("toggle-explain"));
    assert.equal(model.state.explain, false);
    assert.equal(root.classList.contains("faccent-explaining"), false);
    assert.equal(q("toggle-explain").getAttribute("aria-pressed"), "false");
    click(q("toggle-presentation"));
    assert.equal(model.state.presentation, true);
    assert.ok(root.classList.contains("faccent-presenting"));
    // the presentation view shows the tiles' own URLs (no extra copies) and names the class
    assert.equal(q("swipe-seed").getAttribute("src"), q("seed-img").getAttribute("src"));
    assert.equal(q("swipe-accent").getAttribute("src"), q("accent-img").getAttribute("src"));
    model.msg({ type: "frame", step: 1, steps: 4, done: false }, [new Uint8Array(PNG)]);
    assert.equal(q("swipe-accent").getAttribute("src"), q("accent-img").getAttribute("src"));
    assert.match(q("present-caption").textContent, /golden retriever/);
    const swipe = q("swipe");
    swipe.value = "20";
    fire(swipe, "input");
    assert.equal(swipe.closest(".faccent-present").querySelector(".faccent-swipe").style.getPropertyValue("--fa-split"), "20%");
  });

  it("tileTexts asks for a target when there is none", () => {
    const t = tileTexts({}, false, "masked", []);
    assert.equal(t.accent.explain.join(""), "Pick a target class, then press Accentuate");
    assert.equal(t.gradcam.cls, "");
  });
});

describe("third pass: galleries you can use", () => {
  const items = [
    { index: 285, label: "Egyptian cat", prob_before: 0.8, prob_after: 0.9, role: "predicted" },
    { index: 281, label: "tabby", prob_before: 0.07, prob_after: 0.6, role: "true" },
  ];

  it("predicted and true are named as such; a click opens it over the window and can make it the target", () => {
    mount({ seed_png: new Uint8Array(PNG), predicted_vs_true: "predicted Egyptian cat (0.80) — true tabby (0.07)" });
    click(q("gallery-triage"));
    model.msg({ type: "gallery", mode: "predicted_vs_true", items }, Array(6).fill(new Uint8Array(PNG)));
    const labels = [...q("gallery").querySelectorAll(".faccent-gallery-label")].map((n) => n.textContent);
    assert.deepEqual(labels, ["Predicted: Egyptian cat", "True: tabby"]);
    assert.match(q("gallery").textContent, /p\(tabby\) 0\.070 → 0\.600/);
    assert.equal(q("gallery-title").textContent, "Predicted vs true");
    const zoom = q("gallery").querySelectorAll(".faccent-gallery-zoom")[1];
    click(zoom);
    const overlay = dq("overlay");
    assert.equal(overlay.hidden, false);
    assert.equal(el.contains(overlay), false);
    assert.equal(dq("overlay-title").textContent, "True: tabby");
    assert.ok(dq("overlay-seed").getAttribute("src"));
    assert.equal(dq("overlay-main").getAttribute("src"), zoom.querySelector("img").getAttribute("src"));
    assert.equal(dq("overlay-target").hidden, false);
    click(dq("overlay-target"));
    assert.deepEqual(model.sent.at(-1), { type: "set_target", index: 281 });
    assert.equal(overlay.hidden, true);
  });

  it("Most inhibited says why the masked images look unchanged and shows the unmasked ones beside them", () => {
    mount();
    click(q("gallery-inhibited"));
    const inhibited = [
      { index: 1, label: "gibbon", prob_before: 0.0, prob_after: 0.99 },
      { index: 2, label: "dingo", prob_before: 0.0, prob_after: 0.98 },
    ];
    model.msg({ type: "gallery", mode: "inhibited", items: inhibited }, [PNG, PNG, PNG, PNG, JPEG, JPEG].map((b) => new Uint8Array(b)));
    assert.match(q("gallery-intro").textContent, /masks are black/);
    assert.match(q("gallery-intro").textContent, /unmasked/);
    const fig = q("gallery").querySelector("figure");
    const shown = [...fig.querySelectorAll(".faccent-gallery-zoom img")];
    assert.equal(shown.length, 2); // masked | unmasked
    assert.equal(created.find((c) => c.url === shown[1].getAttribute("src")).blob.type, "image/jpeg");
    click(fig.querySelector(".faccent-gallery-zoom"));
    assert.equal(dq("overlay-unmasked").closest("figure").hidden, false);
  });

  it("an older kernel's gallery (masked and masks only) still shows", () => {
    mount();
    click(q("gallery-topk"));
    model.msg({ type: "gallery", items: items.map(({ role, ...it }) => it) }, Array(4).fill(new Uint8Array(PNG)));
    assert.equal(q("gallery").querySelectorAll("figure").length, 2);
    assert.equal(q("gallery").querySelector(".faccent-gallery-label").textContent, "Egyptian cat");
  });
});

describe("third pass: enlarged view tools", () => {
  it("the accentuation's view toggles and hold-to-compare work inside the enlarged view", () => {
    mount({ seed_png: new Uint8Array(PNG), accent_png: new Uint8Array(JPEG) });
    click(q("accent-img").closest("button"));
    const diff = dq("overlay").querySelector('[data-view="diff"]');
    click(diff);
    assert.equal(model.state.view, "diff");
    assert.equal(dq("overlay").hidden, false); // a tool click does not close it
    assert.equal(diff.getAttribute("aria-pressed"), "true");
    const hold = dq("overlay-compare");
    hold.dispatchEvent(new dom.window.Event("pointerdown", { bubbles: true }));
    assert.equal(created.find((c) => c.url === dq("overlay-main").getAttribute("src")).blob.type, "image/png");
    hold.dispatchEvent(new dom.window.Event("pointerup", { bubbles: true }));
    assert.equal(created.find((c) => c.url === dq("overlay-main").getAttribute("src")).blob.type, "image/jpeg");
  });
});

describe("third pass: enlarged view in a shadow root", () => {
  it("opens in the shadow root the panel lives in (marimo), where its stylesheet applies", () => {
    model = new FakeModel({ seed_png: new Uint8Array(PNG), accent_png: new Uint8Array(JPEG) });
    const holder = doc.createElement("div");
    doc.body.append(holder);
    const shadow = holder.attachShadow({ mode: "open" });
    el = doc.createElement("div");
    shadow.append(el);
    cleanup = widget.render({ model, el });
    click(q("accent-img").closest("button"));
    const overlay = shadow.querySelector('[data-testid="overlay"]');
    assert.ok(overlay);
    assert.equal(overlay.hidden, false);
    assert.equal(el.contains(overlay), false);
    assert.equal(doc.querySelector('[data-testid="overlay"]'), null);
    click(overlay);
    assert.equal(overlay.isConnected, false);
  });
});

describe("third pass: numbers, Continue, hint, errors once, judge", () => {
  const shown = {
    index: 1,
    count: 4,
    step: 12,
    steps: 40,
    prob: 0.31,
    seed_prob: 0.62,
    objective: 3.5,
    distance: 1.25,
    p_fell: true,
    top: [
      { index: 208, label: "Labrador retriever", prob: 0.4, before: 0.21 },
      { index: 207, label: "golden retriever", prob: 0.31, before: 0.62 },
    ],
  };

  it("the headline names the class: p(label) seed → now", () => {
    mount();
    assert.equal(q("prob").textContent, "p(golden retriever) 0.620 → 0.620");
    assert.equal(q("prob").tagName, "STRONG");
    model.change("target", { kind: "class", index: 208, label: "Labrador retriever" });
    model.change("seed_prob", 0.21);
    assert.match(q("prob").textContent, /^p\(Labrador retriever\) 0\.210 →/);
  });

  it("every number follows the shown step (scrub), and live frames do not overwrite it", () => {
    mount({ snapshot_steps: [0, 12, 24, 40], step: 40, steps: 40, prob: 0.9 });
    model.change("shown", shown);
    assert.equal(q("step").textContent, "step 12 / 40");
    assert.equal(q("prob").textContent, "p(golden retriever) 0.620 → 0.310");
    assert.match(el.querySelector(".faccent-obj").textContent, /objective 3\.5 · distance 1\.25/);
    assert.equal(q("p-fell").hidden, false);
    assert.match(q("top-now").textContent, /model now sees: Labrador retriever 0\.400 \(seed 0\.210\) · golden retriever/);
    model.msg({ type: "frame", step: 41, steps: 80, objective: 9, distance: 9, prob: 0.99, done: false }, []);
    assert.equal(q("step").textContent, "step 12 / 40");
    assert.match(q("prob").textContent, /0\.310$/);
    assert.match(el.querySelector(".faccent-obj").textContent, /objective 3\.5/);
    // back to following live ({}): the live run's numbers again
    model.change("shown", {});
    assert.match(q("prob").textContent, /0\.990$/);
    assert.equal(q("top-now").hidden, true);
    assert.equal(q("p-fell").hidden, true);
    assert.match(el.querySelector(".faccent-obj").textContent, /objective 9 /);
  });

  it("gallery frames leave the stats row to the single run: its numbers and sparkline stay", () => {
    mount({ snapshot_steps: [0, 12, 24, 40], step: 40, steps: 40, prob: 0.9 });
    model.change("shown", shown);
    const spark = el.querySelector(".faccent-spark-objective").getAttribute("points");
    click(q("gallery-topk"));
    model.msg({ type: "frame", step: 3, steps: 3, objective: 9, distance: 9, prob: 0.05, done: true, gallery: true, objective_history: [1, 5, 9], distance_history: [0, 1, 2] }, []);
    assert.equal(q("step").textContent, "step 12 / 40");
    assert.equal(q("prob").textContent, "p(golden retriever) 0.620 → 0.310");
    assert.match(el.querySelector(".faccent-obj").textContent, /objective 3\.5 · distance 1\.25/);
    assert.equal(el.querySelector(".faccent-spark-objective").getAttribute("points"), spark);
  });

  it("no fell mark when p rose, or when driving away from the target", () => {
    mount();
    model.change("shown", { ...shown, prob: 0.8, p_fell: false });
    assert.equal(q("p-fell").hidden, true);
    model.change("away", true);
    model.change("shown", shown);
    assert.equal(q("p-fell").hidden, true);
  });

  it("Continue shows after a Stop while resumable and sends continue, then asks for chunks", () => {
    mount();
    assert.equal(q("continue").hidden, true);
    model.change("resumable", true);
    assert.equal(q("continue").hidden, false);
    click(q("continue"));
    assert.deepEqual(model.sent.slice(-2), [{ type: "continue" }, { type: "chunk", budget_ms: 200 }]);
    assert.equal(q("continue").hidden, true); // hidden while running
    assert.equal(model.sentOfType("start").length, 0);
  });

  it("the settings-changed hint shows next to the run buttons as text", () => {
    mount();
    assert.equal(q("rerun-hint").hidden, true);
    model.change("rerun_hint", "settings changed since the last run — press Accentuate");
    assert.equal(q("rerun-hint").hidden, false);
    assert.equal(q("rerun-hint").textContent, "settings changed since the last run — press Accentuate");
    model.change("rerun_hint", XSS);
    assert.equal(q("rerun-hint").textContent, XSS);
    assert.equal(q("rerun-hint").querySelector("img"), null);
    model.change("rerun_hint", "");
    assert.equal(q("rerun-hint").hidden, true);
  });

  it("an error shows once: in the alert box, not repeated in the status line", async () => {
    mount();
    model.change("error", "not_an_image.jpg: not an image that can be read");
    await sleep(560);
    assert.equal(q("error").textContent, "not_an_image.jpg: not an image that can be read");
    assert.equal(q("error").parentElement.getAttribute("role"), "alert");
    assert.equal(q("status").textContent.includes("not an image"), false);
  });

  it("the judge's p of the seed and of the shown image, only with a judge", () => {
    mount();
    assert.equal(q("judge").hidden, true);
    model.change("judge", { name: "efficientnet_lite1", label: "golden retriever", seed_prob: 0.12, prob: 0.55 });
    assert.equal(q("judge").hidden, false);
    assert.equal(q("judge").textContent, "judge (efficientnet_lite1): 0.120 → 0.550");
    model.change("judge", { name: "efficientnet_lite1", label: "golden retriever", seed_prob: 0.12, prob: null });
    assert.equal(q("judge").textContent, "judge (efficientnet_lite1): 0.120 → –");
  });
});
