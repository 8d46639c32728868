import { z } from 'zod';

/**
 * The labels a CNB app image carries, as the lifecycle writes them (JSON in image config labels). Shared by
 * the exporter (writes), analyzer/restorer (read the previous image), rebaser and inspect (read and rewrite).
 * Unknown fields are kept so labels written by other lifecycles survive a read-modify-write.
 */
export const Label = {
  lifecycleMetadata: 'io.buildpacks.lifecycle.metadata',
  buildMetadata: 'io.buildpacks.build.metadata',
  projectMetadata: 'io.buildpacks.project.metadata',
  rebasable: 'io.buildpacks.rebasable',
  stackId: 'io.buildpacks.stack.id',
  mixins: 'io.buildpacks.stack.mixins',
  baseId: 'io.buildpacks.base.id',
  distroName: 'io.buildpacks.base.distro.name',
  distroVersion: 'io.buildpacks.base.distro.version',
  runImageTarget: 'io.buildpacks.run-image',
  execEnv: 'io.buildpacks.exec-env',
} as const;

/** A layer recorded by its diffID (`sha`). */
export const LayerShaSchema = z.looseObject({ sha: z.string().default('') });
export type LayerSha = z.output<typeof LayerShaSchema>;

/** One buildpack layer in the lifecycle label: diffID plus the `<layer>.toml` content. */
export const BuildpackLayerMetadataSchema = z.looseObject({
  sha: z.string().default(''),
  data: z.unknown().optional(),
  build: z.boolean().default(false),
  launch: z.boolean().default(false),
  cache: z.boolean().default(false),
});
export type BuildpackLayerMetadata = z.output<typeof BuildpackLayerMetadataSchema>;

export const BuildpackLayersMetadataSchema = z.looseObject({
  key: z.string(),
  version: z.string().default(''),
  layers: z.record(z.string(), BuildpackLayerMetadataSchema).default({}),
  store: z.looseObject({ metadata: z.record(z.string(), z.unknown()).optional() }).optional(),
});
export type BuildpackLayersMetadata = z.output<typeof BuildpackLayersMetadataSchema>;

export const RunImageForRebaseSchema = z.looseObject({
  topLayer: z.string().default(''),
  reference: z.string().default(''),
  image: z.string().optional(),
  mirrors: z.array(z.string()).optional(),
});

/** `io.buildpacks.lifecycle.metadata`: everything rebase and the next build's analyzer need. */
export const LifecycleMetadataSchema = z.looseObject({
  app: z.array(LayerShaSchema).default([]),
  sbom: LayerShaSchema.optional(),
  buildpacks: z.array(BuildpackLayersMetadataSchema).default([]),
  config: LayerShaSchema.default({ sha: '' }),
  launcher: LayerShaSchema.default({ sha: '' }),
  'process-types': LayerShaSchema.default({ sha: '' }),
  runImage: RunImageForRebaseSchema.default({ topLayer: '', reference: '' }),
  stack: z
    .looseObject({
      runImage: z.looseObject({ image: z.string().default(''), mirrors: z.array(z.string()).optional() }),
    })
    .optional(),
});
export type LifecycleMetadata = z.output<typeof LifecycleMetadataSchema>;

export const ProcessMetadataSchema = z.looseObject({
  type: z.string(),
  command: z.array(z.string()),
  args: z.array(z.string()).default([]),
  direct: z.boolean().optional(),
  default: z.boolean().optional(),
  buildpackID: z.string(),
  'working-dir': z.string().optional(),
});

/** `io.buildpacks.build.metadata`: what was built (processes, buildpacks, launcher). */
export const BuildMetadataSchema = z.looseObject({
  bom: z.unknown().optional(),
  buildpacks: z
    .array(
      z.looseObject({ id: z.string(), version: z.string().default(''), homepage: z.string().optional() }),
    )
    .default([]),
  launcher: z
    .looseObject({
      version: z.string().default(''),
      source: z
        .looseObject({ git: z.looseObject({ repository: z.string(), commit: z.string() }).optional() })
        .optional(),
    })
    .optional(),
  processes: z.array(ProcessMetadataSchema).default([]),
  extensions: z.array(z.unknown()).optional(),
});
export type BuildMetadata = z.output<typeof BuildMetadataSchema>;

/** `io.buildpacks.project.metadata`. */
export const ProjectMetadataSchema = z.looseObject({
  source: z
    .looseObject({
      type: z.string().optional(),
      version: z.record(z.string(), z.unknown()).optional(),
      metadata: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
});
export type ProjectMetadata = z.output<typeof ProjectMetadataSchema>;
