/**
 * `ocs` run as a user runs it, for the CLI's end-to-end tests: a spawned process with a home,
 * config directory, key and token of the test's own.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const OCS = fileURLToPath(import.meta.resolve('@ocs/cli/main'));

export interface OcsResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The user's environment: `home` holds `config/` and `id_ed25519`; `extra` overrides any of it. */
export function ocsProcess(
  home: string,
  token: string,
  args: string[],
  extra: Record<string, string> = {},
): ChildProcess {
  return spawn(process.execPath, [OCS, ...args], {
    env: ocsEnv(home, token, extra),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export function ocsEnv(home: string, token: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    OCS_CONFIG_DIR: join(home, 'config'),
    OCS_KEY: join(home, 'id_ed25519'),
    OCS_TOKEN: token,
    ...extra,
  };
}

/**
 * Runs `ocs args…` on a terminal of its own (util-linux `script` gives it a pty), typing
 * `typed` once it has asked: what a person at a prompt sees. The output is the terminal's.
 */
export function runOcsOnTerminal(
  home: string,
  token: string,
  args: string[],
  typed: string,
  asked: RegExp,
): Promise<OcsResult> {
  const quote = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
  const cmd = [process.execPath, OCS, ...args].map(quote).join(' ');
  return new Promise((resolve, reject) => {
    // -e: script exits with the command's code; -q: no banner; the log goes nowhere.
    const p = spawn('script', ['-qec', cmd, '/dev/null'], {
      env: ocsEnv(home, token),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let typedYet = false;
    const seen = (d: Buffer) => {
      out += d.toString();
      if (!typedYet && asked.test(out)) {
        typedYet = true;
        p.stdin!.write(typed);
      }
    };
    p.stdout!.on('data', seen);
    p.stderr!.on('data', seen);
    p.on('error', reject);
    // A prompt that never comes fails the test rather than hanging it.
    const timer = setTimeout(() => p.kill(), 20_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout: out, stderr: '' });
    });
  });
}

/** Runs it to the end; its exit code and output. */
export function runOcs(
  home: string,
  token: string,
  args: string[],
  extra: Record<string, string> = {},
): Promise<OcsResult> {
  return new Promise((resolve, reject) => {
    const p = ocsProcess(home, token, args, extra);
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Exit 0, or the assertion names the exit code and what it printed; returns stdout. */
export function ok(r: OcsResult): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
