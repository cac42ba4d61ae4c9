"""ModelConfig: the one source of model defaults, validated before anything is built."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.config_loader import load_config
from common.errors import MissingFileError, UserError

from .parts import CHANNEL_MIXERS, NORMS, TIME_MIXERS, recurrent_mixers

ARCHS = ("goldfinch", "finch", "rwkv7", "llama")
# the recurrent mixer each arch uses when model.lower is unset (llama has none)
LOWER_DEFAULT = {"goldfinch": "finch_c2", "finch": "finch", "rwkv7": "rwkv7"}
CACHE_DTYPES = ("bfloat16", "float16", "float32")
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "model"


@dataclass
class ModelConfig:
    arch: str = "goldfinch"
    n_layer: int = 12
    n_embd: int = 768
    ctx_len: int = 1024
    head_size: int = 64
    vocab_size: Optional[int] = None
    gold_ratio: int = 3
    kv_compression: int = 16
    dim_att: Optional[int] = None
    dim_ffn: Optional[int] = None
    mix_lora_rank: int = 32
    decay_lora_rank: int = 64
    rope_theta: float = 10000.0  # the Llama baseline's RoPE base
    lower: Optional[str] = None  # the recurrent mixer below GOLD (unset: per arch)
    cmix: Optional[str] = None   # the channel mix of every block (unset: the lower mixer's family)
    norm: str = "layernorm"      # the block and output norms: layernorm | rmsnorm
    gold_rope_theta: Optional[float] = None  # unset: no position encoding in GOLD (the paper's main)
    # Finch-C2's two changes, each switched off by one of the reference's ablations
    c2_one_minus_w: bool = True  # keys scaled by (1 - decay)
    c2_v2: bool = True           # a second value added to the WKV output instead of the bonus
    # RWKV-7 LoRA widths (decay, in-context rate, value residual, gate); unset: RWKV-LM's formula
    x070_lora_w: Optional[int] = None
    x070_lora_a: Optional[int] = None
    x070_lora_v: Optional[int] = None
    x070_lora_g: Optional[int] = None
    head_size_divisor: int = 8  # Eagle (x052) divides the WKV output by this before its GroupNorm
    # a transformer's block shape, for students distilled from one (model.convert from-transformers)
    norm_eps: Optional[float] = None  # eps of every block norm, ln0 and ln_out (unset: the norm's own)
    emb_norm: bool = True             # False: no norm on the embeddings (ln0 is the identity)
    att_bias: bool = False            # biases on the q/k/v-like maps of every time mixer
    rk_rope_theta: Optional[float] = None  # RoPE on r and k of the recurrent mixers (unset: none)
    cache_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "ModelConfig":
        """Raise a UserError naming the bad key and value; called on construction."""
        def bad(key: str, why: str) -> UserError:
            return UserError(f"model.{key}={getattr(self, key)!r}: {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"unknown arch; expected one of {', '.join(ARCHS)}")
        for key in ("n_layer", "n_embd", "ctx_len", "head_size", "kv_compression",
                    "mix_lora_rank", "decay_lora_rank", "head_size_divisor"):
            if int(getattr(self, key)) <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("vocab_size", "x070_lora_w", "x070_lora_a", "x070_lora_v", "x070_lora_g"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer (or unset)")
        if self.gold_ratio < 1:
            raise bad("gold_ratio", "must be >= 1 (GOLD layers are 1/gold_ratio of all layers)")
        self._validate_parts(bad)
        self._validate_transformer_shape(bad)
        if self.gold_rope_theta is not None:
            if self.arch != "goldfinch":
                raise bad("gold_rope_theta", "only GoldFinch has GOLD blocks")
            if self.gold_rope_theta <= 0:
                raise bad("gold_rope_theta", "must be a positive RoPE base (or unset: no RoPE)")
        if self.cache_dtype not in CACHE_DTYPES:
            raise bad("cache_dtype", f"expected one of {', '.join(CACHE_DTYPES)}")
        if self.n_embd % self.head_size:
            raise bad("n_embd", f"not divisible by model.head_size={self.head_size}")
        if self.att_width % self.head_size:
            raise bad("dim_att", f"not divisible by model.head_size={self.head_size}")
        if self.arch == "goldfinch":
            if self.n_embd % self.kv_compression:
                raise bad("n_embd", f"not divisible by model.kv_compression={self.kv_compression}")
            if self.att_width != self.n_embd:
                raise bad("dim_att", "GoldFinch mixes keys with embedding-width values, so dim_att "
                          "must equal n_embd")
            if self.n_finch == 0:
                raise bad("n_layer", f"too few layers for gold_ratio={self.gold_ratio}: no recurrent "
                          "block below GOLD to make the key cache from")
        if (self.arch == "llama" or self.gold_rope_theta is not None or self.rk_rope_theta
                is not None) and self.head_size % 2:
            raise bad("head_size", "RoPE needs an even head size")
        return self

    def _validate_transformer_shape(self, bad) -> None:
        if self.norm_eps is not None and not 0 < self.norm_eps < 1:
            raise bad("norm_eps", "must be a small positive number (or unset: the norm's default)")
        for key in ("emb_norm", "att_bias"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if self.rk_rope_theta is not None:
            if self.arch == "llama":
                raise bad("rk_rope_theta", "is RoPE on the recurrent mixers' r and k; the Llama "
                          "baseline has none (its RoPE base is model.rope_theta)")
            if self.rk_rope_theta <= 0:
                raise bad("rk_rope_theta", "must be a positive RoPE base (or unset: no RoPE)")

    def _validate_parts(self, bad) -> None:
        if self.lower is not None:
            if self.arch == "llama":
                raise bad("lower", "the Llama baseline has no recurrent blocks")
            if self.lower not in recurrent_mixers():
                raise bad("lower", f"unknown mixer; expected one of {', '.join(recurrent_mixers())}")
        if self.cmix is not None and self.cmix not in CHANNEL_MIXERS:
            raise bad("cmix", f"unknown channel mix; expected one of {', '.join(CHANNEL_MIXERS)}")
        if self.norm not in NORMS:
            raise bad("norm", f"unknown norm; expected one of {', '.join(NORMS)}")
        if self.lower_mixer != "finch_c2":
            for key in ("c2_one_minus_w", "c2_v2"):
                if not getattr(self, key):
                    raise bad(key, "is a Finch-C2 ablation: it needs model.lower=finch_c2")
        if self.lower_mixer != "rwkv7":
            for key in ("x070_lora_w", "x070_lora_a", "x070_lora_v", "x070_lora_g"):
                if getattr(self, key) is not None:
                    raise bad(key, "only the RWKV-7 mixer (model.lower=rwkv7) has this LoRA")

    # Derived sizes: computed, never stored, so overrides cannot make them disagree.
    @property
    def att_width(self) -> int:
        return self.dim_att or self.n_embd

    @property
    def n_head(self) -> int:
        return self.att_width // self.head_size

    @property
    def channel_mixer(self) -> str:
        """The channel mix of every block: model.cmix, else the lower mixer's own (swiglu for
        Llama), so GoldFinch-7's GOLD blocks use x070 like the RWKV-7 blocks below them."""
        if self.cmix:
            return self.cmix
        if self.arch == "llama":
            return "swiglu"
        return TIME_MIXERS[self.lower_mixer].default_cmix

    @property
    def ffn_width(self) -> int:
        if self.dim_ffn:
            return self.dim_ffn
        return CHANNEL_MIXERS[self.channel_mixer].default_width(self.n_embd)

    @property
    def lower_mixer(self) -> str | None:
        """The recurrent mixer of the lower blocks (None for Llama)."""
        return None if self.arch == "llama" else self.lower or LOWER_DEFAULT[self.arch]

    @property
    def n_finch(self) -> int:
        """Recurrent blocks. As the reference splits: the lower int(L·(r−1)/r) blocks are
        recurrent, so the GOLD count rounds up (L=4, r=3: 2 GOLD blocks)."""
        if self.arch == "llama":
            return 0
        if self.arch != "goldfinch":
            return self.n_layer
        return int(self.n_layer * (self.gold_ratio - 1) / self.gold_ratio)

    @property
    def n_gold(self) -> int:
        return self.n_layer - self.n_finch if self.arch == "goldfinch" else 0

    def block_mixer(self, layer: int) -> str:
        """The registered time mixer of block `layer`."""
        if self.arch == "llama":
            return "llama"
        return self.lower_mixer if layer < self.n_finch else "gold"

    @property
    def variant(self) -> str:
        """The architecture's short name: arch, or goldfinch7 for GOLD over RWKV-7."""
        return "goldfinch7" if self.arch == "goldfinch" and self.lower_mixer == "rwkv7" else self.arch

    @property
    def compressed_width(self) -> int:
        return self.n_embd // self.kv_compression

    @property
    def gold_lora_rank(self) -> int:
        return max(self.n_embd // 16, 64)


def load_model_config(preset: str | Path | None = None, overrides: list[str] | None = None,
                      **fields) -> ModelConfig:
    """Merge a preset (name under configs/model or a YAML path), keyword fields and dotlist
    overrides (`n_layer=4` or `model.n_layer=4`) into a validated ModelConfig."""
    files = []
    if preset is not None:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise MissingFileError(f"model preset {preset!r} not found ({path}); known: {known}")
        files.append(path)
    dotlist = [o[len("model."):] if o.startswith("model.") else o for o in overrides or []]
    return load_config(ModelConfig, files, dotlist, [fields] if fields else [], section="model",
                       example="model.n_layer=4")
