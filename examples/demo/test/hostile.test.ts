/**
 * Hostile input at the HTTP level: the demo service (bank + guest list) on PGlite and on PostgreSQL (a fresh schema),
 * sent what an attacker would send. Every request must get a 4xx `application/problem+json` with a `code` and a
 * `detail` a client can act on; the process must keep answering; and at the end the log and the database's tables
 * must be as they were before the first hostile request (nothing written, nothing created).
 */
// tier: integration
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { accountEvents, paymentEvents } from '@eventline/example-bank';
import { invitationEvents } from '@eventline/example-guestlist';
import { createPGliteStore, type SqlEventStore } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { eventRegistry, type Position } from '@eventline/core';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { createDemo, sqlStorage } from '../src/app.js';
import { until, untilLogSettled } from '@eventline/core/testing';

const events = eventRegistry([...accountEvents, ...paymentEvents, ...invitationEvents]);
type Demo = Awaited<ReturnType<typeof createDemo>>;

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(async () => {
  await databases?.close();
});

/** What a client must get for a request it should not have sent. */
function assertProblem(what: string, status: number, contentType: string | undefined, body: string): void {
  assert.ok(status >= 400 && status < 500, `${what}: status ${status} is not a 4xx: ${body.slice(0, 300)}`);
  assert.match(
    String(contentType),
    /^application\/problem\+json/,
    `${what}: content-type ${contentType}: ${body.slice(0, 300)}`,
  );
  let problem: { code?: unknown; detail?: unknown; status?: unknown };
  try {
    problem = JSON.parse(body) as typeof problem;
  } catch {
    assert.fail(`${what}: the body is not JSON: ${body.slice(0, 300)}`);
  }
  assert.equal(typeof problem.code, 'string', `${what}: no code: ${body.slice(0, 300)}`);
  assert.ok((problem.code as string).length > 0, what);
  assert.equal(problem.status, status, `${what}: status in the body`);
  assert.ok(
    typeof problem.detail === 'string' && problem.detail.length >= 15,
    `${what}: a detail a user can act on: ${body.slice(0, 300)}`,
  );
  assert.doesNotMatch(
    problem.detail as string,
    /\bat \S+ \(|node_modules|\.ts:\d+/,
    `${what}: no stack or source paths in the detail`,
  );
}

/** A raw HTTP/1.1 exchange on a socket (for what inject cannot send): the response, or null if none came. */
async function raw(
  port: number,
  request: string | Buffer,
): Promise<{ status: number; contentType: string | undefined; body: string } | null> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(request);
  await new Promise<void>((resolve) => {
    const guard = setTimeout(() => socket.destroy(), 10_000); // a guard: every server answer ends the connection
    socket.once('close', () => {
      clearTimeout(guard);
      resolve();
    });
  });
  const text = Buffer.concat(chunks).toString('latin1');
  if (text.length === 0) return null;
  const [head = '', ...rest] = text.split('\r\n\r\n');
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? NaN);
  const contentType = headerLines.find((line) => /^content-type:/i.test(line))?.replace(/^content-type:\s*/i, '');
  return { status, contentType, body: Buffer.from(rest.join('\r\n\r\n'), 'latin1').toString('utf8') };
}

const json = { 'content-type': 'application/json' };
const command = (type: string, payload: string, headers: Record<string, string> = json): InjectOptions => ({
  method: 'POST',
  url: `/commands/${type}`,
  headers,
  payload,
});
const deep = (depth: number, open: string, close: string, inner = '1') =>
  `${open.repeat(depth)}${inner}${close.repeat(depth)}`;

/** Every hostile request of the suite sent through inject, by name. `seen` is a position the bank has processed. */
function hostileRequests(seen: Position, unseen: Position, next: Position): Array<[string, InjectOptions]> {
  const cases: Array<[string, InjectOptions]> = [];
  const add = (name: string, options: InjectOptions) => cases.push([name, options]);

  // Bodies that are not JSON, not the right content type, empty, too large, nested too deep.
  for (const body of [
    '{',
    '{"accountId":}',
    "{'accountId':'x','owner':'y'}",
    '[1,]',
    '{"accountId":"x","owner":"y","holderTaxId":"52998224725"}x',
    'NaN',
    'undefined',
    '   ',
    '\ufeff{"accountId":"x","owner":"y","holderTaxId":"52998224725"}',
    '{"accountId":"x","owner":"y"',
    '{"accountId":"a\u0000b","owner":"y","holderTaxId":"52998224725"}',
    '\u0000',
    '{"accountId":"x",,"owner":"y","holderTaxId":"52998224725"}',
    '{"accountId":"x" "owner":"y","holderTaxId":"52998224725"}',
  ]) {
    add(`malformed JSON ${JSON.stringify(body)}`, command('OpenAccount', body));
  }
  for (const type of [
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/xml',
    'application/json; charset=iso-8859-1',
    'application/json; charset=utf-16le',
    'application/jsonp',
    'text/json',
    'application/vnd.api+json',
    '*/*',
    'application/json\u00e9',
  ]) {
    add(
      `content type ${type}`,
      command('OpenAccount', '{"accountId":"ct","owner":"x","holderTaxId":"52998224725"}', { 'content-type': type }),
    );
  }
  add('a body with no content type', {
    method: 'POST',
    url: '/commands/OpenAccount',
    payload: '{"accountId":"ct","owner":"x","holderTaxId":"52998224725"}',
  });
  add('an empty JSON body', command('OpenAccount', ''));
  add('no body at all', { method: 'POST', url: '/commands/OpenAccount' });
  for (const body of [
    'null',
    'true',
    '1',
    '"x"',
    '[]',
    '[{"accountId":"arr","owner":"x","holderTaxId":"52998224725"}]',
    '{}',
  ])
    add(`a JSON ${body} for a command`, command('OpenAccount', body));
  add(
    'a body over the limit (2 MiB)',
    command(
      'OpenAccount',
      JSON.stringify({ accountId: 'huge', owner: 'x'.repeat(2 * 1024 * 1024), holderTaxId: '52998224725' }),
    ),
  );
  add(
    'a body under the limit whose event is over the store limit',
    command(
      'OpenAccount',
      JSON.stringify({ accountId: 'big', owner: 'x'.repeat(1_100_000), holderTaxId: '52998224725' }),
    ),
  );
  add('a body of 10,000 nested arrays', command('OpenAccount', deep(10_000, '[', ']')));
  add('a body of 10,000 nested objects', command('OpenAccount', deep(10_000, '{"a":', '}')));
  add(
    'a body of 101 nested levels in a field',
    command('OpenAccount', `{"accountId":"deep","owner":${deep(100, '[', ']')},"holderTaxId":"52998224725"}`),
  );
  add('a body of 50,000 levels of mixed nesting', command('CreateInvite', deep(25_000, '[{"a":', '}]')));
  add('nested age', command('CreateInvite', `{"inviteId":"deep","name":"x","age":${deep(50, '[', ']')}}`));

  // NUL and lone surrogates in ids, types, keys, values and headers.
  for (const [field, value] of [
    ['accountId', 'a\\u0000'],
    ['accountId', '\\ud800'],
    ['accountId', '\\udfff'],
    ['accountId', 'a\\ud800b'],
    ['accountId', '\\u0000'],
    ['owner', '\\u0000'],
    ['owner', '\\ud800'],
    ['owner', 'ok\\udc00'],
  ] as const) {
    const data =
      field === 'accountId'
        ? `{"accountId":"${value}","owner":"x","holderTaxId":"52998224725"}`
        : `{"accountId":"nul-owner","owner":"${value}","holderTaxId":"52998224725"}`;
    add(`${field} ${value}`, command('OpenAccount', data));
  }
  add('a NUL key', command('Deposit', '{"accountId":"nobody","amount":1,"\\u0000":1}'));
  add('a lone surrogate key', command('Deposit', '{"accountId":"nobody","amount":1,"\\ud800":1}'));
  add('an invite name with NUL', command('CreateInvite', '{"inviteId":"n1","name":"a\\u0000"}'));
  add('an invite id with a lone surrogate', command('CreateInvite', '{"inviteId":"\\ud83d","name":"x"}'));
  for (const type of [
    'Open%00Account',
    '%00',
    'OpenAccount%00',
    '%F0%9F%98%80',
    'Open%20Account',
    'x'.repeat(201),
    '%ED%A0%80',
    'TransferIn',
    'TransferOut',
    'openaccount',
  ]) {
    add(
      `command type ${type.slice(0, 40)}`,
      command(type, '{"accountId":"t","owner":"x","holderTaxId":"52998224725"}'),
    );
  }
  for (const [header, value] of [
    ['idempotency-key', 'k\u0000'],
    ['idempotency-key', '\ud800'],
    ['idempotency-key', 'x'.repeat(201)],
    ['idempotency-key', ''],
    ['idempotency-key', 'a b'],
    ['idempotency-key', 'é'],
    ['x-correlation-id', '\u0000'],
    ['x-correlation-id', '\udfff'],
    ['x-correlation-id', 'x'.repeat(5000)],
    ['x-correlation-id', ''],
    ['traceparent', '\u0000'],
    ['traceparent', '\ud800'],
    ['traceparent', 'garbage'],
    ['traceparent', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['traceparent', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    [
      'traceparent',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    ],
  ] as const) {
    add(
      `header ${header}: ${JSON.stringify(value).slice(0, 30)}`,
      command('OpenAccount', '{"accountId":"hdr","owner":"x","holderTaxId":"52998224725"}', {
        ...json,
        [header]: value,
      }),
    );
  }

  // Prototype keys in bodies, paths and names.
  for (const body of [
    '{"__proto__":{"polluted":true},"accountId":"proto","owner":"x","holderTaxId":"52998224725"}',
    '{"accountId":"proto","owner":"x","constructor":{"prototype":{"polluted":true}}}',
    '{"\\u005f\\u005fproto\\u005f\\u005f":{"polluted":true},"accountId":"proto","owner":"x","holderTaxId":"52998224725"}',
    '{"accountId":"proto","owner":{"__proto__":{"polluted":true}}}',
    '{"accountId":"proto","owner":"x","a":[{"__proto__":{}}]}',
  ]) {
    add(`prototype key in ${body.slice(0, 50)}`, command('OpenAccount', body));
  }
  for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype']) {
    add(`command ${name}`, command(name, '{}'));
    add(`projection ${name}`, { url: `/read-models/${name}/balance/ada` });
    add(`projection ${name} (list)`, { url: `/read-models/${name}/balance` });
    add(`collection ${name}`, { url: `/read-models/bank/${name}/ada` });
    add(`document ${name}`, { url: `/read-models/bank/balance/${name}` });
    add(`stream ${name}`, { url: `/streams/${name}` });
    add(`query parameter ${name}`, { url: `/read-models/bank/balance?${name}=1` });
  }
  add('Deposit to a __proto__ account', command('Deposit', '{"accountId":"__proto__","amount":1}'));
  add('Deposit to a constructor account', command('Deposit', '{"accountId":"constructor","amount":1}'));
  add('query position[]', { url: `/read-models/bank/balance/ada?position[]=${seen}` });

  // Numbers out of range, and huge strings.
  for (const amount of [
    '1e309',
    '-1e309',
    '1E400',
    '-0',
    '0',
    '-1',
    '1.5',
    '9007199254740993',
    '1e-400',
    '"1e3"',
    '"0x10"',
    '"-1"',
    '" 1"',
    `"${'1'.repeat(101)}"`,
    `"${'9'.repeat(100_000)}"`,
    'null',
    'true',
    '[]',
    '{}',
    '"\\u0000"',
    '"１"',
  ]) {
    add(`amount ${amount.slice(0, 30)}`, command('Deposit', `{"accountId":"ada","amount":${amount}}`));
  }
  for (const age of ['1e309', '9007199254740993', '-1', '1.5', '"7"'])
    add(`age ${age}`, command('CreateInvite', `{"inviteId":"num","name":"x","age":${age}}`));
  add('an account id of 300 characters', command('Deposit', JSON.stringify({ accountId: 'x'.repeat(300), amount: 1 })));
  add(
    'an account id of 500,000 characters',
    command('Deposit', JSON.stringify({ accountId: 'x'.repeat(500_000), amount: 1 })),
  );

  // Hostile ids in paths.
  for (const id of [
    `account-${'x'.repeat(248)}`,
    '..',
    '.',
    '%2E%2E',
    'account-%00',
    '%00',
    'account%2F1',
    '-1',
    '%20account-1',
    'account-%0A',
    'account-a%20b',
    'account-%09',
    `account-${'%C3%A9'.repeat(248)}`,
    `account-${'x'.repeat(9000)}`,
    '%zz',
    'account-%E0%80%80',
    'account-%ED%A0%80',
    '..%2F..%2Fetc%2Fpasswd',
    'account-%C0%AE%C0%AE',
  ]) {
    add(`stream id ${id.slice(0, 40)}`, { url: `/streams/${id}` });
  }
  for (const id of [
    'x'.repeat(501),
    'x'.repeat(10_000),
    '%00',
    'a%00b',
    '%ED%A0%80',
    '%zz',
    '..',
    '%2F',
    '..%2F..%2Fetc%2Fpasswd',
    'nobody',
    '%E2%80%AE',
  ]) {
    add(`document id ${id.slice(0, 40)}`, { url: `/read-models/bank/balance/${id}` });
  }
  for (const name of [
    'Bad',
    'x'.repeat(101),
    '%00',
    'balance%00',
    'BALANCE',
    'balance;drop',
    'rm_balance',
    'bank_v2_balance',
    '1balance',
    'ghost',
  ]) {
    add(`collection ${name.slice(0, 40)}`, { url: `/read-models/bank/${name}/ada` });
  }
  for (const name of ['BANK', 'bank%00', 'x'.repeat(101), 'ghost', '%2E%2E'])
    add(`projection ${name.slice(0, 40)}`, { url: `/read-models/${name}/balance/ada` });

  // Every query parameter of every route, with bad values.
  const longValue = 'x'.repeat(5000);
  const badNumbers = [
    'abc',
    '',
    'Infinity',
    '-Infinity',
    'NaN',
    '1e309',
    '1e12',
    '1e3',
    '-1',
    '-0',
    '007',
    '%205',
    '5%20',
    '+5',
    '5%00',
    '0x10',
    '1.5',
    '1.0',
    '9'.repeat(30),
    '%00',
    longValue,
  ];
  for (const value of [...badNumbers, '31000', '30001'])
    add(`timeoutMs=${value.slice(0, 20)}`, {
      url: `/read-models/bank/balance/ada?position=${seen}&timeoutMs=${value}`,
    });
  add('timeoutMs twice', { url: `/read-models/bank/balance/ada?position=${seen}&timeoutMs=1&timeoutMs=2` });
  add('timeoutMs without position', { url: '/read-models/bank/balance/ada?timeoutMs=10' });
  for (const value of [
    'abc',
    '',
    'FFFFFFFFFFFFFFFF/0000000000000000',
    'ffffffffffffffff/ffffffffffffffff',
    next,
    '0/0',
    `${seen}x`,
    ` ${seen}`,
    '%00',
    longValue,
    '-1',
  ]) {
    add(`position=${value.slice(0, 40)}`, { url: `/read-models/bank/balance/ada?position=${value}` });
    add(`position=${value.slice(0, 40)} (list)`, { url: `/read-models/bank/balance?position=${value}` });
  }
  add('position twice', { url: `/read-models/bank/balance/ada?position=${seen}&position=${unseen}` });
  for (const value of badNumbers.concat(['0', '1001', '100000']))
    add(`list limit=${value.slice(0, 20)}`, { url: `/read-models/bank/balance?limit=${value}` });
  add('list limit twice', { url: '/read-models/bank/balance?limit=1&limit=2' });
  for (const value of ['', '%00', 'a%00', 'x'.repeat(501), '%ED%A0%80', '%zz', '%'])
    add(`list after=${value.slice(0, 20)}`, { url: `/read-models/bank/balance?after=${value}` });
  add('list after twice', { url: '/read-models/bank/balance?after=a&after=b' });
  add('after on a document', { url: '/read-models/bank/balance/ada?after=a' });
  add('limit on a document', { url: '/read-models/bank/balance/ada?limit=1' });
  for (const value of [...badNumbers, '9007199254740992'])
    add(`stream from=${value.slice(0, 20)}`, { url: `/streams/account-ada?from=${value}` });
  for (const value of [...badNumbers, '0', '1001'])
    add(`stream limit=${value.slice(0, 20)}`, { url: `/streams/account-ada?limit=${value}` });
  for (const value of ['up', '', 'FORWARDS', 'forwards,backwards', 'backward', '%00', longValue])
    add(`stream direction=${value.slice(0, 20)}`, { url: `/streams/account-ada?direction=${value}` });
  add('stream direction twice', { url: '/streams/account-ada?direction=forwards&direction=backwards' });
  add('stream from twice', { url: '/streams/account-ada?from=1&from=2' });
  add('a parameter a command does not take', {
    ...command('OpenAccount', '{"accountId":"q","owner":"x","holderTaxId":"52998224725"}'),
    url: '/commands/OpenAccount?position=1',
  });
  add('1,000 unknown parameters', {
    url: `/streams/account-ada?${Array.from({ length: 1000 }, (_, i) => `p${i}=1`).join('&')}`,
  });
  add('a malformed query string', { url: '/streams/account-ada?limit=%zz' });

  // Unknown routes and methods.
  for (const url of [
    '/',
    '/commands',
    '/commands/',
    '/read-models',
    '/read-models/bank',
    '/read-models/bank/balance/ada/more',
    '/streams',
    '/streams/',
    '/admin',
    '/.env',
    '/..%2F..%2Fetc%2Fpasswd',
    '//health',
    '/HEALTH',
    '/metrics',
    '/read-models//balance/ada',
    '/read-models/bank//ada',
    '/%c0',
    '/%',
  ]) {
    add(`GET ${url}`, { url });
  }
  for (const [url, methods] of [
    ['/health', ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['/commands/OpenAccount', ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['/read-models/bank/balance/ada', ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['/read-models/bank/balance', ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['/streams/account-ada', ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['/nowhere', ['POST', 'DELETE', 'PROPFIND', 'SEARCH']],
  ] as const) {
    for (const method of methods)
      add(`${method} ${url}`, {
        method,
        url,
        headers: json,
        payload: method === 'GET' || method === 'HEAD' ? undefined : '{}',
      } as InjectOptions);
  }
  return cases;
}

/** Requests only a socket can send: each must still get a problem+json (or, for a lie about the body, no answer). */
function rawRequests(): Array<[string, string | Buffer]> {
  const h = 'Host: 127.0.0.1\r\nConnection: close\r\n';
  return [
    ['an unknown method', `BREW /health HTTP/1.1\r\n${h}\r\n`],
    ['garbage', 'this is not http\r\n\r\n'],
    ['a request line with no version', 'GET /health\r\n\r\n'],
    ['HTTP/9.9', `GET /health HTTP/9.9\r\n${h}\r\n`],
    [
      'a NUL in a header value',
      Buffer.concat([
        Buffer.from(`POST /commands/OpenAccount HTTP/1.1\r\n${h}Idempotency-Key: k`),
        Buffer.from([0]),
        Buffer.from('k\r\nContent-Length: 2\r\ncontent-type: application/json\r\n\r\n{}'),
      ]),
    ],
    [
      'a NUL in a header name',
      Buffer.concat([Buffer.from(`GET /health HTTP/1.1\r\n${h}X-A`), Buffer.from([0]), Buffer.from(': 1\r\n\r\n')]),
    ],
    [
      'a lone surrogate (as CESU-8 bytes) in X-Correlation-Id',
      Buffer.concat([
        Buffer.from(`POST /commands/OpenAccount HTTP/1.1\r\n${h}X-Correlation-Id: `),
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from('\r\nContent-Length: 2\r\ncontent-type: application/json\r\n\r\n{}'),
      ]),
    ],
    [
      'UTF-8 bytes in Idempotency-Key',
      Buffer.concat([
        Buffer.from(`POST /commands/OpenAccount HTTP/1.1\r\n${h}Idempotency-Key: `),
        Buffer.from('ключ'),
        Buffer.from('\r\nContent-Length: 2\r\ncontent-type: application/json\r\n\r\n{}'),
      ]),
    ],
    ['headers over 16 KiB', `GET /health HTTP/1.1\r\n${h}X-Big: ${'x'.repeat(20_000)}\r\n\r\n`],
    ['a URL over 16 KiB', `GET /streams/account-${'x'.repeat(20_000)} HTTP/1.1\r\n${h}\r\n`],
    [
      'Content-Length and Transfer-Encoding both',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}content-type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ],
    [
      'a bad chunk',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}content-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
    ],
    [
      'two Content-Lengths',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}content-type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
    ],
    [
      'a negative Content-Length',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}content-type: application/json\r\nContent-Length: -1\r\n\r\n{}`,
    ],
    [
      'a Content-Length over the limit, sent in full',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}content-type: application/json\r\nContent-Length: 2000000\r\n\r\n${'x'.repeat(2_000_000)}`,
    ],
    ['no Host header', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n'],
    ['an absolute-form target elsewhere', `GET http://attacker.example/admin HTTP/1.1\r\n${h}\r\n`],
    ['a target with no leading slash', `GET health HTTP/1.1\r\n${h}\r\n`],
    ['a space in the target', `GET /streams/account-a b HTTP/1.1\r\n${h}\r\n`],
    [
      'a raw lone surrogate (CESU-8) in the path',
      Buffer.concat([
        Buffer.from('GET /streams/account-'),
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from(` HTTP/1.1\r\n${h}\r\n`),
      ]),
    ],
    [
      'a duplicated traceparent',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ncontent-type: application/json\r\nContent-Length: 33\r\n\r\n{"accountId":"dup","owner":"xyz"}`,
    ],
    [
      'a duplicated Idempotency-Key',
      `POST /commands/OpenAccount HTTP/1.1\r\n${h}Idempotency-Key: a\r\nIdempotency-Key: b\r\ncontent-type: application/json\r\nContent-Length: 33\r\n\r\n{"accountId":"dup","owner":"xyz"}`,
    ],
  ];
}

const backends: Array<[string, () => SqlEventStore]> = [
  ['PGlite', () => databases.pglite({ events })],
  ['PostgreSQL', () => databases.postgres({ events })],
];

for (const [backend, open] of backends) {
  describe(`hostile requests to the demo service on ${backend}`, () => {
    let store: SqlEventStore;
    let demo: Demo;
    let port: number;
    let seen: Position;
    let unseen: Position;
    let baseline: { count: number; last: string | undefined; tables: string[] };
    let closed = false;

    const tables = async () =>
      (
        await store.sql.query<{ table_name: string }>(
          'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
          [store.schema],
        )
      ).map((row) => row.table_name);
    const log = async () => {
      await untilLogSettled(store);
      let count = 0;
      let last: string | undefined;
      for await (const event of store.readAll()) {
        count++;
        last = `${event.id}@${event.position}`;
      }
      return { count, last };
    };
    const post = async (type: string, data: unknown) => {
      const response = await demo.api.inject({
        method: 'POST',
        url: `/commands/${type}`,
        headers: json,
        payload: JSON.stringify(data),
      });
      assert.equal(response.statusCode, 200, response.body);
      return (response.json() as { position: Position }).position;
    };
    const healthy = async (what: string) => {
      const response = await demo.api.inject({ url: '/health' });
      assert.equal(response.statusCode, 200, `after ${what}, /health answers`);
    };

    // The demo on a fresh store, some data, and the bank projection paused after one more deposit (for waits).
    before(async () => {
      store = open();
      await store.migrate();
      demo = await createDemo(sqlStorage(store));
      port = Number(new URL(await demo.api.listen({ host: '127.0.0.1', port: 0 })).port);
      await post('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: '52998224725' });
      await post('Deposit', { accountId: 'ada', amount: 100 });
      await post('CreateInvite', { inviteId: 'athena', name: 'Athena' });
      seen = await post('OpenAccount', { accountId: 'bob', owner: 'Bob', holderTaxId: '11144477735' });
      await demo.projections.bank.waitFor(seen, { timeoutMs: 30_000 });
      await demo.projections.guestlist.waitFor(seen, { timeoutMs: 30_000 });
      demo.projections.bank.subscription.pause();
      unseen = await post('Deposit', { accountId: 'bob', amount: 5 });
      baseline = { ...(await log()), tables: await tables() };
      assert.ok(
        baseline.tables.some((table) => table.startsWith('rm_bank_')),
        `read-model tables exist: ${baseline.tables.join(', ')}`,
      );
    });
    after(async () => {
      if (!closed) await demo?.close();
    });

    it('a client that disconnects mid-wait ends its wait: no waiter, progress listener or timer is left', async () => {
      const subscription = demo.projections.bank.subscription;
      const sockets = Array.from({ length: 20 }, () => {
        const socket = connect({ host: '127.0.0.1', port });
        socket.on('error', () => undefined);
        socket.write(
          `GET /read-models/bank/balance/bob?position=${unseen}&timeoutMs=30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
        );
        return socket;
      });
      await until(
        async () => (await subscription.status()).waiting === sockets.length,
        `${sockets.length} requests to wait`,
      );
      for (const socket of sockets) socket.destroy();
      await until(
        async () => (await subscription.status()).waiting === 0,
        'the waits to end when their clients went away',
      );
      assert.equal(
        (subscription as unknown as { progressListeners: Set<unknown> }).progressListeners.size,
        0,
        'no progress listener left',
      );
      await healthy('disconnects');
      // A wait that is not cut short still ends in a 504 within its own time.
      const late = await demo.api.inject({ url: `/read-models/bank/balance/bob?position=${unseen}&timeoutMs=20` });
      assert.equal(late.statusCode, 504, late.body);
      assert.match(String(late.headers['content-type']), /^application\/problem\+json/);
      assert.equal((late.json() as { code: string }).code, 'WAIT_TIMEOUT');
    });

    it('every hostile request through inject is a 4xx problem+json with a code and a detail, and the process keeps answering', async () => {
      const failures: string[] = [];
      const next = await store.nextPosition();
      const cases = hostileRequests(seen, unseen, next);
      for (const [name, options] of cases) {
        let response: LightMyRequestResponse;
        try {
          response = await demo.api.inject(options);
        } catch (error) {
          failures.push(`${name}: inject threw ${(error as Error).message}`);
          continue;
        }
        try {
          assertProblem(
            name,
            response.statusCode,
            response.headers['content-type'] as string | undefined,
            options.method === 'HEAD' ? '{}' : response.body,
          );
        } catch (error) {
          if (
            options.method === 'HEAD' &&
            response.statusCode === 405 &&
            /problem\+json/.test(String(response.headers['content-type']))
          )
            continue; // HEAD has no body
          failures.push((error as Error).message.split('\n')[0]!);
        }
      }
      await healthy(`${cases.length} hostile requests`);
      assert.deepEqual(
        failures,
        [],
        `${failures.length} of ${cases.length} hostile requests were not answered as they should be`,
      );
      assert.equal((Object.prototype as Record<string, unknown>).polluted, undefined, 'no prototype was polluted');
    });

    it('hostile requests only a socket can send get a problem+json too, and the process keeps answering', async () => {
      const failures: string[] = [];
      for (const [name, request] of rawRequests()) {
        const response = await raw(port, request);
        if (response === null) {
          failures.push(`${name}: no answer`);
          continue;
        }
        try {
          assertProblem(name, response.status, response.contentType, response.body);
        } catch (error) {
          failures.push((error as Error).message.split('\n')[0]!);
        }
      }
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(failures, [], `${failures.length} raw requests were not answered as they should be`);
    });

    it('valid but odd requests are answered correctly, with no side effect', async () => {
      // Ids with '..' and '/' are just ids: no traversal, an empty stream.
      for (const id of ['account-..%2F..%2Fetc%2Fpasswd', 'account-__proto__', 'account-constructor']) {
        const response = await demo.api.inject({ url: `/streams/${id}` });
        assert.equal(response.statusCode, 200, response.body);
        const body = response.json() as { events: unknown[]; info: { exists: boolean } };
        assert.deepEqual([body.events, body.info.exists], [[], false]);
      }
      const list = await demo.api.inject({ url: '/read-models/bank/balance?after=__proto__&limit=1000' });
      assert.equal(list.statusCode, 200, list.body);
      const declared = await demo.api.inject({ url: '/read-models/bank/payment?limit=1' });
      assert.deepEqual(
        [declared.statusCode, declared.json()],
        [200, { items: [] }],
        'a declared collection never written reads as empty',
      );
      assert.equal(
        (await demo.api.inject({ url: '/health?anything=1' })).statusCode,
        200,
        '/health ignores its query string',
      );
    });

    it('at the end: the log and the database tables are as they were before the first hostile request', async () => {
      demo.projections.bank.subscription.resume();
      await demo.projections.bank.waitFor(unseen, { timeoutMs: 30_000 });
      assert.deepEqual(await log(), { count: baseline.count, last: baseline.last }, 'nothing was appended');
      assert.deepEqual(await tables(), baseline.tables, 'no table was created');
      for (const projection of Object.values(demo.projections))
        assert.equal((await projection.subscription.status()).waiting, 0);
      closed = true;
      await demo.close();
    });
  });
}

describe('the demo process (npm start) refuses what it cannot use, in one line', () => {
  const run = (env: Record<string, string>) =>
    new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve, reject) => {
      const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
      delete childEnv.DATABASE_URL;
      const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', 'examples/demo/src/main.ts'], {
        cwd: new URL('../../../', import.meta.url).pathname,
        env: childEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const guard = setTimeout(() => child.kill('SIGKILL'), 60_000); // a guard: it must exit by itself
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(guard);
        resolve({ code, stderr, stdout });
      });
    });
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('a port already in use: says which and how to choose another, closes the store, exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eventline-demo-'));
    dirs.push(dir);
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as AddressInfo;
    try {
      const result = await run({ PORT: String(port), EVENTLINE_DATA: join(dir, 'data') });
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, new RegExp(`port ${port} .*already in use`));
      assert.match(result.stderr, /PORT=\d+ npm start/);
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
      // The store was closed: its data directory can be opened again at once.
      const again = createPGliteStore({ dataDir: join(dir, 'data'), events });
      await again.migrate();
      await again.close();
    } finally {
      holder.close();
    }
  });

  it('a data directory another process holds: its message, exit 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eventline-demo-'));
    dirs.push(dir);
    const held = createPGliteStore({ dataDir: join(dir, 'data'), events });
    await held.migrate();
    try {
      const result = await run({ PORT: '0', EVENTLINE_DATA: join(dir, 'data') });
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /data directory/);
      assert.match(result.stderr, /EVENTLINE_DATA=/);
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      await held.close();
    }
  });

  it('a PORT that is not a port number: exit 1 before anything is opened', async () => {
    const result = await run({ PORT: 'abc', EVENTLINE_DATA: '/nonexistent/never-created' });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /PORT must be a port number/);
  });
});
