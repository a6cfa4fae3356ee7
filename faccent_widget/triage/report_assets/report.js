(function () {
  'use strict';
  // The triage report: every mistake is data (the JSON block), rendered a page at a time. Text goes
  // through textContent only; images are data: URIs from that block.
  var D = JSON.parse(document.getElementById('triage-data').textContent);
  var ITEMS = D.items, KEY = 'faccent-widget/triage-tags/' + D.report_id;
  // tiles about 1.5 × the thumbnails (80–112 px), 256 px when a card is enlarged
  document.documentElement.style.setProperty('--tile', Math.max(80, Math.min(112, Math.round(1.5 * D.thumbnails.tile))) + 'px');
  var BUILTIN = D.tag_names, VIEWS = ['accentuation', 'where', 'difference', 'swipe'];
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function pct(p) { return p === null || p === undefined ? '\u2013' : (100 * p).toFixed(1) + '%'; }
  function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }
  function option(value, text) { var o = el('option', null, text); o.value = value; return o; }

  // ------------------------------------------------------------------ tags and selection
  // The store's tags (in the data), then this browser's edits (localStorage): {tags: {id: tag|null}, selected: {id: bool}}.
  var tags = Object.assign({}, D.tags), selected = new Set(D.selected), edits = { tags: {}, selected: {} };
  try {
    var saved = JSON.parse(window.localStorage.getItem(KEY) || 'null');
    if (saved && saved.tags && saved.selected) { edits = saved; }
  } catch (e) { /* no localStorage: edits live as long as the page */ }
  Object.keys(edits.tags).forEach(function (id) { if (edits.tags[id] === null) { delete tags[id]; } else { tags[id] = edits.tags[id]; } });
  Object.keys(edits.selected).forEach(function (id) { if (edits.selected[id]) { selected.add(id); } else { selected.delete(id); } });
  function persist() {
    try { window.localStorage.setItem(KEY, JSON.stringify(edits)); $('note').textContent = ''; }
    catch (e) { $('note').textContent = 'tags are kept only until this page is closed: export them'; }
    counts();
  }
  function cleanTag(t) { return String(t || '').trim().split(/\s+/).join(' ').slice(0, 64); }
  function setTag(id, t) {
    t = cleanTag(t);
    if (t) { tags[id] = t; } else { delete tags[id]; }
    edits.tags[id] = t || null;
    persist();
    fillTagMenu();
  }
  function setSelected(id, on) {
    if (on) { selected.add(id); } else { selected.delete(id); }
    edits.selected[id] = !!on;
  }
  function tagNames() {
    var seen = BUILTIN.slice();
    Object.keys(tags).forEach(function (id) { if (seen.indexOf(tags[id]) < 0) { seen.push(tags[id]); } });
    return seen;
  }

  // ------------------------------------------------------------------ sorting and filtering
  var pairCount = {};
  ITEMS.forEach(function (it) {
    it.pair = it.true_label + '\u0000' + it.predicted_label;
    pairCount[it.pair] = (pairCount[it.pair] || 0) + 1;
    it.text = (it.key + '\n' + it.true_label + '\n' + it.predicted_label).toLowerCase();
  });
  function g(it, k) { return it[k] === null ? -1e9 : it[k]; }
  var SORTS = {
    margin: function (a, b) { return b.margin - a.margin; },
    confidence: function (a, b) { return b.p_predicted - a.p_predicted; },
    true_rank: function (a, b) { return (b.true_rank - a.true_rank) || (b.margin - a.margin); },
    label_issue: function (a, b) { return (b.label_issue || 0) - (a.label_issue || 0); },
    gain_predicted: function (a, b) { return g(b, 'gain_predicted') - g(a, 'gain_predicted'); },
    gain_true: function (a, b) { return g(b, 'gain_true') - g(a, 'gain_true'); },
    pair: function (a, b) {
      return (pairCount[b.pair] - pairCount[a.pair]) || cmp(a.true_label, b.true_label) ||
        cmp(a.predicted_label, b.predicted_label) || (b.margin - a.margin);
    },
    index: function () { return 0; }
  };
  var sortedCache = {};
  function sorted(key) {
    if (!sortedCache[key]) {
      sortedCache[key] = ITEMS.slice().sort(function (a, b) { return SORTS[key](a, b) || a.index - b.index; });
    }
    return sortedCache[key];
  }
  var state = { sort: D.rank_by in SORTS ? D.rank_by : 'margin', desc: true, page: 0, size: 24, view: 'accentuation' };
  var shown = [];
  function matches(it, f) {
    if (f.trueLabel && it.true_label !== f.trueLabel) { return false; }
    if (f.predicted && it.predicted_label !== f.predicted) { return false; }
    if (f.flag === 'label' && !it.likely_label_error) { return false; }
    if (f.flag === 'model' && it.likely_label_error) { return false; }
    if (f.flag === 'fell' && !it.p_fell) { return false; }
    var mine = tags[it.id];
    if (f.tag === 'untagged' && mine !== undefined) { return false; }
    if (f.tag === 'tagged' && mine === undefined) { return false; }
    if (f.tag && f.tag !== 'untagged' && f.tag !== 'tagged' && mine !== f.tag) { return false; }
    if (f.only && !selected.has(it.id)) { return false; }
    return !f.q || it.text.indexOf(f.q) >= 0;
  }
  function filters() {
    return {
      trueLabel: $('f-true').value, predicted: $('f-predicted').value, flag: $('f-flag').value,
      tag: $('f-tag').value, only: $('f-only').checked, q: $('f-search').value.trim().toLowerCase()
    };
  }
  function apply(keepPage) {
    var t0 = performance.now(), f = filters(), list = sorted(state.sort);
    if (!state.desc) { list = list.slice().reverse(); }
    shown = list.filter(function (it) { return matches(it, f); });
    if (!keepPage) { state.page = 0; }
    render();
    markPairs(f);
    document.body.dataset.applyMs = (performance.now() - t0).toFixed(1);
  }

  // ------------------------------------------------------------------ tiles
  var decoded = {};
  function image(src) {
    if (!decoded[src]) {
      var img = new Image();
      img.src = src;
      decoded[src] = img.decode().then(function () { return img; });
    }
    return decoded[src];
  }
  function jet(v) {
    function c(x) { return Math.max(0, Math.min(1, x)) * 255; }
    return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
  }
  function drawWhere(canvas, seed, mask) {
    canvas.width = seed.naturalWidth; canvas.height = seed.naturalHeight;
    var ctx = canvas.getContext('2d'), h = mask.shape[0], w = mask.shape[1], values = atob(mask.values);
    ctx.drawImage(seed, 0, 0);
    var small = document.createElement('canvas'); small.width = w; small.height = h;
    var data = small.getContext('2d').createImageData(w, h);
    for (var i = 0; i < w * h; i++) {
      var rgb = jet(values.charCodeAt(i) / 255);
      data.data[4 * i] = rgb[0]; data.data[4 * i + 1] = rgb[1]; data.data[4 * i + 2] = rgb[2]; data.data[4 * i + 3] = 255;
    }
    small.getContext('2d').putImageData(data, 0, 0);
    ctx.globalAlpha = 0.5; ctx.imageSmoothingEnabled = true;
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  }
  function drawDifference(canvas, seed, accent) {
    var w = seed.naturalWidth, h = seed.naturalHeight;
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(seed, 0, 0); var a = ctx.getImageData(0, 0, w, h);
    ctx.drawImage(accent, 0, 0, w, h); var b = ctx.getImageData(0, 0, w, h);
    var top = 1, i, k;  // scaled so that the largest change is white (at most ×16)
    for (i = 0; i < a.data.length; i += 4) {
      for (k = 0; k < 3; k++) { b.data[i + k] = Math.abs(b.data[i + k] - a.data[i + k]); top = Math.max(top, b.data[i + k]); }
    }
    var gain = Math.min(16, 255 / top);
    for (i = 0; i < a.data.length; i += 4) {
      for (k = 0; k < 3; k++) { b.data[i + k] = Math.min(255, gain * b.data[i + k]); }
    }
    ctx.putImageData(b, 0, 0);
  }
  function swipe(box, seedSrc, accentSrc) {
    var under = el('img'), over = el('img'), edge = el('div', 'edge');
    under.src = seedSrc; over.src = accentSrc; under.alt = 'seed'; over.alt = 'accentuation';
    function at(x) { over.style.clipPath = 'inset(0 0 0 ' + x + '%)'; edge.style.left = x + '%'; }
    at(50);
    box.addEventListener('mousemove', function (ev) {
      var r = box.getBoundingClientRect();
      at(Math.max(0, Math.min(100, 100 * (ev.clientX - r.left) / r.width)));
    });
    box.append(under, over, edge);
  }
  function fillTile(box, it, target, view) {
    box.replaceChildren();
    var seed = it.images.seed, src = target ? it.images[target] : seed;
    if (!src) { box.append(el('span', 'muted', 'no thumbnail')); return; }
    if (!target || view === 'accentuation' || (view === 'where' && !it.masks[target])) {
      var img = el('img'); img.src = src; img.alt = target ? 'accentuation toward ' + target : 'seed';
      box.append(img);
    } else if (view === 'swipe') {
      swipe(box, seed, src);
    } else {
      var canvas = el('canvas'); box.append(canvas);
      Promise.all([image(seed), image(src)]).then(function (imgs) {
        if (view === 'where') { drawWhere(canvas, imgs[0], it.masks[target]); } else { drawDifference(canvas, imgs[0], imgs[1]); }
      });
    }
  }
  var CAPTION = {
    accentuation: function (l) { return '\u2192 ' + l; },
    where: function (l) { return 'where: ' + l; },
    difference: function (l) { return 'change toward ' + l; },
    swipe: function (l) { return 'seed | \u2192 ' + l + ' (move the mouse)'; }
  };

  // ------------------------------------------------------------------ cards
  function tagControl(it) {
    var wrap = el('label', null, 'tag '), sel = el('select'), custom = el('input');
    sel.dataset.role = 'tag';
    sel.append(option('', '\u2014'));
    tagNames().forEach(function (t) { sel.append(option(t, t)); });
    sel.append(option('\u0001custom', 'custom\u2026'));
    sel.value = tags[it.id] || '';
    custom.type = 'text'; custom.placeholder = 'your tag, Enter'; custom.hidden = true; custom.dataset.role = 'custom-tag';
    sel.addEventListener('change', function () {
      if (sel.value === '\u0001custom') { custom.hidden = false; custom.focus(); return; }
      setTag(it.id, sel.value);
    });
    custom.addEventListener('keydown', function (ev) {
      if (ev.key !== 'Enter') { return; }
      setTag(it.id, custom.value);
      custom.hidden = true;
      sel.replaceChildren(option('', '\u2014'));
      tagNames().forEach(function (t) { sel.append(option(t, t)); });
      sel.append(option('\u0001custom', 'custom\u2026'));
      sel.value = tags[it.id] || '';
    });
    wrap.append(sel, custom);
    return wrap;
  }
  function exemplarRows(it) {
    var box = el('div', 'exemplars');
    ['predicted', 'true'].forEach(function (t) {
      var list = it.exemplars[t];
      if (!list) { return; }
      var label = t === 'predicted' ? it.predicted_label : it.true_label, row = el('div', 'row');
      row.dataset.target = t;
      if (!list.length) { row.append(el('span', null, 'no correctly classified ' + label + ' (' + t + ') in your data')); }
      else {
        row.append(el('span', null, 'correct ' + label + ' in your data (' + t + ')'));
        list.forEach(function (e) {
          var f = el('figure'), src = D.exemplar_images[e.id];
          if (src) { var img = el('img'); img.src = src; img.alt = e.key; f.append(img); }
          f.append(el('figcaption', null, e.key + ' \u00b7 cos ' + e.similarity.toFixed(2)));
          row.append(f);
        });
      }
      box.append(row);
    });
    return box;
  }
  function card(it) {
    var c = el('article', 'card'), view = state.view;
    c.dataset.id = it.id; c.dataset.index = it.index;
    var h = el('header');
    h.append(el('span', 'rank', '#' + it.rank), el('span', 'key', it.key));
    if (it.likely_label_error) { h.append(el('span', 'badge', 'likely label error')); }
    if (it.p_fell) { h.append(el('span', 'badge fell', 'p fell')); }
    var who = el('div', 'who');
    who.append('true: ', el('b', 'good', it.true_label), ' (' + pct(it.p_true) + ', rank ' + it.true_rank + ') \u00b7 predicted: ',
      el('b', 'bad', it.predicted_label), ' (' + pct(it.p_predicted) + ')');
    var tiles = el('div', 'tiles'), boxes = [];
    [null].concat(it.targets).forEach(function (t) {
      var f = el('figure'), box = el('div', 'box'), label = t ? it.scores[t].label : null;
      var cap = el('figcaption', null, t ? CAPTION[view](label) + ' (' + t + ')' : 'seed');
      box.dataset.target = t || 'seed';
      fillTile(box, it, t, view);
      box.addEventListener('click', function () { c.classList.toggle('zoom'); if (c.classList.contains('zoom') && !c.querySelector('.exemplars')) { c.append(exemplarRows(it)); } });
      f.append(box, cap); tiles.append(f); boxes.push([box, t, cap, label]);
    });
    var scores = el('div', 'scores');
    it.targets.forEach(function (t) {
      var s = it.scores[t], fell = s.prob !== null && s.seed_prob !== null && s.prob < s.seed_prob;
      scores.append(el('span', fell ? 'fell' : null, 'toward ' + s.label + ': p ' + pct(s.seed_prob) + ' \u2192 ' + pct(s.prob) + (fell ? ' (fell)' : '')));
    });
    if (it.label_issue !== null) { scores.append(el('span', null, 'label issue ' + it.label_issue.toFixed(2))); }
    var views = el('span', 'views');
    VIEWS.forEach(function (v) {
      var b = el('button', null, v); b.type = 'button'; b.dataset.view = v; b.setAttribute('aria-pressed', String(v === view));
      b.addEventListener('click', function () {
        views.querySelectorAll('button').forEach(function (x) { x.setAttribute('aria-pressed', String(x === b)); });
        boxes.forEach(function (bx) { if (bx[1]) { fillTile(bx[0], it, bx[1], v); bx[2].textContent = CAPTION[v](bx[3]) + ' (' + bx[1] + ')'; } });
      });
      views.append(b);
    });
    var pick = el('label', null, ' select'), box = el('input');
    box.type = 'checkbox'; box.checked = selected.has(it.id); box.dataset.role = 'select';
    box.addEventListener('change', function () { setSelected(it.id, box.checked); persist(); });
    pick.prepend(box);
    var controls = el('div', 'controls');
    controls.append(views, tagControl(it), pick);
    c.append(h, who, tiles, scores, controls);
    return c;
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var start = state.page * state.size, part = shown.slice(start, start + state.size);
    var grid = $('cards'), frag = document.createDocumentFragment();
    part.forEach(function (it) { frag.append(card(it)); });
    grid.replaceChildren(frag);
    if (!part.length) { grid.append(el('p', 'muted', 'No mistake matches these filters.')); }
    $('status').textContent = (shown.length ? (start + 1) + '\u2013' + (start + part.length) : '0') + ' of ' +
      shown.length + ' matching (' + ITEMS.length + ' mistakes)';
    $('page').textContent = 'page ' + (state.page + 1) + ' / ' + pages;
    $('first').disabled = $('prev').disabled = state.page === 0;
    $('next').disabled = $('last').disabled = state.page >= pages - 1;
    counts();
  }
  function counts() {
    $('counts').textContent = Object.keys(tags).length + ' tagged \u00b7 ' + selected.size + ' selected';
  }

  // ------------------------------------------------------------------ confusion table and menus
  function markPairs(f) {
    document.querySelectorAll('#confusions tr[data-true]').forEach(function (tr) {
      tr.classList.toggle('active', tr.dataset.true === f.trueLabel && tr.dataset.predicted === f.predicted);
    });
  }
  function fillMenus() {
    var trues = {}, preds = {};
    ITEMS.forEach(function (it) { trues[it.true_label] = (trues[it.true_label] || 0) + 1; preds[it.predicted_label] = (preds[it.predicted_label] || 0) + 1; });
    [['f-true', trues], ['f-predicted', preds]].forEach(function (m) {
      var sel = $(m[0]);
      sel.append(option('', 'any'));
      Object.keys(m[1]).sort().forEach(function (l) { sel.append(option(l, l + ' (' + m[1][l] + ')')); });
    });
    D.flags.forEach(function (f) { $('f-flag').append(option(f[0], f[1])); });
    fillTagMenu();
    D.sorts.forEach(function (s) { $('sort').append(option(s[0], s[1])); });
    $('sort').value = state.sort;
    VIEWS.forEach(function (v) { $('view').append(option(v, v)); });
    [12, 24, 48, 96].forEach(function (n) { $('size').append(option(String(n), String(n))); });
    $('size').value = String(state.size);
    var pairs = Object.keys(pairCount).sort(function (a, b) { return (pairCount[b] - pairCount[a]) || cmp(a, b); });
    var body = $('confusions');
    pairs.slice(0, 300).forEach(function (p) {
      var parts = p.split('\u0000'), tr = el('tr');
      tr.dataset.true = parts[0]; tr.dataset.predicted = parts[1]; tr.tabIndex = 0;
      tr.append(el('td', null, parts[0]), el('td', null, '\u2192 ' + parts[1]), el('td', null, pairCount[p]));
      function pick() {
        var on = !tr.classList.contains('active');
        $('f-true').value = on ? parts[0] : ''; $('f-predicted').value = on ? parts[1] : '';
        apply();
      }
      tr.addEventListener('click', pick);
      tr.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { pick(); } });
      body.append(tr);
    });
    if (pairs.length > 300) { $('more-pairs').textContent = (pairs.length - 300) + ' rarer pairs: use the class filters'; }
  }
  function fillTagMenu() {
    var sel = $('f-tag'), was = sel.value;
    sel.replaceChildren(option('', 'any'), option('tagged', 'tagged'), option('untagged', 'untagged'));
    tagNames().forEach(function (t) { sel.append(option(t, t)); });
    sel.value = was;
  }

  // ------------------------------------------------------------------ export
  var COLUMNS = D.columns;
  function rows() {
    return ITEMS.filter(function (it) { return tags[it.id] !== undefined || selected.has(it.id); }).map(function (it) {
      return {
        id: it.id, key: it.key, index: it.index, rank: it.rank, true_label: it.true_label, predicted_label: it.predicted_label,
        p_true: it.p_true, p_predicted: it.p_predicted, margin: it.margin, label_issue: it.label_issue,
        likely_label_error: it.likely_label_error, tag: tags[it.id] === undefined ? null : tags[it.id], selected: selected.has(it.id)
      };
    });
  }
  // a text cell a spreadsheet would run as a formula gets a single quote in front (OWASP; also after
  // quotes, so that import_tags strips exactly this one: tags.csv_guard / csv_unguard)
  function csvCell(v) {
    var s = v === null || v === undefined ? '' : v === true ? 'True' : v === false ? 'False' : String(v);
    if (typeof v === 'string' && /^'*[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function download(name, type, text) {
    var a = el('a'); a.download = name; a.href = URL.createObjectURL(new Blob([text], { type: type }));
    document.body.append(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  function exportJSON() {
    download('triage-tags.json', 'application/json',
      JSON.stringify({ format: D.tags_format, version: 1, report: D.report_id, items: rows() }, null, 1));
  }
  function exportCSV() {
    var lines = [COLUMNS.join(',')].concat(rows().map(function (r) { return COLUMNS.map(function (c) { return csvCell(r[c]); }).join(','); }));
    download('triage-tags.csv', 'text/csv', lines.join('\n') + '\n');
  }

  // ------------------------------------------------------------------ wiring
  fillMenus();
  ['f-true', 'f-predicted', 'f-flag', 'f-tag', 'f-only'].forEach(function (id) { $(id).addEventListener('change', function () { apply(); }); });
  $('f-search').addEventListener('input', function () { apply(); });
  $('sort').addEventListener('change', function () { state.sort = $('sort').value; apply(); });
  $('dir').addEventListener('click', function () {
    state.desc = !state.desc; $('dir').textContent = state.desc ? '\u2193 worst first' : '\u2191 reversed'; apply();
  });
  $('view').addEventListener('change', function () { state.view = $('view').value; render(); });
  $('size').addEventListener('change', function () { state.size = Number($('size').value); apply(); });
  $('first').addEventListener('click', function () { state.page = 0; render(); });
  $('prev').addEventListener('click', function () { state.page -= 1; render(); });
  $('next').addEventListener('click', function () { state.page += 1; render(); });
  $('last').addEventListener('click', function () { state.page = 1e9; render(); });
  $('clear').addEventListener('click', function () {
    ['f-true', 'f-predicted', 'f-flag', 'f-tag', 'f-search'].forEach(function (id) { $(id).value = ''; });
    $('f-only').checked = false; apply();
  });
  $('select-all').addEventListener('click', function () { shown.forEach(function (it) { setSelected(it.id, true); }); persist(); render(); });
  $('select-none').addEventListener('click', function () { Array.from(selected).forEach(function (id) { setSelected(id, false); }); persist(); apply(true); });
  $('export-json').addEventListener('click', exportJSON);
  $('export-csv').addEventListener('click', exportCSV);
  apply();
  document.body.dataset.ready = (performance.now()).toFixed(0);
}());
