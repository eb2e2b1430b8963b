"""Body-model layer: the embedded default model (SMPL layout built from MakeHuman assets) and
loading of real SMPL files through smplx (tested on tiny fake files made here)."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

smplx = pytest.importorskip("smplx")

from h4d_fast.body import (  # noqa: E402
    VERTEX_ID_NAMES,
    DefaultModelUnavailable,
    default_body_model_path,
    load_body_model,
    read_smpl_file,
    smpl45_to_coco17,
)
from h4d_fast.constants import COCO17_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS  # noqa: E402
from h4d_fast.errors import InputError  # noqa: E402


# ------------------------------------------------------------------------------------------
# Default model
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def default_path() -> Path:
    try:
        return default_body_model_path()  # builds into the user cache once (~20 s)
    except DefaultModelUnavailable as e:
        pytest.skip(f"default body model unavailable: {e}")


@pytest.fixture(scope="session")
def default_data(default_path: Path) -> dict:
    with open(default_path, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="session")
def default_model(default_path: Path):
    return load_body_model()


def _smplx_ordinary(path: Path, vertex_ids: dict, dtype=torch.float32):
    """smplx.SMPL reading the file itself (its own unpickling path)."""
    return smplx.SMPL(model_path=str(path), vertex_ids=vertex_ids, dtype=dtype)


def test_default_loads_in_smplx_ordinary_path(default_path, default_data):
    m = _smplx_ordinary(default_path, default_data["vertex_ids"])
    n = default_data["v_template"].shape[0]
    g = torch.Generator().manual_seed(0)
    out = m(
        betas=torch.randn(2, 10, generator=g),
        global_orient=0.3 * torch.randn(2, 3, generator=g),
        body_pose=0.3 * torch.randn(2, 69, generator=g),
        transl=torch.randn(2, 3, generator=g),
    )
    assert out.vertices.shape == (2, n, 3)
    assert out.joints.shape == (2, 45, 3)
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()


def test_default_file_layout(default_data):
    d = default_data
    n = d["v_template"].shape[0]
    assert 5000 <= n <= 20000
    assert d["shapedirs"].shape == (n, 3, 10)
    assert d["posedirs"].shape == (n, 3, 207)
    assert d["J_regressor"].shape == (24, n)
    assert d["weights"].shape == (n, 24)
    assert d["kintree_table"].shape == (2, 24)
    assert list(d["kintree_table"][0][1:]) == list(SMPL_PARENTS[1:])
    assert set(VERTEX_ID_NAMES) <= set(d["vertex_ids"])
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f"):
        assert type(d[k]) is np.ndarray, k  # plain numpy, no chumpy


def test_weights_and_regressor_are_convex(default_data):
    w = default_data["weights"]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
    jr = default_data["J_regressor"]
    assert (jr >= 0).all()
    np.testing.assert_allclose(jr.sum(axis=1), 1.0, atol=1e-9)
    assert ((jr > 0).sum(axis=1) >= 3).all()  # a ring of vertices, not one vertex


def test_default_mesh_is_watertight(default_data):
    f = default_data["f"].astype(np.int64)
    v = default_data["v_template"]
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # Closed 2-manifold with consistent orientation: each directed edge once, its reverse once.
    keys = directed[:, 0] * (len(v) + 1) + directed[:, 1]
    assert np.unique(keys).size == keys.size
    rev = directed[:, 1] * (len(v) + 1) + directed[:, 0]
    assert np.isin(rev, keys).all()
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    assert (counts == 2).all()
    # Outward orientation: positive enclosed volume (about 0.06-0.08 m^3 for an adult).
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    assert 0.03 < vol < 0.15
    assert len(np.unique(f)) == len(v)  # no unused vertices


def test_zero_pose_anatomy(default_model):
    B = 1
    z = torch.zeros(B, 3)
    v, j45 = default_model.forward(z, torch.zeros(B, 69), torch.zeros(B, 10), z)
    kp = default_model.coco17(j45)[0]
    assert kp.shape == (17, 3)
    name = {n: i for i, n in enumerate(COCO17_NAMES)}
    y = kp[:, 1]
    for s in ("left", "right"):
        assert y[name[f"{s}_ankle"]] < y[name[f"{s}_knee"]] < y[name[f"{s}_hip"]]
        assert y[name[f"{s}_hip"]] < y[name[f"{s}_shoulder"]]
        for face in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
            assert y[name[face]] > y[name[f"{s}_shoulder"]]
    # Left on +x, right on -x; face points in front (+z) of the ears.
    for i, n in enumerate(COCO17_NAMES):
        if n.startswith("left_"):
            assert kp[i, 0] > 0.01, n
        if n.startswith("right_"):
            assert kp[i, 0] < -0.01, n
    assert kp[name["nose"], 2] > kp[name["left_ear"], 2]
    j = j45[0, :24]
    for i, n in enumerate(SMPL_JOINT_NAMES):
        if n.startswith("left_"):
            assert j[i, 0] > 0.01, n
    # T-pose: wrists level with the shoulders and far out; pelvis near the origin.
    assert abs(float(kp[name["left_wrist"], 1] - kp[name["left_shoulder"], 1])) < 0.1
    assert float(kp[name["left_wrist"], 0]) > 0.5
    assert float(j[0].norm()) < 0.05
    height = float(v[0, :, 1].max() - v[0, :, 1].min())
    assert 1.55 < height < 1.85


def test_shape_space_is_plausible(default_model):
    def stature(betas: torch.Tensor) -> np.ndarray:
        v = default_model.shaped_vertices(betas)
        return (v[..., 1].max(dim=1).values - v[..., 1].min(dim=1).values).numpy()

    k = default_model.num_betas
    extremes = torch.cat([2 * torch.eye(k), -2 * torch.eye(k)])
    h = stature(extremes)
    assert ((h > 1.4) & (h < 2.1)).all(), h
    g = torch.Generator().manual_seed(1)
    rand = torch.clamp(torch.randn(64, k, generator=g), -2, 2)
    h = stature(rand)
    assert ((h > 1.4) & (h < 2.1)).all(), h
    # A unit beta is a visible variation: some component changes the leg length by > 2 cm.
    j = default_model.rest_joints(extremes)  # (2k, 24, 3)
    leg = (j[:, 1] - j[:, 7]).norm(dim=-1) + 0  # hip -> ankle
    assert float((leg[:k] - leg[k:]).abs().max()) > 0.04
    # ... and no component changes it absurdly (>30 cm between beta=+-2).
    assert float((leg[:k] - leg[k:]).abs().max()) < 0.3


def test_forward_matches_smplx_and_rest_joints(default_model, default_path, default_data):
    ref = _smplx_ordinary(default_path, default_data["vertex_ids"])
    g = torch.Generator().manual_seed(2)
    go, bp, be, tr = (torch.randn(3, 3, generator=g) * 0.5, torch.randn(3, 69, generator=g) * 0.3,
                      torch.randn(3, 10, generator=g), torch.randn(3, 3, generator=g))  # fmt: skip
    v, j = default_model.forward(go, bp, be, tr)
    out = ref(global_orient=go, body_pose=bp, betas=be, transl=tr)
    torch.testing.assert_close(v, out.vertices)
    torch.testing.assert_close(j, out.joints)
    torch.testing.assert_close(default_model.coco17(j), smpl45_to_coco17(j))
    # Zero pose, zero translation: posed tree joints equal the rest joints.
    z = torch.zeros(3, 3)
    _, j0 = default_model.forward(z, torch.zeros(3, 69), be, z)
    torch.testing.assert_close(j0[:, :24], default_model.rest_joints(be), atol=1e-5, rtol=0)
    assert default_model.faces.dtype == torch.int64
    assert default_model.faces.shape[1] == 3


def test_forward_is_differentiable(default_model):
    be = torch.zeros(1, 10, requires_grad=True)
    bp = torch.zeros(1, 69, requires_grad=True)
    _, j = default_model.forward(torch.zeros(1, 3), bp, be, torch.zeros(1, 3))
    default_model.coco17(j).sum().backward()
    assert be.grad is not None and torch.isfinite(be.grad).all() and be.grad.abs().sum() > 0


@pytest.mark.slow
def test_default_build_is_deterministic(default_data, tmp_path):
    from h4d_fast.body import make_default_body_model

    p = make_default_body_model(tmp_path / "again.pkl")
    with open(p, "rb") as f:
        again = pickle.load(f)
    for k in ("v_template", "shapedirs", "J_regressor", "weights", "f"):
        np.testing.assert_array_equal(again[k], default_data[k], err_msg=k)
    assert again["vertex_ids"] == default_data["vertex_ids"]


# ------------------------------------------------------------------------------------------
# Real-SMPL path, on tiny fake files in the official layout
# ------------------------------------------------------------------------------------------
N_FAKE = 100


def _fake_smpl(seed: int = 0, n: int = N_FAKE) -> dict:
    rng = np.random.default_rng(seed)
    w = rng.random((n, 24)) ** 4
    jr = rng.random((24, n)) * (rng.random((24, n)) < 0.1)
    jr[:, 0] += 1e-3
    return {
        "v_template": rng.normal(size=(n, 3)) * 0.3,
        "shapedirs": rng.normal(size=(n, 3, 10)) * 0.01,
        "posedirs": rng.normal(size=(n, 3, 207)) * 0.01,
        "J_regressor": jr / jr.sum(axis=1, keepdims=True),
        "weights": w / w.sum(axis=1, keepdims=True),
        "kintree_table": np.stack([np.array([4294967295] + list(SMPL_PARENTS[1:]), dtype=np.int64),
                                   np.arange(24)]).astype(np.uint32),  # fmt: skip
        "f": rng.integers(0, n, size=(150, 3)).astype(np.uint32),
        "bs_type": "lrotmin",
        "bs_style": "lbs",
    }


def _fake_vertex_ids(n: int = N_FAKE) -> dict:
    return {k: (7 * i + 3) % n for i, k in enumerate(VERTEX_ID_NAMES)}


def _write_pkl(path: Path, data: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    return path


def _random_inputs(b: int = 4, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, generator=g) * 0.5, torch.randn(b, 69, generator=g) * 0.3,
            torch.randn(b, 10, generator=g), torch.randn(b, 3, generator=g))  # fmt: skip


def _check_equal_to_smplx(model, ref_path: Path, vid: dict):
    ref = _smplx_ordinary(ref_path, vid)
    go, bp, be, tr = _random_inputs()
    v, j = model.forward(go, bp, be, tr)
    out = ref(global_orient=go, body_pose=bp, betas=be, transl=tr)
    torch.testing.assert_close(v, out.vertices)
    torch.testing.assert_close(j, out.joints)
    assert v.shape == (4, N_FAKE, 3) and j.shape == (4, 45, 3)
    assert model.coco17(j).shape == (4, 17, 3)


def test_fake_smpl_pkl_matches_smplx(tmp_path):
    p = _write_pkl(tmp_path / "fake.pkl", _fake_smpl())
    vid = _fake_vertex_ids()
    m = load_body_model(p, vertex_ids=vid)
    assert m.num_vertices == N_FAKE and m.num_betas == 10
    _check_equal_to_smplx(m, p, vid)


def test_fake_smpl_sparse_regressor(tmp_path):
    data = _fake_smpl(seed=1)
    data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
    p = _write_pkl(tmp_path / "sparse.pkl", data)
    vid = _fake_vertex_ids()
    _check_equal_to_smplx(load_body_model(p, vertex_ids=vid), p, vid)


def test_fake_smpl_npz_and_vertex_ids_in_file(tmp_path):
    data = _fake_smpl(seed=2)
    pkl = _write_pkl(tmp_path / "ref.pkl", data)
    npz = tmp_path / "fake.npz"
    np.savez(npz, **{k: v for k, v in data.items() if isinstance(v, np.ndarray)})
    vid = _fake_vertex_ids()
    _check_equal_to_smplx(load_body_model(npz, vertex_ids=vid), pkl, vid)
    # vertex_ids stored in the file are used when none are passed.
    withids = _write_pkl(tmp_path / "withids.pkl", dict(data, vertex_ids=vid))
    _check_equal_to_smplx(load_body_model(withids), pkl, vid)


def test_folder_picks_gender(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    _write_pkl(folder / "SMPL_MALE.pkl", _fake_smpl(seed=3))
    np.savez(folder / "SMPL_FEMALE.npz", **{k: v for k, v in _fake_smpl(seed=4).items() if isinstance(v, np.ndarray)})
    vid = _fake_vertex_ids()
    male = load_body_model(folder, gender="male", vertex_ids=vid)
    assert male.path.name == "SMPL_MALE.pkl"
    female = load_body_model(folder, gender="female", vertex_ids=vid)
    assert female.path.name == "SMPL_FEMALE.npz"
    with pytest.raises(InputError) as e:
        load_body_model(folder, gender="neutral", vertex_ids=vid)
    assert str(folder) in str(e.value)


def test_unknown_topology_needs_vertex_ids(tmp_path):
    p = _write_pkl(tmp_path / "novid.pkl", _fake_smpl())
    with pytest.raises(InputError) as e:
        load_body_model(p)
    assert e.value.field == "vertex_ids" and str(p) in str(e.value)


@pytest.mark.parametrize(
    "key,mutate",
    [
        ("weights", lambda d: d.pop("weights")),
        ("posedirs", lambda d: d.__setitem__("posedirs", d["posedirs"][:, :, :100])),
        ("J_regressor", lambda d: d.__setitem__("J_regressor", d["J_regressor"][:23])),
        ("shapedirs", lambda d: d.__setitem__("shapedirs", d["shapedirs"][:50])),
        ("f", lambda d: d.__setitem__("f", d["f"] + N_FAKE)),
        ("kintree_table", lambda d: d.__setitem__("kintree_table", d["kintree_table"][:, :20])),
        ("v_template", lambda d: d.__setitem__("v_template", np.full((N_FAKE, 3), np.nan))),
    ],
)
def test_malformed_file_names_file_and_key(tmp_path, key, mutate):
    data = _fake_smpl()
    mutate(data)
    p = _write_pkl(tmp_path / "bad.pkl", data)
    with pytest.raises(InputError) as e:
        load_body_model(p, vertex_ids=_fake_vertex_ids())
    assert e.value.field == key
    assert str(p) in str(e.value) and key in str(e.value)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(InputError) as e:
        load_body_model(tmp_path / "nope.pkl")
    assert "nope.pkl" in str(e.value)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(InputError) as e:
        load_body_model(junk)
    assert "junk.pkl" in str(e.value)
    lst = _write_pkl(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(InputError):
        load_body_model(lst)
    with pytest.raises(InputError) as e:
        load_body_model(_write_pkl(tmp_path / "ok.pkl", _fake_smpl()), gender="robot")
    assert e.value.field == "gender"


def test_chumpy_pickles_load_without_chumpy(tmp_path, monkeypatch):
    """Original SMPL pickles hold chumpy arrays; they must load without chumpy installed."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:  # pickled by its __dict__, like chumpy's arrays
        def __init__(self, x):
            self.x = x

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch_mod.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    data = _fake_smpl(seed=5)
    plain = dict(data)
    for k in ("v_template", "shapedirs", "posedirs", "weights"):
        data[k] = Ch(data[k])
    p = _write_pkl(tmp_path / "chumpy.pkl", data)
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    got = read_smpl_file(p)
    for k in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(got[k], plain[k])
    ref = _write_pkl(tmp_path / "plain.pkl", plain)
    vid = _fake_vertex_ids()
    _check_equal_to_smplx(load_body_model(p, vertex_ids=vid), ref, vid)


def test_cli_body_make_default_and_info(tmp_path, capsys):
    """``h4d body make-default OUT`` writes a file smplx.SMPL loads; ``h4d body info`` describes it."""
    pytest.importorskip("anny")
    import json as _json

    from h4d_fast.cli import main

    out = tmp_path / "models" / "SMPL_NEUTRAL.pkl"
    assert main(["body", "make-default", str(out)]) == 0
    capsys.readouterr()
    assert main(["body", "info", str(out)]) == 0
    info = _json.loads(capsys.readouterr().out)
    assert info["joints"] == 24 and info["betas"] >= 10 and info["vertices"] > 6000
    assert main(["body", "make-default"]) == 2  # no OUT: one-line error, not a traceback
