// The loop inside a Node.js sandbox: the JavaScript twin of launcher.py.
//
// The zygote forks a sandbox child (own session, uid, limits, scrubbed environment) and that
// child execs `node --max-old-space-size=M -e <this file>`. Its control socket is fd 3, its
// stdout and stderr are the platform's pipes. Same line protocol as launcher.py:
//
//   {"init": {name, main, code, binary, env}}  -> {"ok":true} | {"error": msg}
//   {"run": {"value": {...}, "context": {...}}} -> {"result":<json text>} | {"error": msg}
//
// After every request the sentinel line goes to stdout and stderr *before* the reply, so the
// platform knows an activation's logs are complete once it has the reply and both sentinels.
// Requests are answered one at a time, in order (one activation per sandbox).
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const Module = require('module');

const CONTROL_FD = 3;
const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n';
const NOT_JSON = 'The action did not produce a valid JSON or JSON Array response';
const ENTRY_KEY = '__squall_entry__';

let entry = null;
let exported = {}; // __OW_* variables of the current run, removed after its reply

function errorReply(message) {
  return JSON.stringify({ error: String(message) }) + '\n';
}

function resultReply(result) {
  let text;
  try {
    text = JSON.stringify(result === undefined ? null : result);
  } catch (e) {
    return errorReply(NOT_JSON); // cycles, BigInt
  }
  return '{"result":' + (text === undefined ? 'null' : text) + '}\n';
}

// The action's code as a CommonJS module in the sandbox's work dir, so `require` finds
// modules next to it. OpenWhisk's Node.js runtime also accepts a plain top-level
// `function main(params)`: the appended line exports whatever the entry-point name binds.
function loadAction(init) {
  if (init.binary) {
    throw new Error('zip actions are not supported for Node.js process sandboxes yet');
  }
  const main = init.main || 'main';
  const filename = path.join(process.cwd(), 'index.js');
  const module_ = new Module(filename, null);
  module_.filename = filename;
  module_.paths = Module._nodeModulePaths(process.cwd());
  const probe = `\n;try { module.exports[${JSON.stringify(ENTRY_KEY)}] = ${main}; } catch (e) {}\n`;
  module_._compile(String(init.code) + probe, filename);
  const exports = module_.exports;
  let fn = exports[ENTRY_KEY];
  if (typeof fn !== 'function') fn = exports[main];
  if (typeof fn !== 'function' && typeof exports === 'function' && main === 'main') fn = exports;
  if (typeof fn !== 'function') {
    throw new Error(`Action entrypoint '${main}' is not a function.`);
  }
  return fn;
}

function handleInit(init) {
  if (entry !== null) return errorReply('Cannot initialize the action more than once.');
  for (const [key, value] of Object.entries(init.env || {})) process.env[key] = String(value);
  try {
    entry = loadAction(init);
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    return errorReply(`Initialization has failed due to: ${e && e.message ? e.message : e}`);
  }
  return '{"ok":true}\n';
}

function exportContext(context) {
  exported = {};
  for (const [key, value] of Object.entries(context || {})) {
    const name = `__OW_${key.toUpperCase()}`;
    exported[name] = process.env[name];
    process.env[name] = String(value);
  }
}

function restoreContext() {
  for (const [name, value] of Object.entries(exported)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  exported = {};
}

// OpenWhisk's Node.js runtime: a thrown error or a rejected promise is an application error
// whose `error` field carries the reason.
function errorResult(e) {
  if (e instanceof Error) return { error: e.message };
  return { error: e === undefined ? {} : e };
}

async function handleRun(run) {
  if (entry === null) return errorReply('The action was not initialized.');
  exportContext(run.context);
  let result;
  try {
    result = await entry(run.value || {});
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    result = errorResult(e);
  }
  return resultReply(result);
}

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (e) {
    return errorReply('malformed request');
  }
  if (request.run) return handleRun(request.run);
  if (request.init) return handleInit(request.init);
  return errorReply('unknown request');
}

function endActivation() {
  // Pipes are written synchronously on Linux, so the action's own lines precede these.
  for (const fd of [1, 2]) {
    try {
      fs.writeSync(fd, SENTINEL);
    } catch (e) {
      // a closed stream must not break the protocol
    }
  }
}

function serve() {
  const control = new net.Socket({ fd: CONTROL_FD, readable: true, writable: true });
  let buffered = '';
  let chain = Promise.resolve();
  control.setEncoding('utf8');
  control.on('data', (chunk) => {
    buffered += chunk;
    let end = buffered.indexOf('\n');
    while (end >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      chain = chain.then(async () => {
        const reply = await handle(line);
        endActivation();
        control.write(reply);
        restoreContext();
      });
      end = buffered.indexOf('\n');
    }
  });
  control.on('end', () => process.exit(0)); // the platform is gone
  control.on('error', () => process.exit(1));
}

// An action's stray rejection or exception after its reply must not kill the sandbox silently.
process.on('unhandledRejection', (reason) => console.error('Unhandled rejection:', reason));

serve();
