/* Code Interpreter web console: one page, no framework. Talks to the HTTP API of README.md with fetch:
 * POST /execute/stream (Server-Sent Events read from the response body), /interrupt, /release, GET /status,
 * each with the X-Auth-Token header. Kernel output reaches the DOM only as text, through ansi_up (which escapes
 * HTML), as data: URLs of images, or inside a sandboxed iframe (no scripts, no same origin). */
(function () {
  'use strict';

  const STORAGE_PREFIX = 'code-interpreter.';
  const STATUS_EVERY_MS = 5000;
  /* Rendered before kernel HTML in its iframe: no network, no scripts, readable tables (DataFrames). */
  const FRAME_HEAD = '<!doctype html><meta charset="utf-8">' +
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; style-src \'unsafe-inline\'">' +
    '<style>body{margin:6px 8px;font:13px/1.4 system-ui,sans-serif;color:#1d2430}' +
    'table,th,td{border:0}table{border-collapse:collapse;font-size:12.5px}th,td{padding:4px 10px;text-align:right;' +
    'border-bottom:1px solid #e5e9ef}thead th{border-bottom:1px solid #9aa5b5}' +
    'tbody tr:nth-child(odd){background:#f7f9fb}tbody tr:hover{background:#eef4ff}</style>';

  const $ = (id) => document.getElementById(id);
  const ui = {
    server: $('server'), token: $('token'), session: $('session'), newSession: $('new-session'),
    release: $('release'), notice: $('notice'), log: $('log'), main: document.querySelector('main'),
    run: $('run'), stop: $('stop'), pool: $('pool'), poolText: $('pool-text'),
  };

  /* ---- settings kept in the browser's storage ---- */

  function load(name, fallback) {
    try { return localStorage.getItem(STORAGE_PREFIX + name) || fallback; } catch (e) { return fallback; }
  }
  function save(name, value) {
    try { localStorage.setItem(STORAGE_PREFIX + name, value); } catch (e) { /* storage disabled: memory only */ }
  }

  /* A fresh user_uuid; crypto.randomUUID needs a secure context, getRandomValues does not. */
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const defaultServer = /^https?:$/.test(location.protocol) ? location.origin : 'http://127.0.0.1:3874';
  ui.server.value = load('server', defaultServer);
  ui.token.value = load('token', '');
  let session = load('session', '') || newId();
  let running = null; /* the cell being run, if any */

  function showSession() {
    save('session', session);
    ui.session.textContent = session;
  }

  /* ---- talking to the server ---- */

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function baseUrl() { return ui.server.value.trim().replace(/\/+$/, ''); }

  /* fetch with the token; throws ApiError (status 0: unreachable) unless the answer is 2xx. */
  async function call(path, body) {
    const init = { method: body === undefined ? 'GET' : 'POST', headers: { 'X-Auth-Token': ui.token.value } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(baseUrl() + path, init);
    } catch (err) {
      throw new ApiError(`Cannot reach ${baseUrl()}: is the server running and the address right?`, 0);
    }
    if (!response.ok) throw new ApiError(await describeFailure(response), response.status);
    ui.token.classList.remove('invalid');
    return response;
  }

  async function describeFailure(response) {
    if (response.status === 401) return 'The server refused the token (401): check the Token field.';
    let detail = '';
    try {
      const body = await response.json();
      detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    } catch (e) { /* not JSON */ }
    return `${response.status} ${response.statusText}${detail ? `: ${detail}` : ''}`;
  }

  /* Server-Sent Events from a fetch response body: yields {name, data}. */
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(0), { stream: !done });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
      if (done) return;
    }
  }

  function parseEvent(block) {
    let name = 'message';
    const data = [];
    for (const raw of block.split('\n')) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (!line || line.startsWith(':')) continue; /* comments are keep-alives */
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    return data.length ? { name, data: data.join('\n') } : null;
  }

  /* ---- notices and pool status ---- */

  function showNotice(message, kind, source) {
    ui.notice.textContent = message;
    ui.notice.className = `notice ${kind || ''}`;
    ui.notice.dataset.source = source || 'action';
    ui.notice.hidden = false;
  }

  function clearNotice(source) {
    if (!source || ui.notice.dataset.source === source) ui.notice.hidden = true;
  }

  function reportError(err, source) {
    if (err.status === 401) ui.token.classList.add('invalid');
    showNotice(err.message, 'error', source);
  }

  async function refreshStatus() {
    try {
      const status = await (await call('/status')).json();
      ui.pool.dataset.state = status.is_initializing ? 'initializing' : 'ok';
      ui.pool.dataset.total = status.total_workers;
      ui.pool.dataset.busy = status.busy_workers;
      ui.pool.dataset.idle = status.idle_workers_in_pool;
      ui.poolText.textContent = `${status.total_workers} sandboxes · ${status.busy_workers} in use · ` +
        `${status.idle_workers_in_pool} warm${status.is_initializing ? ' · starting up' : ''}`;
      clearNotice('status');
    } catch (err) {
      ui.pool.dataset.state = 'error';
      delete ui.pool.dataset.busy;
      ui.poolText.textContent = err.status === 401 ? 'Token refused' : err.status === 0 ? 'Server unreachable'
        : `Status failed (${err.status})`;
      reportError(err, 'status');
    }
  }

  /* ---- the log of cells ---- */

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function nearBottom() { return ui.main.scrollHeight - ui.main.scrollTop - ui.main.clientHeight < 120; }
  function scrollDown() { ui.main.scrollTop = ui.main.scrollHeight; }

  function note(text) {
    const empty = $('empty');
    if (empty) empty.remove();
    ui.log.append(el('div', 'note', text));
    scrollDown();
  }

  /* Text with ANSI colours as HTML: ansi_up escapes <, >, & and quotes first. */
  function ansiPre(className, text) {
    const pre = el('pre', className);
    const converter = new AnsiUp();
    converter.escape_html = true;
    pre.innerHTML = converter.ansi_to_html(text);
    return pre;
  }

  function newCell(code) {
    const empty = $('empty');
    if (empty) empty.remove();
    const node = el('section', 'cell');
    node.dataset.state = 'running';
    const head = el('div', 'cell-head');
    const count = el('span', 'count', 'In [*]');
    const badge = el('span', 'badge running', 'running');
    const meta = el('span', 'meta');
    const reuse = el('button', 'reuse', 'Edit');
    reuse.type = 'button';
    reuse.title = 'Put this code back into the editor';
    reuse.addEventListener('click', () => {
      editor.setValue(code);
      editor.focus();
      editor.setCursor(editor.lineCount(), 0);
    });
    head.append(count, badge, meta, reuse);
    const source = el('pre', 'cell-code cm-s-default');
    CodeMirror.runMode(code, 'python', source);
    const outputs = el('div', 'outputs');
    node.append(head, source, outputs);
    ui.log.append(node);
    scrollDown();
    return { node, count, badge, meta, outputs, stream: null, started: performance.now() };
  }

  function addOutput(cell, output) {
    if (output.type === 'stream') {
      addStream(cell, output.name === 'stderr' ? 'stderr' : 'stdout', output.text || '');
      return;
    }
    cell.stream = null;
    if (output.type === 'error') {
      cell.outputs.append(ansiPre('out error', (output.traceback || []).join('\n') ||
        `${output.ename}: ${output.evalue}`));
    } else if (output.type === 'display_data' || output.type === 'execute_result') {
      cell.outputs.append(renderBundle(output));
    } else {
      cell.outputs.append(el('pre', 'out', JSON.stringify(output)));
    }
  }

  /* Consecutive chunks of one stream form one block, as in a notebook. */
  function addStream(cell, name, text) {
    if (!cell.stream || cell.stream.name !== name) {
      cell.stream = { name, text: '', pre: el('pre', `out stream ${name}`) };
      cell.outputs.append(cell.stream.pre);
    }
    cell.stream.text += text;
    cell.stream.pre.innerHTML = new AnsiUp().ansi_to_html(cell.stream.text);
  }

  /* The richest safe form of a MIME bundle. */
  function renderBundle(output) {
    const data = output.data || {};
    for (const type of ['image/png', 'image/jpeg', 'image/gif']) {
      if (typeof data[type] === 'string') return image(`data:${type};base64,${data[type].replace(/\s/g, '')}`);
    }
    if (typeof data['image/svg+xml'] === 'string') {
      /* An <img> never runs an SVG's scripts. */
      return image(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(data['image/svg+xml'])}`);
    }
    if (typeof data['text/html'] === 'string') return htmlFrame(data['text/html']);
    const text = typeof data['text/plain'] === 'string' ? data['text/plain'] : JSON.stringify(data);
    const pre = ansiPre('out result', text);
    if (output.type === 'execute_result') {
      pre.prepend(el('span', 'prompt', `Out[${output.execution_count ?? ' '}]: `));
    }
    return pre;
  }

  function image(url) {
    const box = el('div', 'out-image');
    const img = document.createElement('img');
    img.alt = 'image output';
    img.src = url;
    box.append(img);
    return box;
  }

  /* HTML from the kernel, in an iframe without scripts and without this page's origin. */
  function htmlFrame(html) {
    const box = el('div', 'out-html');
    const frame = document.createElement('iframe');
    frame.setAttribute('sandbox', '');
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.title = 'HTML output';
    frame.srcdoc = FRAME_HEAD + html;
    const rows = (html.match(/<tr[\s>]/gi) || []).length;
    const blocks = (html.match(/<(br|p|li|h\d)[\s/>]/gi) || []).length;
    frame.style.height = `${Math.min(460, Math.max(40, 16 + rows * 26 + blocks * 24))}px`;
    box.append(frame);
    return box;
  }

  function formatMs(ms) {
    if (typeof ms !== 'number') return '';
    return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  /* The final `result` event: exactly /execute's body. */
  function finish(cell, result) {
    const failed = Boolean(result.reason) || !('result_text' in result);
    cell.node.dataset.state = failed ? 'failed' : 'ok';
    cell.count.textContent = `In [${result.execution_count ?? ' '}]`;
    cell.badge.className = `badge ${failed ? 'failed' : 'ok'}`;
    cell.badge.textContent = failed ? (result.reason || 'failed') : 'ok';
    cell.meta.textContent = formatMs(result.duration_ms);
    if (failed) {
      const box = el('div', 'failure');
      if (result.reason) box.append('reason: ', el('code', 'reason', result.reason), ' · ');
      box.append(result.detail || 'The execution failed.');
      if (result.state_lost) box.append(' The session\'s state was lost: the next cell starts a fresh interpreter.');
      cell.node.append(box);
    }
    if (result.output_truncated) {
      cell.node.append(el('div', 'failure', 'Output truncated at the server\'s limit: later outputs were dropped.'));
    }
  }

  function failCell(cell, message) {
    cell.node.dataset.state = 'failed';
    cell.count.textContent = 'In [ ]';
    cell.badge.className = 'badge failed';
    cell.badge.textContent = 'not run';
    cell.meta.textContent = formatMs(performance.now() - cell.started);
    cell.node.append(el('div', 'failure', message));
  }

  /* ---- actions ---- */

  function setRunning(cell) {
    running = cell;
    ui.run.disabled = Boolean(cell);
    ui.stop.disabled = !cell;
  }

  async function run() {
    if (running) return;
    const code = editor.getValue();
    if (!code.trim()) return;
    const cell = newCell(code);
    editor.setValue('');
    setRunning(cell);
    try {
      const response = await call('/execute/stream', { user_uuid: session, code });
      let finished = false;
      for await (const event of sseEvents(response)) {
        const follow = nearBottom();
        if (event.name === 'output') addOutput(cell, JSON.parse(event.data));
        if (event.name === 'result') {
          finish(cell, JSON.parse(event.data));
          finished = true;
        }
        if (follow) scrollDown();
      }
      if (!finished) failCell(cell, 'The connection closed before the result arrived.');
      else clearNotice('action');
    } catch (err) {
      failCell(cell, err.message);
      reportError(err);
    } finally {
      setRunning(null);
      refreshStatus();
      editor.focus();
    }
  }

  async function stop() {
    if (!running) return;
    ui.stop.disabled = true;
    try {
      const answer = await (await call('/interrupt', { user_uuid: session })).json();
      if (!answer.interrupted) showNotice('Nothing was running yet to interrupt; try again.', 'info');
    } catch (err) {
      reportError(err);
    }
    ui.stop.disabled = !running;
  }

  async function release() {
    try {
      await call('/release', { user_uuid: session });
      note(`Session ${session} released: its sandbox is gone; the next cell starts a fresh one.`);
      clearNotice('action');
    } catch (err) {
      reportError(err);
    }
    refreshStatus();
  }

  function newSession() {
    session = newId();
    showSession();
    note(`New session ${session}`);
    editor.focus();
  }

  /* ---- wiring ---- */

  const editor = CodeMirror.fromTextArea($('code'), {
    mode: 'python',
    indentUnit: 4,
    lineNumbers: true,
    viewportMargin: Infinity,
    extraKeys: {
      'Shift-Enter': () => run(),
      'Ctrl-Enter': () => run(),
      'Cmd-Enter': () => run(),
      Tab: (cm) => (cm.somethingSelected() ? cm.indentSelection('add') : cm.replaceSelection('    ')),
    },
  });

  ui.token.addEventListener('input', () => save('token', ui.token.value));
  ui.server.addEventListener('input', () => save('server', ui.server.value.trim()));
  ui.token.addEventListener('change', refreshStatus);
  ui.server.addEventListener('change', refreshStatus);
  ui.run.addEventListener('click', run);
  ui.stop.addEventListener('click', stop);
  ui.release.addEventListener('click', release);
  ui.newSession.addEventListener('click', newSession);

  showSession();
  refreshStatus();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  editor.focus();
})();
