"""ASF/AMC import: parsing, forward kinematics against hand-computed positions, errors, the
CMU/HDM05 joint map and the real HDM05 sample (skipped when ../shared/data/hdm05-sample is
absent; nothing of it is written into the repository)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmar.data import asf as A
from mmar.data.clip import MissingJointsError
from mmar.errors import DataFormatError
from mmar.skeleton import SMPL22_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
S = 0.0254 / 0.45  # metres per unit of `length 0.45`

TINY_ASF = """# a tiny skeleton
:version 1.10
:name tiny
:units
  mass 1.0
  length 0.45
  angle deg
:documentation
   free text, ignored
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 0 1 0
     length 10
     axis 0 0 0  XYZ
    dof rx ry rz
    limits (-180.0 180.0)
           (-180.0 180.0)
           (-180.0 180.0)
  end
  begin
     id 2
     name b
     direction 1 0 0
     length 5
     axis 0 0 90 XYZ
    dof rx
    limits (-10.0 170.0)
  end
  begin
     id 3
     name c
     direction 0 0 1
     length 2
     axis 0 0 0 XYZ
  end
  begin
     id 4
     name d
     direction 0 1 0
     length 1
     axis 0 0 0 XYZ
  end
:hierarchy
  begin
    root a
    a b c
    b d
  end
"""

TINY_AMC = """# frames of the tiny skeleton
:FULLY-SPECIFIED
:DEGREES
1
root 1 2 3 0 0 0
a 0 0 0
b 0
2
root 0 0 0 0 90 0
a 90 0 0
b 90
"""


def _write(tmp_path: Path, asf: str = TINY_ASF, amc: str = TINY_AMC) -> tuple[Path, Path]:
    (tmp_path / "tiny.asf").write_text(asf)
    (tmp_path / "tiny_01.amc").write_text(amc)
    return tmp_path / "tiny.asf", tmp_path / "tiny_01.amc"


def test_parse_tiny_asf(tmp_path):
    sk = A.read_asf(_write(tmp_path)[0])
    assert sk.name == "tiny" and sk.length == 0.45 and sk.angle == "deg"
    assert sk.root_order == ("TX", "TY", "TZ", "RX", "RY", "RZ") and sk.root_axis == "XYZ"
    assert list(sk.bones) == ["a", "b", "c", "d"]
    assert sk.bones["b"].dof == ("rx",) and sk.bones["c"].dof == ()
    np.testing.assert_allclose(sk.bones["b"].axis, [0, 0, np.pi / 2])
    assert sk.joint_order() == ["root", "a", "b", "d", "c"]
    assert sk.metres_per_unit == pytest.approx(S)
    rest = sk.rest_positions()
    np.testing.assert_allclose(rest["b"], [0, 10 * S, 0])
    np.testing.assert_allclose(rest["d:end"], [5 * S, 11 * S, 0])


def test_forward_kinematics_matches_hand_computed_positions(tmp_path):
    asf, amc = _write(tmp_path)
    clip = A.read_asf_amc(asf, amc, fps=120)
    assert clip.name == "tiny_01" and clip.fps == 120.0 and clip.num_frames == 2
    assert clip.skeleton.names == ("root", "a", "b", "d", "c")
    assert clip.skeleton.parents == (-1, 0, 1, 2, 1)
    P = clip.joints()
    # frame 1: no rotation; the root stands at (1, 2, 3) units; a points up 10, b along +x 5
    want1 = np.array([[1, 2, 3], [1, 2, 3], [1, 12, 3], [6, 12, 3], [1, 12, 3]]) * S
    # frame 2: root Ry(90); a: Rx(90) turns its +y bone to +z, then Ry(90) to +x; b's dof rx
    # is about C x = +y (axis 0 0 90): L_b = Ry(90) in a's frame, so b's +x bone ends up along +y
    want2 = np.array([[0, 0, 0], [0, 0, 0], [10, 0, 0], [10, 5, 0], [10, 0, 0]]) * S
    np.testing.assert_allclose(P[0], want1, atol=1e-6)
    np.testing.assert_allclose(P[1], want2, atol=1e-6)
    # joint frames are the world axes at rest: a zero frame gives identity rotations
    np.testing.assert_allclose(clip.local_rot[0], np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-7)


def test_radians_and_axis_order(tmp_path):
    asf = TINY_ASF.replace("angle deg", "angle rad").replace("axis 0 0 90 XYZ", "axis 0 0 1.5707963267948966 XYZ")
    amc = TINY_AMC.replace(":DEGREES", ":RADIANS").replace("a 90 0 0", "a 1.5707963267948966 0 0") \
        .replace("b 90", "b 1.5707963267948966").replace("root 0 0 0 0 90 0", "root 0 0 0 0 1.5707963267948966 0")
    clip = A.read_asf_amc(*_write(tmp_path, asf, amc))
    np.testing.assert_allclose(clip.joints()[1, 3], np.array([10, 5, 0]) * S, atol=1e-6)
    # the dof order is the rotation order: "rz rx" applies rz first, so M = Rx Rz
    asf2 = TINY_ASF.replace("dof rx ry rz\n    limits (-180.0 180.0)\n           (-180.0 180.0)\n"
                            "           (-180.0 180.0)", "dof rz rx")
    amc2 = TINY_AMC.replace("a 0 0 0", "a 0 0").replace("a 90 0 0", "a 90 90")
    clip2 = A.read_asf_amc(*_write(tmp_path, asf2, amc2))
    # a's +y bone: Rz(90) -> -x, then Rx(90) keeps -x, root Ry(90) -> +z
    np.testing.assert_allclose(clip2.joints()[1, 2], np.array([0, 0, 10]) * S, atol=1e-6)


@pytest.mark.parametrize("edit, match, line", [
    (lambda t: t.replace("   order TX TY TZ RX RY RZ\n", ""), "no ':root' section with an 'order' line", None),
    (lambda t: t.replace("     direction 1 0 0\n", ""), "bone block without 'direction'", 27),
    (lambda t: t.replace("    a b c\n", "    a b e\n"), "hierarchy names bone 'e'", 53),
    (lambda t: t.replace("length 5", "length five"), "bad number 'five' in length", 31),
    (lambda t: t.replace("dof rx\n", "dof tx\n"), "'tx' is not supported", 33),
    (lambda t: t.replace("    limits (-10.0 170.0)\n", "    limits (-10.0 170.0) (0 1)\n"), "2 limits for 1", 34),
    (lambda t: t.replace("  end\n  begin\n     id 3", "  begin\n     id 3"), "'begin' inside a bone block", 35),
    (lambda t: t.replace("    b d\n", ""), "'d' is not connected to the root", 43),
    (lambda t: t.replace("    b d\n", "    b d\n    c d\n"), "bone 'd' has two parents", 55),
    (lambda t: t.replace("     name c\n", "     name b\n"), "duplicate bone name 'b'", 38),
    (lambda t: t.replace("direction 0 0 1", "direction 0 0 0"), "direction is zero", 39),
])
def test_asf_errors_name_file_and_line(tmp_path, edit, match, line):
    text = edit(TINY_ASF)
    p = tmp_path / "bad.asf"
    p.write_text(text)
    with pytest.raises(DataFormatError, match=match) as e:
        A.read_asf(p)
    assert e.value.path == str(p)
    if line is not None:
        assert e.value.line == line, (e.value.line, text.split("\n")[e.value.line - 1] if e.value.line else None)


@pytest.mark.parametrize("edit, match, line", [
    (lambda t: t.replace("a 0 0 0\n", ""), r"frame 1 lacks 1 bone: 'a'", 4),
    (lambda t: t.replace("b 0\n", "b 0\nz 1\n"), "bone 'z' is not in the skeleton", 8),
    (lambda t: t.replace("b 0\n", "b 0 1\n"), "bone 'b' needs 1 value, found 2", 7),
    (lambda t: t.replace("\n2\n", "\n3\n"), "frame 3 follows frame 1", 8),
    (lambda t: t.replace("1\nroot 1 2 3", "root 1 2 3"), "bone values before the first frame number", 4),
    (lambda t: t.replace("b 0\n", "b 0\nb 1\n"), "bone 'b' given twice in frame 1", 8),
    (lambda t: t.replace("b 0\n", "b 0\nc 1\n"), "bone 'c' has no degrees of freedom", 8),
    (lambda t: t.replace("a 90 0 0", "a 90 nan 0"), "non-finite", 10),
    (lambda t: ":FULLY-SPECIFIED\n:DEGREES\n", "no frames", None),
])
def test_amc_errors_name_file_and_line(tmp_path, edit, match, line):
    asf, amc = _write(tmp_path, amc=edit(TINY_AMC))
    with pytest.raises(DataFormatError, match=match) as e:
        A.read_asf_amc(asf, amc)
    assert e.value.path == str(amc) and e.value.line == line


def test_missing_joints_of_the_map_are_named(tmp_path):
    clip = A.read_asf_amc(*_write(tmp_path))
    with pytest.raises(MissingJointsError) as e:
        clip.retarget("cmu_asf")
    msg = str(e.value)
    assert "joint map 'cmu_asf'" in msg and "'lfemur'" in msg and "tiny_01.amc" in msg and "more" in msg
    assert isinstance(e.value, DataFormatError) and isinstance(e.value, KeyError)
    assert e.value.missing[:3] == ("lfemur", "rfemur", "lowerback")


# --------------------------------------------------------------------------
# the real HDM05 sample (one performer)
# --------------------------------------------------------------------------

def _hdm05_archive() -> Path:
    return REPO_ROOT.parent / "shared" / "data" / "hdm05-sample" / "HDM05-bk.tar.xz"


@pytest.fixture(scope="module")
def hdm05(tmp_path_factory):
    """``HDM_bk.asf`` and the shortest AMC clip, unpacked into a temporary directory."""
    archive = _hdm05_archive()
    if not archive.is_file():
        pytest.skip(f"HDM05 sample not found at {archive}")
    out = tmp_path_factory.mktemp("hdm05")
    want = ("HDM05-bk/HDM_bk.asf", "HDM05-bk/HDM_bk_hopBothLegs1hops_020_120.amc")
    with tarfile.open(archive, "r:xz") as tf:
        for name in want:
            (out / Path(name).name).write_bytes(tf.extractfile(name).read())
    return out / "HDM_bk.asf", out / Path(want[1]).name


@pytest.mark.data
def test_hdm05_skeleton_and_clip(hdm05):
    asf, amc = hdm05
    sk = A.read_asf(asf)
    assert len(sk.bones) == 30 and sk.length == 0.45
    rest = sk.rest_positions()
    height = rest["head:end"][1] - min(rest["ltoes:end"][1], rest["rtoes:end"][1])
    assert 1.6 < height < 1.9, height  # performer bk: 1.74 m from the toe joints to the head top
    clip = A.read_asf_amc(asf, amc, skeleton=sk)
    assert clip.fps == 120.0 and clip.skeleton.num_joints == 31 and clip.num_frames > 50
    P = clip.joints()
    ix = clip.skeleton.index
    feet = P[:, [ix("lfoot"), ix("rfoot"), ix("ltoes"), ix("rtoes")], 1]
    assert -0.02 < feet.min() < 0.08  # the floor is y = 0
    assert 0.85 < P[0, 0, 1] < 1.15  # pelvis height standing before the hop
    smpl = clip.retarget()  # the "cmu_asf" map, guessed from the bone names
    assert smpl.skeleton.names == SMPL22_NAMES
    # the mapped joints are reproduced exactly (every mapped position is rigid with its parent)
    Ps = smpl.joints()
    np.testing.assert_allclose(Ps[:, 0], P[:, 0], atol=1e-5)
    np.testing.assert_allclose(Ps[:, 15], P[:, ix("upperneck")], atol=1e-4)
    np.testing.assert_allclose(Ps[:, 20], 0.5 * (P[:, ix("lwrist")] + P[:, ix("lhand")]), atol=1e-4)
    np.testing.assert_allclose(Ps[:, 7], P[:, ix("lfoot")], atol=1e-4)
    # canonical offsets: legs down, spine up, arms out (the rest is a T-pose)
    off = smpl.skeleton.offsets
    assert off[4, 1] < -0.4 and off[7, 1] < -0.4 and off[6, 1] > 0.1 and off[18, 0] > 0.25 and off[19, 0] < -0.25


# --------------------------------------------------------------------------
# a CMU-shaped skeleton written programmatically, through `mmar convert`
# --------------------------------------------------------------------------

# name, parent, direction, length (ASF units), axis angles, dof
_LEFT = [
    ("lhipjoint", "root", (0.44, -0.82, 0.36), 2.5, (0, 0, 0), ""),
    ("lfemur", "lhipjoint", (0.34, -0.94, 0), 7.9, (0, 0, 20), "rx ry rz"),
    ("ltibia", "lfemur", (0.34, -0.94, 0), 8.4, (0, 0, 20), "rx"),
    ("lfoot", "ltibia", (0.09, -0.24, 0.97), 2.6, (-90, 0, 20), "rx rz"),
    ("ltoes", "lfoot", (0, 0, 1), 1.3, (-90, 0, 20), "rx"),
    ("lclavicle", "thorax", (0.99, 0.15, 0.03), 4.5, (0, 0, 0), "ry rz"),
    ("lhumerus", "lclavicle", (1, 0, 0), 5.4, (180, -30, -90), "rx ry rz"),
    ("lradius", "lhumerus", (1, 0, 0), 3.9, (180, -30, -90), "rx"),
    ("lwrist", "lradius", (1, 0, 0), 2.0, (0, 90, 90), "ry"),
    ("lhand", "lwrist", (1, 0, 0), 1.2, (0, 90, 90), "rx rz"),
    ("lfingers", "lhand", (1, 0, 0), 1.0, (0, 90, 90), "rx"),
    ("lthumb", "lwrist", (0.71, 0, 0.71), 1.4, (-90, 45, 0), "rx rz"),
]
_SPINE = [
    ("lowerback", "root", (0.01, 1, 0.01), 2.6, (0, 0, 0), "rx ry rz"),
    ("upperback", "lowerback", (-0.02, 1, -0.1), 2.5, (0, 0, 0), "rx ry rz"),
    ("thorax", "upperback", (-0.02, 1, -0.1), 2.6, (0, 0, 0), "rx ry rz"),
    ("lowerneck", "thorax", (0.01, 1, -0.09), 1.7, (0, 0, 0), "rx ry rz"),
    ("upperneck", "lowerneck", (-0.01, 1, -0.11), 1.7, (0, 0, 0), "rx ry rz"),
    ("head", "upperneck", (0, 1, -0.03), 1.7, (0, 0, 0), "rx ry rz"),
]


def _mirror(b):
    name, parent, d, length, ax, dof = b
    r = lambda n: "r" + n[1:] if n[0] == "l" and n not in ("lowerback",) else n  # noqa: E731
    return r(name), r(parent), (-d[0], d[1], d[2]), length, (ax[0], -ax[1], -ax[2]), dof


CMU_BONES = _SPINE + _LEFT + [_mirror(b) for b in _LEFT]


def cmu_asf_text() -> str:
    out = [":version 1.10", ":name VICON", ":units", "  mass 1.0", "  length 0.45", "  angle deg",
           ":root", "   order TX TY TZ RX RY RZ", "   axis XYZ", "   position 0 0 0", "   orientation 0 0 0",
           ":bonedata"]
    for i, (name, _, d, length, ax, dof) in enumerate(CMU_BONES, 1):
        n = np.linalg.norm(d)
        out += ["  begin", f"     id {i}", f"     name {name}", "     direction " + " ".join(f"{v / n:.6f}" for v in d),
                f"     length {length}", "     axis " + " ".join(map(str, ax)) + " XYZ"]
        if dof:
            out += [f"    dof {dof}", "    limits " + "\n           ".join(["(-180.0 180.0)"] * len(dof.split()))]
        out.append("  end")
    out += [":hierarchy", "  begin"]
    kids: dict[str, list[str]] = {}
    for name, parent, *_ in CMU_BONES:
        kids.setdefault(parent, []).append(name)
    out += [f"    {p} {' '.join(cs)}" for p, cs in kids.items()]
    out += ["  end"]
    return "\n".join(out) + "\n"


def cmu_amc_text(T: int = 12, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = [":FULLY-SPECIFIED", ":DEGREES"]
    for t in range(T):
        out.append(str(t + 1))
        out.append("root " + " ".join(f"{v:.4f}" for v in [0.1 * t, 17.0, 0.2 * t, *rng.uniform(-20, 20, 3)]))
        for name, _, _, _, _, dof in CMU_BONES:
            if dof:
                out.append(name + " " + " ".join(f"{v:.4f}" for v in rng.uniform(-25, 25, len(dof.split()))))
    return "\n".join(out) + "\n"


def test_cmu_shaped_skeleton_maps_to_smpl22(tmp_path):
    (tmp_path / "cmu.asf").write_text(cmu_asf_text())
    (tmp_path / "walk_01.amc").write_text(cmu_amc_text())
    clip = A.read_asf_amc(tmp_path / "cmu.asf", tmp_path / "walk_01.amc")
    assert clip.skeleton.num_joints == 31
    from mmar.data.bvh import rest_alignment
    from mmar.data.clip import JOINT_MAPS

    sk = clip.skeleton
    assert rest_alignment(sk.names, sk.parents, sk.offsets, JOINT_MAPS["cmu_asf"]).rest == "zero pose"
    smpl = clip.retarget()
    P, Ps = clip.joints(), smpl.joints()
    for j, src in [(0, "root"), (1, "lfemur"), (4, "ltibia"), (11, "rtoes"), (12, "lowerneck"), (15, "upperneck"),
                   (17, "rhumerus"), (19, "rradius")]:
        np.testing.assert_allclose(Ps[:, j], P[:, sk.index(src)], atol=1e-5, err_msg=SMPL22_NAMES[j])


def test_convert_reads_asf_amc(tmp_path, capsys):
    from mmar import cli
    from mmar.data.clip import load_arrays

    (tmp_path / "cmu.asf").write_text(cmu_asf_text())
    for k in (1, 2):
        (tmp_path / f"walk_0{k}.amc").write_text(cmu_amc_text(T=10 + k, seed=k))
    out = tmp_path / "out.npz"
    rc = cli.main(["convert", "--asf", str(tmp_path / "cmu.asf"), str(tmp_path / "walk_01.amc"),
                   str(tmp_path / "walk_02.amc"), str(tmp_path / "missing.amc"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.amc: no such file" in err
    arrays = load_arrays(str(out))
    assert sorted(arrays) == ["walk_01", "walk_02"]
    assert arrays["walk_02"]["sparse"].shape == (12, 54) and float(arrays["walk_02"]["fps"]) == 120.0
    ref = A.read_asf_amc(tmp_path / "cmu.asf", tmp_path / "walk_01.amc").retarget().to_arrays()
    np.testing.assert_allclose(arrays["walk_01"]["sparse"], ref["sparse"], atol=1e-6)
    # the skeleton may also come among the inputs; an AMC without any skeleton is an error
    rc = cli.main(["convert", str(tmp_path / "cmu.asf"), str(tmp_path / "walk_01.amc"), "--fps", "60",
                   "--out", str(tmp_path / "b.npz")])
    assert rc == 0 and load_arrays(str(tmp_path / "b.npz"))["walk_01"]["sparse"].shape == (6, 54)
    capsys.readouterr()
    rc = cli.main(["convert", str(tmp_path / "walk_01.amc"), "--out", str(tmp_path / "c.npz")])
    assert rc == 2 and "pass --asf SKELETON.asf" in capsys.readouterr().err
