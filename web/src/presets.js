// The new-experiment form's presets: configs the server validates (schema/experiment.schema.json).
// The demo is the shipped deploy/experiments/demo-chunk-grpo.json itself (esbuild bundles JSON).
import demo from '../../deploy/experiments/demo-chunk-grpo.json';

export const PRESETS = {
  [`Demo (Chunk-GRPO, ${demo.iterations} iterations)`]: demo,
  'Step-level GRPO': { ...demo, method: 'grpo', chunks: undefined },
  'Chunk-GRPO': { kind: 'grpo', model: 'models/shapes-small.safetensors', method: 'chunk_grpo', chunks: 'auto', iterations: 100 },
  'Chunk-GRPO, weighted sampling': { kind: 'grpo', model: 'models/shapes-small.safetensors', method: 'chunk_grpo', chunks: 'auto', weighted_sampling: true, train_fraction: 0.5, iterations: 100 },
  'Profile (temporal dynamics)': { kind: 'profile', model: 'models/shapes-small.safetensors', num_prompts: 64, seeds: 2 },
  'Eval (held-out ODE)': { kind: 'eval', model: 'models/shapes-small.safetensors', prompts: 'heldout', ode_seeds: 4 },
  'Pretrain (base model)': { kind: 'pretrain', preset: 'small', steps: 6000, batch_size: 64 },
  'Preference reward (pref)': { kind: 'reward_train', reward: 'pref', steps: 1500 },
  'Contrastive reward (clip)': { kind: 'reward_train', reward: 'clip', steps: 1500 },
};
