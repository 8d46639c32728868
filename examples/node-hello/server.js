// packfarm's Node.js example. `node server.js` serves "Hello from Node.js <version> on <arch>" on $PORT (8080);
// `node server.js --once` prints that line and exits (what the tests and the README's podman commands run).
const http = require('node:http');

const greeting = () => `Hello from Node.js ${process.version} on ${process.platform}/${process.arch}`;

if (process.argv.includes('--once')) {
  console.log(greeting());
} else {
  const port = Number(process.env.PORT || 8080);
  http
    .createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`${greeting()}\n`);
    })
    .listen(port, () => console.log(`listening on :${port} (${process.arch})`));
  process.on('SIGTERM', () => process.exit(0));
}
