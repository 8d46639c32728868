import type { BuildEvent } from '../api/events.js';
import type { LayerOutcome } from '../phase/export.js';

/**
 * Turning build events into text. Three shapes:
 *   lines    plain lines, prefixed with the target when there are several (`[linux/arm64] ===> BUILD`)
 *   tty      the same lines scrolling above a status block, one line per target (phase, elapsed time, bytes
 *            uploaded), redrawn in place
 *   json     every event as one JSON line
 * Colour only on a terminal, never with NO_COLOR.
 */
export type RenderMode = 'lines' | 'tty' | 'json';

export interface BuildRendererOptions {
  mode: RenderMode;
  write: (line: string) => void;
  /** Raw terminal output (tty mode: cursor movement, no newline added). */
  writeRaw?: (text: string) => void;
  /** Prefix lines with their target (default: when the plan has several targets). */
  prefix?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  color?: boolean;
  now?: () => number;
}

export interface BuildRenderer {
  onEvent(e: BuildEvent): void;
  /** Stop redrawing and leave the final status on screen. */
  close(): void;
}

export function layerLine(name: string, outcome: LayerOutcome): string {
  return `${outcome === 'added' ? 'Adding' : 'Reusing'} layer '${name.replace(/^bp:/, '')}'`;
}

export function colorAllowed(isTTY: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  return isTTY && !env.NO_COLOR;
}

interface TargetStatus {
  phase: string;
  since: number;
  started: number;
  bytes: number;
  state: 'running' | 'done' | 'failed';
  runs?: string;
}

export function createBuildRenderer(opts: BuildRendererOptions): BuildRenderer {
  const now = opts.now ?? (() => Date.now());
  const paint = (code: number, text: string) => (opts.color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const status = new Map<string, TargetStatus>();
  let prefix = opts.prefix ?? false;
  let drawn = 0;
  let timer: NodeJS.Timeout | undefined;

  const text = (e: BuildEvent): string | undefined => {
    switch (e.type) {
      case 'phase-start':
        return e.phase === 'plan' || opts.quiet ? undefined : `===> ${e.phase.toUpperCase()}`;
      case 'output':
        return opts.quiet ? undefined : e.line;
      case 'info':
        return opts.quiet ? undefined : e.message;
      case 'debug':
        return opts.verbose ? paint(90, `DEBUG: ${e.message}`) : undefined;
      case 'warning':
        return `${paint(33, 'WARN:')} ${e.message}`;
      case 'layer':
        return opts.quiet ? undefined : layerLine(e.name, e.outcome);
      case 'target-start':
        return opts.quiet || !prefix ? undefined : `building (${e.runs}, ${e.executor} executor)`;
      case 'target-failed':
        return `${paint(31, 'ERROR:')} failed in ${e.phase}: ${e.message}`;
      case 'index':
        return opts.quiet
          ? undefined
          : `${e.written.length > 0 ? 'Wrote' : 'Kept'} index ${e.digest}${e.tags.length > 0 ? ` (${e.tags.join(', ')})` : ''}`;
      default:
        return undefined;
    }
  };

  const line = (e: BuildEvent): string | undefined => {
    const t = text(e);
    if (t === undefined) return undefined;
    return prefix && e.target ? `${paint(36, `[${e.target}]`)} ${t}` : t;
  };

  const track = (e: BuildEvent) => {
    if (!e.target) return;
    const s = status.get(e.target) ?? {
      phase: 'start',
      since: now(),
      started: now(),
      bytes: 0,
      state: 'running' as const,
    };
    if (e.type === 'target-start') s.runs = e.runs;
    if (e.type === 'phase-start') {
      s.phase = e.phase;
      s.since = now();
    }
    if (e.type === 'upload') s.bytes = e.bytes;
    if (e.type === 'target-end') s.state = 'done';
    if (e.type === 'target-failed') s.state = 'failed';
    status.set(e.target, s);
  };

  const statusLines = (): string[] =>
    [...status.entries()].map(([target, s]) => {
      const elapsed = ((now() - s.started) / 1000).toFixed(1);
      const state =
        s.state === 'done'
          ? paint(32, 'done')
          : s.state === 'failed'
            ? paint(31, 'failed')
            : s.phase.toUpperCase();
      const bytes = s.bytes > 0 ? `  ↑ ${formatBytes(s.bytes)}` : '';
      return `[${target}] ${state}  ${elapsed}s${s.runs ? `  (${s.runs})` : ''}${bytes}`;
    });

  const raw = opts.writeRaw ?? ((t: string) => opts.write(t));
  const clear = () => {
    if (drawn > 0) raw(`\u001b[${drawn}A\u001b[0J`);
    drawn = 0;
  };
  const draw = () => {
    const lines = statusLines();
    if (lines.length === 0) return;
    raw(`${lines.join('\n')}\n`);
    drawn = lines.length;
  };

  return {
    onEvent(e) {
      if (e.type === 'planned' && opts.prefix === undefined) prefix = e.targets.length > 1;
      if (opts.mode === 'json') {
        opts.write(JSON.stringify(e));
        return;
      }
      if (opts.mode === 'lines') {
        const l = line(e);
        if (l !== undefined) opts.write(l);
        return;
      }
      track(e);
      const l = line(e);
      clear();
      if (l !== undefined) raw(`${l}\n`);
      draw();
      if (!timer) {
        timer = setInterval(() => {
          clear();
          draw();
        }, 250);
        timer.unref();
      }
    },
    close() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}
