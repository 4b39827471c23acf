// flowmap's dependency map page: reads the view from the URL, asks the API for the graph, draws
// it with cytoscape.js (fcose layout), and shows a node's callers and callees, an edge's
// measures, certainty and time series (uPlot), and the range's events. The view state lives in
// the URL (history.replaceState), so a link shows the same map. No framework: one file, no build.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  // The view parameters the API reads, in URL order; `range` (a preset) and the selection are
  // page-only.
  const VIEW = ['from', 'to', 'group', 'filter', 'port', 'min_bytes', 'limit'];
  const PRESETS = { '15m': 15 * 60e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 86400e3 };
  const LEVELS = [
    ['0', '0 · whole fleet'],
    ['1', '1 · first segment'],
    ['2', '2 · two segments'],
    ['3', '3 · three segments'],
    ['16', 'full names'],
  ];
  const CERTAINTY = {
    verified: 'verified by both ends',
    mixed: 'partly verified',
    one_sided: 'one-sided',
    partial: 'share unattributed',
    unattributed: 'unattributed end',
  };
  const KINDS = {
    new_dependency: 'new dependency',
    policy_violation: 'policy violation',
    disagreement: 'disagreement',
    unspecified: 'unspecified',
  };

  const state = {
    meta: null,
    view: {}, // VIEW parameters as the page sends them
    preset: '1h',
    graph: null,
    edges: new Map(), // edge id -> API edge
    selected: null, // {node: id} or {edge: id}
    seq: 0,
    detailSeq: 0,
    chart: null,
  };
  let cy = null;

  // ---------- formatting ----------

  function fmtCount(n) {
    if (n == null) return '–';
    if (n < 1000) return String(n);
    const units = ['k', 'M', 'G', 'T'];
    let v = n;
    let u = -1;
    while (v >= 1000 && u < units.length - 1) {
      v /= 1000;
      u += 1;
    }
    return (v < 10 ? v.toFixed(1) : Math.round(v)) + units[u];
  }

  function fmtBytes(n) {
    if (n == null) return '–';
    if (n < 1000) return n + ' B';
    const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
    let v = n;
    let u = -1;
    while (v >= 1000 && u < units.length - 1) {
      v /= 1000;
      u += 1;
    }
    return (v < 10 ? v.toFixed(1) : Math.round(v)) + ' ' + units[u];
  }

  function fmtUs(us) {
    if (us == null) return '–';
    if (us < 1000) return Math.round(us) + ' µs';
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 1 : 0) + ' ms';
    return (us / 1e6).toFixed(2) + ' s';
  }

  function fmtShare(x) {
    if (x == null) return '–';
    const p = x * 100;
    if (p > 0 && p < 1) return '<1%';
    if (p < 100 && p > 99) return '>99%';
    return Math.round(p) + '%';
  }

  // RFC 3339 without a zero fraction (what the API writes too).
  function isoTime(ms) {
    return new Date(ms).toISOString().replace('.000Z', 'Z');
  }

  function fmtTime(ms) {
    return new Date(ms).toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$|:\d\dZ$/, 'Z');
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c == null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // ---------- URL and API ----------

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v != null && v !== '') q.set(k, v);
    }
    return q.toString();
  }

  // The view's parameters that `endpoint` accepts.
  function viewParams(endpoint) {
    const v = state.view;
    const base = { from: v.from, to: v.to, group: v.group, filter: v.filter, port: v.port };
    if (endpoint === 'graph') return Object.assign(base, { min_bytes: v.min_bytes, limit: v.limit });
    if (endpoint === 'node') return Object.assign(base, { min_bytes: v.min_bytes });
    if (endpoint === 'series') return base;
    if (endpoint === 'events') return { from: v.from, to: v.to, filter: v.filter, port: v.port, limit: 200 };
    return base;
  }

  async function api(path, params) {
    const q = query(params || {});
    const res = await fetch('api/' + path + (q ? '?' + q : ''), { headers: { Accept: 'application/json' } });
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      throw new Error(path + ': HTTP ' + res.status);
    }
    if (!res.ok) throw new Error(body && body.error ? body.error : path + ': HTTP ' + res.status);
    return body;
  }

  function showError(message) {
    const box = $('error');
    if (!message) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    box.hidden = false;
    box.textContent = message;
  }

  function readUrl() {
    const u = new URLSearchParams(location.search);
    const view = {};
    for (const k of VIEW) view[k] = u.get(k) || '';
    state.view = view;
    state.preset = u.get('range') || (view.from || view.to ? 'custom' : '1h');
    if (u.get('node')) state.selected = { node: u.get('node') };
    else if (u.get('edge')) state.selected = { edge: u.get('edge') };
    else state.selected = null;
  }

  function writeUrl() {
    const params = {};
    if (state.preset !== 'custom') params.range = state.preset;
    for (const k of VIEW) {
      if (state.preset !== 'custom' && (k === 'from' || k === 'to')) continue;
      params[k] = state.view[k];
    }
    if (state.selected && state.selected.node) params.node = state.selected.node;
    if (state.selected && state.selected.edge) params.edge = state.selected.edge;
    const q = query(params);
    history.replaceState(null, '', location.pathname + (q ? '?' + q : ''));
    $('csv').href = 'api/edges.csv?' + query(viewParams('graph'));
  }

  // A preset's range, ending at the end of the data (or now, without data).
  function applyPreset() {
    const span = PRESETS[state.preset];
    if (!span) return;
    const end = state.meta && state.meta.extent ? state.meta.extent.to_ms : Date.now();
    state.view.from = isoTime(end - span);
    state.view.to = isoTime(end);
  }

  // ---------- controls ----------

  function fillControls() {
    const group = $('group');
    group.replaceChildren();
    for (const [value, label] of LEVELS) group.append(el('option', { value, text: label }));
    for (const name of state.meta.groupings) group.append(el('option', { value: name, text: 'by ' + name }));
    if (!state.view.group) state.view.group = state.meta.default_group;
    if (![...group.options].some((o) => o.value === state.view.group)) {
      group.append(el('option', { value: state.view.group, text: state.view.group }));
    }
    group.value = state.view.group;
    $('preset').value = state.preset in PRESETS ? state.preset : 'custom';
    for (const k of ['from', 'to', 'filter', 'port', 'min_bytes']) $(k).value = state.view[k] || '';
    $('limit').value = state.view.limit || String(state.meta.default_limit);
    $('limit').placeholder = String(state.meta.default_limit);
  }

  function readControls() {
    const preset = $('preset').value;
    state.preset = preset;
    if (preset === 'custom') {
      state.view.from = $('from').value.trim();
      state.view.to = $('to').value.trim();
    } else {
      applyPreset();
    }
    state.view.group = $('group').value;
    state.view.filter = $('filter').value.trim();
    state.view.port = $('port').value.trim();
    state.view.min_bytes = $('min_bytes').value.trim();
    const limit = $('limit').value.trim();
    state.view.limit = limit === String(state.meta.default_limit) ? '' : limit;
  }

  function bindControls() {
    $('controls').addEventListener('submit', (ev) => {
      ev.preventDefault();
      readControls();
      refresh();
    });
    for (const id of ['preset', 'group']) {
      $(id).addEventListener('change', () => {
        readControls();
        refresh();
      });
    }
    for (const id of ['from', 'to']) {
      $(id).addEventListener('input', () => {
        $('preset').value = 'custom';
      });
    }
    $('fit').addEventListener('click', () => cy && cy.fit(undefined, 40));
    $('png').addEventListener('click', () => {
      if (!cy) return;
      const blob = cy.png({ full: true, scale: 2, bg: '#0e131a', output: 'blob' });
      const a = el('a', { href: URL.createObjectURL(blob), download: 'flowmap-map.png' });
      document.body.append(a);
      a.click();
      a.remove();
    });
  }

  // ---------- the map ----------

  const COLORS = {
    verified: '#34d399',
    mixed: '#60a5fa',
    one_sided: '#fbbf24',
    partial: '#fb923c',
    unattributed: '#94a3b8',
  };

  function styles() {
    return [
      {
        selector: 'node',
        style: {
          'background-color': '#2563eb',
          'border-width': 2,
          'border-color': '#93c5fd',
          width: 'data(size)',
          height: 'data(size)',
          shape: 'round-rectangle',
          label: 'data(label)',
          color: '#dbe4ee',
          'font-size': 11,
          'font-family': 'Inter, system-ui, sans-serif',
          'text-valign': 'bottom',
          'text-margin-y': 4,
          'text-outline-color': '#0e131a',
          'text-outline-width': 2,
          'min-zoomed-font-size': 7,
          'text-max-width': 160,
          'text-wrap': 'ellipsis',
        },
      },
      { selector: 'node[kind = "external"]', style: { shape: 'diamond', 'background-color': '#7c3aed', 'border-color': '#c4b5fd' } },
      {
        selector: 'node[kind = "unattributed"]',
        style: { shape: 'octagon', 'background-color': '#374151', 'border-color': '#f87171', 'border-style': 'dashed' },
      },
      {
        selector: 'edge',
        style: {
          width: 'data(width)',
          'curve-style': 'bezier',
          'line-color': 'data(color)',
          'target-arrow-color': 'data(color)',
          'target-arrow-shape': 'triangle',
          'arrow-scale': 0.9,
          opacity: 0.85,
          'loop-direction': '-45deg',
          'loop-sweep': '40deg',
        },
      },
      { selector: 'edge[cert = "one_sided"]', style: { 'line-style': 'dashed', 'line-dash-pattern': [7, 4] } },
      { selector: 'edge[cert = "partial"]', style: { 'line-style': 'dashed', 'line-dash-pattern': [2, 3] } },
      { selector: 'edge[cert = "unattributed"]', style: { 'line-style': 'dotted' } },
      {
        selector: 'edge[?isNew]',
        style: {
          label: 'new',
          'font-size': 9,
          color: '#0e131a',
          'text-background-color': '#facc15',
          'text-background-opacity': 1,
          'text-background-padding': 2,
          'text-background-shape': 'roundrectangle',
          'min-zoomed-font-size': 6,
        },
      },
      { selector: '.faded', style: { opacity: 0.12 } },
      { selector: 'node.faded', style: { 'text-opacity': 0.25 } },
      { selector: 'node:selected', style: { 'border-color': '#facc15', 'border-width': 4 } },
      {
        selector: 'edge:selected',
        style: {
          'line-color': '#facc15',
          'target-arrow-color': '#facc15',
          opacity: 1,
          label: 'data(label)',
          color: '#fde68a',
          'font-size': 10,
          'text-background-color': '#0e131a',
          'text-background-opacity': 0.85,
          'text-background-padding': 2,
        },
      },
    ];
  }

  function initMap() {
    cy = cytoscape({
      container: $('cy'),
      style: styles(),
      wheelSensitivity: 0.3,
      minZoom: 0.05,
      maxZoom: 4,
      boxSelectionEnabled: false,
    });
    cy.on('tap', 'node', (ev) => select({ node: ev.target.id() }));
    cy.on('tap', 'edge', (ev) => select({ edge: ev.target.id() }));
    cy.on('tap', (ev) => {
      if (ev.target === cy) select(null);
    });
    window.flowmap = { cy, state };
  }

  // Area-like scaling (square root of the share of the largest), so that a node with a quarter
  // of the largest's bytes is half as wide; logs would make every node look alike.
  function scale(value, max, lo, hi) {
    if (!max) return lo;
    return lo + (hi - lo) * Math.sqrt(Math.max(0, value) / max);
  }

  function shortLabel(n) {
    if (n.kind === 'workload' && n.members > 1) return n.id + ' (' + n.members + ')';
    return n.id;
  }

  function draw(graph) {
    const maxNode = Math.max(0, ...graph.nodes.map((n) => n.bytes_in + n.bytes_out));
    const maxEdge = Math.max(0, ...graph.edges.map((e) => e.bytes));
    const elements = [];
    for (const n of graph.nodes) {
      elements.push({
        group: 'nodes',
        data: { id: n.id, label: shortLabel(n), kind: n.kind, size: scale(n.bytes_in + n.bytes_out, maxNode, 18, 64) },
      });
    }
    state.edges = new Map();
    for (const e of graph.edges) {
      state.edges.set(e.id, e);
      elements.push({
        group: 'edges',
        data: {
          id: e.id,
          source: e.source,
          target: e.target,
          cert: e.certainty.class,
          color: COLORS[e.certainty.class] || '#94a3b8',
          width: scale(e.bytes, maxEdge, 1.2, 12),
          isNew: e.events.new_dependency > 0,
          label: fmtBytes(e.bytes) + ' · ' + fmtCount(e.connections) + ' conn',
        },
      });
    }
    cy.batch(() => {
      cy.elements().remove();
      cy.add(elements);
    });
    const n = graph.nodes.length;
    const layout = cy.layout({
      name: n > 1 ? 'fcose' : 'grid',
      quality: n > 600 ? 'draft' : 'default',
      randomize: true,
      animate: false,
      fit: true,
      padding: 40,
      nodeDimensionsIncludeLabels: n < 400,
      nodeRepulsion: () => 9000,
      idealEdgeLength: () => 110,
      edgeElasticity: () => 0.3,
      gravity: 0.3,
      numIter: n > 1000 ? 800 : 2500,
      packComponents: true,
      tile: true,
    });
    return new Promise((resolve) => {
      layout.one('layoutstop', resolve);
      layout.run();
    });
  }

  function updateStatus(graph, q) {
    const drawnNodes = cy.nodes().length;
    const drawnEdges = cy.edges().length;
    $('count-nodes').textContent = fmtCount(drawnNodes);
    $('count-nodes').dataset.count = drawnNodes;
    $('count-edges').textContent = fmtCount(drawnEdges);
    $('count-edges').dataset.count = drawnEdges;
    $('count-total').textContent = graph.truncated
      ? '(top ' + graph.edges.length + ' of ' + graph.totals.edges + ' edges by bytes)'
      : '';
    $('range-label').textContent =
      fmtTime(graph.range.from_ms) + ' → ' + fmtTime(graph.range.to_ms) + ' · ' + fmtCount(graph.totals.connections) +
      ' connections · ' + fmtBytes(graph.totals.bytes);
    $('status').dataset.query = q;
  }

  // ---------- loading ----------

  async function refresh() {
    const seq = ++state.seq;
    document.body.dataset.state = 'loading';
    $('loading').hidden = false;
    writeUrl();
    const graphParams = viewParams('graph');
    const q = query(graphParams);
    try {
      const [graph, events] = await Promise.all([api('graph', graphParams), api('events', viewParams('events'))]);
      if (seq !== state.seq) return;
      showError(null);
      state.graph = graph;
      await draw(graph);
      if (seq !== state.seq) return;
      updateStatus(graph, q);
      drawEvents(events);
      await restoreSelection();
      if (seq !== state.seq) return;
      document.body.dataset.state = 'ready';
    } catch (e) {
      if (seq !== state.seq) return;
      showError(e.message);
      document.body.dataset.state = 'error';
    } finally {
      if (seq === state.seq) $('loading').hidden = true;
    }
  }

  async function restoreSelection() {
    const sel = state.selected;
    if (sel && sel.node && cy.getElementById(sel.node).nonempty()) return select(sel, false);
    if (sel && sel.edge && cy.getElementById(sel.edge).nonempty()) return select(sel, false);
    state.selected = null;
    writeUrl();
    highlight(null);
    showEmptyDetail();
  }

  // ---------- selection and details ----------

  function highlight(ele) {
    cy.elements().removeClass('faded').unselect();
    if (!ele) return;
    const keep = ele.isNode() ? ele.closedNeighborhood() : ele.union(ele.connectedNodes());
    cy.elements().not(keep).addClass('faded');
    ele.select();
  }

  async function select(sel, write = true) {
    state.selected = sel;
    if (write) writeUrl();
    const detailSeq = ++state.detailSeq;
    if (!sel) {
      highlight(null);
      showEmptyDetail();
      return;
    }
    const ele = cy.getElementById(sel.node || sel.edge);
    highlight(ele.nonempty() ? ele : null);
    const box = $('detail');
    box.dataset.state = 'loading';
    try {
      if (sel.node) {
        const detail = await api('node', Object.assign(viewParams('node'), { id: sel.node }));
        if (detailSeq !== state.detailSeq) return;
        renderNode(detail);
      } else {
        const edge = state.edges.get(sel.edge);
        if (!edge) return showEmptyDetail();
        renderEdge(edge);
        const series = await api('series', Object.assign(viewParams('series'), { source: edge.source, target: edge.target }));
        if (detailSeq !== state.detailSeq) return;
        drawSeries(series);
      }
      box.dataset.state = 'ready';
    } catch (e) {
      if (detailSeq !== state.detailSeq) return;
      box.dataset.state = 'error';
      box.replaceChildren(el('div', { class: 'empty' }, el('h2', { text: 'Cannot load' }), el('p', { text: e.message })));
    }
  }

  function showEmptyDetail() {
    const box = $('detail');
    box.dataset.state = 'empty';
    if (state.chart) {
      state.chart.destroy();
      state.chart = null;
    }
    box.replaceChildren(
      el(
        'div',
        { class: 'empty' },
        el('h2', { text: 'Select a node or an edge' }),
        el('p', {
          text:
            'Click a node to list its callers and callees; click an edge for its measures, its certainty and its ' +
            'connections and bytes per minute.',
        }),
        el('p', { text: 'Search: word (either end), client:word, server:word, -word to leave out.' }),
      ),
    );
  }

  function certBadge(cls) {
    return el('span', { class: 'badge cert-' + cls, title: CERTAINTY[cls] || cls, text: CERTAINTY[cls] || cls });
  }

  function kindBadge(kind) {
    return el('span', { class: 'badge kind-' + kind, text: kind });
  }

  function edgeTable(title, edges, peerOf, id) {
    const rows = edges.map((e) =>
      el(
        'tr',
        {
          class: 'clickable',
          'data-edge': e.id,
          onclick: () => {
            if (state.edges.has(e.id)) select({ edge: e.id });
            else select({ node: peerOf(e) });
          },
        },
        el('td', { class: 'name', title: peerOf(e), text: peerOf(e) }),
        el('td', { class: 'num', text: fmtCount(e.connections) }),
        el('td', { class: 'num', text: fmtBytes(e.bytes) }),
        el('td', { class: 'num', text: fmtUs(e.rtt.p50_us) + ' / ' + fmtUs(e.rtt.p99_us) }),
        el('td', { class: 'num', text: fmtCount(e.retransmits) }),
        el('td', { class: 'num' + (e.failed_connects ? ' warn' : ''), text: fmtCount(e.failed_connects) }),
        el('td', {}, el('i', { class: 'dot cert-' + e.certainty.class, title: CERTAINTY[e.certainty.class] })),
      ),
    );
    return el(
      'section',
      { class: 'edges', id },
      el('h3', {}, title + ' ', el('span', { class: 'muted', text: '(' + edges.length + ')' })),
      edges.length
        ? el(
            'table',
            {},
            el(
              'thead',
              {},
              el(
                'tr',
                {},
                el('th', { text: 'peer' }),
                el('th', { class: 'num', text: 'conn' }),
                el('th', { class: 'num', text: 'bytes' }),
                el('th', { class: 'num', text: 'RTT p50 / p99' }),
                el('th', { class: 'num', text: 'retr' }),
                el('th', { class: 'num', text: 'fail' }),
                el('th', {}),
              ),
            ),
            el('tbody', {}, ...rows),
          )
        : el('p', { class: 'muted', text: 'none in this view' }),
    );
  }

  function renderNode(d) {
    if (state.chart) {
      state.chart.destroy();
      state.chart = null;
    }
    const n = d.node;
    $('detail').replaceChildren(
      el('div', { class: 'head' }, el('h2', { class: 'title', title: n.id, text: n.id }), kindBadge(n.kind)),
      el(
        'div',
        { class: 'grid' },
        metric('workloads', fmtCount(n.members)),
        metric('connections in', fmtCount(n.connections_in)),
        metric('connections out', fmtCount(n.connections_out)),
        metric('bytes in', fmtBytes(n.bytes_in)),
        metric('bytes out', fmtBytes(n.bytes_out)),
      ),
      edgeTable('Callers', d.callers, (e) => e.source, 'callers'),
      edgeTable('Callees', d.callees, (e) => e.target, 'callees'),
    );
  }

  function metric(label, value, cls) {
    return el('div', { class: 'metric' + (cls ? ' ' + cls : '') }, el('div', { class: 'v', text: value }), el('div', { class: 'l', text: label }));
  }

  function certaintyText(e) {
    const c = e.certainty;
    const parts = [];
    if (c.class === 'unattributed') {
      parts.push('One end is unattributed: flowmap would not name who was there.');
    }
    parts.push(
      fmtShare(c.verified_share) + ' of ' + fmtCount(e.connections) + ' connections verified by both ends, ' +
        fmtShare(c.one_sided_share) + ' seen from one end' +
        (e.disagreements ? ', ' + fmtCount(e.disagreements) + ' where the two ends disagree' : '') + '.',
    );
    if (c.unattributed_connections > 0) {
      const reasons = Object.entries(c.unattributed_reasons)
        .sort((a, b) => b[1] - a[1])
        .map(([r, k]) => r + ' ' + fmtCount(k))
        .join(', ');
      parts.push(
        fmtShare(c.unattributed_share) + ' of the traffic on these workloads and ports had an unattributed other end (' +
          fmtCount(c.unattributed_connections) + ' connections: ' + reasons + '); some of it may belong here.',
      );
    }
    return parts.join(' ');
  }

  function renderEdge(e) {
    const ports = e.ports.map((p) => p.port + (e.ports.length > 1 ? ' (' + fmtCount(p.connections) + ')' : '')).join(', ');
    $('detail').replaceChildren(
      el(
        'div',
        { class: 'head' },
        el('h2', { class: 'title', title: e.source + ' → ' + e.target }, e.source, el('span', { class: 'arrow', text: ' → ' }), e.target),
        certBadge(e.certainty.class),
      ),
      el('p', { class: 'cert-text', text: certaintyText(e) }),
      el(
        'div',
        { class: 'grid' },
        metric('connections', fmtCount(e.connections)),
        metric('bytes →', fmtBytes(e.bytes_client_to_server)),
        metric('bytes ←', fmtBytes(e.bytes_server_to_client)),
        metric('RTT p50', fmtUs(e.rtt.p50_us)),
        metric('RTT p90', fmtUs(e.rtt.p90_us)),
        metric('RTT p99', fmtUs(e.rtt.p99_us)),
        metric('retransmits', fmtCount(e.retransmits), e.retransmits ? 'warn' : ''),
        metric('failed connects', fmtCount(e.failed_connects), e.failed_connects ? 'bad' : ''),
        metric('disagreements', fmtCount(e.disagreements), e.disagreements ? 'bad' : ''),
      ),
      el(
        'p',
        { class: 'muted small' },
        'ports ' + (ports || '–') + (e.ports_total > e.ports.length ? ' … ' + e.ports_total + ' in all' : '') +
          ' · ' + e.protocols.join(', ') +
          (e.rtt.samples != null ? ' · RTT from ' + fmtCount(e.rtt.samples) + ' samples' : e.rtt.method === 'rows' ? ' · RTT approximated from rows' : ''),
        e.events.new_dependency ? el('span', { class: 'badge kind-new_dependency', text: 'new in range' }) : null,
        e.events.policy_violation ? el('span', { class: 'badge kind-policy_violation', text: 'policy violation' }) : null,
      ),
      el('h3', { text: 'Per step' }),
      el('div', { id: 'chart' }),
    );
  }

  function drawSeries(s) {
    const box = $('chart');
    if (!box) return;
    if (state.chart) state.chart.destroy();
    const xs = s.points.map((p) => p.t_ms / 1000);
    const conns = s.points.map((p) => p.connections);
    const bytes = s.points.map((p) => p.bytes);
    const width = Math.max(240, $('detail').clientWidth - 30);
    state.chart = new uPlot(
      {
        width,
        height: 170,
        cursor: { drag: { x: false, y: false } },
        legend: { live: true },
        scales: { x: { time: true }, c: { auto: true }, b: { auto: true } },
        axes: [
          {
            stroke: '#8b98a9',
            grid: { stroke: '#1f2937' },
            ticks: { stroke: '#1f2937' },
            space: 70,
            values: (u, splits) => splits.map((t) => new Date(t * 1000).toISOString().slice(11, 16)),
          },
          { scale: 'c', stroke: '#60a5fa', grid: { stroke: '#1f2937' }, size: 44, values: (u, v) => v.map(fmtCount) },
          { scale: 'b', side: 1, stroke: '#34d399', grid: { show: false }, size: 56, values: (u, v) => v.map(fmtBytes) },
        ],
        series: [
          {},
          { label: 'connections / ' + s.step_s + 's', scale: 'c', stroke: '#60a5fa', width: 1.5, fill: 'rgba(96,165,250,0.12)', value: (u, v) => fmtCount(v) },
          { label: 'bytes', scale: 'b', stroke: '#34d399', width: 1.5, value: (u, v) => fmtBytes(v) },
        ],
      },
      [xs, conns, bytes],
      box,
    );
  }

  // ---------- events ----------

  function drawEvents(ev) {
    const c = ev.counts;
    $('event-counts').replaceChildren(
      el('span', { class: 'badge kind-new_dependency', title: 'new dependencies', text: c.new_dependency + ' new' }),
      el('span', { class: 'badge kind-policy_violation', title: 'policy violations', text: c.policy_violation + ' policy' }),
      el('span', { class: 'badge kind-disagreement', title: 'verification disagreements', text: c.disagreement + ' disagree' }),
    );
    const list = $('event-list');
    list.replaceChildren();
    if (!ev.events.length) {
      const note = state.meta.notes.length ? state.meta.notes.join(' ') : 'No events in this range.';
      list.append(el('li', { class: 'muted' }, note));
      return;
    }
    for (const e of ev.events) {
      list.append(
        el(
          'li',
          { class: 'event', onclick: () => selectEventEdge(e) },
          el('div', { class: 'ev-head' }, el('span', { class: 'badge kind-' + e.kind, text: KINDS[e.kind] || e.kind }), el('time', { datetime: e.at, text: fmtTime(e.at_ms) })),
          el('div', { class: 'ev-edge' }, e.client, el('span', { class: 'arrow', text: ' → ' }), e.server + ':' + e.server_port),
          e.detail ? el('div', { class: 'ev-detail', text: e.detail }) : null,
        ),
      );
    }
    if (ev.truncated) list.append(el('li', { class: 'muted', text: 'newest ' + ev.events.length + ' shown' }));
  }

  // Whether a raw name is drawn in node `id` (level groupings; named ones are matched exactly).
  function inNode(name, id) {
    if (id === name || id === 'fleet') return !name.includes(':') || id === name;
    if (id === 'external:*') return name.startsWith('external:');
    if (id === 'unattributed:*') return name.startsWith('unattributed:');
    return name.startsWith(id + '/');
  }

  function selectEventEdge(e) {
    for (const edge of state.edges.values()) {
      if (inNode(e.client, edge.source) && inNode(e.server, edge.target)) {
        const ele = cy.getElementById(edge.id);
        cy.animate({ center: { eles: ele }, duration: 250 });
        return select({ edge: edge.id });
      }
    }
    showError('the edge of this event is not drawn in the current view (filters, limit or min bytes leave it out)');
  }

  // ---------- start ----------

  async function start() {
    readUrl();
    bindControls();
    initMap();
    try {
      state.meta = await api('meta');
    } catch (e) {
      showError('cannot read the map settings: ' + e.message);
      document.body.dataset.state = 'error';
      return;
    }
    if (state.preset !== 'custom') applyPreset();
    fillControls();
    await refresh();
  }

  window.addEventListener('resize', () => {
    if (cy) cy.resize();
  });
  start();
})();
