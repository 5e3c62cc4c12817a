'use strict';
// One provisioning per iteration, as a device does it (new client, connect,
// CreateCertificateFromCsr, RegisterThing, close), N times in one process against an emulator;
// prints the mean, the median and the fastest in ms. Usage: node bench/csr-flow.js [N] (bindings/bench.sh).
const fp = require('../index.js');
const { startEmulator, newCsr } = require('../test/emulator.js');

async function main() {
  const runs = Number(process.argv[2] ?? 20);
  const emulator = await startEmulator();
  const csr = newCsr();
  const times = [];
  try {
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      const client = new fp.Client(emulator.options());
      await client.connect();
      const cert = await client.createFromCsr(csr);
      await client.registerThing('FleetTemplate', cert.certificateOwnershipToken, {
        SerialNumber: `node-bench-${i}`,
        DeviceLocation: 'Seattle',
      });
      await client.close();
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  } finally {
    await emulator.stop();
  }
  const mean = times.reduce((a, b) => a + b, 0) / runs;
  times.sort((a, b) => a - b);
  console.log(
    `Node package: mean ${mean.toFixed(2)} ms, median ${times[Math.floor((runs - 1) / 2)].toFixed(2)} ms, ` +
      `fastest ${times[0].toFixed(2)} ms (n=${runs})`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
