import type { Command } from 'commander';
import type { FarmListing, NodeStatus } from '../farm/manage.js';
import { PackfarmError } from '../util/errors.js';
import { parsePositiveInt } from './image.js';
import { type CliIO, collect } from './output.js';

interface NodeFlags {
  name?: string;
  identity?: string;
  platforms?: string;
  maxJobs?: number;
  command?: string;
  sshOption: string[];
}

/** `packfarm farm …`: named sets of build nodes (farms.toml under the XDG config dir). */
export function registerFarmCommands(program: Command, io: CliIO): void {
  const farm = program
    .command('farm')
    .description('Manage farms: named sets of build nodes reached over SSH (and the local machine)')
    .addHelpText(
      'after',
      [
        '',
        'A node is `local` or ssh://[user@]host[:port]; it needs Node.js >= 20.19, packfarm and runc (plus',
        'qemu-user-static to emulate other architectures). packfarm runs `ssh -o BatchMode=yes NODE packfarm',
        'node serve --stdio`, so your ~/.ssh/config, agent, keys and known_hosts apply.',
        'Config: $XDG_CONFIG_HOME/packfarm/farms.toml (else ~/.config/packfarm/farms.toml).',
        'Examples:',
        '  packfarm farm create ci local ssh://builder@arm1.lan',
        '  packfarm farm node add ci ssh://builder@arm2.lan:2222 --identity ~/.ssh/id_farm --platforms linux/arm64',
        '  packfarm farm ls',
        '  packfarm build registry.example/app --farm ci --platform linux/amd64,linux/arm64 --publish',
      ].join('\n'),
    );

  registerFarmSets(farm, io);
  registerNodeCommands(farm, io);
  registerImportPodman(farm, io);
}

/** farms.toml's module and path, loaded when a farm command runs. */
async function load() {
  const cfg = await import('../farm/config.js');
  return { cfg, path: cfg.farmsFilePath(process.env) };
}

/** `farm create`, `farm rm`, `farm ls`. */
function registerFarmSets(farm: Command, io: CliIO): void {
  farm
    .command('create')
    .description('Create a farm, optionally with nodes (`local` or ssh:// URIs)')
    .argument('<name>', 'farm name')
    .argument('[nodes...]', 'nodes: local, ssh://[user@]host[:port]')
    .option('--default', 'make it the default farm')
    .action(async (name: string, nodes: string[], o: { default?: boolean }) => {
      const { cfg, path } = await load();
      cfg.checkFarmName(name);
      const entries = nodes.map((uri) => cfg.nodeFromInput({ uri }));
      await cfg.updateFarms(path, (f) => {
        if (f.farms[name])
          throw new PackfarmError('FARM_EXISTS', `farm ${name} already exists in ${path}`, {
            hint: 'add nodes with `packfarm farm node add`, or remove it first with `packfarm farm rm`',
          });
        const farmCfg = { nodes: [] as typeof entries };
        for (const n of entries) cfg.addNode(farmCfg, n, name);
        f.farms[name] = farmCfg;
        if (o.default || !f.default) f.default = name;
      });
      io.out(`Created farm ${name} with ${entries.length} node(s) in ${path}`);
    });

  farm
    .command('rm')
    .alias('remove')
    .description('Remove a farm')
    .argument('<name>', 'farm name')
    .action(async (name: string) => {
      const { cfg, path } = await load();
      await cfg.updateFarms(path, (f) => {
        cfg.getFarm(f, name, path);
        delete f.farms[name];
        if (f.default === name) delete f.default;
      });
      io.out(`Removed farm ${name}`);
    });

  farm
    .command('ls')
    .alias('list')
    .description(
      'List farms and probe every node: reachable or the SSH error, packfarm version, platforms, jobs',
    )
    .argument('[name]', 'only this farm')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, o: { json?: boolean }) => {
      const { path } = await load();
      const { listFarms } = await import('../farm/manage.js');
      const farms = await listFarms({ path, env: process.env, ...(name ? { name } : {}) });
      if (o.json) io.out(JSON.stringify(farms, null, 2));
      else
        io.out(
          farms.length === 0
            ? `no farms in ${path} (create one with \`packfarm farm create NAME\`)`
            : renderFarms(farms),
        );
    });
}

/** `farm node add`, `farm node rm`. */
function registerNodeCommands(farm: Command, io: CliIO): void {
  const node = farm.command('node').description('Add or remove nodes of a farm');
  node
    .command('add')
    .description('Add a node to a farm')
    .argument('<farm>', 'farm name')
    .argument('<uri>', 'ssh://[user@]host[:port], or local')
    .option('--name <name>', 'node name (default: user@host[:port] from the URI)')
    .option('--identity <file>', 'ssh private key (default: your ssh config and agent)')
    .option('--platforms <list>', 'use the node only for these platforms, e.g. linux/arm64,linux/arm/v7')
    .option('--max-jobs <n>', 'targets the node builds at once (default: its CPU count)', (v) =>
      parsePositiveInt(v),
    )
    .option('--command <path>', 'packfarm on the node (default: packfarm on its PATH)')
    .option(
      '--ssh-option <opt>',
      'extra `ssh -o` option, e.g. UserKnownHostsFile=/path (repeatable)',
      collect,
      [],
    )
    .action(async (farmName: string, uri: string, o: NodeFlags) => {
      const { cfg, path } = await load();
      const entry = cfg.nodeFromInput({
        uri,
        ...(o.name ? { name: o.name } : {}),
        ...(o.identity ? { identity: o.identity } : {}),
        ...(o.platforms
          ? {
              platforms: o.platforms
                .split(',')
                .map((s) => s.trim())
                .filter(Boolean),
            }
          : {}),
        ...(o.maxJobs ? { maxJobs: o.maxJobs } : {}),
        ...(o.command ? { command: o.command } : {}),
        sshOptions: o.sshOption,
      });
      await cfg.updateFarms(path, (f) => cfg.addNode(cfg.getFarm(f, farmName, path), entry, farmName));
      io.out(`Added node ${entry.name} (${entry.uri}) to farm ${farmName}`);
    });
  node
    .command('rm')
    .alias('remove')
    .description('Remove a node from a farm')
    .argument('<farm>', 'farm name')
    .argument('<node>', 'node name (see `packfarm farm ls`)')
    .action(async (farmName: string, nodeName: string) => {
      const { cfg, path } = await load();
      await cfg.updateFarms(path, (f) => cfg.removeNode(cfg.getFarm(f, farmName, path), nodeName, farmName));
      io.out(`Removed node ${nodeName} from farm ${farmName}`);
    });
}

/** `farm import-podman`. */
function registerImportPodman(farm: Command, io: CliIO): void {
  farm
    .command('import-podman')
    .description("Create a farm from podman's farm and system connections (same ssh URIs and identities)")
    .argument('[name]', "podman farm to import (default: podman's default farm, else every connection)")
    .option('--as <name>', 'name of the new packfarm farm (default: the podman farm name, else "podman")')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, o: { as?: string; json?: boolean }) => {
      const { cfg, path } = await load();
      const { readPodmanSetup, importPodmanFarm } = await import('../farm/podman.js');
      const setup = await readPodmanSetup(process.env);
      const imported = importPodmanFarm(setup, name);
      const farmName = cfg.checkFarmName(o.as ?? imported.podmanFarm ?? 'podman');
      await cfg.updateFarms(path, (f) => {
        if (f.farms[farmName])
          throw new PackfarmError('FARM_EXISTS', `farm ${farmName} already exists in ${path}`, {
            hint: 'pick another name with --as, or remove it first with `packfarm farm rm`',
          });
        f.farms[farmName] = { nodes: imported.nodes };
        if (!f.default) f.default = farmName;
      });
      const data = { farm: farmName, from: setup.sources, nodes: imported.nodes, skipped: imported.skipped };
      if (o.json) io.out(JSON.stringify(data, null, 2));
      else
        io.out(
          [
            `Created farm ${farmName} from ${setup.sources.join(', ')}:`,
            ...imported.nodes.map(
              (n) => `  ${n.name}  ${n.uri}${n.identity ? `  identity ${n.identity}` : ''}`,
            ),
            ...imported.skipped.map((s) => `  skipped ${s.name}: ${s.reason}`),
            'Each node needs packfarm installed (see `packfarm farm --help`); check them with `packfarm farm ls`.',
          ].join('\n'),
        );
    });
}

function renderNode(n: NodeStatus): string[] {
  const head = `  ${n.name}  ${n.uri}`;
  if (!n.reachable) return [head, `    unreachable: ${n.error?.message ?? 'unknown error'}`];
  return [
    head,
    `    packfarm ${n.packfarm}; ${n.cpus} CPU(s); jobs ${n.runningJobs} running, capacity ${n.capacity}`,
    `    native:   ${n.native?.join(', ') || 'none'}`,
    `    emulated: ${n.emulated?.join(', ') || 'none'}`,
    ...(n.platforms ? [`    used for: ${n.platforms.join(', ')} only`] : []),
  ];
}

function renderFarms(farms: FarmListing[]): string {
  return farms
    .flatMap((f) => [
      `${f.name}${f.default ? ' (default)' : ''}: ${f.nodes.length} node(s)`,
      ...f.nodes.flatMap(renderNode),
    ])
    .join('\n');
}
