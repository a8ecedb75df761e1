"""Checkpoints of learned models: safetensors weights + JSON config, checked on load."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metasym_control.models.learned import LearnedModel
from metasym_control.models.registry import build_model

CHECKPOINT_FORMAT_VERSION = 3
# Format 1 (before the decoders' fixed self score): the self slot's score was the query-key
# product; such checkpoints load with `attend_self = True`, which keeps their meaning.
# Formats 1 and 2 (before the canonical buffers' readable names): their `can_*` buffers load
# under the names of `_RENAMED_BUFFERS`.
_READABLE_FORMATS = (1, 2, 3)
_RENAMED_BUFFERS = {
    "can_mean": "canonical_mean",
    "can_scale": "canonical_scale",
    "can_delta": "canonical_delta_std",
    "can_index": "canonical_index",
    "can_mul": "canonical_gain",
    "can_sub": "canonical_offset",
    "can_out": "canonical_to_state",
}
_SELF_ATTENDING = ("MetaSym", "TransformerModel")
CHECKPOINT_KIND = "metasym_control.checkpoint"
_OPTIM_PREFIX = "__optim__."


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, or of another model, version or env."""


def env_version(env_id: str) -> int | None:
    """The version number of an id like `MetaSymQuadrotor-v0` (None without one)."""
    m = re.search(r"-v(\d+)$", env_id)
    return int(m.group(1)) if m else None


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(`<stem>.safetensors`, `<stem>.json`) for a path given with either suffix or none."""
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: LearnedModel,
    training: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    system: str | None = None,
) -> Path:
    """Write `<stem>.safetensors` (weights, float64 kept as is) and `<stem>.json`.

    Args:
        path: file stem (a `.safetensors` / `.json` suffix is dropped).
        model: the learned model.
        training: JSON-ready training state (step, configs, log file) for resuming.
        optimizer: an Adam-like optimizer whose state is stored too (resumable training).
        system: the registered system it models (None: the one registered for its env id
            and state length, if any).

    Returns:
        The `.safetensors` path.
    """
    wpath, jpath = checkpoint_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({', '.join(bad[:5])})")
    wpath.parent.mkdir(parents=True, exist_ok=True)
    optim_meta: dict[str, Any] | None = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        optim_meta = {"param_groups": sd["param_groups"], "scalars": {}}
        for pid, st in sd["state"].items():
            for name, val in st.items():
                key = f"{_OPTIM_PREFIX}{pid}.{name}"
                if isinstance(val, torch.Tensor) and val.dim() > 0:
                    tensors[key] = val.detach().cpu().contiguous()
                else:
                    optim_meta["scalars"][key] = float(val)
    save_file(tensors, str(wpath))
    meta = {
        "kind": CHECKPOINT_KIND,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model": model.spec(),
        "env_id": model.env_id,
        "env_version": env_version(model.env_id),
        "system": system or _registered_system(model.env_id, model.state_dim),
        "sha256": _sha256(wpath),
        "dtype": str(next(iter(model.parameters())).dtype).replace("torch.", ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "training": training,
        "optimizer": optim_meta,
    }
    jpath.write_text(json.dumps(meta, indent=1))
    return wpath


def _registered_system(env_id: str, state_dim: int) -> str | None:
    from metasym_control.systems import system_of

    entry = system_of(env_id, state_dim) if env_id else None
    return entry.name if entry is not None else None


def checkpoint_system(meta: dict[str, Any], requested: str | None = None) -> str:
    """The system a checkpoint models, checked against the one a command was asked for.

    Args:
        meta: the checkpoint's JSON (`read_checkpoint_meta`).
        requested: the `--env` given, or None to take the checkpoint's.

    Raises:
        CheckpointError: the checkpoint names no registered system, or another than
            `requested`.
    """
    spec = meta.get("model") or {}
    name = meta.get("system") or _registered_system(
        str(meta.get("env_id") or ""), int(spec.get("state_dim") or 0)
    )
    if name is None:
        raise CheckpointError(
            f"the checkpoint (env {meta.get('env_id')!r}) names no registered system; "
            "register it with metasym_control.systems.register_system"
        )
    if requested is not None and requested != name:
        raise CheckpointError(
            f"--env {requested} disagrees with the checkpoint, which models {name}"
        )
    return str(name)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint, checked for kind and format version.

    Raises:
        CheckpointError: missing or corrupt JSON, another kind of file, another format version.
    """
    _, jpath = checkpoint_paths(path)
    try:
        meta = json.loads(jpath.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint config {jpath} not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint config {jpath} is corrupt or truncated: {e}") from e
    if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{jpath} is not a metasym_control checkpoint")
    if meta.get("format_version") not in _READABLE_FORMATS:
        raise CheckpointError(
            f"{jpath}: checkpoint format version {meta.get('format_version')}, this library "
            f"reads versions {', '.join(map(str, _READABLE_FORMATS))}"
        )
    spec = meta.get("model")
    if meta["format_version"] == 1 and isinstance(spec, dict):
        if spec.get("class") in _SELF_ATTENDING and isinstance(spec.get("config"), dict):
            spec["config"].setdefault("attend_self", True)
    return meta


_DTYPES = {"float32": torch.float32, "float64": torch.float64}
"""The parameter dtypes a checkpoint's `"dtype"` field may name."""


_MAY_BE_INFINITE = ("trusted_lo", "trusted_hi")
"""Buffers where ±inf is meaningful (an unfitted model's trusted box is unbounded)."""


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN, or an infinity outside the buffers
    where it is meaningful (`_MAY_BE_INFINITE`)."""
    bad = []
    for k, v in tensors.items():
        if not v.is_floating_point():
            continue
        if k.rpartition(".")[2] in _MAY_BE_INFINITE:
            ok = not bool(v.isnan().any())
        else:
            ok = bool(v.isfinite().all())
        if not ok:
            bad.append(k)
    return bad


def saved_dtype(meta: dict[str, Any], jpath: Path) -> torch.dtype:
    """The dtype a checkpoint's JSON names.

    Raises:
        CheckpointError: the `"dtype"` field names no parameter dtype (e.g. "load").
    """
    name = meta.get("dtype", "float64")
    if not isinstance(name, str) or name not in _DTYPES:
        raise CheckpointError(
            f"{jpath}: field 'dtype' is {name!r}; expected one of {', '.join(_DTYPES)}"
        )
    return _DTYPES[name]


def _load_tensors(path: str | Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights file's tensors, checked against the JSON's (required) checksum and for
    non-finite values, under this format's names."""
    wpath, jpath = checkpoint_paths(path)
    if not wpath.exists():
        raise CheckpointError(f"checkpoint weights {wpath} not found")
    expected = meta.get("sha256")
    if not (isinstance(expected, str) and len(expected) == 64):
        # required: without it, replaced (valid) weights would load silently
        raise CheckpointError(
            f"{jpath}: field 'sha256' is missing or not a SHA-256 digest; the weights' checksum "
            "is required"
        )
    if _sha256(wpath) != expected:
        raise CheckpointError(
            f"checkpoint weights {wpath} are corrupt or truncated (checksum differs from {jpath})"
        )
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint weights {wpath} are corrupt or truncated: {e}") from e
    if meta.get("format_version", CHECKPOINT_FORMAT_VERSION) < 3:
        tensors = {_renamed(k): v for k, v in tensors.items()}
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(f"checkpoint weights {wpath} hold non-finite values ({bad[:5]})")
    return tensors


# spec fields added after models were flown, left out of `model_digest` at these (their
# defaults), so an older model keeps its digest and its flown results stay reusable
_LATER_SPEC_FIELDS: dict[str, dict[str, Any]] = {
    "config": {"body_force": False},
    "coords": {"velocity_index": -1},
}


def model_digest(path: str | Path) -> str:
    """A checkpoint's model identity: sha256 (16 hex digits) of its architecture and its
    weights' names and bytes, without optimizer state or metadata, so the same model saved by
    `train` and by `train-default` has one digest.

    Raises:
        CheckpointError: as `load_checkpoint` (missing, corrupt, another kind of file).
    """
    # the loaded model's own spec: a config saved before a field existed gets its default
    model, _meta = load_checkpoint(path)
    spec = model.spec()
    for part, later in _LATER_SPEC_FIELDS.items():
        entries = spec.get(part)
        if isinstance(entries, dict):
            spec[part] = {k: v for k, v in entries.items() if later.get(k, object()) != v}
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _renamed(key: str) -> str:
    """A format-1/2 weight name under today's name (`_RENAMED_BUFFERS`; other keys as is)."""
    prefix, _, leaf = key.rpartition(".")
    if leaf not in _RENAMED_BUFFERS or key.startswith(_OPTIM_PREFIX):
        return key
    return f"{prefix}.{_RENAMED_BUFFERS[leaf]}" if prefix else _RENAMED_BUFFERS[leaf]


def _check_identity(
    meta: dict[str, Any], jpath: Path, expect_class: str | None, env_id: str | None
) -> None:
    spec = meta.get("model") or {}
    if expect_class is not None and spec.get("class") != expect_class:
        raise CheckpointError(
            f"{jpath} holds a {spec.get('class')} model, expected {expect_class} (another model)"
        )
    if env_id is not None and meta.get("env_id") != env_id:
        theirs, ours = str(meta.get("env_id", "")), env_id
        if theirs.split("-v")[0] == ours.split("-v")[0]:
            raise CheckpointError(
                f"{jpath} was made for environment version {theirs}, expected {ours} "
                "(another environment version)"
            )
        raise CheckpointError(f"{jpath} was made for {theirs!r}, expected {ours!r} (another env)")


def _load_weights(
    model: LearnedModel,
    tensors: dict[str, torch.Tensor],
    wpath: Path,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> None:
    weights = {k: v for k, v in tensors.items() if not k.startswith(_OPTIM_PREFIX)}
    own = model.state_dict()
    missing, extra = set(own) - set(weights), set(weights) - set(own)
    bad = [k for k in set(own) & set(weights) if own[k].shape != weights[k].shape]
    if missing or extra or bad:
        raise CheckpointError(
            f"{wpath} does not match the {type(model).__name__} architecture: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}, wrong shape {bad[:5]}"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    if optimizer is not None and meta.get("optimizer"):
        om = meta["optimizer"]
        dev = own[next(iter(own))].device
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith(_OPTIM_PREFIX):
                pid, name = k[len(_OPTIM_PREFIX) :].split(".", 1)
                state.setdefault(int(pid), {})[name] = v.to(dev)
        for k, val in om["scalars"].items():
            pid, name = k[len(_OPTIM_PREFIX) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = torch.tensor(val)
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})


def load_checkpoint(
    path: str | Path,
    expect_class: str | None = None,
    env_id: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[LearnedModel, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`.

    Args:
        path: the stem or either file.
        expect_class: model class the checkpoint must hold (e.g. "MetaSym"), or None.
        env_id: environment id (with version) it must be made for, or None.
        device, dtype: where to put the model (dtype None: as saved).

    Returns:
        The model and the JSON metadata.

    Raises:
        CheckpointError: saying which: missing file, corrupt or truncated file, another model
            class, another format version, another environment or environment version, or
            weights that do not fit the architecture.
    """
    wpath, jpath = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    _check_identity(meta, jpath, expect_class, env_id)
    tensors = _load_tensors(path, meta)
    try:
        model = build_model(meta.get("model") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{jpath}: cannot rebuild the model from its config: {e}") from e
    model.to(dtype=dtype or saved_dtype(meta, jpath))
    _load_weights(model, tensors, wpath, None, meta)
    model.to(device=device)
    return model, meta


def restore_into(
    path: str | Path, model: LearnedModel, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint's weights (and optimizer state) into an existing model, to resume.

    Raises:
        CheckpointError: as `load_checkpoint`; also when the checkpoint holds another
            architecture than `model`.
    """
    wpath, jpath = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    _check_identity(meta, jpath, type(model).__name__, model.env_id or None)
    if (meta.get("model") or {}).get("config") != model.spec()["config"]:
        raise CheckpointError(f"{jpath} holds another {type(model).__name__} configuration")
    _load_weights(model, _load_tensors(path, meta), wpath, optimizer, meta)
    return meta
