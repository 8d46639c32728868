import { describe, expect, it } from 'vitest';
import { wrapLine, wrapSentences } from './output.js';

describe('help wrapping', () => {
  it('breaks long lines at spaces with a hanging indent, keeping the spacing between columns', () => {
    expect(wrapLine('  -a <a>  CNB_A  short', 6, 30)).toEqual(['  -a <a>  CNB_A  short']);
    expect(wrapLine('  -flag <flag>  CNB_FLAG  path to the flag directory', 6, 30)).toEqual([
      '  -flag <flag>  CNB_FLAG  path',
      '      to the flag directory',
    ]);
    // A word longer than a line stays whole.
    expect(wrapLine('see /a/very/long/path/that/does/not/fit here', 2, 20)).toEqual([
      'see',
      '  /a/very/long/path/that/does/not/fit',
      '  here',
    ]);
  });

  it('rewraps each sentence of the notes as a paragraph; blank lines stay', () => {
    expect(wrapSentences(['One short.', 'Two spans', 'two lines.', '', 'Three.'], 12)).toEqual([
      'One short.',
      'Two spans',
      'two lines.',
      '',
      'Three.',
    ]);
    expect(wrapSentences(['Exit codes: 0 ok, 1', 'other, 3 bad flags.'], 24)).toEqual([
      'Exit codes: 0 ok, 1',
      'other, 3 bad flags.',
    ]);
    expect(wrapSentences(['Exit codes: 0 ok,', '1 other.'], 80)).toEqual(['Exit codes: 0 ok, 1 other.']);
  });
});
