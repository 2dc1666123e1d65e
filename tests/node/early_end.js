// early_end.js - a node-postgres client that ends at once, before its startup completes
// (issue 12 C: it sends Terminate where Postgres expects a startup packet).
//
//   node early_end.js PORT
//
// Prints one JSON line: {"events": [...]}, what the application saw: 'error' events, and
// how connect() and end() settled. Direct, Postgres closes without a word, so connect()
// and end() settle quietly; an ErrorResponse of the proxy's own rejects connect() instead.
'use strict';
const { Client } = require('pg');

const [port] = process.argv.slice(2);
const events = [];
const client = new Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', database: 'sourcegraph' });
client.on('error', (e) => events.push('error:' + (e.code || e.message)));
client.connect().then(() => events.push('connected'), (e) => events.push('connect:' + (e.code || e.message)));
client.end().then(() => events.push('ended'), (e) => events.push('end:' + (e.code || e.message)));
setTimeout(() => {
  console.log(JSON.stringify({ events }));
  process.exit(0);
}, 500);
