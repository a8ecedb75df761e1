"""Checkpoints round-trip; corrupt, truncated and mismatched ones fail saying which."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from metasym_control.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    model_digest,
    restore_into,
    save_checkpoint,
)
from metasym_control.envs.toy_oscillator import TOY_DT, TOY_ENV_ID, oscillator_family
from metasym_control.models.baselines import MLPModel
from metasym_control.models.metasym import MetaSym, MetaSymConfig
from metasym_control.systems import coordinates_for_env

# the canonical buffers' names in format 1 and 2 checkpoints
OLD_BUFFER_NAMES = {
    "canonical_mean": "can_mean",
    "canonical_scale": "can_scale",
    "canonical_delta_std": "can_delta",
    "canonical_index": "can_index",
    "canonical_gain": "can_mul",
    "canonical_offset": "can_sub",
    "canonical_to_state": "can_out",
}

# a checkpoint written by the library's first format (the quadrotor weights shipped until
# 2026-12-07), kept so that reading it stays tested
FORMAT_1_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "format1_metasym_quadrotor"


def _metasym() -> MetaSym:
    torch.manual_seed(0)
    m = MetaSym(
        2, 1, TOY_DT, MetaSymConfig(d_model=16), coordinates_for_env(TOY_ENV_ID, 2), TOY_ENV_ID
    )
    m.fit_normalization(oscillator_family(2, 2, 30, "train", seed=0))
    torch.nn.init.normal_(m.decoder.head.weight, std=0.1)
    return m


def _predict(m: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(3, m.history_len, 2, generator=g, dtype=torch.float64)
    ha = torch.randn(3, m.history_len, 1, generator=g, dtype=torch.float64)
    us = torch.randn(3, 6, 1, generator=g, dtype=torch.float64)
    return m.rollout(hs[:, -1], us, m.init_memory(hs, ha)).detach()


def test_round_trip(tmp_path: Path) -> None:
    m = _metasym()
    path = save_checkpoint(tmp_path / "ck", m, training={"step": 3})
    assert path.suffix == ".safetensors" and path.exists()
    loaded, meta = load_checkpoint(tmp_path / "ck.json", expect_class="MetaSym", env_id=TOY_ENV_ID)
    assert isinstance(loaded, MetaSym) and meta["training"]["step"] == 3
    assert meta["env_version"] == 0 and meta["format_version"] == CHECKPOINT_FORMAT_VERSION == 3
    torch.testing.assert_close(_predict(loaded), _predict(m), rtol=0, atol=0)
    assert loaded.config == m.config and loaded.coords == m.coords
    assert loaded.trusted_lower is not None
    # float32 on request
    l32, _ = load_checkpoint(tmp_path / "ck", dtype=torch.float32)
    assert next(l32.parameters()).dtype == torch.float32


def _one_adam_step() -> tuple[MetaSym, torch.optim.Adam]:
    """A model one Adam step into training, and its optimizer (with state to save)."""
    m = _metasym()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.decoder.head.weight.sum().backward()
    opt.step()
    return m, opt


def test_resume_restores_optimizer(tmp_path: Path) -> None:
    m, opt = _one_adam_step()
    save_checkpoint(tmp_path / "ck", m, training={"step": 1}, optimizer=opt)
    m2 = _metasym()
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    restore_into(tmp_path / "ck", m2, opt2)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        torch.testing.assert_close(s1[k]["exp_avg"], s2[k]["exp_avg"])
        assert float(s1[k]["step"]) == float(s2[k]["step"])


def test_model_digest_is_the_models_identity_not_the_files(tmp_path: Path) -> None:
    m, opt = _one_adam_step()
    save_checkpoint(tmp_path / "with_optimizer", m, training={"step": 1}, optimizer=opt)
    save_checkpoint(tmp_path / "weights_only", m, training={"recipe": "other"})
    digest = model_digest(tmp_path / "weights_only")
    assert model_digest(tmp_path / "with_optimizer.json") == digest
    with torch.no_grad():
        m.decoder.head.weight[0, 0] += 1e-6
    save_checkpoint(tmp_path / "changed", m)
    assert model_digest(tmp_path / "changed") != digest
    with pytest.raises(CheckpointError):
        model_digest(tmp_path / "absent")


def test_a_field_added_later_leaves_older_models_digest_as_it_was(tmp_path: Path) -> None:
    """A checkpoint written before `body_force` and `velocity_index` existed has the digest it
    had then (its flown experiment vehicles stay reusable), and the option on changes it."""
    from metasym_control.models.coordinates import quadrotor_coordinates

    torch.manual_seed(0)
    # the map as written before the velocity index existed (read back as -1)
    old_map = dataclasses.replace(quadrotor_coordinates(13), velocity_index=-1)
    m = MetaSym(13, 4, 0.02, MetaSymConfig(d_model=16), old_map)
    forced = MetaSym(
        13, 4, 0.02, MetaSymConfig(d_model=16, body_force=True), quadrotor_coordinates(13)
    )
    base = tmp_path
    save_checkpoint(base / "now", m)
    digest = model_digest(base / "now")
    meta = json.loads((base / "now.json").read_text())
    del meta["model"]["config"]["body_force"]
    del meta["model"]["coords"]["velocity_index"]
    (base / "now.json").write_text(json.dumps(meta))
    assert model_digest(base / "now") == digest
    # what the digest was before the fields existed: the spec without them
    spec = m.spec()
    del spec["config"]["body_force"]
    del spec["coords"]["velocity_index"]
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for key, value in sorted(m.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    assert digest == h.hexdigest()[:16]
    save_checkpoint(base / "forced", forced)
    assert model_digest(base / "forced") != digest


def test_corrupt_truncated_missing(tmp_path: Path) -> None:
    m = _metasym()
    save_checkpoint(tmp_path / "ck", m)
    wpath, jpath = checkpoint_paths(tmp_path / "ck")
    data = wpath.read_bytes()
    # flipped bytes in the weights
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    wpath.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    # truncated weights
    wpath.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    # truncated weights whose checksum was rewritten to match: the parser still says so
    meta = json.loads(jpath.read_text())
    meta["sha256"] = hashlib.sha256(wpath.read_bytes()).hexdigest()
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    # truncated / corrupt config
    jpath.write_text(jpath.read_text()[:50])
    with pytest.raises(CheckpointError, match=r"config .* corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    wpath.unlink()
    jpath.unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "ck")
    save_checkpoint(tmp_path / "ck2", m)
    checkpoint_paths(tmp_path / "ck2")[0].unlink()
    with pytest.raises(CheckpointError, match=r"weights .* not found"):
        load_checkpoint(tmp_path / "ck2")


def test_mismatched(tmp_path: Path) -> None:
    m = _metasym()
    save_checkpoint(tmp_path / "ck", m)
    _, jpath = checkpoint_paths(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="another model"):
        load_checkpoint(tmp_path / "ck", expect_class="MLPModel")
    with pytest.raises(CheckpointError, match="another env"):
        load_checkpoint(tmp_path / "ck", env_id="MetaSymQuadrotor-v0")
    with pytest.raises(CheckpointError, match="another environment version"):
        load_checkpoint(tmp_path / "ck", env_id="ToyOscillator-v1")
    # another format version
    meta = json.loads(jpath.read_text())
    meta["format_version"] = 99
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "ck")
    # not a checkpoint at all
    jpath.write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(CheckpointError, match="not a metasym_control checkpoint"):
        load_checkpoint(tmp_path / "ck")
    # weights of another architecture under this config
    save_checkpoint(tmp_path / "ck", m)
    mlp = MLPModel(2, 1, TOY_DT, env_id=TOY_ENV_ID)
    save_checkpoint(tmp_path / "mlp", mlp)
    wm, _ = checkpoint_paths(tmp_path / "mlp")
    wk, jk = checkpoint_paths(tmp_path / "ck")
    wk.write_bytes(wm.read_bytes())
    meta = json.loads(jk.read_text())
    meta["sha256"] = hashlib.sha256(wk.read_bytes()).hexdigest()
    jk.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "ck")
    # resuming into another configuration
    save_checkpoint(tmp_path / "ck3", m)
    other = MetaSym(2, 1, TOY_DT, MetaSymConfig(d_model=32), m.coords, TOY_ENV_ID)
    with pytest.raises(CheckpointError, match="another MetaSym configuration"):
        restore_into(tmp_path / "ck3", other)


def test_format_1_loads_with_its_self_attending_decoder(tmp_path: Path) -> None:
    """Format-1 checkpoints predate the learned self keys: they load with attend_self."""
    torch.manual_seed(0)
    old = MetaSym(
        2,
        1,
        TOY_DT,
        MetaSymConfig(d_model=16, attend_self=True),
        coordinates_for_env(TOY_ENV_ID, 2),
        TOY_ENV_ID,
    )
    old.fit_normalization(oscillator_family(2, 2, 30, "train", seed=0))
    torch.nn.init.normal_(old.decoder.head.weight, std=0.1)
    save_checkpoint(tmp_path / "ck", old)
    _, jpath = checkpoint_paths(tmp_path / "ck")
    meta = json.loads(jpath.read_text())
    meta["format_version"] = 1
    del meta["model"]["config"]["attend_self"]
    jpath.write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, MetaSym) and loaded.config.attend_self
    torch.testing.assert_close(_predict(loaded), _predict(old), rtol=0, atol=0)
    # read as the learned-self-key variant the weights no longer fit, and the error says so
    meta["format_version"] = 2
    meta["model"]["config"]["attend_self"] = False
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="self_key"):
        load_checkpoint(tmp_path / "ck")


def test_format_2_buffer_names_load_under_their_new_names(tmp_path: Path) -> None:
    """Format 1 and 2 checkpoints name the canonical buffers `can_*`; they load the same."""
    m = _metasym()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.decoder.head.weight.sum().backward()
    opt.step()
    wpath = save_checkpoint(tmp_path / "ck", m, optimizer=opt)
    tensors = load_file(str(wpath))
    assert set(OLD_BUFFER_NAMES) <= set(tensors)
    save_file({OLD_BUFFER_NAMES.get(k, k): v for k, v in tensors.items()}, str(wpath))
    _, jpath = checkpoint_paths(wpath)
    meta = json.loads(jpath.read_text())
    meta["format_version"] = 2
    meta["sha256"] = hashlib.sha256(wpath.read_bytes()).hexdigest()
    jpath.write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(wpath)
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.testing.assert_close(_predict(loaded), _predict(m), rtol=0, atol=0)
    # resuming reads the old names too
    other = _metasym()
    restore_into(wpath, other, torch.optim.Adam(other.parameters(), lr=1e-3))
    torch.testing.assert_close(_predict(other), _predict(m), rtol=0, atol=0)
    # the same file read as format 3 lacks the new names, and the error says so
    meta["format_version"] = 3
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="canonical_"):
        load_checkpoint(wpath)


def test_format_1_weights_load_with_consistent_canonical_buffers() -> None:
    """The quadrotor checkpoint shipped until 2026-12-07 (format 1, `can_*` names, kept as a
    fixture) loads, and each renamed buffer holds what its name says: recomputing them from
    the normalisation gives the same values."""
    m, meta = load_checkpoint(FORMAT_1_WEIGHTS, expect_class="MetaSym")
    assert meta["format_version"] == 1
    saved = {k: v.clone() for k, v in m.state_dict().items() if k in OLD_BUFFER_NAMES}
    assert set(saved) == set(OLD_BUFFER_NAMES)
    m._on_normalization()
    for k, v in saved.items():
        torch.testing.assert_close(m.state_dict()[k], v, rtol=1e-6, atol=1e-9, msg=k)
    assert float(saved["canonical_to_state"].abs().sum()) > 0  # not the fresh zeros


def test_checksum_dtype_and_finiteness_cannot_be_half_trusted(tmp_path: Path) -> None:
    m = _metasym()
    wpath = save_checkpoint(tmp_path / "ck", m)
    _, jpath = checkpoint_paths(wpath)
    good = json.loads(jpath.read_text())
    # a checksum deleted from the JSON: valid but replaced weights must not load silently
    meta = dict(good)
    del meta["sha256"]
    jpath.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'sha256' is missing"):
        load_checkpoint(wpath)
    # a dtype that names no parameter dtype (once resolved to torch.load) or none at all
    for bad in ("load", "float128", 3):
        jpath.write_text(json.dumps({**good, "dtype": bad}))
        with pytest.raises(CheckpointError, match="field 'dtype'"):
            load_checkpoint(wpath)
    jpath.write_text(json.dumps(good))
    assert load_checkpoint(wpath)[0].state_dict().keys() == m.state_dict().keys()
    # NaN weights: refused on save, and on load when a file holds them anyway
    with torch.no_grad():
        m.decoder.head.bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "nan", m)
    assert not checkpoint_paths(tmp_path / "nan")[0].exists()
    tensors = load_file(str(wpath))
    tensors["decoder.head.bias"] = torch.full_like(tensors["decoder.head.bias"], float("nan"))
    save_file(tensors, str(wpath))
    jpath.write_text(json.dumps({**good, "sha256": hashlib.sha256(wpath.read_bytes()).hexdigest()}))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(wpath)
