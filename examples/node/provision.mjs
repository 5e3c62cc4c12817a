#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Fleet provisioning from Node.js with the fleetprov package: connect with a claim certificate,
// get a certificate (CreateKeysAndCertificate, or CreateCertificateFromCsr with --csr), register
// the thing (RegisterThing), disconnect.
//
// usage: node provision.mjs --endpoint HOST --cert FILE --key FILE --template_name NAME
//          [--template_parameters JSON] [--csr FILE] [--ca_file FILE] [--port N]
//
// Exit codes: 0 success, 1 failure (one line on stderr with the library's message), 2 usage.
// The process ends by itself: nothing is left holding the event loop.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Client, checkRegistration } from 'fleetprov';

const USAGE = `usage: node provision.mjs --endpoint HOST --cert FILE --key FILE --template_name NAME
         [--template_parameters JSON] [--csr FILE] [--ca_file FILE] [--port N (8883)]`;

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      endpoint: { type: 'string' },
      port: { type: 'string', default: '8883' },
      ca_file: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      template_name: { type: 'string' },
      template_parameters: { type: 'string' },
      csr: { type: 'string' },
    },
  });
  for (const name of ['endpoint', 'cert', 'key', 'template_name']) {
    if (values[name] === undefined) {
      throw new Error(`--${name} is required`);
    }
  }
  const params = values.template_parameters ? JSON.parse(values.template_parameters) : null;
  // Refuse bad input before creating a certificate that could not be registered.
  checkRegistration(values.template_name, params);
  return { ...values, params, port: Number(values.port) };
}

async function provision(args) {
  const client = new Client({
    endpoint: args.endpoint,
    port: args.port,
    caFile: args.ca_file,
    certFile: args.cert,
    keyFile: args.key,
  });
  // Ctrl-C cancels what is pending.
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const signal = abort.signal;
  try {
    await client.connect({ signal });
    console.log(`Connected to ${args.endpoint}:${args.port}`);
    let cert;
    if (args.csr !== undefined) {
      cert = await client.createFromCsr(readFileSync(args.csr, 'utf8'), { signal });
    } else {
      cert = await client.createKeys({ signal });
      // A real device stores cert.certificatePem and cert.privateKey (securely) here.
      cert.privateKey.fill(0);
      console.log('Private key received (not shown, not kept by this example).');
    }
    console.log(`Certificate created: ${cert.certificateId}`);
    const thing = await client.registerThing(
      args.template_name,
      cert.certificateOwnershipToken,
      args.params,
      { signal },
    );
    console.log(`Thing registered: ${thing.thingName}`);
    for (const [key, value] of Object.entries(thing.deviceConfiguration)) {
      console.log(`  ${key} = ${value}`);
    }
  } finally {
    await client.close();
    process.removeAllListeners('SIGINT');
  }
  console.log('Disconnected');
}

let args;
try {
  args = parseCommandLine(process.argv.slice(2));
} catch (e) {
  console.error(`provision: ${e.message}\n${USAGE}`);
  process.exitCode = 2;
}
if (args !== undefined) {
  await provision(args).catch((e) => {
    console.error(`provision: ${e.message}`);
    process.exitCode = 1;
  });
}
