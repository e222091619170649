// Send one hospital claim to the eligibility gateway and print its decisions.
//
//   cd examples/node && npm ci && node check_claim.js --address localhost:50051
//
// The claim names the sample data set's fixed practitioners (`make run` loads
// it; loader/sample.py) and is dated today in China Standard Time. The channel
// uses the published service config (../service_config.json): retries on
// UNAVAILABLE, a deadline, round_robin over every address the name resolves to.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const PROTO = path.join(ROOT, 'proto', 'eligibility', 'v1', 'eligibility.proto');
const SERVICE_CONFIG = path.join(__dirname, '..', 'service_config.json');

// The sample data set's fixed codes (loader/sample.py: SampleFixture).
const HOSPITAL = 'H11010500001';
const ACTIVE_DOCTOR = 'D110105000001';
const SUSPENDED_DOCTOR = 'D110105000003';

function parseArgs(argv) {
  const args = { address: 'localhost:50051', claimId: 'EXAMPLE-NODE-1', deadlineS: 5 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--address') args.address = value;
    else if (flag === '--claim-id') args.claimId = value;
    else if (flag === '--deadline-s') args.deadlineS = Number(value); // hospital: 5, POS: 1
    else throw new Error(`unknown argument ${flag} (--address, --claim-id, --deadline-s)`);
  }
  return args;
}

// Today in China Standard Time (UTC+8, no daylight saving) as YYYYMMDD.
function todayYyyymmdd() {
  const cst = new Date(Date.now() + 8 * 3600 * 1000);
  return cst.getUTCFullYear() * 10000 + (cst.getUTCMonth() + 1) * 100 + cst.getUTCDate();
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadSync(PROTO, {
    keepCase: true, // field names as in the .proto: claim_id, line_id
    longs: String, // index_version is uint64: a string, never a rounded number
    enums: String, // DECISION_PAY rather than 1
    defaults: true,
  });
  const { EligibilityGateway } = grpc.loadPackageDefinition(definition).eligibility.v1;
  const client = new EligibilityGateway(args.address, grpc.credentials.createInsecure(), {
    'grpc.service_config': fs.readFileSync(SERVICE_CONFIG, 'utf8'),
    'grpc.enable_retries': 1,
  });
  const request = {
    claim_id: args.claimId,
    institution_code: HOSPITAL,
    channel: 'CHANNEL_HOSPITAL',
    service_date: todayYyyymmdd(),
    lines: [
      { line_id: '1', prescriber_code: ACTIVE_DOCTOR, amount_fen: 12800 },
      { line_id: '2', prescriber_code: SUSPENDED_DOCTOR, amount_fen: 23000 },
      { line_id: '3', prescriber_code: SUSPENDED_DOCTOR, emergency: true, amount_fen: 98000 },
    ],
  };
  const deadline = new Date(Date.now() + args.deadlineS * 1000);
  client.CheckClaim(request, { deadline }, (error, response) => {
    client.close();
    if (error) {
      // error.code is a grpc.status number; error.details the gateway's text,
      // e.g. "claim_id: is required" on INVALID_ARGUMENT.
      console.error(`${grpc.status[error.code]}: ${error.details}`);
      process.exitCode = 1;
      return;
    }
    console.log(
      JSON.stringify({
        claim_id: response.claim_id,
        service_date: request.service_date,
        index_version: response.index_version, // a string: uint64 exceeds a JS number
        rejected_lines: response.rejected_lines,
      })
    );
    for (const line of response.lines) {
      const until = line.status_until ? ` until ${line.status_until}` : '';
      console.log(`line ${line.line_id}: ${line.decision} ${line.reason} ${line.status}${until}`);
    }
  });
}

main();
