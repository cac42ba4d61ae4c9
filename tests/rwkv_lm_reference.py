"""Test-owned forwards of RWKV-LM's x070 (RWKV-7) and x052 (Eagle) models over their own
state-dict names, written from the formulas (RWKV-LM's [N_v, N_k] state, one step at a time,
float64), so that our converted models can be checked against them."""
import math

import torch
import torch.nn.functional as F

X070_LORAS = ("w", "a", "v", "g")


def _block_norms(b: str, c: int, layer: int) -> dict:
    """ln1, ln2 (and ln0 in block 0) as RWKV-LM's blocks register them."""
    names = ("ln1", "ln2", "ln0") if layer == 0 else ("ln1", "ln2")
    return {f"{b}{n}.{p}": (c,) for n in names for p in ("weight", "bias")}


def x070_layout(n_layer: int, n_embd: int, vocab: int, head_size: int, widths: dict) -> dict:
    """Names and shapes of a released RWKV-7 World .pth, in its order."""
    c, h = n_embd, n_embd // head_size
    out = {"emb.weight": (vocab, c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        out.update(_block_norms(b, c, i))
        att = b + "att."
        for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            out[att + m] = (1, 1, c)
        for kind in X070_LORAS:
            if kind != "g":
                out[f"{att}{kind}0"] = (1, 1, c)
            out[f"{att}{kind}1"] = (c, widths[kind])
            out[f"{att}{kind}2"] = (widths[kind], c)
        out.update({att + "k_k": (1, 1, c), att + "k_a": (1, 1, c), att + "r_k": (h, head_size)})
        for lin in ("receptance", "key", "value", "output"):
            out[f"{att}{lin}.weight"] = (c, c)
        out.update({att + "ln_x.weight": (c,), att + "ln_x.bias": (c,)})
        out.update({b + "ffn.x_k": (1, 1, c), b + "ffn.key.weight": (4 * c, c),
                    b + "ffn.value.weight": (c, 4 * c)})
    out.update({"ln_out.weight": (n_embd,), "ln_out.bias": (n_embd,), "head.weight": (vocab, c)})
    return out


def random_state_dict(layout: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in layout.items():
        t = torch.randn(shape, generator=g) * 0.2
        if name.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
            t = 1.0 + t
        sd[name] = t
    return sd


def _ln(x, sd, name, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps)


def _shift(x):
    return F.pad(x, (0, 0, 1, -1))


def _x070_tmix(sd, b, x, v_first, layer, head_size):
    B, T, C = x.shape
    H, N = C // head_size, head_size
    p = {k[len(b):]: v for k, v in sd.items() if k.startswith(b)}
    xx = _shift(x) - x
    xr, xw, xk, xv, xa, xg = (x + xx * p[m] for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
    r = xr @ p["receptance.weight"].T
    w = -F.softplus(-(p["w0"] + torch.tanh(xw @ p["w1"]) @ p["w2"])) - 0.5
    k = xk @ p["key.weight"].T
    v = xv @ p["value.weight"].T
    if layer == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(p["v0"] + (xv @ p["v1"]) @ p["v2"])
    a = torch.sigmoid(p["a0"] + (xa @ p["a1"]) @ p["a2"])
    g = torch.sigmoid(xg @ p["g1"]) @ p["g2"]
    kk = F.normalize((k * p["k_k"]).view(B, T, H, N), dim=-1, p=2.0).view(B, T, C)
    k = k * (1 + (a - 1) * p["k_a"])
    y = _wkv7_steps(r, w, k, v, -kk, kk * a, H, N)
    y = F.group_norm(y.view(B * T, C), H, p["ln_x.weight"], p["ln_x.bias"], eps=64e-5).view(B, T, C)
    rk = (r.view(B, T, H, N) * k.view(B, T, H, N) * p["r_k"]).sum(-1, keepdim=True)
    y = y + (rk * v.view(B, T, H, N)).view(B, T, C)
    return (y * g) @ p["output.weight"].T, v_first


def _wkv7_steps(r, w, k, v, a, b, H, N):
    """RWKV-LM's naive RWKV7_OP: state [B, H, N_v, N_k]."""
    B, T, C = r.shape
    r, k, v, a, b = (t.view(B, T, H, N) for t in (r, k, v, a, b))
    w = torch.exp(-torch.exp(w.view(B, T, H, N)))
    state = torch.zeros(B, H, N, N, dtype=r.dtype)
    out = torch.zeros(B, T, H, N, dtype=r.dtype)
    for t in range(T):
        kk, bb = k[:, t].view(B, H, 1, N), b[:, t].view(B, H, 1, N)
        rr, vv, aa = r[:, t].view(B, H, N, 1), v[:, t].view(B, H, N, 1), a[:, t].view(B, H, N, 1)
        state = state * w[:, t, :, None, :] + state @ aa @ bb + vv @ kk
        out[:, t] = (state @ rr).view(B, H, N)
    return out.view(B, T, C)


def x070_logits(sd: dict, idx: torch.Tensor, head_size: int) -> torch.Tensor:
    sd = {k: v.double() for k, v in sd.items()}
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    x = _ln(sd["emb.weight"][idx], sd, "blocks.0.ln0")
    v_first = None
    for i in range(n_layer):
        b = f"blocks.{i}."
        att, v_first = _x070_tmix(sd, b + "att.", _ln(x, sd, b + "ln1"), v_first, i, head_size)
        x = x + att
        h = _ln(x, sd, b + "ln2")
        k = h + (_shift(h) - h) * sd[b + "ffn.x_k"]
        x = x + torch.relu(k @ sd[b + "ffn.key.weight"].T).square() @ sd[b + "ffn.value.weight"].T
    return _ln(x, sd, "ln_out") @ sd["head.weight"].T


def x052_layout(n_layer: int, n_embd: int, vocab: int, head_size: int) -> dict:
    c, h, f = n_embd, n_embd // head_size, int(n_embd * 3.5) // 32 * 32
    out = {"emb.weight": (vocab, c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        out.update(_block_norms(b, c, i))
        att = b + "att."
        for m in ("k", "v", "r", "g"):
            out[f"{att}time_mix_{m}"] = (1, 1, c)
        out.update({att + "time_decay": (h, head_size), att + "time_faaaa": (h, head_size)})
        for lin in ("receptance", "key", "value", "output", "gate"):
            out[f"{att}{lin}.weight"] = (c, c)
        out.update({att + "ln_x.weight": (c,), att + "ln_x.bias": (c,)})
        ffn = b + "ffn."
        out.update({ffn + "time_mix_k": (1, 1, c), ffn + "time_mix_r": (1, 1, c),
                    ffn + "key.weight": (f, c), ffn + "receptance.weight": (c, c),
                    ffn + "value.weight": (c, f)})
    out.update({"ln_out.weight": (n_embd,), "ln_out.bias": (n_embd,), "head.weight": (vocab, c)})
    return out


def _lerp(x, xx, m):
    return x * m + xx * (1 - m)


def x052_logits(sd: dict, idx: torch.Tensor, head_size: int, divisor: int = 8) -> torch.Tensor:
    sd = {k: v.double() for k, v in sd.items()}
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    x = _ln(sd["emb.weight"][idx], sd, "blocks.0.ln0")
    B, T, C = x.shape
    H, N = C // head_size, head_size
    for i in range(n_layer):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = _ln(x, p, "ln1")
        xx = _shift(h)
        r, k, v = (_lerp(h, xx, p[f"att.time_mix_{m}"]) @ p[f"att.{lin}.weight"].T
                   for m, lin in (("r", "receptance"), ("k", "key"), ("v", "value")))
        g = F.silu(_lerp(h, xx, p["att.time_mix_g"]) @ p["att.gate.weight"].T)
        w, u = torch.exp(-torch.exp(p["att.time_decay"])), p["att.time_faaaa"]
        r, k, v = (t.view(B, T, H, N) for t in (r, k, v))
        s = torch.zeros(B, H, N, N, dtype=x.dtype)
        y = torch.zeros(B, T, H, N, dtype=x.dtype)
        for t in range(T):
            kv = k[:, t, :, :, None] * v[:, t, :, None, :]
            y[:, t] = (r[:, t, :, :, None] * (u[None, :, :, None] * kv + s)).sum(2)
            s = s * w[None, :, :, None] + kv
        y = F.group_norm(y.reshape(B * T, C) / divisor, H, p["att.ln_x.weight"], p["att.ln_x.bias"])
        x = x + (y.view(B, T, C) * g) @ p["att.output.weight"].T
        h = _ln(x, p, "ln2")
        xx = _shift(h)
        kk = torch.relu(_lerp(h, xx, p["ffn.time_mix_k"]) @ p["ffn.key.weight"].T).square()
        rr = torch.sigmoid(_lerp(h, xx, p["ffn.time_mix_r"]) @ p["ffn.receptance.weight"].T)
        x = x + rr * (kk @ p["ffn.value.weight"].T)
    return _ln(x, sd, "ln_out") @ sd["head.weight"].T


def lora_width(factor: float, n_embd: int) -> int:
    return max(32, int(round(factor * math.sqrt(n_embd) / 32) * 32))
