"""Reference PyTorch implementation of the chunkgrpo diffusion transformer (spec/model.md).

This is the project's executable definition of the model: the C engine is tested against it, and
a user can copy this file to load a chunkgrpo checkpoint into PyTorch:

    model, vocab = load_checkpoint("model.safetensors")
    v = model(x, t, tokens)      # x [B,S,S,C] channels-last, t [B], tokens [B,T] (0 = PAD)

Parameter names equal the checkpoint tensor names (`txt.tok_emb`, `blocks.0.qkv.weight`, ...).
`tensor_specs(cfg)` gives them in checkpoint (model.md table) order; note that this differs from
state_dict() order (PyTorch lists a module's own parameters before its children's).
"""

import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io

FORMAT = "chunkgrpo-dit/1"
CONFIG_KEYS = ("image_size", "channels", "patch", "dim", "depth", "heads", "mlp_ratio",
               "text_len", "vocab_size")
EPS = 1e-6  # LayerNorm and RMS norm
FREQ_DIM = 256  # sin-cos timestep embedding width


def tensor_specs(cfg):
    """[(name, shape)] for every parameter, in model.md table order (the checkpoint order)."""
    d, P, F_ = cfg["dim"], cfg["patch"] ** 2 * cfg["channels"], cfg["mlp_ratio"] * cfg["dim"]
    N = (cfg["image_size"] // cfg["patch"]) ** 2
    specs = [("txt.tok_emb", [cfg["vocab_size"], d]), ("txt.pos_emb", [cfg["text_len"], d]),
             ("txt.pool.weight", [d, d]), ("txt.pool.bias", [d]),
             ("img.patch.weight", [d, P]), ("img.patch.bias", [d]), ("img.pos_emb", [N, d]),
             ("time.fc1.weight", [d, FREQ_DIM]), ("time.fc1.bias", [d]),
             ("time.fc2.weight", [d, d]), ("time.fc2.bias", [d])]
    for l in range(cfg["depth"]):
        b = f"blocks.{l}."
        specs += [(b + "ada.weight", [6 * d, d]), (b + "ada.bias", [6 * d]),
                  (b + "qkv.weight", [3 * d, d]), (b + "qkv.bias", [3 * d]),
                  (b + "q_norm.weight", [d // cfg["heads"]]),
                  (b + "k_norm.weight", [d // cfg["heads"]]),
                  (b + "proj.weight", [d, d]), (b + "proj.bias", [d]),
                  (b + "fc1.weight", [F_, d]), (b + "fc1.bias", [F_]),
                  (b + "fc2.weight", [d, F_]), (b + "fc2.bias", [d])]
    specs += [("final.ada.weight", [2 * d, d]), ("final.ada.bias", [2 * d]),
              ("final.linear.weight", [P, d]), ("final.linear.bias", [P])]
    return specs


def layer_norm(h):  # no affine; biased variance, like torch's layer_norm
    return F.layer_norm(h, h.shape[-1:], eps=EPS)


def modulate(h, shift, scale):  # h [B,L,d], shift/scale [B,d]
    return layer_norm(h) * (1 + scale[:, None]) + shift[:, None]


class RMSNorm(nn.Module):  # per attention head, over the dh features
    def __init__(self, dh):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dh))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.ada = nn.Linear(d, 6 * d)
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm, self.k_norm = RMSNorm(d // heads), RMSNorm(d // heads)
        self.proj = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, mlp_ratio * d)
        self.fc2 = nn.Linear(mlp_ratio * d, d)

    def forward(self, h, c_act, key_pad):
        # h [B,L,d]; c_act = silu(c) [B,d]; key_pad [B,L] bool, True = masked key
        B, L, d = h.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c_act).chunk(6, dim=-1)
        q, k, v = self.qkv(modulate(h, shift_a, scale_a)).chunk(3, dim=-1)
        # head h uses features h*dh..(h+1)*dh-1 of each of q, k, v -> [B,H,L,dh]
        q, k, v = (z.reshape(B, L, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B,H,L,L]
        # Image keys are never masked, so no row is all -inf; PAD queries still get outputs.
        scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, d)
        h = h + gate_a[:, None] * self.proj(attn)
        m = modulate(h, shift_m, scale_m)
        # gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return h + gate_m[:, None] * self.fc2(F.gelu(self.fc1(m), approximate="tanh"))


class DiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        d, p, C, T = cfg["dim"], cfg["patch"], cfg["channels"], cfg["text_len"]
        self.grid = cfg["image_size"] // p
        if self.grid * p != cfg["image_size"] or d % cfg["heads"] or d % 4:
            raise ValueError(f"inconsistent config {cfg}")
        self.txt = nn.Module()
        self.txt.tok_emb = nn.Parameter(torch.zeros(cfg["vocab_size"], d))
        self.txt.pos_emb = nn.Parameter(torch.zeros(T, d))
        self.txt.pool = nn.Linear(d, d)
        self.img = nn.Module()
        self.img.patch = nn.Linear(p * p * C, d)
        self.img.pos_emb = nn.Parameter(torch.zeros(self.grid ** 2, d))
        self.time = nn.Module()
        self.time.fc1, self.time.fc2 = nn.Linear(FREQ_DIM, d), nn.Linear(d, d)
        self.blocks = nn.ModuleList(Block(d, cfg["heads"], cfg["mlp_ratio"])
                                    for _ in range(cfg["depth"]))
        self.final = nn.Module()
        self.final.ada = nn.Linear(d, 2 * d)
        self.final.linear = nn.Linear(d, p * p * C)

    def patchify(self, x):  # [B,S,S,C] -> [B,N,p*p*C]; vector order (dy, dx, c), c fastest
        B, G, p, C = x.shape[0], self.grid, self.cfg["patch"], self.cfg["channels"]
        return x.reshape(B, G, p, G, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, G * G, p * p * C)

    def unpatchify(self, y):  # exact inverse of patchify
        B, G, p, C = y.shape[0], self.grid, self.cfg["patch"], self.cfg["channels"]
        return y.reshape(B, G, G, p, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, G * p, G * p, C)

    def forward(self, x, t, tokens):
        # x [B,S,S,C], t [B], tokens [B,T] integer (0 = PAD) -> v [B,S,S,C]
        tokens = tokens.long()
        emb = self.txt.tok_emb[tokens]  # [B,T,d]
        h_txt = emb + self.txt.pos_emb
        h_img = self.img.patch(self.patchify(x)) + self.img.pos_emb  # [B,N,d]

        k = torch.arange(FREQ_DIM // 2, dtype=x.dtype, device=x.device)
        freq = torch.exp(-math.log(10000.0) * k / (FREQ_DIM // 2))
        arg = 1000.0 * t.to(x.dtype)[:, None] * freq  # [B,128]
        temb = self.time.fc2(F.silu(self.time.fc1(torch.cat([arg.cos(), arg.sin()], -1))))

        keep = (tokens != 0).to(x.dtype)  # [B,T]; mean over non-PAD tokens, 0 when all PAD
        mean = (emb * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        c_act = F.silu(temb + self.txt.pool(mean))  # every consumer of c takes silu(c)

        T, N = tokens.shape[1], h_img.shape[1]
        img_keys = torch.zeros(tokens.shape[0], N, dtype=torch.bool, device=tokens.device)
        key_pad = torch.cat([tokens == 0, img_keys], 1)  # [B,T+N], True = masked key
        h = torch.cat([h_txt, h_img], 1)  # [B,T+N,d]
        for block in self.blocks:
            h = block(h, c_act, key_pad)
        shift, scale = self.final.ada(c_act).chunk(2, dim=-1)
        return self.unpatchify(self.final.linear(modulate(h[:, T:], shift, scale)))

    @torch.no_grad()
    def init_weights(self):
        """model.md initialisation (documentation/bench only; the engine has its own)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for m in [b.ada for b in self.blocks] + [self.final.ada, self.final.linear]:
            nn.init.zeros_(m.weight)  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.txt.tok_emb, std=0.02)
        nn.init.normal_(self.txt.pos_emb, std=0.02)
        self.img.pos_emb.copy_(torch.from_numpy(pos_emb_2d(self.grid, self.cfg["dim"])))


def pos_emb_2d(grid, d):
    """Fixed 2D sin-cos table [grid*grid, d] for img.pos_emb (MAE/DiT style), token n = i*grid+j.
    Channels [0, d/2) encode the row i, channels [d/2, d) the column j; within each half, with
    D = d/4 and omega_k = 10000^(-k/D) for k = 0..D-1, the half is [sin(pos*omega), cos(pos*omega)].
    (MAE's code puts the column first; we put the row first, as model.md words it.)"""
    D = d // 4
    omega = 1.0 / 10000.0 ** (np.arange(D, dtype=np.float64) / D)
    def half(pos):
        a = pos[:, None] * omega[None, :]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)  # [n, d/2]
    i, j = np.divmod(np.arange(grid * grid, dtype=np.float64), grid)
    return np.concatenate([half(i), half(j)], axis=1).astype(np.float32)


def load_checkpoint(path, dtype=torch.float32):
    """Builds a DiT from a chunkgrpo safetensors checkpoint. Strict: the format and config must be
    in the metadata and every tensor present, float32, with its model.md shape, and nothing else.
    Returns (model, vocab_words). Raises ValueError naming what is wrong."""
    tensors, meta = safetensors_io.read(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: __metadata__ format is {meta.get('format')!r}, not {FORMAT!r}")
    try:
        cfg = json.loads(meta["config"])
        cfg = {k: cfg[k] for k in CONFIG_KEYS}
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: bad or missing __metadata__ config ({e!r})") from None
    if not all(isinstance(v, int) and v > 0 for v in cfg.values()):
        raise ValueError(f"{path}: config values must be positive integers: {cfg}")
    vocab = meta.get("vocab", "").split("\n")
    if len(vocab) != cfg["vocab_size"]:
        raise ValueError(f"{path}: vocab has {len(vocab)} words, config says {cfg['vocab_size']}")
    model = DiT(cfg)
    specs = tensor_specs(cfg)
    params = dict(model.named_parameters())
    for name, shape in specs:
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name}")
        arr = tensors[name]
        if arr.dtype != np.float32 or list(arr.shape) != shape:
            raise ValueError(f"{path}: tensor {name} is {arr.dtype} {list(arr.shape)}, "
                             f"expected float32 {shape}")
        with torch.no_grad():
            params[name].copy_(torch.from_numpy(arr))
    extra = sorted(set(tensors) - {n for n, _ in specs})
    if extra:
        raise ValueError(f"{path}: unexpected tensors {extra}")
    return model.to(dtype), vocab


def save_checkpoint(model, vocab_words, path, extra_metadata=None):
    """Writes model (float32, model.md order) with metadata format, config and vocab."""
    cfg = model.cfg
    if len(vocab_words) != cfg["vocab_size"]:
        raise ValueError(f"{len(vocab_words)} vocab words for vocab_size {cfg['vocab_size']}")
    meta = {"format": FORMAT, "config": json.dumps({k: cfg[k] for k in CONFIG_KEYS}),
            "vocab": "\n".join(vocab_words)}
    meta.update(extra_metadata or {})
    params = dict(model.named_parameters())
    safetensors_io.write(path, [(n, params[n].detach().cpu().float().numpy())
                                for n, _ in tensor_specs(model.cfg)], meta)
