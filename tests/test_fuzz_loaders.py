"""Fuzzed loaders (issue 16): a generated detection file, COLMAP text model, calibration file or
config either loads or raises the project's InputError naming the file, never another exception."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h4d_fast.config import Config, load_config
from h4d_fast.errors import InputError
from h4d_fast.io.atomic import write_npy
from h4d_fast.io.calibration import read_calibration_info, read_toml_calibration
from h4d_fast.io.colmap import parse_cameras_txt, parse_colmap, parse_images_txt
from h4d_fast.io.detection_batch import read_frames
from h4d_fast.io.detections import read_frame_detections

# fixed examples in CI (a failure reproduces); H4D_FUZZ_EXAMPLES=2000 explores further with fresh ones
_DEEP = int(os.environ.get("H4D_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 60, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _loads_or_input_error(fn, path: Path, *args: Any) -> Any:
    """Call the loader; an InputError must name ``path`` (the one-line message starts with it)."""
    try:
        return fn(path, *args)
    except InputError as e:
        assert e.path is not None and str(path.name) in str(e), f"InputError does not name {path}: {e}"
        assert "\n" not in str(e), f"not one line: {e!r}"
        return None


def _text_then_bytes(fn, name: str, text: str, data: bytes) -> None:
    """The loader on a file ``name`` holding ``text``, then holding ``data``."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(text, encoding="utf-8")
        _loads_or_input_error(fn, p)
        p.write_bytes(data)
        _loads_or_input_error(fn, p)


# ----------------------------------------------------------------------------- values
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**1100, 2**1100), floats, st.text(max_size=8))


def _arrays() -> st.SearchStrategy:
    shapes = st.lists(st.integers(0, 18), min_size=0, max_size=3).map(tuple)
    kind = st.sampled_from(["f8", "f4", "i8", "u1", "?", "U3", "O"])

    def build(shape_kind):
        shape, k = shape_kind
        n = int(np.prod(shape)) if shape else 1
        return st.lists(floats, min_size=n, max_size=n).map(lambda v: _cast(np.asarray(v, "f8").reshape(shape), k))

    return st.tuples(shapes, kind).flatmap(build)


def _cast(a: np.ndarray, k: str) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        if k in ("i8", "u1"):
            return np.nan_to_num(a, nan=0, posinf=1, neginf=-1).clip(-1e6, 1e6).astype(k)
        if k == "O":
            return a.astype(object)
        return a.astype(k)


leaves = st.one_of(scalars, _arrays())
keys = st.one_of(st.sampled_from(["keypoints", "kpts", "bbox", "box", "score", "identity", "person_id", "aria01", "0"]),
                 st.text(max_size=5), st.integers(-3, 3))
nested = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _detection_like() -> st.SearchStrategy:
    """Close to a valid per-frame file: a list of dicts with keypoints and a box, fields perturbed."""
    kp = st.one_of(_arrays(), st.just(np.zeros((17, 3))), st.lists(floats, min_size=51, max_size=51))
    det = st.fixed_dictionaries({"keypoints": kp}, optional={"bbox": st.one_of(_arrays(), st.lists(floats, max_size=5)),
                                                             "score": scalars, "identity": scalars})
    return st.one_of(st.lists(det, max_size=3), st.dictionaries(keys, det, max_size=3))


# ----------------------------------------------------------------------------- detections
_K = np.zeros((17, 3))


@FUZZ
@given(obj=st.one_of(nested, _detection_like()))
@example(obj=[{"keypoints": _K, "bbox": [0.0, 0.0, 1.0, 1.0], "identity": 9.223372036854776e18}])  # found by the fuzzing
@example(obj=[{"keypoints": _K, "identity": float("nan")}])
@example(obj=[{"keypoints": [[10**400, 0, 1]] * 17, "score": 10**400}])
@example(obj=[{"keypoints": np.full((17, 3), 1e300), "bbox": np.array([1e300, 0.0, 1.0, 1.0, 1.0])}])
def test_detection_npy(obj) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "00001.npy"
        try:
            write_npy(p, obj)
        except (ValueError, TypeError):  # numpy cannot make an array of this shape: nothing to load
            return
        one = _loads_or_input_error(read_frame_detections, p)
        batch = _loads_or_input_error(lambda q: read_frames([str(q)]), p)  # the batched load: the same outcome
        assert (one is None) == (batch is None)
        if one is not None:
            assert batch.gaps == one[1] and len(batch.kpts) == len(one[0])
            for i, d in enumerate(one[0]):
                np.testing.assert_array_equal(batch.kpts[i], d[0])
                np.testing.assert_array_equal(batch.boxes[i], d[1])


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**1100, 2**1100), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.one_of(keys.map(str), st.sampled_from(["bbox", "keypoints", "score", "category_id", "image_id"])), inner, max_size=5)),
    max_leaves=20,
)


def _json_detection_like() -> st.SearchStrategy:
    num = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-10, 10), st.text(max_size=2), st.none())
    det = st.fixed_dictionaries({"keypoints": st.lists(num, min_size=0, max_size=60)},
                                optional={"bbox": st.lists(num, max_size=5), "score": num, "identity": num})
    return st.one_of(st.lists(det, max_size=3), st.fixed_dictionaries({"people": st.lists(det, max_size=2)}))


@FUZZ
@given(obj=st.one_of(json_values, _json_detection_like()), junk=st.one_of(st.none(), st.binary(max_size=20)))
def test_detection_json(obj, junk) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "00001.json"
        data = json.dumps(obj).encode()
        if junk is not None:  # bytes spliced in: malformed JSON, bad UTF-8
            data = data[: len(data) // 2] + junk + data[len(data) // 2:]
        p.write_bytes(data)
        _loads_or_input_error(read_frame_detections, p)


@FUZZ
@given(data=st.binary(max_size=200), cut=st.integers(0, 400))
def test_detection_npy_bytes(data, cut) -> None:
    """Raw and truncated .npy bytes (a valid header cut short, or garbage after the magic)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 17, 3)))
    valid = buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        for i, blob in enumerate((data, b"\x93NUMPY" + data, valid[:cut])):
            p = Path(d) / f"{i:05d}.npy"
            p.write_bytes(blob)
            _loads_or_input_error(read_frame_detections, p)


# ----------------------------------------------------------------------------- COLMAP
def _token() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(["PINHOLE", "OPENCV", "OPENCV_FISHEYE", "SIMPLE_RADIAL", "RADIAL", "FOO", "cam01/00001.jpg",
                                      "cam02/00001.jpg", "aria01/x.jpg", "nan", "inf", "-1", "0", "1e400", "#"]),
                     st.integers(-5, 3000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=6))


lines = st.lists(st.lists(_token(), min_size=0, max_size=12).map(" ".join), max_size=8).map("\n".join)


def _valid_colmap() -> tuple[str, str]:
    cams = "# camera\n1 OPENCV 1920 1080 1000 1000 960 540 0.01 0 0 0\n2 PINHOLE 1920 1080 900 900 960 540\n"
    imgs = ("1 1 0 0 0 0.1 0.2 3 1 cam01/00001.jpg\n\n"
            "2 0.7071 0 0.7071 0 0 0 4 2 cam02/00001.jpg\n1.0 2.0 -1\n")
    return cams, imgs


@FUZZ
@given(cam_extra=lines, img_extra=lines, where=st.sampled_from(["prepend", "append", "replace"]))
def test_colmap_text(cam_extra, img_extra, where) -> None:
    cams, imgs = _valid_colmap()
    if where == "prepend":
        cams, imgs = cam_extra + "\n" + cams, img_extra + "\n" + imgs
    elif where == "append":
        cams, imgs = cams + cam_extra, imgs + img_extra
    else:
        cams, imgs = cam_extra, img_extra
    with tempfile.TemporaryDirectory() as d:
        w = Path(d)
        (w / "cameras.txt").write_text(cams, encoding="utf-8")
        (w / "images.txt").write_text(imgs, encoding="utf-8")
        _loads_or_input_error(parse_cameras_txt, w / "cameras.txt")
        _loads_or_input_error(parse_images_txt, w / "images.txt")
        try:
            parse_colmap(w, None).cameras()
        except InputError as e:
            assert e.path is not None and e.path.name in ("cameras.txt", "images.txt", "workplace", w.name), str(e)


def test_colmap_valid_model_loads() -> None:
    """The fuzz base case is a model that loads (else the fuzzing above tests only errors)."""
    cams, imgs = _valid_colmap()
    with tempfile.TemporaryDirectory() as d:
        w = Path(d)
        (w / "cameras.txt").write_text(cams)
        (w / "images.txt").write_text(imgs)
        assert parse_colmap(w, None).names == ["cam01", "cam02"]


# ----------------------------------------------------------------------------- TOML writer
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _toml(doc: dict[str, Any]) -> str:
    top = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = [f"[{json.dumps(k)}]\n" + "\n".join(f"{json.dumps(str(kk))} = {_toml_value(vv)}" for kk, vv in v.items())
              for k, v in doc.items() if isinstance(v, dict)]
    return "\n".join(top + tables) + "\n"


toml_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), floats, st.text(max_size=6))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _num_matrix(rows: int, cols: int) -> st.SearchStrategy:
    return st.lists(st.lists(floats, min_size=cols, max_size=cols), min_size=rows, max_size=rows)


def _camera_table() -> st.SearchStrategy:
    field_values = {
        "name": st.one_of(st.text(max_size=5), toml_values),
        "size": st.one_of(st.lists(floats, min_size=2, max_size=2), toml_values),
        "matrix": st.one_of(_num_matrix(3, 3), toml_values),
        "distortions": st.one_of(st.lists(floats, min_size=4, max_size=5), toml_values),
        "rotation": st.one_of(st.lists(floats, min_size=3, max_size=3), _num_matrix(3, 3), toml_values),
        "translation": st.one_of(st.lists(floats, min_size=3, max_size=3), toml_values),
        "fisheye": st.one_of(st.booleans(), toml_values),
    }
    return st.fixed_dictionaries({"matrix": field_values["matrix"], "rotation": field_values["rotation"],
                                  "translation": field_values["translation"]},
                                 optional={k: v for k, v in field_values.items() if k not in ("matrix", "rotation", "translation")})


@FUZZ
@given(tables=st.dictionaries(st.sampled_from(["cam_1", "cam_2", "int_cam01_img", "metadata", "x"]), _camera_table(), min_size=1, max_size=3),
       extra=st.dictionaries(st.text(min_size=1, max_size=4), toml_values, max_size=2))
def test_calibration_toml(tables, extra) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "calib.toml"
        doc = {**extra, **tables}
        p.write_text(_toml(doc), encoding="utf-8")
        _loads_or_input_error(read_toml_calibration, p)
        _loads_or_input_error(read_calibration_info, p)


@FUZZ
@given(text=st.text(max_size=200), data=st.binary(max_size=80))
def test_calibration_toml_text(text, data) -> None:
    _text_then_bytes(read_toml_calibration, "calib.toml", text, data)


def test_calibration_toml_valid_loads(tmp_path) -> None:
    p = tmp_path / "calib.toml"
    p.write_text(_toml({"cam_1": {"name": "cam01", "size": [1920.0, 1080.0], "matrix": [[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]],
                                  "distortions": [0.0, 0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0], "translation": [0.0, 0.0, 3.0], "fisheye": False}}))
    assert read_toml_calibration(p).cameras.names == ["cam01"]


# ----------------------------------------------------------------------------- configs
def _config_schema() -> dict[str, dict[str, Any]]:
    from dataclasses import fields

    cfg = Config()
    return {f.name: {g.name: getattr(getattr(cfg, f.name), g.name) for g in fields(getattr(cfg, f.name))} for f in fields(cfg)}


SCHEMA = _config_schema()
sections = st.sampled_from(sorted(SCHEMA) + ["nope"])


@st.composite
def config_docs(draw) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for sec in draw(st.lists(sections, max_size=3, unique=True)):
        names = sorted(SCHEMA.get(sec, {})) + ["unknown_key"]
        table = {}
        for key in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            default = SCHEMA.get(sec, {}).get(key)
            same_type = st.just(default) if default is not None and not isinstance(default, (list, dict)) else toml_scalars
            table[key] = draw(st.one_of(same_type, toml_values))
        doc[sec] = table
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=4))] = draw(toml_values)  # a top-level value, not a table
    return doc


@FUZZ
@given(doc=config_docs())
@example(doc={"\n": False})  # found by the fuzzing: a key with a line break made a two-line message
def test_config_toml(doc) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "h4d.toml"
        p.write_text(_toml(doc), encoding="utf-8")
        cfg = _loads_or_input_error(load_config, p)
        assert cfg is None or isinstance(cfg, Config)


@FUZZ
@given(text=st.text(max_size=200), data=st.binary(max_size=80))
def test_config_toml_text(text, data) -> None:
    _text_then_bytes(load_config, "h4d.toml", text, data)


def test_config_folder_or_missing_is_input_error(tmp_path) -> None:
    for p in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(InputError) as e:
            load_config(p)
        assert str(p) in str(e.value)


# ----------------------------------------------------------------------------- Qualisys XML
_QCA_ATTRS = {
    "fov_video": {"left": "0", "top": "0", "right": "1919", "bottom": "1079"},
    "intrinsic": {"focalLengthU": "64000", "focalLengthV": "64000", "centerPointU": "61440", "centerPointV": "34560",
                  "skew": "0", "radialDistortion1": "0", "radialDistortion2": "0", "radialDistortion3": "0",
                  "tangentalDistortion1": "0", "tangentalDistortion2": "0"},
    "transform": {"x": "0", "y": "0", "z": "3000", "r11": "1", "r12": "0", "r13": "0", "r21": "0", "r22": "1", "r23": "0",
                  "r31": "0", "r32": "0", "r33": "1"},
}
attr_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                        st.sampled_from(["", "nan", "1e308", "-1e308", "1e400", "abc", "1080", "1080p", "N/A"]),
                        st.text(alphabet=st.characters(codec="ascii", blacklist_categories=("Cc",)), max_size=5))


def _qca(camera_attrs: dict[str, str], changes: list[tuple[str, str, str | None]]) -> str:
    from xml.sax.saxutils import quoteattr

    attrs = {tag: dict(a) for tag, a in _QCA_ATTRS.items()}
    for tag, key, value in changes:
        if value is None:
            attrs[tag].pop(key, None)
        else:
            attrs[tag][key] = value
    cam = " ".join(f"{k}={quoteattr(v)}" for k, v in camera_attrs.items())
    inner = "".join(f"<{tag} " + " ".join(f"{k}={quoteattr(v)}" for k, v in a.items()) + "/>" for tag, a in attrs.items())
    return f"<calibration><cameras><camera {cam}>{inner}</camera></cameras></calibration>"


changes = st.lists(st.sampled_from([(t, k) for t, a in _QCA_ATTRS.items() for k in a]).flatmap(
    lambda tk: st.one_of(st.none(), attr_values).map(lambda v: (tk[0], tk[1], v))), max_size=4)


@FUZZ
@given(cam=st.dictionaries(st.sampled_from(["serial", "active", "viewrotation", "video_resolution"]), attr_values, max_size=3),
       edits=changes)
@example(cam={"video_resolution": "1877974839"}, edits=[("fov_video", "right", "5304246677291.0")])  # found by the fuzzing
def test_calibration_qca(cam, edits) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "calib.qca.txt"
        p.write_text(_qca(cam, edits), encoding="utf-8")
        _loads_or_input_error(read_calibration_info, p)


def test_calibration_qca_valid_loads(tmp_path) -> None:
    p = tmp_path / "calib.qca.txt"
    p.write_text(_qca({"serial": "123"}, []))
    assert read_calibration_info(p).cameras.names == ["123"]


# ----------------------------------------------------------------------------- OpenCV FileStorage
_FS_KEYS = ["camera_matrix", "distortion_coefficients", "rvec", "tvec", "image_width", "image_height",
            "K", "D", "R", "T", "image_size", "distortion_model", "names"]
fs_values = st.one_of(
    st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.text(alphabet="abcfisheye01 ", max_size=8),
    st.tuples(st.integers(1, 4), st.integers(1, 5)).flatmap(
        lambda rc: st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=rc[0] * rc[1], max_size=rc[0] * rc[1])
        .map(lambda v: np.asarray(v, np.float64).reshape(rc))),
)


def _valid_fs() -> dict[str, Any]:
    return {"camera_matrix": np.array([[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]), "distortion_coefficients": np.zeros((1, 5)),
            "rvec": np.zeros((3, 1)), "tvec": np.array([[0.0], [0.0], [3.0]]), "image_width": 1920, "image_height": 1080}


@FUZZ
@given(edits=st.dictionaries(st.sampled_from(_FS_KEYS), st.one_of(st.none(), fs_values), max_size=4),
       ext=st.sampled_from([".yml", ".xml"]))
def test_calibration_opencv(edits, ext) -> None:
    cv2 = pytest.importorskip("cv2")
    entries = _valid_fs()
    for k, v in edits.items():
        if v is None:
            entries.pop(k, None)
        else:
            entries[k] = v
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"cam1{ext}"
        fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_WRITE)
        for k, v in entries.items():
            fs.write(k, v)
        fs.release()
        _loads_or_input_error(read_calibration_info, p)


@FUZZ
@given(text=st.text(max_size=200), ext=st.sampled_from([".yml", ".xml", ".json"]))
def test_calibration_opencv_text(text, ext) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"cam1{ext}"
        p.write_text(("%YAML:1.0\n---\n" if ext == ".yml" else "") + text, encoding="utf-8")
        _loads_or_input_error(read_calibration_info, p)


def test_calibration_opencv_valid_loads(tmp_path) -> None:
    cv2 = pytest.importorskip("cv2")
    p = tmp_path / "cam1.yml"
    fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_WRITE)
    for k, v in _valid_fs().items():
        fs.write(k, v)
    fs.release()
    assert len(read_calibration_info(p).cameras) == 1
