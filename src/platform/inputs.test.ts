import { describe, expect, it } from 'vitest';
import { PackfarmError } from '../util/errors.js';
import {
  type InputDef,
  LIFECYCLE_INPUTS as I,
  parseGoBool,
  parseLifecycleArgs,
  parseLogLevel,
  resolveInputs,
} from './inputs.js';

const defs: InputDef[] = [I.app, I.layers, I.group, I.order, I.daemon, I['log-level'], I.tag, I['exec-env']];

describe('parseLifecycleArgs', () => {
  it('takes -flag value, -flag=value and --flag forms', () => {
    const p = parseLifecycleArgs(['-app', '/a', '--layers=/l', '-log-level=debug', 'img'], defs);
    expect(p.flags.get('app')).toBe('/a');
    expect(p.flags.get('layers')).toBe('/l');
    expect(p.flags.get('log-level')).toBe('debug');
    expect(p.positionals).toEqual(['img']);
  });

  it('treats bool flags like Go: bare means true, =false means false, no separate value', () => {
    expect(parseLifecycleArgs(['-daemon'], defs).flags.get('daemon')).toBe(true);
    expect(parseLifecycleArgs(['-daemon=false'], defs).flags.get('daemon')).toBe(false);
    const p = parseLifecycleArgs(['-daemon', 'false'], defs);
    expect(p.flags.get('daemon')).toBe(true);
    expect(p.positionals).toEqual(['false']);
    expect(() => parseLifecycleArgs(['-daemon=maybe'], defs)).toThrow(
      /invalid boolean value "maybe" for flag -daemon/,
    );
  });

  it('stops at the first positional and after --; later flags are positionals', () => {
    expect(parseLifecycleArgs(['img', '-app', '/a'], defs).positionals).toEqual(['img', '-app', '/a']);
    expect(parseLifecycleArgs(['--', '-app'], defs).positionals).toEqual(['-app']);
  });

  it('collects list flags and keeps the last value of others', () => {
    const p = parseLifecycleArgs(['-tag', 'a', '-tag=b', '-app', '/1', '-app', '/2'], defs);
    expect(p.flags.get('tag')).toEqual(['a', 'b']);
    expect(p.flags.get('app')).toBe('/2');
  });

  it('reports unknown flags, missing values and env-only inputs with exit code 3', () => {
    for (const argv of [['-nope'], ['-app'], ['-exec-env', 'x'], ['---app', 'x']]) {
      try {
        parseLifecycleArgs(argv, defs);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(PackfarmError);
        expect((err as PackfarmError).exitCode).toBe(3);
      }
    }
    expect(() => parseLifecycleArgs(['-nope'], defs)).toThrow('flag provided but not defined: -nope');
  });

  it('recognises help and version', () => {
    expect(parseLifecycleArgs(['-h'], defs).help).toBe(true);
    expect(parseLifecycleArgs(['--help'], defs).help).toBe(true);
    expect(parseLifecycleArgs(['-version'], defs).version).toBe(true);
  });
});

describe('resolveInputs', () => {
  it('prefers flag over env over default and says where a value came from', () => {
    const parsed = parseLifecycleArgs(['-app', 'rel/app'], defs);
    const r = resolveInputs(defs, parsed, {
      env: { CNB_APP_DIR: '/env/app', CNB_LAYERS_DIR: '/env/layers', CNB_LOG_LEVEL: '' },
      cwd: '/cwd',
    });
    expect(r.require('app')).toBe('/cwd/rel/app');
    expect(r.from('app')).toBe('flag');
    expect(r.require('layers')).toBe('/env/layers');
    expect(r.from('layers')).toBe('env');
    // An empty env value counts as unset.
    expect(r.require('log-level')).toBe('info');
    expect(r.from('log-level')).toBe('default');
    expect(r.require('exec-env')).toBe('production');
  });

  it('replaces <layers> in defaults with the resolved layers dir', () => {
    const r = resolveInputs(defs, parseLifecycleArgs(['-layers', '/L'], defs), { env: {} });
    expect(r.require('group')).toBe('/L/group.toml');
    expect(r.require('order')).toBe('/L/order.toml');
    expect(r.from('order')).toBe('default');
    const r2 = resolveInputs(defs, parseLifecycleArgs([], defs), { env: { CNB_GROUP_PATH: '/g.toml' } });
    expect(r2.require('group')).toBe('/g.toml');
    expect(r2.require('order')).toBe('/layers/order.toml');
  });

  it('parses bool and list env values', () => {
    const r = resolveInputs([...defs, I['insecure-registry']], parseLifecycleArgs([], defs), {
      env: { CNB_USE_DAEMON: 'TRUE', CNB_INSECURE_REGISTRIES: 'a:5000,b' },
    });
    expect(r.bool('daemon')).toBe(true);
    expect(r.list('insecure-registry')).toEqual(['a:5000', 'b']);
    expect(parseGoBool('1')).toBe(true);
    expect(parseGoBool('yes')).toBeUndefined();
  });

  it('requires values that have no default', () => {
    const r = resolveInputs([I['run-image']], parseLifecycleArgs([], [I['run-image']]), { env: {} });
    expect(r.string('run-image')).toBeUndefined();
    expect(() => r.require('run-image')).toThrow('-run-image (or CNB_RUN_IMAGE) is required');
  });

  it('validates log levels', () => {
    expect(parseLogLevel('DEBUG')).toBe('debug');
    expect(parseLogLevel('warning')).toBe('warn');
    expect(() => parseLogLevel('loud')).toThrow(/not a log level/);
  });
});
