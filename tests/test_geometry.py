"""Tests for cns_ros.geometry: ground truth is generated in each test, never read from disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cns_ros import geometry as geo

RNG_SEED = 1234
SETTINGS = settings(max_examples=60, deadline=None)

finite_floats = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
quaternions = arrays(np.float64, (4,), elements=finite_floats).filter(
    lambda q: np.linalg.norm(q) > 0.1
)


def random_unit_quats(n: int, seed: int = RNG_SEED) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_transform(rng: np.random.Generator, scale: float = 10.0) -> np.ndarray:
    q = rng.normal(size=4)
    return geo.make_transform(q, rng.uniform(-scale, scale, size=3))


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_of(rotation: np.ndarray) -> float:
    return math.atan2(rotation[1, 0], rotation[0, 0])


# ---- quaternions and transforms ---------------------------------------------------------------
def test_quat_order_conversion_is_a_pure_reordering() -> None:
    wxyz = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    xyzw = geo.quat_xyzw_from_wxyz(wxyz)
    np.testing.assert_array_equal(xyzw, [[2.0, 3.0, 4.0, 1.0], [6.0, 7.0, 8.0, 5.0]])
    np.testing.assert_array_equal(geo.quat_wxyz_from_xyzw(xyzw), wxyz)
    batch = np.random.default_rng(0).normal(size=(3, 5, 4))
    np.testing.assert_array_equal(geo.quat_wxyz_from_xyzw(geo.quat_xyzw_from_wxyz(batch)), batch)


def test_nuscenes_90_degree_yaw_gives_the_right_matrix() -> None:
    half = math.pi / 4.0
    q_wxyz = [math.cos(half), 0.0, 0.0, math.sin(half)]  # nuScenes order, +90 deg about z
    rotation = geo.quat_to_matrix(geo.quat_xyzw_from_wxyz(q_wxyz))
    np.testing.assert_allclose(rotation, yaw_matrix(math.pi / 2.0), atol=1e-12)
    np.testing.assert_allclose(rotation @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    # The same numbers read in the wrong order are a different rotation (about x).
    assert not np.allclose(geo.quat_to_matrix(q_wxyz), rotation)


@SETTINGS
@given(quaternions)
def test_quat_matrix_round_trip(q: np.ndarray) -> None:
    rotation = geo.quat_to_matrix(q)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)
    back = geo.matrix_to_quat(rotation)
    unit = q / np.linalg.norm(q)
    assert back[3] >= 0.0
    assert np.linalg.norm(back) == pytest.approx(1.0, abs=1e-12)
    assert abs(np.dot(back, unit)) == pytest.approx(1.0, abs=1e-9)  # same rotation up to sign
    if abs(unit[3]) > 1e-6:
        np.testing.assert_allclose(back, unit * np.sign(unit[3]), atol=1e-9)
    np.testing.assert_allclose(geo.quat_to_matrix(back), rotation, atol=1e-12)


def test_matrix_to_quat_batched_and_half_turns() -> None:
    q = random_unit_quats(24).reshape(2, 3, 4, 4)
    rotations = geo.quat_to_matrix(q)
    assert rotations.shape == (2, 3, 4, 3, 3)
    back = geo.matrix_to_quat(rotations)
    assert back.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(back, q * np.sign(q[..., 3:4]), atol=1e-12)
    axes = np.random.default_rng(5).normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    half_turns = 2.0 * np.einsum("ni,nj->nij", axes, axes) - np.eye(3)  # 180 deg rotations
    q_half = geo.matrix_to_quat(half_turns)
    np.testing.assert_allclose(np.abs(q_half[:, :3]), np.abs(axes), atol=1e-12)
    np.testing.assert_allclose(q_half[:, 3], 0.0, atol=1e-12)
    np.testing.assert_allclose(geo.quat_to_matrix(q_half), half_turns, atol=1e-12)


def test_quat_errors_name_argument_and_shapes() -> None:
    with pytest.raises(ValueError, match="zero-norm"):
        geo.quat_to_matrix([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"q_xyzw must have shape \(\.\.\., 4\), found \(3,\)"):
        geo.quat_to_matrix([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="q_xyzw must be finite"):
        geo.quat_to_matrix([np.nan, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"rotation must have shape \(\.\.\., 3, 3\)"):
        geo.matrix_to_quat(np.eye(4))


def test_make_transform_accepts_matrix_or_quaternion() -> None:
    q = random_unit_quats(1)[0]
    t = np.array([1.0, -2.0, 3.5])
    from_quat = geo.make_transform(q, t)
    from_matrix = geo.make_transform(geo.quat_to_matrix(q), t)
    np.testing.assert_allclose(from_quat, from_matrix, atol=1e-15)
    np.testing.assert_array_equal(from_quat[3], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(from_quat[:3, 3], t)
    assert from_quat.dtype == np.float64
    with pytest.raises(ValueError, match=r"rotation must have shape \(3, 3\) or \(4,\)"):
        geo.make_transform(np.eye(2), t)
    with pytest.raises(ValueError, match=r"translation must have shape \(3,\), found \(2,\)"):
        geo.make_transform(q, [1.0, 2.0])


def test_inverse_and_composition_identities() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a, b = random_transform(rng), random_transform(rng)
    np.testing.assert_allclose(a @ geo.invert_transform(a), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(geo.invert_transform(a) @ a, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(
        geo.invert_transform(a @ b), geo.invert_transform(b) @ geo.invert_transform(a), atol=1e-12
    )
    batch = np.stack([a, b])
    np.testing.assert_allclose(geo.invert_transform(batch)[1], geo.invert_transform(b))
    scaled = a.copy()
    scaled[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="not orthonormal"):
        geo.invert_transform(scaled)
    bad_row = a.copy()
    bad_row[3, 0] = 1.0
    with pytest.raises(ValueError, match="bottom row"):
        geo.invert_transform(bad_row)


def test_transform_points_matches_homogeneous_product() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a_from_b = random_transform(rng)
    points = rng.uniform(-20.0, 20.0, size=(100, 3))
    homogeneous = np.c_[points, np.ones(100)] @ a_from_b.T
    out = geo.transform_points(a_from_b, points)
    np.testing.assert_allclose(out, homogeneous[:, :3], atol=1e-12)
    b_from_c = random_transform(rng)
    np.testing.assert_allclose(
        geo.transform_points(a_from_b, geo.transform_points(b_from_c, points)),
        geo.transform_points(a_from_b @ b_from_c, points), atol=1e-10,
    )
    out32 = geo.transform_points(a_from_b, points.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out, atol=1e-4)
    assert geo.transform_points(a_from_b, np.zeros((2, 3), dtype=np.int32)).dtype == np.float64
    assert geo.transform_points(a_from_b, np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\), found \(4, 4\)"):
        geo.transform_points(a_from_b, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"transform must have shape \(4, 4\), found \(3, 3\)"):
        geo.transform_points(np.eye(3), points)


# ---- pinhole projection -----------------------------------------------------------------------
K_TEST = np.array([[1200.0, 0.0, 811.3], [0.0, 1150.0, 452.7], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 1600, 900


def plumb_bob_reference(point: tuple[float, float, float], k: np.ndarray, d: list[float]
                        ) -> tuple[float, float]:
    """Scalar OpenCV/ROS distortion formula, written out independently of the module."""
    coeffs = list(d) + [0.0] * (8 - len(d))
    k1, k2, p1, p2, k3, k4, k5, k6 = coeffs
    x, y = point[0] / point[2], point[1] / point[2]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]


def test_points_on_pixel_rays_project_back_to_their_pixels() -> None:
    cols, rows = np.meshgrid([0.0, 17.0, 811.3, 1599.0], [0.0, 300.25, 899.0])
    pixels = np.c_[cols.ravel(), rows.ravel()]
    depths = np.linspace(1.0, 80.0, len(pixels))
    x = (pixels[:, 0] - K_TEST[0, 2]) / K_TEST[0, 0] * depths
    y = (pixels[:, 1] - K_TEST[1, 2]) / K_TEST[1, 1] * depths
    points = np.c_[x, y, depths]
    for no_distortion in (None, [], np.zeros(5), np.zeros(8)):
        uv, depth = geo.project_points(points, K_TEST, no_distortion)
        np.testing.assert_allclose(uv, pixels, atol=1e-9)
        np.testing.assert_allclose(depth, depths)
        assert uv.dtype == np.float64 and depth.dtype == np.float64
    mask = geo.image_mask(uv, depth, WIDTH, HEIGHT)
    assert mask.all()
    np.testing.assert_array_equal(geo.pixel_indices(uv), np.round(pixels).astype(np.int64))


@pytest.mark.parametrize(
    "d",
    [
        [-0.28, 0.07, 0.0012, -0.0008],
        [-0.31, 0.11, 0.0005, 0.0011, -0.02],
        [0.9, -0.3, 0.001, -0.002, 0.05, 1.1, -0.2, 0.08],
    ],
)
def test_distortion_matches_scalar_reference(d: list[float]) -> None:
    rng = np.random.default_rng(RNG_SEED)
    points = np.c_[rng.uniform(-0.5, 0.5, (200, 2)), np.ones(200)] * rng.uniform(1, 50, (200, 1))
    before = points.copy()
    uv, _ = geo.project_points(points, K_TEST, d)
    np.testing.assert_array_equal(points, before)  # the input is never modified
    expected = np.array([plumb_bob_reference(tuple(p), K_TEST, d) for p in points])
    np.testing.assert_allclose(uv, expected, rtol=0, atol=1e-9)
    undistorted, _ = geo.project_points(points, K_TEST)
    assert np.abs(uv - undistorted).max() > 1.0  # the coefficients do change the result


def test_distortion_agrees_with_opencv_when_installed() -> None:
    cv2 = pytest.importorskip("cv2")
    d = np.array([-0.31, 0.11, 0.0005, 0.0011, -0.02])
    rng = np.random.default_rng(3)
    points = np.c_[rng.uniform(-0.4, 0.4, (50, 2)), np.ones(50)] * 7.0
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K_TEST, d)
    uv, _ = geo.project_points(points, K_TEST, d)
    np.testing.assert_allclose(uv, expected[:, 0, :], atol=1e-6)


def test_resize_nearest_maps_pixel_centres() -> None:
    """Output pixel (r, c) takes input (floor((r + .5) H / H'), floor((c + .5) W / W'))."""
    image = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    up = geo.resize_nearest(image, (4, 6))  # rows [0, 0, 1, 1], cols [0, 0, 1, 1, 2, 2]
    assert up.dtype == np.uint8
    assert up.tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
    # rows floor(1/3, 1, 5/3) = [0, 1, 1], cols floor(3/4, 9/4) = [0, 2]
    assert geo.resize_nearest(image, (3, 2)).tolist() == [[0, 2], [3, 5], [3, 5]]
    assert geo.resize_nearest(image, (1, 1)).tolist() == [[4]]  # the centre (1, 1.5) -> (1, 1)
    rgb = np.stack([image, image + 10], axis=-1)  # (H, W, K): channels travel together
    assert geo.resize_nearest(rgb, (1, 3)).tolist() == [[[3, 13], [4, 14], [5, 15]]]
    assert geo.resize_nearest(image, (2, 3)).tolist() == image.tolist()


def test_image_mask_edge_cases() -> None:
    w, h = 4, 3
    uv = np.array([
        [-0.5, 0.0],           # exactly on the left border -> pixel 0, valid
        [w - 0.5, 0.0],        # exactly on the right border -> pixel w, invalid
        [w - 0.5 - 1e-9, 1.0],  # just inside
        [-0.5 - 1e-9, 1.0],    # just outside
        [1.0, -0.5],           # top border, valid
        [1.0, h - 0.5],        # bottom border, invalid
        [np.nan, 1.0],
        [1.0, 1.0],            # behind the camera
        [1.0, 1.0],            # closer than min_depth
        [1.0, 1.0],            # exactly at min_depth
    ])
    depth = np.array([5, 5, 5, 5, 5, 5, 5, -2.0, 0.99, 1.0])
    expected = [True, False, True, False, True, False, False, False, False, True]
    np.testing.assert_array_equal(geo.image_mask(uv, depth, w, h, min_depth=1.0), expected)
    idx = geo.pixel_indices(uv)
    np.testing.assert_array_equal(idx[:6], [[0, 0], [w, 0], [w - 1, 1], [-1, 1], [1, 0], [1, h]])
    assert idx[6, 0] == -1
    assert not geo.image_mask([[1.0, 1.0]], [np.inf], w, h).any()
    assert geo.image_mask([[1.0, 1.0]], [0.5], w, h, min_depth=0.0).all()
    assert not geo.image_mask([[1.0, 1.0]], [0.0], w, h, min_depth=0.0).any()


def test_points_behind_camera_are_masked() -> None:
    points = np.array([[0.0, 0.0, -5.0], [0.1, 0.1, 0.0], [0.0, 0.0, 5.0]])
    uv, depth = geo.project_points(points, K_TEST, [-0.2, 0.05, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(geo.image_mask(uv, depth, WIDTH, HEIGHT), [False, False, True])
    assert np.isnan(uv[:2]).all()


def test_projection_input_errors() -> None:
    points = np.tile([0.0, 0.0, 1.0], (2, 1))
    with pytest.raises(ValueError, match=r"K must have shape \(3, 3\), found \(3, 4\)"):
        geo.project_points(points, np.zeros((3, 4)))
    bad_focal = K_TEST.copy()
    bad_focal[0, 0] = 0.0
    with pytest.raises(ValueError, match="focal"):
        geo.project_points(points, bad_focal)
    bad_row = K_TEST.copy()
    bad_row[2, 2] = 2.0
    with pytest.raises(ValueError, match="bottom row"):
        geo.project_points(points, bad_row)
    with pytest.raises(ValueError, match="K must be finite"):
        geo.project_points(points, np.where(np.eye(3) > 0, np.nan, K_TEST))
    with pytest.raises(ValueError, match=r"D must be finite with shape .* found shape \(3,\)"):
        geo.project_points(points, K_TEST, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"points_cam must have shape \(N, 3\)"):
        geo.project_points(np.zeros(3), K_TEST)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        geo.image_mask(np.zeros((1, 2)), np.ones(1), 0, 10)
    with pytest.raises(ValueError, match=r"depth must have shape \(2,\), found \(3,\)"):
        geo.image_mask(np.zeros((2, 2)), np.ones(3), 10, 10)


# ---- multi-camera projection ------------------------------------------------------------------
RIG_YAWS = {  # nuScenes-like camera headings (degrees, counter-clockwise from ego +x)
    "cam_front": 0.0, "cam_front_left": 55.0, "cam_front_right": -55.0,
    "cam_back": 180.0, "cam_back_left": 110.0, "cam_back_right": -110.0,
}
RIG_K = np.array([[1266.0, 0.0, 816.0], [0.0, 1266.0, 491.0], [0.0, 0.0, 1.0]])


def camera_rig() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cams_from_ego (6, 4, 4) for optical frames looking along each yaw, 1.5 m up."""
    tfs = []
    for yaw_deg in RIG_YAWS.values():
        yaw = math.radians(yaw_deg)
        forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        ego_from_cam = geo.make_transform(np.c_[right, down, forward], [0.5, 0.0, 1.5])
        tfs.append(geo.invert_transform(ego_from_cam))
    m = len(tfs)
    return np.stack(tfs), np.repeat(RIG_K[None], m, axis=0), np.tile([1600, 900], (m, 1))


def test_project_to_cameras_equals_per_camera_projection() -> None:
    rng = np.random.default_rng(RNG_SEED)
    cams_from_ego, intrinsics, sizes = camera_rig()
    points = rng.uniform(-40.0, 40.0, size=(5000, 3)).astype(np.float32)
    distortion = [None, [-0.2, 0.05, 0.001, 0.0], [], np.zeros(5), None,
                  [0.1, -0.02, 0.0, 0.001, 0.0, 0.05, 0.0, 0.0]]
    result = geo.project_to_cameras(points, cams_from_ego, intrinsics, sizes, distortion, 2.0)
    assert result.uv.shape == (6, 5000, 2) and result.uv.dtype == np.float32
    assert result.depth.shape == (6, 5000) and result.depth.dtype == np.float32
    assert result.valid.shape == (6, 5000) and result.valid.dtype == np.bool_
    for m in range(6):
        cam_points = geo.transform_points(cams_from_ego[m], points.astype(np.float64))
        uv, depth = geo.project_points(cam_points, intrinsics[m], distortion[m])
        valid = geo.image_mask(uv, depth, int(sizes[m, 0]), int(sizes[m, 1]), min_depth=2.0)
        np.testing.assert_array_equal(result.valid[m], valid)
        np.testing.assert_allclose(result.uv[m][valid], uv[valid], rtol=1e-6)
        np.testing.assert_allclose(result.depth[m], depth, rtol=1e-6, atol=1e-5)
    assert 0 < result.valid.sum() < result.valid.size


def test_rig_sees_a_point_only_in_the_camera_facing_it() -> None:
    cams_from_ego, intrinsics, sizes = camera_rig()
    names = list(RIG_YAWS)
    for name, yaw_deg in RIG_YAWS.items():
        yaw = math.radians(yaw_deg)
        point = [[0.5 + 10.0 * math.cos(yaw), 10.0 * math.sin(yaw), 1.5]]
        result = geo.project_to_cameras(point, cams_from_ego, intrinsics, sizes)
        assert result.valid[:, 0].tolist() == [n == name for n in names]
        m = names.index(name)
        np.testing.assert_allclose(result.uv[m, 0], RIG_K[:2, 2], atol=1e-3)  # principal point
        assert result.depth[m, 0] == pytest.approx(10.0)


def test_project_to_cameras_input_errors() -> None:
    cams_from_ego, intrinsics, sizes = camera_rig()
    points = np.ones((3, 3))
    with pytest.raises(ValueError, match=r"intrinsics must have shape \(6, 3, 3\)"):
        geo.project_to_cameras(points, cams_from_ego, intrinsics[:5], sizes)
    with pytest.raises(ValueError, match=r"image_sizes must have shape \(6, 2\)"):
        geo.project_to_cameras(points, cams_from_ego, intrinsics, sizes[:, :1])
    with pytest.raises(ValueError, match="image_sizes must be positive integers"):
        geo.project_to_cameras(points, cams_from_ego, intrinsics, sizes * 0.5 + 0.25)
    with pytest.raises(ValueError, match="distortion must have 6 entries"):
        geo.project_to_cameras(points, cams_from_ego, intrinsics, sizes, [None])
    with pytest.raises(ValueError, match=r"cams_from_source must have shape \(M, 4, 4\)"):
        geo.project_to_cameras(points, cams_from_ego[0], intrinsics, sizes)


# ---- ego motion and pose interpolation --------------------------------------------------------
def test_ego_motion_recovers_a_static_world_point() -> None:
    rng = np.random.default_rng(RNG_SEED)
    ego_from_lidar, ego_from_cam = random_transform(rng, 2.0), random_transform(rng, 2.0)
    global_from_ego_a = geo.make_transform(yaw_matrix(0.3), [100.0, 50.0, 0.0])
    global_from_ego_b = geo.make_transform(yaw_matrix(0.35), [101.2, 50.4, 0.02])
    world = rng.uniform(50.0, 150.0, size=(20, 3))
    in_lidar_at_a = geo.transform_points(
        geo.invert_transform(global_from_ego_a @ ego_from_lidar), world
    )
    in_cam_at_b = geo.transform_points(
        geo.invert_transform(global_from_ego_b @ ego_from_cam), world
    )
    cam_from_lidar = geo.ego_motion_transform(
        ego_from_lidar, global_from_ego_a, global_from_ego_b, ego_from_cam
    )
    np.testing.assert_allclose(
        geo.transform_points(cam_from_lidar, in_lidar_at_a), in_cam_at_b, atol=1e-9
    )
    static = geo.ego_motion_transform(ego_from_lidar, global_from_ego_a, global_from_ego_a,
                                      ego_from_cam)
    np.testing.assert_allclose(static, geo.invert_transform(ego_from_cam) @ ego_from_lidar,
                               atol=1e-12)
    # Ignoring the ego motion would be wrong by about the distance driven.
    naive = geo.transform_points(geo.invert_transform(ego_from_cam) @ ego_from_lidar,
                                 in_lidar_at_a)
    assert np.abs(naive - in_cam_at_b).max() > 0.5


def test_interpolate_pose_endpoints_midpoint_and_range() -> None:
    pose0 = geo.make_transform(yaw_matrix(0.0), [0.0, 0.0, 0.0])
    pose1 = geo.make_transform(yaw_matrix(math.radians(60.0)), [2.0, 4.0, -1.0])
    t0, t1 = 1_000_000.0, 1_050_000.0  # microseconds
    np.testing.assert_array_equal(geo.interpolate_pose(t0, t0, pose0, t1, pose1), pose0)
    np.testing.assert_array_equal(geo.interpolate_pose(t1, t0, pose0, t1, pose1), pose1)
    mid = geo.interpolate_pose(1_025_000.0, t0, pose0, t1, pose1)
    np.testing.assert_allclose(mid[:3, :3], yaw_matrix(math.radians(30.0)), atol=1e-12)
    np.testing.assert_allclose(mid[:3, 3], [1.0, 2.0, -0.5])
    quarter = geo.interpolate_pose(1_012_500.0, t0, pose0, t1, pose1)
    assert math.degrees(yaw_of(quarter)) == pytest.approx(15.0)
    for outside in (t0 - 1.0, t1 + 1.0):
        with pytest.raises(ValueError, match="outside"):
            geo.interpolate_pose(outside, t0, pose0, t1, pose1)
    extra = geo.interpolate_pose(1_075_000.0, t0, pose0, t1, pose1, allow_extrapolation=True)
    assert math.degrees(yaw_of(extra)) == pytest.approx(90.0)
    np.testing.assert_array_equal(geo.interpolate_pose(5.0, 5.0, pose0, 5.0, pose1), pose0)
    with pytest.raises(ValueError, match="t0 <= t1"):
        geo.interpolate_pose(1.0, 2.0, pose0, 0.0, pose1)


def test_interpolate_pose_takes_the_shortest_arc() -> None:
    pose0 = geo.make_transform(yaw_matrix(math.radians(170.0)), np.zeros(3))
    pose1 = geo.make_transform(yaw_matrix(math.radians(-170.0)), np.zeros(3))
    mid = geo.interpolate_pose(0.5, 0.0, pose0, 1.0, pose1)
    assert abs(math.degrees(yaw_of(mid))) == pytest.approx(180.0)


def test_xyz_rpy_gives_the_ros_static_transform_matrices() -> None:
    from cns_ros.geometry import transform_from_xyz_rpy

    half = np.pi / 2
    # yaw 90 deg: x -> y; pitch 90 deg: x -> -z; roll 90 deg: y -> z (right-handed turns)
    assert np.allclose(transform_from_xyz_rpy([0, 0, 0, 0, 0, half])[:3, :3],
                       [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert np.allclose(transform_from_xyz_rpy([0, 0, 0, 0, half, 0])[:3, :3],
                       [[0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    assert np.allclose(transform_from_xyz_rpy([0, 0, 0, half, 0, 0])[:3, :3],
                       [[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    # camera_link <- optical (-pi/2, 0, -pi/2): optical z (forward) is x, x (right) is -y,
    # y (down) is -z; the translation is the optical origin in camera_link
    body = transform_from_xyz_rpy([0.1, 0.2, 0.3, -half, 0, -half])
    assert np.allclose(body[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    assert np.allclose(body @ [0, 1, 2, 1], [2.1, 0.2, -0.7, 1])  # 2 m ahead, 1 m below
    with pytest.raises(ValueError, match=r'xyz_rpy must have shape \(6,\)'):
        transform_from_xyz_rpy([0, 0, 0])
