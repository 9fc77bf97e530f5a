/**
 * The bank and the statement service as two real processes, on PostgreSQL (a schema each) and NATS JetStream (a stream
 * of its own): the statement built in the second process from the bus equals the bank's own statement read model; a
 * replay republishes every account event, and the inbox gives none a second effect; after the statement service's
 * data is wiped, a replay rebuilds the same statement.
 */
// tier: integration
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import pg from 'pg';
import type { Statement, StatementLine } from '../src/model.js';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const script = (name: string) => fileURLToPath(new URL(`../src/${name}.ts`, import.meta.url));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A child process of the example, started with its environment; resolves when it says it listens. */
class Service {
  readonly process: ChildProcess;
  output = '';
  readonly exited: Promise<void>;

  constructor(
    name: 'bank' | 'statement',
    env: Record<string, string>,
    readonly url: string,
  ) {
    this.process = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', script(name)], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [this.process.stdout!, this.process.stderr!])
      stream.setEncoding('utf8').on('data', (chunk: string) => (this.output = (this.output + chunk).slice(-8000)));
    this.exited = new Promise((resolve) => this.process.once('exit', () => resolve()));
  }

  async ready(what: RegExp, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!what.test(this.output)) {
      if (this.process.exitCode !== null || this.process.signalCode !== null)
        assert.fail(`the process exited before it was ready:\n${this.output}`);
      if (Date.now() > deadline) assert.fail(`not ready after ${ms} ms:\n${this.output}`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function http<T>(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(url, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as T };
}

describe('the statement service: a second process fed from NATS', { timeout: 240_000 }, () => {
  let dbs: TestDatabases;
  let admin: pg.Client;
  const prefix = `sttest${randomBytes(5).toString('hex')}`;
  const children: Service[] = [];

  before(async () => {
    dbs = await openTestDatabases();
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
  });

  after(async () => {
    for (const child of children) await child.stop().catch(() => undefined);
    const nc = await connect({ servers: NATS_URL, name: 'eventline-statement-test-cleanup' }).catch(() => null);
    if (nc) {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(prefix).catch(() => undefined);
      await nc.close();
    }
    await admin?.end();
    await dbs?.close();
  });

  it('builds the bank statement from the bus, ignores replayed copies, and rebuilds it after a wipe from a replay', async () => {
    const bankSchema = dbs.postgres().schema;
    const statementSchema = dbs.postgres().schema;
    const bankPort = await freePort();
    const statementPort = await freePort();
    const common = { DATABASE_URL, NATS_URL, BUS_PREFIX: prefix };
    const bank = new Service(
      'bank',
      { ...common, BANK_SCHEMA: bankSchema, PORT: String(bankPort) },
      `http://127.0.0.1:${bankPort}`,
    );
    children.push(bank);
    const startStatement = () => {
      const service = new Service(
        'statement',
        { ...common, STATEMENT_SCHEMA: statementSchema, PORT: String(statementPort) },
        `http://127.0.0.1:${statementPort}`,
      );
      children.push(service);
      return service;
    };
    let statement = startStatement();
    await bank.ready(/bank on/);
    await statement.ready(/statement service on/);

    const command = async (type: string, data: unknown) => {
      const { status, body } = await http<{ position: string; version: number }>(
        'POST',
        `${bank.url}/commands/${type}`,
        data,
      );
      assert.equal(status, 200, `${type}: ${JSON.stringify(body)}`);
      return body;
    };
    await command('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: '529.982.247-25' });
    await command('OpenAccount', { accountId: 'bob', owner: 'Bob', holderTaxId: '111.444.777-35' });
    await command('Deposit', { accountId: 'ada', amount: 100 });
    await command('Withdraw', { accountId: 'ada', amount: 30 });
    await command('TransferMoney', { transferId: 't1', from: 'ada', to: 'bob', amount: 50 });
    // Beyond 2^53 a JSON number cannot hold every amount: as a string of digits, it is exact end to end.
    await command('Deposit', { accountId: 'bob', amount: '9007199254740993' });
    const unsafe = await fetch(`${bank.url}/commands/Deposit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"accountId":"bob","amount":9007199254740993}',
    });
    const refusal = (await unsafe.json()) as { detail: string };
    assert.equal(unsafe.status, 400, JSON.stringify(refusal));
    assert.match(refusal.detail, /send (it|the amount) as a string/); // by the body parser or the amount's schema
    let last = await command('Deposit', { accountId: 'bob', amount: 5 });

    /** The bank's own statement read model (after the last command's position) and the version of each account. */
    const expected = async (accountId: string) => {
      const { body } = await http<{ lines: Array<StatementLine & { at: string }> }>(
        'GET',
        `${bank.url}/read-models/bank/statement/${accountId}?position=${encodeURIComponent(last.position)}`,
      );
      const { body: stream } = await http<{ events: Array<{ version: number }> }>(
        'GET',
        `${bank.url}/streams/account-${accountId}`,
      );
      return {
        lines: body.lines.map(({ version, type, amount, balance }) => ({ version, type, amount, balance })),
        version: stream.events.at(-1)!.version,
      };
    };
    /** The statement service's statement once it has applied the account's events up to `version`. */
    const served = async (service: Service, accountId: string, version: number): Promise<Statement> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { status, body } = await http<Statement>('GET', `${service.url}/statements/${accountId}`);
        if (status === 200 && body.version >= version) return body;
        if (Date.now() > deadline)
          assert.fail(
            `the statement of ${accountId} did not reach version ${version}: ${status} ${JSON.stringify(body)}\n${service.output}`,
          );
        await sleep(50);
      }
    };
    const assertSame = async (service: Service) => {
      for (const accountId of ['ada', 'bob']) {
        const want = await expected(accountId);
        const got = await served(service, accountId, want.version);
        assert.deepEqual(got.lines, want.lines, `statement of ${accountId}`);
        assert.equal(got.version, want.version);
      }
    };

    // 1. Built from the bus, in the second process, as the bank's own read model shows it.
    await assertSame(statement);
    const ada = await expected('ada');
    assert.deepEqual(
      ada.lines.map((line) => [line.type, line.amount, line.balance]),
      [
        ['MoneyDeposited', '100', '100'],
        ['MoneyWithdrawn', '-30', '70'],
        ['MoneyTransferredOut', '-50', '20'],
      ],
    );
    assert.deepEqual(
      (await expected('bob')).lines.map((line) => [line.type, line.amount, line.balance]),
      [
        ['MoneyTransferredIn', '50', '50'],
        ['MoneyDeposited', '9007199254740993', '9007199254741043'],
        ['MoneyDeposited', '5', '9007199254741048'],
      ],
    );
    const { body: bob } = await http<{ balance: string }>(
      'GET',
      `${bank.url}/read-models/bank/balance/bob?position=${encodeURIComponent(last.position)}`,
    );
    assert.equal(bob.balance, '9007199254741048');

    // 2. A replay republishes every account event (new message ids, so NATS does not drop them): the inbox absorbs them.
    const accountEvents = async () => {
      const { body: adaEvents } = await http<{ events: unknown[] }>('GET', `${bank.url}/streams/account-ada`);
      const { body: bobEvents } = await http<{ events: unknown[] }>('GET', `${bank.url}/streams/account-bob`);
      return adaEvents.events.length + bobEvents.events.length;
    };
    const replay = await http<{ published: number }>('POST', `${bank.url}/admin/replay`);
    assert.equal(replay.status, 200);
    assert.equal(replay.body.published, await accountEvents(), 'every account event replayed');
    last = await command('Deposit', { accountId: 'ada', amount: 1 }); // handled after the replayed copies (one group, in order)
    await assertSame(statement);
    const { rows } = await admin.query<{ count: string }>(
      `SELECT count(*) FROM ${pg.escapeIdentifier(statementSchema)}.inbox`,
    );
    assert.equal(Number(rows[0]!.count), await accountEvents(), 'one inbox row per event, none per replayed copy');

    // 3. Wipe the statement service's data and rebuild it from a replay.
    await statement.stop();
    await admin.query(`DROP SCHEMA ${pg.escapeIdentifier(statementSchema)} CASCADE`);
    statement = startStatement();
    await statement.ready(/statement service on/);
    const gone = await http('GET', `${statement.url}/statements/ada`);
    assert.equal(gone.status, 404, 'the wiped service starts empty');
    await http('POST', `${bank.url}/admin/replay`);
    await assertSame(statement);
  });
});
