// The dashboard's one script. It fills the server-rendered skeletons from
// the JSON API and keeps them live over server-sent events. All text from
// tasks and schedules goes in with textContent (never innerHTML), so a
// task's name, inputs or output, or a schedule's note, can never become
// markup. The token stays in its HttpOnly cookie: requests carry it with
// credentials: 'same-origin'.
'use strict';

const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// fetch() of the API as JSON; a 401 (the login expired) goes to the login form.
async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: 'same-origin' }, options || {}));
  if (response.status === 401) {
    window.location.assign('/ui/login');
    throw new Error('not logged in');
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.status + ' ' + response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return { body, headers: response.headers };
}

// The header's dot: on (live), off (disconnected) or '' (nothing to follow).
function setLive(on, text) {
  const live = $('live');
  if (!live) return;
  live.textContent = text || (on ? 'live' : 'offline');
  live.className = 'live ' + (text ? '' : on ? 'on' : 'off');
}

// An EventSource whose named events go to handlers; shows live/offline.
function follow(url, handlers) {
  const source = new EventSource(url, { withCredentials: true });
  source.onopen = () => setLive(true);
  source.onerror = () => setLive(false);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      setLive(true);
      let data = null;
      try { data = JSON.parse(event.data); } catch (_) { return; }
      handler(data);
    });
  }
  return source;
}

const fmt = new Intl.NumberFormat('en-US');
const num = (n) => fmt.format(n || 0);

function duration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return '–';
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + ' s';
  if (seconds < 3600) return Math.floor(seconds / 60) + ' min ' + (seconds % 60) + ' s';
  return Math.floor(seconds / 3600) + ' h ' + Math.floor((seconds % 3600) / 60) + ' min';
}

function ago(iso) {
  if (!iso) return '–';
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  return seconds < 1 ? 'just now' : duration(seconds) + ' ago';
}

const ENDED = ['COMPLETED', 'FAILED', 'CANCELLED', 'SUBMISSION_FAILED', 'SKIPPED'];

// Items done, rate (done per second since the start) and the ETA.
function pace(task) {
  const done = (task.itemsSucceeded || 0) + (task.itemsFailed || 0);
  const total = task.itemsTotal || 0;
  const start = task.startedAt ? Date.parse(task.startedAt) : NaN;
  const end = task.finishedAt ? Date.parse(task.finishedAt) : Date.now();
  const seconds = (end - start) / 1000;
  const rate = seconds > 0 && done > 0 ? done / seconds : 0;
  let eta = '';
  if (ENDED.includes(task.status)) eta = 'done';
  else if (task.status === 'REDUCING') eta = 'reducing';
  else if (rate > 0) eta = duration((total - done) / rate);
  return { done, total, rate, eta };
}

const badge = (status) => el('span', { class: 'badge ' + String(status).toLowerCase(), text: status });

function progress(done, total, cls) {
  return el('progress', { class: cls, max: Math.max(total, 1), value: done });
}

function taskRow(task) {
  const p = pace(task);
  return el('tr', { 'data-id': task.id },
    el('td', {}, el('a', { href: '/ui/tasks/' + encodeURIComponent(task.id), class: 'task-name', text: task.name || task.id.slice(0, 8) }),
      el('div', { class: 'muted mono', text: task.id.slice(0, 8) })),
    el('td', {}, badge(task.status)),
    el('td', { class: 'bar' }, progress(p.done, p.total, 'task-progress'),
      el('div', { class: 'muted', text: num(p.done) + ' / ' + num(p.total) })),
    el('td', { class: 'num' }, el('span', { class: 'ok', text: num(task.itemsSucceeded) }), ' / ',
      el('span', { class: 'bad', text: num(task.itemsFailed) })),
    el('td', { class: 'num', text: p.rate ? p.rate.toFixed(1) + '/s' : '–' }),
    el('td', { class: 'num', text: p.eta || '–' }),
    el('td', { class: 'muted', text: ago(task.createdAt) }));
}

function taskTable(tasks) {
  if (!tasks.length) return el('p', { class: 'muted empty', text: 'No tasks.' });
  return el('table', { class: 'tasks' },
    el('thead', {}, el('tr', {}, ['Task', 'Status', 'Progress', 'OK / failed', 'Rate', 'ETA', 'Created']
      .map((h) => el('th', { text: h })))),
    el('tbody', {}, tasks.map(taskRow)));
}

// --- Overview -------------------------------------------------------------

const STATUSES = ['WAITING', 'QUEUED', 'SUBMITTED', 'INPROGRESS', 'REDUCING', 'RETRYING', 'COMPLETED', 'FAILED', 'CANCELLED', 'SUBMISSION_FAILED', 'SKIPPED'];

function showOverview(o) {
  const rate = o.itemsPerSecond || 0;
  $('rate').textContent = rate.toFixed(rate < 10 ? 2 : 1);
  $('queue').textContent = num(o.shardsWaiting);
  const slots = o.slots || { total: 0, busy: 0 };
  $('slots').textContent = num(slots.busy) + ' / ' + num(slots.total);
  $('slots-bar').max = Math.max(slots.total, 1);
  $('slots-bar').value = slots.busy;
  $('workers').textContent = num(o.workers);
  $('finished').textContent = num(o.itemsFinished) + ' items finished';
  const statuses = STATUSES.concat(Object.keys(o.tasks || {}).filter((s) => !STATUSES.includes(s)));
  $('by-status').replaceChildren(...statuses.map((s) =>
    el('tr', {}, el('td', {}, badge(s)), el('td', { class: 'num', text: num((o.tasks || {})[s]) }))));
}

function overviewPage() {
  follow('/ui/events?page=overview', {
    overview: showOverview,
    tasks: (tasks) => $('tasks').replaceChildren(taskTable(tasks)),
  });
}

// --- Tasks ----------------------------------------------------------------

function tasksPage() {
  let source = null;
  let cursor = null;
  const query = () => {
    const params = new URLSearchParams();
    if ($('status').value) params.set('status', $('status').value);
    if ($('name').value.trim()) params.set('name', $('name').value.trim());
    return params;
  };
  const connect = () => {
    if (source) source.close();
    const params = query();
    params.set('page', 'tasks');
    source = follow('/ui/events?' + params, {
      tasks: (tasks) => {
        $('tasks').replaceChildren(taskTable(tasks));
        cursor = null;
        if (tasks.length >= 50) loadCursor();
      },
    });
  };
  // The cursor after the live first page, for "Older tasks".
  const loadCursor = async () => {
    const params = query();
    params.set('limit', '50');
    try {
      const r = await api('/v1/tasks?' + params);
      cursor = r.headers.get('X-Next-Cursor');
      $('more').hidden = !cursor;
    } catch (_) { /* the button stays hidden */ }
  };
  $('more').addEventListener('click', async () => {
    if (!cursor) return;
    // Older pages are not live: stop the feed so it does not redraw them away.
    if (source) { source.close(); source = null; setLive(false); }
    const params = query();
    params.set('limit', '50');
    params.set('cursor', cursor);
    const r = await api('/v1/tasks?' + params);
    const body = $('tasks').querySelector('tbody');
    if (body) body.append(...r.body.map(taskRow));
    cursor = r.headers.get('X-Next-Cursor');
    $('more').hidden = !cursor;
  });
  let timer = null;
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); connect(); });
  $('status').addEventListener('change', connect);
  $('name').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(connect, 250); });
  connect();
}

// --- A task ---------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The throughput chart: a bar per 10-second bucket (items finished in it),
// with the axes labelled. Buckets without items are absent: no bar.
const BUCKET_MS = 10000;
function chart(buckets) {
  if (!buckets || !buckets.length) return el('p', { class: 'muted', text: 'No items have finished yet.' });
  const W = 640, H = 220, L = 52, R = 12, T = 12, B = 44;
  const max = Math.max(1, ...buckets.map((b) => b.items));
  const times = buckets.map((b) => Date.parse(b.at));
  const t0 = times[0], t1 = times[times.length - 1] + BUCKET_MS;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': 'throughput' });
  for (const v of [0, max / 2, max]) {
    root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    root.append(svg('text', { x: L - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const width = Math.max(1, x(t0 + BUCKET_MS) - x(t0));
  buckets.forEach((b, i) => {
    const bar = svg('rect', { x: x(times[i]) + width * 0.1, y: y(b.items), width: width * 0.8,
      height: Math.max(0, y(0) - y(b.items)), class: 'bar' });
    bar.append(svg('title', {}, `${new Date(times[i]).toLocaleTimeString([], { hour12: false })}: ${b.items} items`));
    root.append(bar);
  });
  const time = (t) => new Date(t).toLocaleTimeString([], { hour12: false });
  root.append(svg('text', { x: L, y: H - B + 16, class: 'tick', 'text-anchor': 'start' }, time(t0)));
  root.append(svg('text', { x: W - R, y: H - B + 16, class: 'tick', 'text-anchor': 'end' }, time(t1)));
  root.append(svg('text', { x: (L + W - R) / 2, y: H - 6, class: 'axis', 'text-anchor': 'middle' }, 'time'));
  root.append(svg('text', { x: 14, y: (T + H - B) / 2, class: 'axis', 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${(T + H - B) / 2})` }, 'items / 10 s'));
  return root;
}

// --- A task's reduce ------------------------------------------------------

function millis(ms) {
  if (!isFinite(ms) || ms < 0) return '–';
  return ms < 1000 ? Math.round(ms) + ' ms' : ms < 60000 ? (ms / 1000).toFixed(1) + ' s' : duration(ms / 1000);
}

// How the reduce's run ended, in a few words.
function reduceExit(r) {
  if (r.exitCode !== null && r.exitCode !== undefined) return 'exit code ' + r.exitCode;
  if (r.timedOut) return 'timed out';
  if (r.signal) return 'killed by signal ' + r.signal;
  return r.error ? 'did not run' : '–';
}

// One of the reduce's outputs: the same <pre> as a failed item's, and
// under it whether it was cut or is not UTF-8.
function reduceOutput(r, stream) {
  const notes = [];
  if (r[stream + 'Truncated']) notes.push('truncated: it wrote more than the worker keeps');
  if (r[stream + 'Base64']) notes.push(`not UTF-8 (� marks the bytes): reduce.result.${stream}Base64 has them exactly`);
  return el('td', {}, el('pre', { id: 'reduce-' + stream, class: stream, text: r[stream] || '' }),
    notes.map((n) => el('p', { class: 'muted note ' + stream + '-note', text: n })));
}

// The Reduce section's content for task `t` (which has a reduce): the
// step as submitted, then where it is, or what its run did.
function reduceSection(t) {
  const reduce = t.reduce;
  const r = reduce.result;
  const fact = (label, ...value) => [el('dt', { text: label }), el('dd', {}, ...value)];
  const facts = [
    fact('Script', el('pre', { id: 'reduce-script', class: 'script', text: reduce.templateFunction })),
    fact('Interpreter', el('code', { text: reduce.interpreter })),
    fact('Runs', el('span', { id: 'reduce-when', 'data-when': reduce.when, text: reduce.when === 'always'
      ? 'always, once every item has its result' : 'once every item has succeeded (when: success)' })),
    fact('Time limit', el('span', { id: 'reduce-timeout', text: duration(reduce.timeoutSecs) })),
  ];
  if (!r) {
    let note;
    if (t.status === 'REDUCING') {
      note = t.waitingReason ? 'Every item has its result; the reduce waits for a worker: ' + t.waitingReason + '.'
        : 'Every item has its result: the reduce runs now (or waits for a worker to take it).';
    } else if (ENDED.includes(t.status)) {
      note = reduce.when === 'success' && t.itemsFailed ? 'The reduce did not run: an item failed, and it runs only on success.'
        : 'The reduce did not run: the task ended ' + t.status + ' before it.';
    } else {
      note = 'The reduce runs once every item has its result.';
    }
    facts.push(fact('Result', el('span', { id: 'reduce-state', class: t.status === 'REDUCING' ? 'running' : 'muted', text: note })));
    return [el('dl', { class: 'facts' }, ...facts)];
  }
  const outcome = r.succeeded ? 'succeeded' : 'failed';
  facts.push(
    fact('Result', el('span', { id: 'reduce-outcome', class: 'badge ' + outcome, text: outcome }), ' ',
      el('span', { id: 'reduce-exit', text: reduceExit(r) })),
    fact('Attempt', el('span', { id: 'reduce-attempt', text: r.attempt })),
    fact('Worker', el('span', { id: 'reduce-worker', class: 'mono', text: r.worker || '–' })),
    fact('Duration', el('span', { id: 'reduce-duration', text: millis(r.durationMs) })));
  if (r.error) facts.push(fact('Error', el('span', { id: 'reduce-error', class: 'error', text: r.error })));
  return [el('dl', { class: 'facts' }, ...facts),
    el('table', { class: 'reduce-output' },
      el('thead', {}, el('tr', {}, el('th', { text: 'stdout' }), el('th', { text: 'stderr' }))),
      el('tbody', {}, el('tr', {}, reduceOutput(r, 'stdout'), reduceOutput(r, 'stderr'))))];
}

function taskPage() {
  const id = document.body.dataset.task;
  const base = '/v1/tasks/' + encodeURIComponent(id);
  let task = null;
  let reduceShown = '';
  let running = 0;
  let failedOffset = 0;
  const PAGE = 20;

  const counts = () => {
    if (!task) return;
    const p = pace(task);
    $('progress').max = Math.max(p.total, 1);
    $('progress').value = p.done;
    $('n-ok').textContent = num(task.itemsSucceeded);
    $('n-failed').textContent = num(task.itemsFailed);
    // The activity counts running items by the workers' last heartbeats,
    // which can lag the task's end.
    const now = ENDED.includes(task.status) ? 0 : running;
    $('n-running').textContent = num(now);
    $('n-waiting').textContent = num(Math.max(0, p.total - p.done - now));
    $('n-rate').textContent = p.rate ? p.rate.toFixed(1) + '/s' : '–';
    const took = (Date.parse(task.finishedAt) - Date.parse(task.startedAt)) / 1000;
    $('n-eta').textContent = ENDED.includes(task.status) ? (task.startedAt ? 'ran ' + duration(took) : '')
      : task.status === 'REDUCING' ? 'items done, reducing' : p.eta ? 'ETA ' + p.eta : '';
  };
  const showTask = (t) => {
    task = t;
    document.title = (t.name || t.id) + ' · dts';
    $('task-name').textContent = t.name || t.id;
    $('task-status').replaceChildren(badge(t.status));
    $('task-meta').textContent = t.id + ' · created ' + ago(t.createdAt) +
      (t.error ? ' · ' + t.error : '') + (t.waitingReason ? ' · ' + t.waitingReason : '');
    const ended = ENDED.includes(t.status);
    $('cancel').disabled = ended;
    $('retry').disabled = !ended || t.status === 'COMPLETED' && !t.itemsFailed;
    // Redrawn only when it changed, so a reader's scroll in its output stays.
    const shown = t.reduce ? JSON.stringify([t.reduce, t.status, t.waitingReason || '', t.itemsFailed]) : '';
    if (shown !== reduceShown) {
      reduceShown = shown;
      $('reduce').hidden = !t.reduce;
      $('reduce-body').replaceChildren(...(t.reduce ? reduceSection(t) : []));
    }
    if (ended) {
      running = 0;
      if ($('tail').hidden) $('tail-note').textContent = 'The task has ended: its output is in its results.';
    }
    counts();
  };
  const activity = async () => {
    try {
      const a = (await api(base + '/activity')).body;
      running = a.running || 0;
      counts();
      $('chart').replaceChildren(chart(a.throughput));
      const rows = (a.perWorker || []).map((w) => el('tr', {}, el('td', { class: 'mono', text: w.worker }),
        el('td', { class: 'num ok', text: num(w.succeeded) }), el('td', { class: 'num bad', text: num(w.failed) })));
      $('per-worker').replaceChildren(rows.length ? el('table', {},
        el('thead', {}, el('tr', {}, el('th', { text: 'Worker' }), el('th', { text: 'OK' }), el('th', { text: 'Failed' }))),
        el('tbody', {}, rows)) : el('p', { class: 'muted', text: 'No items have run yet.' }));
    } catch (e) {
      $('chart').replaceChildren(el('p', { class: 'muted', text: 'Activity is not available: ' + e.message }));
    }
  };
  const failed = async () => {
    try {
      const page = (await api(`${base}/results?status=failed&offset=${failedOffset}&limit=${PAGE}`)).body;
      const items = page.items || [];
      $('failed').replaceChildren(items.length ? el('table', { class: 'failed' },
        el('thead', {}, el('tr', {}, ['#', 'Input', 'Exit', 'stderr', 'stdout'].map((h) => el('th', { text: h })))),
        el('tbody', {}, items.map((r) => el('tr', { class: 'failed-item' },
          el('td', { class: 'num', text: r.index }),
          el('td', {}, el('code', { text: r.input })),
          el('td', { class: 'num exit', text: r.exitCode !== null && r.exitCode !== undefined ? r.exitCode
            : r.timedOut ? 'timeout' : r.signal ? 'signal ' + r.signal : (r.error || '–') }),
          el('td', {}, el('pre', { class: 'stderr', text: r.stderr })),
          el('td', {}, el('pre', { class: 'stdout', text: r.stdout }))))))
        : el('p', { class: 'muted', text: 'No failed items.' }));
      $('failed-page').textContent = page.total ? `${failedOffset + 1}–${failedOffset + items.length} of ${num(page.total)}` : '';
      $('failed-prev').hidden = failedOffset === 0;
      $('failed-next').hidden = failedOffset + items.length >= page.total;
    } catch (e) {
      $('failed').replaceChildren(el('p', { class: 'error', text: e.message }));
    }
  };
  $('failed-prev').addEventListener('click', () => { failedOffset = Math.max(0, failedOffset - PAGE); failed(); });
  $('failed-next').addEventListener('click', () => { failedOffset += PAGE; failed(); });

  // Activity and failed items on the task's changes, at most every 2 s.
  let last = 0, pending = null;
  const details = () => {
    const wait = last + 2000 - Date.now();
    if (wait > 0) { if (!pending) pending = setTimeout(() => { pending = null; details(); }, wait); return; }
    last = Date.now();
    activity();
    failed();
  };
  const action = (name) => async () => {
    $('action-error').hidden = true;
    try {
      const r = await api(`${base}/${name}`, { method: 'POST' });
      showTask(r.body.task || r.body);
      if (name === 'retry') watch();
      details();
    } catch (e) {
      $('action-error').textContent = e.message;
      $('action-error').hidden = false;
    }
  };
  $('cancel').addEventListener('click', action('cancel'));
  $('retry').addEventListener('click', action('retry'));

  let events = null, tail = null;
  const watch = () => {
    if (events) events.close();
    events = follow(base + '/events', {
      task: (t) => {
        showTask(t);
        details();
        if (ENDED.includes(t.status)) { events.close(); setLive(false, 'ended'); if (tail) { tail.close(); tail = null; } }
        else if (!tail) tailLogs();
      },
    });
  };
  const tailLogs = () => {
    const lines = [];
    tail = new EventSource(base + '/log?follow=true', { withCredentials: true });
    $('tail-note').textContent = 'Following the output of running items.';
    tail.addEventListener('log', (event) => {
      let d;
      try { d = JSON.parse(event.data); } catch (_) { return; }
      for (const text of String(d.text).split('\n')) {
        if (text === '') continue;
        lines.push(el('span', { class: d.stream === 'stderr' ? 'stderr' : 'stdout' }, el('b', { text: '[' + d.index + '] ' }), text, '\n'));
      }
      while (lines.length > 200) lines.shift();
      $('tail').hidden = false;
      $('tail').replaceChildren(...lines);
    });
    tail.addEventListener('end', () => {});
    tail.onerror = () => {
      // Not offered by this server, or the task ended: stop asking.
      if (tail) tail.close();
      $('tail-note').textContent = lines.length ? 'The live output ended.' : 'No live output is available.';
    };
  };
  api(base + '?summary=true').then((r) => showTask(r.body)).catch((e) => {
    $('action-error').textContent = e.message;
    $('action-error').hidden = false;
  });
  details();
  watch();
  // Items start and end between the task's own changes (a long item
  // changes nothing): refresh the activity while the task runs.
  const refresh = setInterval(() => {
    if (task && ENDED.includes(task.status)) clearInterval(refresh);
    else details();
  }, 2000);
}

// --- Schedules ------------------------------------------------------------

// A time on the browser's clock: the time of day for today, with the date
// otherwise.
function clock(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (isNaN(d.getTime())) return String(iso);
  return d.toDateString() === new Date().toDateString()
    ? d.toLocaleTimeString([], { hour12: false }) : d.toLocaleString([], { hour12: false });
}

function until(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (!isFinite(seconds)) return '';
  return seconds < 1 ? 'due now' : 'in ' + duration(seconds);
}

// What a schedule runs: its task's name, else its command.
function scheduleTask(task) {
  if (!task) return '';
  if (task.name) return String(task.name);
  return task.templateFunction ? String(task.templateFunction) : '';
}

// The runs a schedule's row lists; the older of the kept ones fold away.
const RUNS_SHOWN = 5;

function runRow(run) {
  return el('tr', { class: 'run' },
    el('td', { class: 'muted nowrap', title: run.at, text: clock(run.at) }),
    el('td', {}, el('span', { class: 'badge outcome ' + String(run.outcome), text: run.outcome })),
    el('td', { class: 'mono' }, run.taskId
      ? el('a', { href: '/ui/tasks/' + encodeURIComponent(run.taskId), class: 'task-link', title: run.taskId, text: run.taskId.slice(0, 8) })
      : '–'),
    el('td', {}, run.taskStatus ? badge(run.taskStatus)
      : el('span', { class: 'muted', title: run.taskId ? 'no such task now: not created yet, deleted or expired' : undefined, text: '–' })),
    el('td', { class: 'note', text: run.note || '' }));
}

function runsTable(runs) {
  return el('table', { class: 'runs' },
    el('thead', {}, el('tr', {}, ['Firing', 'Outcome', 'Task', 'Task status', 'Note'].map((h) => el('th', { text: h })))),
    el('tbody', {}, runs.map(runRow)));
}

function schedulesPage() {
  const rows = new Map(); // name → its <tbody> and the cells it updates
  const deleted = new Set(); // deleted here, until the feed stops listing them
  let table = null;

  const problem = (message) => {
    $('action-error').textContent = message;
    $('action-error').hidden = !message;
  };
  const forget = (name) => {
    const r = rows.get(name);
    if (r) r.body.remove();
    rows.delete(name);
    if (!rows.size) show([]);
  };
  // Pause, resume or delete; the row shows the answer at once.
  const act = async (name, what) => {
    problem('');
    if (what === 'delete' && !window.confirm(`Delete the schedule ${name}? The tasks it created stay.`)) return;
    const r = rows.get(name);
    const buttons = r ? [r.pause, r.resume, r.remove] : [];
    buttons.forEach((b) => { b.disabled = true; });
    const path = '/v1/schedules/' + encodeURIComponent(name);
    try {
      if (what === 'delete') {
        await api(path, { method: 'DELETE' });
        deleted.add(name);
        forget(name);
      } else {
        const answer = await api(path + '/' + what, { method: 'POST' });
        if (r && rows.get(name) === r) fill(r, answer.body);
      }
    } catch (e) {
      problem(`${what} ${name}: ${e.message}`);
      if (e.status === 404) forget(name);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  // A schedule's <tbody>: its summary row and, under it, its runs. The
  // buttons are made once, so an update never replaces one being clicked.
  const make = (name) => {
    const pause = el('button', { type: 'button', class: 'pause', text: 'Pause' });
    const resume = el('button', { type: 'button', class: 'resume', text: 'Resume' });
    const remove = el('button', { type: 'button', class: 'danger delete', text: 'Delete' });
    pause.addEventListener('click', () => act(name, 'pause'));
    resume.addEventListener('click', () => act(name, 'resume'));
    remove.addEventListener('click', () => act(name, 'delete'));
    const cells = [0, 1, 2, 3, 4].map(() => el('td'));
    cells[4].className = 'num counts';
    const summary = el('tr', { class: 'summary' }, cells,
      el('td', { class: 'actions-cell' }, el('span', { class: 'actions' }, pause, resume, remove)));
    const runs = el('td', { class: 'runs-cell', colspan: 6 });
    const body = el('tbody', { class: 'schedule', 'data-name': name }, summary, el('tr', { class: 'runs-row' }, runs));
    return { body, cells, runs, pause, resume, remove };
  };
  const fill = (r, s) => {
    const [who, when, state, next, counts] = r.cells;
    const task = scheduleTask(s.task);
    // el() leaves out the task line when there is none.
    who.replaceChildren(el('div', {}, el('div', { class: 'schedule-name', text: s.name }),
      task ? el('div', { class: 'muted schedule-task', title: task, text: 'runs ' + task }) : null,
      el('div', { class: 'muted', text: `overlap: ${s.overlap} · catch-up: ${s.catchUp}` })));
    when.replaceChildren(el('code', { class: 'cron', text: s.cron }), el('div', { class: 'muted timezone', text: s.timezone }));
    const label = s.paused ? 'paused' : 'active';
    state.replaceChildren(el('span', { class: 'badge state ' + label, text: label }));
    next.replaceChildren(...(s.nextFiring
      ? [el('div', { class: 'next-firing', title: s.nextFiring, text: clock(s.nextFiring) }),
        el('div', { class: 'muted until', 'data-at': s.nextFiring, text: until(s.nextFiring) })]
      : [el('span', { class: 'muted', text: s.paused ? '–' : 'never' })]));
    counts.replaceChildren(el('span', { class: 'fired', title: 'fired', text: num(s.fired) }), ' / ',
      el('span', { class: 'skipped', title: 'skipped: the previous task still ran', text: num(s.skippedOverlaps) }));
    r.pause.hidden = s.paused;
    r.resume.hidden = !s.paused;
    r.body.classList.toggle('paused', !!s.paused);
    const runs = s.runs || [];
    const earlier = r.runs.querySelector('details');
    const open = !!(earlier && earlier.open);
    if (!runs.length) {
      r.runs.replaceChildren(el('span', { class: 'muted', text: 'No runs yet.' }));
    } else if (runs.length <= RUNS_SHOWN) {
      r.runs.replaceChildren(runsTable(runs));
    } else {
      const more = el('details', { class: 'earlier', open },
        el('summary', { class: 'muted', text: `${runs.length - RUNS_SHOWN} earlier runs` }), runsTable(runs.slice(RUNS_SHOWN)));
      r.runs.replaceChildren(runsTable(runs.slice(0, RUNS_SHOWN)), more);
    }
  };
  const show = (schedules) => {
    const listed = new Set(schedules.map((s) => s.name));
    for (const name of deleted) if (!listed.has(name)) deleted.delete(name);
    schedules = schedules.filter((s) => !deleted.has(s.name));
    if (!schedules.length) {
      table = null;
      rows.clear();
      $('schedules').replaceChildren(el('p', { class: 'muted empty', text: 'No schedules. POST /v1/schedules creates one.' }));
      return;
    }
    if (!table) {
      table = el('table', { class: 'schedules' },
        el('thead', {}, el('tr', {}, ['Schedule', 'Cron', 'State', 'Next firing', 'Fired / skipped', '']
          .map((h) => el('th', { text: h })))));
      $('schedules').replaceChildren(table);
    }
    for (const [name, r] of rows) if (!listed.has(name) || deleted.has(name)) { r.body.remove(); rows.delete(name); }
    // In the API's order (by name); a row already in place is not moved.
    let place = table.tHead.nextSibling;
    for (const s of schedules) {
      let r = rows.get(s.name);
      if (!r) { r = make(s.name); rows.set(s.name, r); }
      fill(r, s);
      if (r.body !== place) table.insertBefore(r.body, place);
      place = r.body.nextSibling;
    }
  };
  follow('/ui/events?page=schedules', { schedules: show });
  // "in 12 s" counts down between the feed's updates.
  setInterval(() => {
    for (const node of document.querySelectorAll('#schedules .until')) node.textContent = until(node.dataset.at);
  }, 1000);
}

// --- Workers --------------------------------------------------------------

// How a worker isolates items, in a few words.
function isolation(i) {
  if (!i) return 'not said';
  const parts = [i.containment];
  if (i.runAs) parts.push('as ' + i.runAs);
  if (i.privateWorkdir) parts.push('private workdir');
  if (i.limits && i.limits.length) parts.push('limits: ' + i.limits.join(', '));
  return parts.join(' · ');
}

function workersPage() {
  const show = (workers) => {
    if (!workers.length) { $('workers').replaceChildren(el('p', { class: 'muted empty', text: 'No live workers.' })); return; }
    $('workers').replaceChildren(el('table', { class: 'workers' },
      el('thead', {}, el('tr', {}, ['Worker', 'Kind', 'Cores', 'Busy slots', 'Shards held', 'Labels', 'Isolation', 'Last heartbeat']
        .map((h) => el('th', { text: h })))),
      el('tbody', {}, workers.map((w) => el('tr', { class: 'worker' },
        el('td', {}, el('div', { class: 'mono', text: w.id }), el('div', { class: 'muted', text: w.hostname })),
        el('td', { text: w.kind }),
        el('td', { class: 'num', text: w.cores }),
        el('td', { class: 'bar' }, progress(w.runningItems, w.cores, 'slots'), el('div', { class: 'muted', text: num(w.runningItems) + ' / ' + num(w.cores) })),
        el('td', { class: 'num', text: w.shardsHeld === undefined ? '–' : num(w.shardsHeld) }),
        el('td', {}, Object.entries(w.labels || {}).map(([k, v]) => el('span', { class: 'chip', text: k + '=' + v }))),
        el('td', { text: isolation(w.isolation) }),
        el('td', { class: 'muted', text: ago(w.lastHeartbeat) }))))));
  };
  follow('/ui/events?page=workers', { workers: show });
}

const pages = { overview: overviewPage, tasks: tasksPage, task: taskPage, schedules: schedulesPage, workers: workersPage };
document.addEventListener('DOMContentLoaded', () => {
  const page = pages[document.body.dataset.page];
  if (page) page();
});
