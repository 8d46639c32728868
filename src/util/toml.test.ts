import { describe, expect, it } from 'vitest';
import { parseToml } from './toml.js';

describe('parseToml errors', () => {
  it('give the position once, in one sentence', () => {
    let message = '';
    try {
      parseToml('a = 1\nb = [1,\nc = x\n', '/app/project.toml');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toBe(
      '/app/project.toml: not valid TOML at line 3, column 1: unexpected character, expecting string, number, datetime, boolean, inline array or inline table.',
    );
    expect(message.match(/\d+/g)).toEqual(['3', '1']);
    expect(() => parseToml('[a]\nb=1\n[a]\n', 'x.toml')).toThrow(
      /^x\.toml: not valid TOML at line 3, column 3: can't redefine existing key\.$/,
    );
  });
});
