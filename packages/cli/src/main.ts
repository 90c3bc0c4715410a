#!/usr/bin/env node
/**
 * ocs: the command line of OpenCluster Spaces, for farmers, owners and orchestrators. Built on
 * the SDK (`@ocs/client`); every command takes `--json`. Exit codes are in docs/cli.md.
 */
import { Command, CommanderError } from 'commander';
import { Context, type GlobalOptions } from './context.js';
import { EXIT, report } from './output.js';
import { auditCommands } from './commands/audit.js';
import { keyCommands } from './commands/keys.js';
import { leaseCommands } from './commands/leases.js';
import { nodeCommands } from './commands/nodes.js';
import { spaceCommands } from './commands/spaces.js';
import { tokenCommand } from './commands/token.js';
import { workloadCommands } from './commands/workloads.js';
import { networkCommands } from './commands/network.js';

/** Wraps a command's action: builds its context, reports a failure with its exit code. */
export type Run = <A extends unknown[]>(
  fn: (ctx: Context, ...args: A) => Promise<void>,
) => (...args: [...A, ...unknown[]]) => Promise<void>;

export function buildProgram(): Command {
  const program = new Command('ocs')
    .description('OpenCluster Spaces: reserve spaces on a node and run containers and VMs in them')
    .option('--node <name>', 'the node (default: the default node; $OCS_NODE)')
    .option('--key <path>', 'your owner key (default: $OCS_KEY, else ~/.ssh/id_ed25519)')
    .option(
      '--token-file <path>',
      'read the token from this file at each request (default: $OCS_TOKEN_FILE, $OCS_TOKEN)',
    )
    .option('--config-dir <dir>', 'where ocs keeps nodes and wrapped keys (default: $OCS_CONFIG_DIR, ~/.config/ocs)')
    .option('--json', 'print JSON (for scripts)')
    .showHelpAfterError()
    .exitOverride();
  const run: Run =
    (fn) =>
    async (...args) => {
      const cmd = args[args.length - 1] as Command;
      const ctx = new Context(cmd.optsWithGlobals() as GlobalOptions);
      try {
        await fn(ctx, ...(args.slice(0, -1) as never));
      } catch (err) {
        process.exitCode = report(ctx.out, err);
      } finally {
        ctx.close();
      }
    };
  keyCommands(program, run);
  tokenCommand(program, run);
  nodeCommands(program, run);
  spaceCommands(program, run);
  workloadCommands(program, run);
  networkCommands(program, run);
  leaseCommands(program, run);
  auditCommands(program, run);
  completionCommands(program);
  return program;
}

/**
 * Shell completion: `ocs completion bash` prints a script whose function asks
 * `ocs __complete WORDS…` for the candidates, read from the command tree itself (so it never
 * goes stale).
 */
function completionCommands(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script: source <(ocs completion bash)')
    .argument('[shell]', 'bash (zsh reads it too, with bashcompinit)', 'bash')
    .action((shell: string) => {
      if (shell !== 'bash') {
        process.stderr.write(`error: no completion for ${shell} (bash, or zsh with bashcompinit)\n`);
        process.exitCode = EXIT.usage;
        return;
      }
      process.stdout.write(
        [
          '_ocs() {',
          "  local IFS=$'\\n'",
          '  COMPREPLY=($(compgen -W "$(ocs __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}"))',
          '}',
          'complete -o default -F _ocs ocs',
          '',
        ].join('\n'),
      );
    });
  program
    .command('__complete', { hidden: true })
    .argument('[words...]')
    .allowUnknownOption()
    .action((words: string[]) => {
      let cmd: Command = program;
      for (const w of words) {
        const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
        if (sub) cmd = sub;
      }
      const names = cmd.commands.filter((c) => !c.name().startsWith('__')).map((c) => c.name());
      const options = [...cmd.options, ...(cmd === program ? [] : program.options)].map((o) => o.long ?? o.short ?? '');
      process.stdout.write(`${[...names, ...options.filter(Boolean)].join('\n')}\n`);
    });
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not failures; anything else commander refused is a usage error.
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    throw err;
  }
}

await main();
