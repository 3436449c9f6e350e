"""The Hugging Face hub probe: is it reachable, and is a model in the local cache (no download)."""
from __future__ import annotations

import os
import socket

from ..errors import UserError


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """False at once under HF_HUB_OFFLINE; otherwise one TCP connect to the endpoint, bounded."""
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub(model_id: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str) or hub_reachable():
        return
    raise UserError(f"cannot load '{model_id}': the Hugging Face hub is unreachable (offline) and it is "
                    f"not in the local cache; download it on a connected machine and pass "
                    f"model.id=/path/to/local/dir")
