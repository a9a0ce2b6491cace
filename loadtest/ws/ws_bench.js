#!/usr/bin/env node
// WebSocket echo origin and load generator for loadtest/compare.py (the websocket scenario).
// Dependency: ws (npm install in this directory; loadtest/setup.sh does it).
//
//   node ws_bench.js origin --port 18086 [--host 127.0.0.1]
//       An echo server: every message comes back as it came (text stays text), on any path.
//       Prints "listening HOST:PORT" once it is. Plain HTTP requests get 426.
//
//   node ws_bench.js load --url ws://127.0.0.1:18081/ws --conns 64 --duration 5 [--size 32]
//       Opens --conns WebSocket connections (all of them, before the clock starts), then on
//       each one, for --duration seconds: send a --size byte text message, wait for its echo,
//       check it is the same, send the next. One message = one round trip through the proxy
//       (client -> proxy -> origin -> proxy -> client). Then stops sending, waits for the
//       messages in flight, closes every connection (1000) and prints one JSON line:
//         {"messages": replies within the window, "total": every reply, "mps": messages/s,
//          "p50_ms", "p99_ms", "max_ms": round trips within the window, "opened", "errors": {...},
//          "samples": [first error messages]}
//       Exit code 0 if every connection opened and nothing went wrong, 1 otherwise (the JSON
//       line is printed either way).
//
// Any other --name value is ignored (compare.py passes --workdir DIR so that compare.sh can
// tell its leftovers by their command line).
'use strict';

const WebSocket = require('ws');

function parseArgs(argv) {
  const mode = argv[0];
  const opts = {};
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    opts[argv[i].slice(2)] = argv[i + 1];
  }
  return { mode, opts };
}

function origin(opts) {
  const host = opts.host || '127.0.0.1';
  const port = Number(opts.port);
  const wss = new WebSocket.Server({ host, port, perMessageDeflate: false, maxPayload: 1 << 20, backlog: 4096 });
  wss.on('listening', () => console.log(`listening ${host}:${port}`));
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', (e) => console.error(`origin: connection error: ${e.message}`));
  });
  wss.on('error', (e) => {
    console.error(`origin: ${e.message}`);
    process.exit(2);
  });
  const stop = () => wss.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function load(opts) {
  const url = opts.url;
  const conns = Number(opts.conns || 64);
  const duration = Number(opts.duration || 5);
  const size = Number(opts.size || 32);
  const openTimeout = Number(opts['open-timeout'] || 10) * 1000;
  if (!url || !(conns > 0) || !(duration > 0) || !(size >= 16)) {
    throw new Error('load needs --url, --conns > 0, --duration > 0, --size >= 16');
  }
  const errors = { connect: 0, unexpected_response: 0, closed_early: 0, mismatch: 0, error: 0, drain_timeout: 0 };
  const samples = [];
  const sample = (s) => { if (samples.length < 5) samples.push(s); };

  let rtts = new Float64Array(1 << 20); // round trips that ended in the window, in ms
  let nrtt = 0;
  let total = 0;
  let opened = 0;
  let settled = 0; // connections that opened or failed to
  let running = false;
  let stopping = false;
  let finished = false;
  let t0 = 0n;
  let tEnd = 0n;
  let drainTimer = null;
  const sockets = [];
  const inflight = new Array(conns).fill(null); // [payload, sent at] or null
  const seq = new Array(conns).fill(0);

  const now = () => process.hrtime.bigint();

  function send(i) {
    seq[i] += 1;
    const p = `${i.toString(36)}:${seq[i].toString(36)}:`.padEnd(size, 'x');
    inflight[i] = [p, now()];
    sockets[i].send(p);
  }

  function report() {
    const window = Number(tEnd - t0) / 1e9;
    const lat = rtts.subarray(0, nrtt).sort();
    const q = (p) => (nrtt ? lat[Math.min(nrtt - 1, Math.floor(p * nrtt))] : null);
    const out = {
      url, conns, opened, size, duration_s: window,
      messages: nrtt, total, mps: window > 0 ? nrtt / window : null,
      p50_ms: q(0.5), p99_ms: q(0.99), max_ms: nrtt ? lat[nrtt - 1] : null,
      errors, samples,
    };
    process.stdout.write(JSON.stringify(out) + '\n', () => {
      const bad = opened < conns || Object.values(errors).some((v) => v > 0) || nrtt === 0;
      process.exit(bad ? 1 : 0);
    });
  }

  // Every echo is back (or given up on): close the connections, then report.
  function finish() {
    if (finished) return;
    finished = true;
    if (drainTimer) clearTimeout(drainTimer);
    const open = sockets.filter((s) => s && s.readyState === WebSocket.OPEN);
    let left = open.length;
    if (left === 0) return report();
    const closeTimer = setTimeout(() => {
      for (const s of open) s.terminate();
      report();
    }, 2000);
    for (const s of open) {
      s.once('close', () => {
        left -= 1;
        if (left === 0) {
          clearTimeout(closeTimer);
          report();
        }
      });
      s.close(1000);
    }
  }

  function maybeFinish() {
    if (stopping && inflight.every((x) => x === null)) finish();
  }

  function start() {
    if (running || stopping) return;
    if (opened === 0) {
      t0 = tEnd = now();
      return report();
    }
    running = true;
    t0 = now();
    for (let i = 0; i < conns; i++) {
      if (sockets[i].readyState === WebSocket.OPEN) send(i);
    }
    setTimeout(() => {
      stopping = true;
      running = false;
      tEnd = now();
      // What is still in flight gets 2 s to come back.
      drainTimer = setTimeout(() => {
        errors.drain_timeout += inflight.filter((x) => x !== null).length;
        if (errors.drain_timeout) sample(`${errors.drain_timeout} echo(es) not back 2 s after the end`);
        inflight.fill(null);
        finish();
      }, 2000);
      maybeFinish();
    }, duration * 1000);
  }

  const openTimer = setTimeout(() => {
    if (settled < conns) {
      errors.connect += conns - settled;
      sample(`only ${opened} of ${conns} connections open after ${openTimeout / 1000} s`);
      settled = conns;
      start();
    }
  }, openTimeout);

  function settledOne() {
    settled += 1;
    if (settled === conns) {
      clearTimeout(openTimer);
      start();
    }
  }

  for (let i = 0; i < conns; i++) {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: openTimeout });
    sockets[i] = ws;
    let wasOpen = false;
    let refused = false; // the upgrade was answered with something else than 101
    let counted = false;
    const settle = () => {
      if (!counted) {
        counted = true;
        settledOne();
      }
    };
    ws.on('open', () => {
      wasOpen = true;
      opened += 1;
      settle();
    });
    ws.on('unexpected-response', (req, res) => {
      refused = true;
      errors.unexpected_response += 1;
      sample(`upgrade answered ${res.statusCode} ${res.statusMessage}`);
      req.destroy();
      settle();
    });
    ws.on('error', (e) => {
      if (wasOpen) {
        errors.error += 1;
        sample(`connection ${i}: ${e.message}`);
      } else if (!refused) {
        errors.connect += 1;
        sample(`connect: ${e.message}`);
      }
      settle();
    });
    ws.on('message', (data, isBinary) => {
      const f = inflight[i];
      const t = now();
      if (f === null) {
        errors.mismatch += 1;
        sample(`connection ${i}: a message nobody sent`);
        return;
      }
      inflight[i] = null;
      const text = isBinary ? null : data.toString();
      if (text !== f[0]) {
        errors.mismatch += 1;
        sample(`connection ${i}: sent ${JSON.stringify(f[0])}, got ${JSON.stringify(String(text).slice(0, 60))}`);
      }
      total += 1;
      if (!stopping) {
        if (nrtt === rtts.length) {
          const bigger = new Float64Array(rtts.length * 2);
          bigger.set(rtts);
          rtts = bigger;
        }
        rtts[nrtt++] = Number(t - f[1]) / 1e6;
      }
      if (running) send(i);
      else maybeFinish();
    });
    ws.on('close', (code, reason) => {
      if (wasOpen && !finished) {
        errors.closed_early += 1;
        sample(`connection ${i} closed early: ${code} ${reason}`);
        inflight[i] = null;
        maybeFinish();
      }
    });
  }
}

function main() {
  const { mode, opts } = parseArgs(process.argv.slice(2));
  if (mode === 'origin') return origin(opts);
  if (mode === 'load') return load(opts);
  console.error('usage: ws_bench.js origin --port P | load --url URL --conns N --duration S [--size B]');
  process.exit(2);
}

main();
