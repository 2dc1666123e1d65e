// server_fatal.js - what a node-postgres application sees when its backend is terminated.
//
//   node server_fatal.js PORT idle|query
//
// Connects to 127.0.0.1:PORT as postgres to database sourcegraph, prints its backend pid as
// {"pid": N} on one line, then waits for the backend to be terminated by the caller. It
// counts every 'error' event the client emits (an application with a handler survives a
// second one; one without a handler crashes on it) and prints one JSON line at the end:
// {"errors": [sqlstate, ...], "query_error": sqlstate|null, "ended": true}.
'use strict';
const { Client } = require('pg');

const [port, mode] = process.argv.slice(2);
const client = new Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', database: 'sourcegraph' });
const errors = [];
let queryError = null;

client.on('error', (e) => errors.push(e.code || String(e.message)));
client.on('end', () => {
  // Anything that arrives after the close would be an 'error' too: give it a moment.
  setTimeout(() => {
    console.log(JSON.stringify({ errors, query_error: queryError, ended: true }));
    process.exit(0);
  }, 300);
});

(async () => {
  await client.connect();
  const r = await client.query('SELECT pg_backend_pid() AS pid');
  console.log(JSON.stringify({ pid: r.rows[0].pid }));
  if (mode === 'query') {
    try {
      await client.query('SELECT pg_sleep(60)');
    } catch (e) {
      queryError = e.code || String(e.message);
    }
  }
})().catch((e) => {
  console.log(JSON.stringify({ fatal: String(e && e.message) }));
  process.exit(2);
});
