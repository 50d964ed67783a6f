// The new-experiment form's presets: configs the server validates (schema/experiment.schema.json).
// The demo is deploy/experiments/demo-chunk-grpo.json.
const demo = {
  kind: 'grpo',
  model: 'models/shapes-small.safetensors',
  method: 'chunk_grpo',
  chunks: 'auto',
  prompts_per_iter: 16,
  group_size: 8,
  optimizer_step: 'iteration',
  train_fraction: 1.0,
  lr: 2e-5,
  eta: 1.2,
  steps: 11,
  eval_steps: 17,
  iterations: 260,
  eval_every: 20,
  eval_prompts: 64,
  eval_seeds: 2,
  checkpoint_every: 20,
  seed: 5,
  batch: 64,
};

export const PRESETS = {
  'Demo (Chunk-GRPO, 260 iterations)': demo,
  'Step-level GRPO': { ...demo, method: 'grpo', chunks: undefined },
  'Chunk-GRPO': { kind: 'grpo', model: 'models/shapes-small.safetensors', method: 'chunk_grpo', chunks: 'auto', iterations: 100 },
  'Chunk-GRPO, weighted sampling': { kind: 'grpo', model: 'models/shapes-small.safetensors', method: 'chunk_grpo', chunks: 'auto', weighted_sampling: true, train_fraction: 0.5, iterations: 100 },
  'Profile (temporal dynamics)': { kind: 'profile', model: 'models/shapes-small.safetensors', num_prompts: 64, seeds: 2 },
  'Eval (held-out ODE)': { kind: 'eval', model: 'models/shapes-small.safetensors', prompts: 'heldout', ode_seeds: 4 },
  'Pretrain (base model)': { kind: 'pretrain', preset: 'small', steps: 6000, batch_size: 64 },
};
