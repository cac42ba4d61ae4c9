"""ModelConfig: the one source of model defaults, validated before anything is built."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ARCHS = ("goldfinch", "finch", "llama")
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
    rope_theta: float = 10000.0
    cache_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "ModelConfig":
        """Raise ValueError naming the bad key and value; called on construction."""
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"model.{key}={getattr(self, key)!r}: {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"unknown arch; expected one of {', '.join(ARCHS)}")
        for key in ("n_layer", "n_embd", "ctx_len", "head_size", "kv_compression",
                    "mix_lora_rank", "decay_lora_rank"):
            if int(getattr(self, key)) <= 0:
                raise bad(key, "must be a positive integer")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise bad("vocab_size", "must be a positive integer (or unset to take it from the data)")
        if self.gold_ratio < 1:
            raise bad("gold_ratio", "must be >= 1 (GOLD layers are 1/gold_ratio of all layers)")
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
            if self.n_gold == 0:
                raise bad("n_layer", f"too few layers for gold_ratio={self.gold_ratio}: no GOLD block")
        if self.arch == "llama" and self.head_size % 2:
            raise bad("head_size", "RoPE needs an even head size")
        if self.arch == "goldfinch" and self.head_size % 2:
            raise bad("head_size", "RoPE needs an even head size")
        return self

    # Derived sizes: computed, never stored, so overrides cannot make them disagree.
    @property
    def att_width(self) -> int:
        return self.dim_att or self.n_embd

    @property
    def n_head(self) -> int:
        return self.att_width // self.head_size

    @property
    def ffn_width(self) -> int:
        if self.dim_ffn:
            return self.dim_ffn
        if self.arch == "llama":
            # SwiGLU has three matrices: 8/3 width matches the RWKV channel mix's parameter count.
            return -(-int(self.n_embd * 8 / 3) // 32) * 32
        return int(self.n_embd * 3.5) // 32 * 32

    @property
    def n_gold(self) -> int:
        return self.n_layer // self.gold_ratio if self.arch == "goldfinch" else 0

    @property
    def n_finch(self) -> int:
        return 0 if self.arch == "llama" else self.n_layer - self.n_gold

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
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(ModelConfig)
    layers = [schema]
    if preset is not None:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise FileNotFoundError(f"model preset {preset!r} not found ({path}); known: {known}")
        loaded = OmegaConf.load(path)
        layers.append(loaded.get("model", loaded))
    if fields:
        layers.append(OmegaConf.create(fields))
    if overrides:
        dotlist = [o[len("model."):] if o.startswith("model.") else o for o in overrides]
        layers.append(OmegaConf.from_dotlist(dotlist))
    merged = OmegaConf.merge(*layers)
    return ModelConfig(**OmegaConf.to_container(merged))
