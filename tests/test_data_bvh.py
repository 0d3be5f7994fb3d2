"""BVH reader/writer: round trips, channel orders, position channels, FK, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmar import geometry
from mmar.data.bvh import (
    fps_from_frame_time,
    parse_bvh,
    parse_bvh_arrays,
    read_bvh,
    write_bvh,
)
from mmar.data.clip import Clip, Skeleton
from mmar.errors import DataFormatError
from mmar.geometry_np import euler_to_matrix, forward_kinematics, matrix_to_euler

ORDERS = ["".join(p) for p in itertools.permutations("XYZ")]

CHAIN = """HIERARCHY
ROOT root
{
\tOFFSET 0 0 0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\tJOINT mid
\t{
\t\tOFFSET 0 10 0
\t\tCHANNELS 3 Xrotation Yrotation Zrotation
\t\tJOINT tip
\t\t{
\t\t\tOFFSET 0   5 0
\t\t\tCHANNELS 3 Zrotation Yrotation Xrotation
\t\t\tEnd Site
\t\t\t{
\t\t\t\tOFFSET 0 1 0
\t\t\t}
\t\t}
\t}
}
MOTION
Frames: 2
Frame Time: 0.0333333
1 2 3 0 0 0 0 0 0 0 0 0
0 0 0 90 0 0 0 0 -90 0 0 0
"""


def _random_rot(rng, shape):
    q = rng.normal(size=shape + (4,))
    return np.asarray(geometry.quaternion_to_matrix(q.astype(np.float32)))


def _random_clip(rng, J=7, T=5, with_trans=False, fps=30.0):
    parents = [-1] + [int(rng.integers(0, j)) for j in range(1, J)]
    offsets = rng.uniform(-0.5, 0.5, (J, 3)).astype(np.float32)
    trans = None
    if with_trans:
        trans = (offsets + rng.uniform(-0.05, 0.05, (T, J, 3))).astype(np.float32)
    return Clip(
        name="rand", skeleton=Skeleton([f"j{j}" for j in range(J)], parents, offsets),
        local_rot=_random_rot(rng, (T, J)), root_pos=rng.uniform(-2, 2, (T, 3)).astype(np.float32),
        fps=fps, local_trans=trans,
    )


# --------------------------------------------------------------------------
# rotations
# --------------------------------------------------------------------------

@pytest.mark.parametrize("order", ORDERS)
def test_euler_matches_geometry(order):
    rng = np.random.default_rng(0)
    ang = rng.uniform(-180, 180, (64, 5, 3))
    ours = euler_to_matrix(ang, order, degrees=True)
    ref = np.asarray(geometry.euler_to_matrix(ang, order, degrees=True))
    assert ours.shape == (64, 5, 3, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("order", ORDERS)
def test_matrix_to_euler_round_trip(order):
    rng = np.random.default_rng(2)
    R = _random_rot(rng, (200,))
    ang = matrix_to_euler(R, order, degrees=True)
    np.testing.assert_allclose(euler_to_matrix(ang, order, degrees=True), R, atol=2e-6)
    assert np.all(np.abs(ang[:, 1]) <= 90.0 + 1e-9)
    ref = np.asarray(geometry.matrix_to_euler(R, order, degrees=True))
    np.testing.assert_allclose(ang, ref, atol=5e-3)
    # gimbal lock: middle angle +-90 keeps the matrix
    lock = np.array([[30.0, 90.0, 0.0], [-50.0, -90.0, 0.0]])
    lock_rot = euler_to_matrix(lock, order, degrees=True)
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(lock_rot, order, degrees=True), order, degrees=True),
                               lock_rot, atol=1e-6)


def test_fk_matches_geometry():
    rng = np.random.default_rng(1)
    clip = _random_clip(rng, J=9, T=4, with_trans=True)
    g_rot, g_pos = forward_kinematics(clip.local_rot, clip.local_trans, clip.skeleton.parents, clip.root_pos)
    ref_rot, ref_pos = geometry.forward_kinematics(
        clip.local_rot, clip.local_trans, clip.skeleton.parents, clip.root_pos
    )
    np.testing.assert_allclose(g_rot, ref_rot, atol=1e-5)
    np.testing.assert_allclose(g_pos, ref_pos, atol=1e-5)


def test_fps_rounding():
    assert fps_from_frame_time(0.0333333) == 30.0
    assert fps_from_frame_time(0.008333) == 120.0
    assert fps_from_frame_time(1 / 60) == 60.0
    assert abs(fps_from_frame_time(1 / 29.97) - 29.97) < 1e-9


# --------------------------------------------------------------------------
# hand-written files
# --------------------------------------------------------------------------

def test_three_joint_chain_fk():
    clip = parse_bvh(CHAIN, "chain.bvh", scale=0.1)
    assert clip.name == "chain"
    assert clip.skeleton.names == ("root", "mid", "tip")  # End Site dropped
    assert clip.skeleton.parents == (-1, 0, 1)
    assert clip.fps == 30.0 and clip.num_frames == 2
    assert clip.local_trans is None  # only the root has position channels
    np.testing.assert_allclose(clip.skeleton.offsets, [[0, 0, 0], [0, 1, 0], [0, 0.5, 0]], atol=1e-7)
    np.testing.assert_allclose(clip.root_pos, [[0.1, 0.2, 0.3], [0, 0, 0]], atol=1e-7)
    g_rot, pos = forward_kinematics(clip.local_rot, clip.skeleton.offsets, clip.skeleton.parents, clip.root_pos)
    # frame 0: rest pose, chain straight up from (0.1, 0.2, 0.3)
    np.testing.assert_allclose(pos[0], [[0.1, 0.2, 0.3], [0.1, 1.2, 0.3], [0.1, 1.7, 0.3]], atol=1e-6)
    # frame 1: root Zrotation 90 deg turns the bone +Y into -X, so mid sits at (-1, 0, 0); mid's
    # Zrotation -90 (third channel of its XYZ order) turns back, so the tip bone points +Y.
    np.testing.assert_allclose(pos[1], [[0, 0, 0], [-1, 0, 0], [-1, 0.5, 0]], atol=1e-6)
    np.testing.assert_allclose(g_rot[1, 0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(g_rot[1, 2], np.eye(3), atol=1e-6)
    # the same through Clip FK (JAX)
    np.testing.assert_allclose(clip.joints(), pos, atol=1e-5)


def test_crlf_tabs_and_spaces_parse_identically():
    lf = parse_bvh(CHAIN, "a.bvh")
    crlf = parse_bvh(CHAIN.replace("\n", "\r\n"), "b.bvh")
    messy = (CHAIN.replace("\t", "  \t ").replace("Frame Time: ", "Frame Time:\t\t")
             .replace(" 0 0 0\n", "   0\t 0  0 \n"))
    messy_clip = parse_bvh(messy, "c.bvh")
    for other in (crlf, messy_clip):
        np.testing.assert_array_equal(lf.local_rot, other.local_rot)
        np.testing.assert_array_equal(lf.root_pos, other.root_pos)
        np.testing.assert_array_equal(lf.skeleton.offsets, other.skeleton.offsets)
        assert other.fps == 30.0


def test_position_channels_on_child_joint_go_to_local_trans():
    text = CHAIN.replace(
        "CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 4 Yposition Xrotation Yrotation Zrotation"
    ).replace("1 2 3 0 0 0 0 0 0 0 0 0", "1 2 3 0 0 0 20 0 0 0 0 0 0").replace(
        "0 0 0 90 0 0 0 0 -90 0 0 0", "0 0 0 90 0 0 30 0 0 -90 0 0 0"
    )
    clip = parse_bvh(text, "p.bvh")
    assert clip.local_trans is not None and clip.local_trans.shape == (2, 3, 3)
    # Yposition replaces the OFFSET's y only; x, z stay from the OFFSET (0 here)
    np.testing.assert_allclose(clip.local_trans[:, 1], [[0, 20, 0], [0, 30, 0]])
    np.testing.assert_allclose(clip.local_trans[:, 2], [[0, 5, 0], [0, 5, 0]])
    pos = clip.joints()
    np.testing.assert_allclose(pos[0, 2], [1, 27, 3], atol=1e-4)
    np.testing.assert_allclose(pos[1, 2], [-30, 5, 0], atol=1e-4)


def test_partial_rotation_channels():
    text = CHAIN.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 1 Yrotation").replace(
        "1 2 3 0 0 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 0 45"
    ).replace("0 0 0 90 0 0 0 0 -90 0 0 0", "0 0 0 0 0 0 0 0 0 -30")
    clip = parse_bvh(text, "y.bvh")
    ref = np.asarray(geometry.euler_to_matrix(np.array([[45.0, 0, 0], [-30.0, 0, 0]]), "YXZ", degrees=True))
    np.testing.assert_allclose(clip.local_rot[:, 2], ref, atol=1e-6)


# --------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_round_trip_random_skeletons(tmp_path, seed):
    rng = np.random.default_rng(seed)
    J, T = int(rng.integers(2, 10)), int(rng.integers(1, 6))
    clip = _random_clip(rng, J=J, T=T, with_trans=bool(seed % 2), fps=[30.0, 60.0, 24.0][seed % 3])
    channels = []
    for j in range(J):
        order = ORDERS[(seed + j) % 6]
        rot = [f"{a}rotation" for a in order]
        has_pos = j == 0 or clip.local_trans is not None
        if has_pos:
            pos = ["Xposition", "Yposition", "Zposition"]
            # interleave position and rotation channels in a joint-dependent way
            mixed = [rot[0], pos[2], rot[1], pos[0], pos[1], rot[2]]
            chans = (pos + rot) if j % 3 == 0 else (rot + pos) if j % 3 == 1 else mixed
        else:
            chans = rot
        channels.append(chans)
    path = tmp_path / f"rand{seed}.bvh"
    write_bvh(clip, path, channels=channels, scale=0.01)
    back = read_bvh(path, scale=0.01)
    # joints come back in depth-first order: compare through the names
    perm = [back.skeleton.names.index(n) for n in clip.skeleton.names]
    assert sorted(back.skeleton.names) == sorted(clip.skeleton.names)
    assert [back.skeleton.parents[i] for i in perm] == [
        -1 if p < 0 else perm[p] for p in clip.skeleton.parents
    ]
    assert back.fps == clip.fps and back.num_frames == T
    np.testing.assert_allclose(back.skeleton.offsets[perm], clip.skeleton.offsets, atol=1e-6)
    np.testing.assert_allclose(back.root_pos, clip.root_pos, atol=1e-6)
    np.testing.assert_allclose(back.local_rot[:, perm], clip.local_rot, atol=2e-5)
    if clip.local_trans is not None:
        np.testing.assert_allclose(back.local_trans[:, perm][:, 1:], clip.local_trans[:, 1:], atol=1e-6)
    else:
        assert back.local_trans is None
    fk = lambda c: forward_kinematics(  # noqa: E731
        c.local_rot, c.skeleton.offsets if c.local_trans is None else c.local_trans, c.skeleton.parents, c.root_pos
    )[1]
    np.testing.assert_allclose(fk(back)[:, perm], fk(clip), atol=1e-4)
    # each joint carries the channels asked for
    data = parse_bvh_arrays(path.read_text(), str(path))
    assert [list(data.channels[i]) for i in perm] == channels


def test_round_trip_all_six_orders_on_one_joint(tmp_path):
    rng = np.random.default_rng(7)
    clip = _random_clip(rng, J=6, T=8)
    channels = [["Xposition", "Yposition", "Zposition"] + [f"{a}rotation" for a in ORDERS[0]]]
    channels += [[f"{a}rotation" for a in o] for o in ORDERS[1:]]
    write_bvh(clip, tmp_path / "o.bvh", channels=channels)
    back = read_bvh(tmp_path / "o.bvh")
    perm = [back.skeleton.names.index(n) for n in clip.skeleton.names]
    np.testing.assert_allclose(back.local_rot[:, perm], clip.local_rot, atol=2e-5)


def test_fast_number_path_agrees_with_python_float():
    rng = np.random.default_rng(3)
    vals = rng.normal(0, 50, (40, 9)) * 10.0 ** rng.integers(-6, 4, (40, 9))
    fmts = ["{:.6f}", "{:g}", "{:.6e}", "{:.9g}", "{:+.3f}", "{:.0f}", "{:E}"]
    lines = [" ".join(fmts[(i + k) % len(fmts)].format(v) for k, v in enumerate(row)) for i, row in enumerate(vals)]
    lines[3] = "-.5 5. +5 1e+02 -0 0 .25 -1.5E-3 7"
    lines[5] = " ".join(["0.0000000000000000000012345"] * 9)  # too many digits: fallback path
    body = "\n".join(lines)
    header = (
        "HIERARCHY\nROOT a\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n"
        "JOINT b\n{\nOFFSET 0 1 0\nCHANNELS 6 Xrotation Yrotation Zrotation Xposition Yposition Zposition\n}\n}\n"
        f"MOTION\nFrames: {len(lines)}\nFrame Time: 0.01\n"
    )
    data = parse_bvh_arrays(header + body)
    expect = np.array([[float(t) for t in ln.split()] for ln in lines])
    np.testing.assert_allclose(data.root_pos, expect[:, :3].astype(np.float32), rtol=1e-7)
    np.testing.assert_allclose(data.local_trans[:, 1], expect[:, 6:9].astype(np.float32), rtol=1e-7)


# --------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------

def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.split("\n"), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


BAD_CASES = [
    # (name, transform of CHAIN, expected line finder, message fragment)
    ("unknown keyword", lambda t: t.replace("\t\tOFFSET 0 10 0", "\t\tOFFSETT 0 10 0"), "OFFSETT", "unknown keyword"),
    ("missing open brace", lambda t: t.replace("\tJOINT mid\n\t{\n", "\tJOINT mid\n"), "OFFSET 0 10 0", "missing '{'"),
    ("missing close brace", lambda t: t.replace("\t\t}\n\t}\n}\nMOTION", "\t\t}\n\t}\nMOTION"), "MOTION",
     "missing '}'"),
    ("extra close brace", lambda t: t.replace("}\nMOTION", "}\n}\nMOTION"), None, "after the ROOT block"),
    ("unknown channel", lambda t: t.replace("Xrotation Yrotation Zrotation", "Xrotation Wrotation Zrotation"),
     "Wrotation", "unknown channel"),
    ("channel count", lambda t: t.replace("CHANNELS 3 Xrotation", "CHANNELS 4 Xrotation"), "CHANNELS 4", "lists 3"),
    ("short frame line", lambda t: t.replace("1 2 3 0 0 0 0 0 0 0 0 0", "1 2 3 0 0 0 0 0 0 0 0"), "1 2 3 0",
     "has 11 values, expected 12"),
    ("long frame line", lambda t: t.replace("0 0 0 90 0 0 0 0 -90 0 0 0", "0 0 0 90 0 0 0 0 -90 0 0 0 0"), "0 0 0 90",
     "has 13 values"),
    ("bad number", lambda t: t.replace("0 0 0 90 0 0", "0 0 0 9x0 0 0"), "9x0", "bad number '9x0'"),
    ("two dots", lambda t: t.replace("0 0 0 90 0 0", "0 0 0 9.0.1 0 0"), "9.0.1", "bad number '9.0.1'"),
    ("lone sign", lambda t: t.replace("0 0 0 90 0 0", "0 0 0 - 0 0"), "0 0 0 - 0 0", "bad number '-'"),
    ("nan", lambda t: t.replace("0 0 0 90 0 0", "0 0 0 nan 0 0"), "nan", "non-finite"),
    ("too few frames", lambda t: t.replace("Frames: 2", "Frames: 3"), "Frames:", "Frames: 3 but the file has 2"),
    ("too many frames", lambda t: t.replace("Frames: 2", "Frames: 1"), "0 0 0 90", "more frame lines"),
    ("bad frame count", lambda t: t.replace("Frames: 2", "Frames: two"), "Frames:", "bad frame count"),
    ("bad frame time", lambda t: t.replace("Frame Time: 0.0333333", "Frame Time: 0"), "Frame Time", "positive"),
    ("bad offset", lambda t: t.replace("OFFSET 0 10 0", "OFFSET 0 1o 0"), "OFFSET 0 1o 0", "bad number '1o'"),
    ("short offset", lambda t: t.replace("OFFSET 0 10 0", "OFFSET 0 10"), "OFFSET 0 10", "needs 3 numbers"),
    ("no motion", lambda t: t.split("MOTION")[0], None, "missing MOTION"),
    ("no hierarchy", lambda t: t.replace("HIERARCHY", "HIERARCHX"), "HIERARCHX", "expected HIERARCHY"),
    ("duplicate joint", lambda t: t.replace("JOINT tip", "JOINT mid"), "\t\tJOINT mid", "duplicate joint"),
    # values finite as read but not after conversion to float32 (issue 16, case 6)
    ("float32 overflow", lambda t: t.replace("0 0 0 90 0 0", "1e308 0 0 90 0 0"), "1e308",
     "root position of frame 1 is out of float32 range"),
    ("offset overflow", lambda t: t.replace("OFFSET 0 10 0", "OFFSET 0 1e300 0"), "1e300", "OFFSET of joint 'mid'"),
    # frame times giving no usable rate (case 8)
    ("tiny frame time", lambda t: t.replace("Frame Time: 0.0333333", "Frame Time: 1e-300"), "Frame Time",
     "not a usable frame period"),
    ("huge frame time", lambda t: t.replace("Frame Time: 0.0333333", "Frame Time: 1e300"), "Frame Time",
     "not a usable frame period"),
]


@pytest.mark.parametrize("name,edit,needle,fragment", BAD_CASES, ids=[c[0] for c in BAD_CASES])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_malformed_files_name_file_and_line(name, edit, needle, fragment, newline):
    text = edit(CHAIN)
    if name == "extra close brace":
        line = text.split("\n").index("MOTION")  # the extra '}' is the line before MOTION
    elif needle is None:
        line = None
    else:
        line = _line_of(text, needle)
    with pytest.raises(DataFormatError) as ei:
        parse_bvh(text.replace("\n", newline), "bad/file.bvh")
    err = ei.value
    assert err.path == "bad/file.bvh"
    assert fragment in str(err)
    assert str(err).startswith("bad/file.bvh:")
    if line is not None:
        assert err.line == line, (name, err.line, line, str(err))
    else:
        assert err.line is not None and err.line >= 1


def test_read_bvh_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="cannot read"):
        read_bvh(tmp_path / "nope.bvh")


def test_real_bandai_file_header(bandai_dir):
    """A real file: 22 joints with 6 channels each, 30 fps, ZXY rotations."""
    from mmar.data.sources import iter_bvh_sources

    archive = bandai_dir / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    name, text, labels, src = next(iter(iter_bvh_sources(archive)))
    data = parse_bvh_arrays(text, src, 0.01)
    assert data.names[:2] == ("joint_Root", "Hips") and len(data.names) == 22
    six = ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
    assert all(c == six for c in data.channels)
    assert data.fps == 30.0
    assert labels is not None and set(labels) == {"content", "style"}
    # the numbers agree with a plain Python parse of the same text
    body = text[text.index("Frame Time"):].split("\n", 1)[1].split()
    vals = np.array([float(t) for t in body]).reshape(data.num_frames, -1)
    ref = np.asarray(geometry.euler_to_matrix(vals[:, 9:12], "ZXY", degrees=True))
    np.testing.assert_allclose(data.local_rot[:, 1], ref, atol=1e-6)


@pytest.mark.parametrize("fps", [20.0, 60.0, 24.0])
def test_numpy_resample_matches_clip_resample(fps):
    from mmar.data.bvh import BvhData

    rng = np.random.default_rng(11)
    clip = _random_clip(rng, J=4, T=17, with_trans=True, fps=30.0)
    # smooth-ish motion so that neighbouring frames are close, plus one large jump
    clip.local_rot = np.asarray(geometry.euler_to_matrix(
        np.cumsum(rng.normal(0, 0.2, (17, 4, 3)), 0).astype(np.float32), "ZXY"))
    data = BvhData(clip.skeleton.names, clip.skeleton.parents, clip.skeleton.offsets, (), clip.local_rot,
                   clip.root_pos, clip.local_trans, 30.0, 1 / 30)
    ours = data.resample(fps)
    ref = clip.resample(fps)
    assert ours.num_frames == ref.num_frames and ours.fps == fps
    np.testing.assert_allclose(ours.local_rot, ref.local_rot, atol=2e-5)
    np.testing.assert_allclose(ours.root_pos, ref.root_pos, atol=1e-5)
    np.testing.assert_allclose(ours.local_trans, ref.local_trans, atol=1e-5)
    assert data.resample(30.0) is data


def test_non_finite_after_conversion_is_refused_at_every_step():
    """Case 6: a root position of 1e308 is finite as read but overflows float32; retargeting
    and resampling outputs are checked too."""
    from mmar.data.bvh import BvhData

    with pytest.raises(DataFormatError, match=r"out of float32 range") as ei:
        parse_bvh_arrays(CHAIN.replace("1 2 3 0 0 0", "1e308 2 3 0 0 0"), "big.bvh")
    assert ei.value.line == _line_of(CHAIN, "1 2 3 0 0 0")
    # scaled down, the same value is fine
    assert np.isfinite(parse_bvh_arrays(CHAIN.replace("1 2 3 0 0 0", "1e300 2 3 0 0 0"), scale=1e-290).root_pos).all()
    data = parse_bvh_arrays(CHAIN)
    inf = data.root_pos.copy()
    inf[1, 0] = np.inf
    with pytest.raises(DataFormatError, match="resampling to 60 fps gives non-finite values: root_pos"), \
            np.errstate(invalid="ignore"):
        BvhData(**{**data.__dict__, "root_pos": inf}).resample(60.0)
    broken = BvhData(**{**data.__dict__, "offsets": np.full_like(data.offsets, np.inf)})
    with pytest.raises(DataFormatError, match="retargeting gives non-finite values"):
        broken.retarget(("root", "mid", "tip"), ("a", "b", "c"), (-1, 0, 1))


def test_utf16_and_binary_files(tmp_path):
    """UTF-16 with a byte-order mark reads like UTF-8; without one (or binary) it is refused as
    not being text, not as a missing MOTION section."""
    ref = read_bvh(_write(tmp_path / "a.bvh", CHAIN.encode("utf-8")))
    for codec in ("utf-16", "utf-16-be", "utf-32"):
        raw = CHAIN.encode(codec)
        if codec == "utf-16-be":
            raw = b"\xfe\xff" + raw
        clip = read_bvh(_write(tmp_path / f"{codec}.bvh", raw))
        np.testing.assert_array_equal(clip.local_rot, ref.local_rot)
    for raw in (CHAIN.encode("utf-16-le"), bytes(range(256)) * 4):
        with pytest.raises(DataFormatError, match="not UTF-8/ASCII text"):
            read_bvh(_write(tmp_path / "x.bvh", raw))


def _write(path, raw: bytes):
    path.write_bytes(raw)
    return path
