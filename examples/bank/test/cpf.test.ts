/** The CPF: its two check digits, its two written forms, and the command that requires one. */
// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateWithSchema, ValidationError } from '@eventline/core';
import { completeCpf, cpf, formatCpf, OpenAccount, parseCpf, sampleCpf } from '../src/index.js';

describe('CPF', () => {
  it('accepts valid CPFs, formatted or bare, as their 11 digits', () => {
    for (const [value, digits] of [
      ['123.456.789-09', '12345678909'],
      ['12345678909', '12345678909'],
      ['529.982.247-25', '52998224725'],
      ['111.444.777-35', '11144477735'],
      ['000.000.001-91', '00000000191'],
    ]) {
      assert.equal(parseCpf(value), digits, value);
      if (value!.length === 14) assert.equal(formatCpf(digits!), value);
    }
  });

  it('refuses wrong check digits, other shapes, eleven equal digits and non-strings', () => {
    for (const value of [
      '123.456.789-00', // second check digit wrong
      '123.456.789-19', // first check digit wrong
      '12345678900',
      '529.982.247-52',
      '111.111.111-11', // passes the check, never issued
      '00000000000',
      '123.456.78909', // half formatted
      '123456789-09',
      '1234567890',
      '123456789090',
      ' 12345678909',
      '１２３４５６７８９０９', // full-width digits
      '',
      12345678909,
      null,
    ])
      assert.equal(parseCpf(value), null, String(value));
  });

  it('completeCpf and sampleCpf make valid ones', () => {
    assert.equal(completeCpf('123456789'), '123.456.789-09');
    assert.throws(() => completeCpf('12345'), RangeError);
    for (const seed of ['a', 'b', 'ada', '', 'x'.repeat(1000)]) assert.notEqual(parseCpf(sampleCpf(seed)), null, seed);
    assert.equal(sampleCpf('ada'), sampleCpf('ada'));
  });

  it("OpenAccount requires the holder's CPF, and gives it on as digits", async () => {
    const valid = { accountId: 'a', owner: 'Ada', holderTaxId: '123.456.789-09' };
    assert.equal((await validateWithSchema(OpenAccount.schema, valid, 'OpenAccount')).holderTaxId, '12345678909');
    for (const holderTaxId of [undefined, '123.456.789-00', 12345678909])
      await assert.rejects(
        validateWithSchema(OpenAccount.schema, { ...valid, holderTaxId }, 'OpenAccount'),
        (error: unknown) => error instanceof ValidationError && /holderTaxId/.test(error.message),
      );
    assert.equal(await validateWithSchema(cpf, '12345678909', 'cpf'), '12345678909');
  });
});
