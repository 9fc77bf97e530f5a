import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * A child node process running a TypeScript fixture from the repository root: its stdout lines, the tail of its
 * stderr, and its exit. Its stdin is held open, so a fixture can exit when it closes ({@link stop}).
 */
export class FixtureProcess {
  readonly process: ChildProcess;
  readonly lines: string[] = [];
  readonly exited: Promise<void>;
  stderr = '';
  private readonly listeners = new Set<() => void>();

  constructor(script: string, env: Record<string, string>) {
    this.process = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', script], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let pending = '';
    this.process.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      this.lines.push(...parts);
      this.notify();
    });
    this.process.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    this.exited = new Promise((resolve) => this.process.once('exit', () => resolve()));
    void this.exited.then(() => this.notify());
  }

  get pid(): number {
    return this.process.pid!;
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** The first line printed that passes `test`, once there is one; undefined when the child exits first or `ms` pass. */
  async waitForLine(test: (line: string) => boolean, ms: number): Promise<string | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.lines.find(test);
      if (found !== undefined) return found;
      if (!this.alive || Date.now() > deadline) return undefined;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.listeners.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(1, Math.min(100, deadline - Date.now())));
        this.listeners.add(done);
      });
    }
  }

  /** SIGKILL, by its pid (what a crash or the OOM killer does), and wait for the exit. */
  async kill(): Promise<void> {
    if (this.alive) process.kill(this.pid, 'SIGKILL');
    await this.exited;
  }

  /** Closes stdin (the fixture ends its work and exits) and waits for the exit. */
  async stop(): Promise<void> {
    this.process.stdin!.end();
    await this.exited;
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }
}

/** A random whole number from `low` to `high`, both included: when a fault test kills, waits or sizes a batch. */
export function between(low: number, high: number): number {
  return low + Math.floor(Math.random() * (high - low + 1));
}
