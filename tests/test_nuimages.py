"""nuImages 2D ground truth and evaluation: the category table, the per-pixel map (hand-made
dataset and the devkit's own get_segmentation), and the whole path on the synthetic world:
world -> nuImages export -> NuImages loads it -> our map equals the world's ground truth on the
scorable classes -> a steered 2D network's scores equal those computed from pixel counts.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_synthetic import small_synthetic_nuscenes
from pycocotools import mask as coco_mask
from test_segmenter import make_tiny_bundle, steer

from cns_ros.data.nuimages import (
    NUIMAGES_CATEGORIES,
    SCORABLE_CLASSES,
    NuImagesNotFoundError,
    NuImagesReader,
    category_train_id,
    decode_mask,
    encode_mask,
)
from cns_ros.teachers.simulated import SyntheticGroundTruth
from cns_ros.vocabulary import nuscenes16
from offline_training import evaluate, make_synthetic_nuimages

pytestmark = pytest.mark.usefixtures('one_torch_thread')

#: The mapping of the module docstring, typed out: nuImages category -> nuScenes-16 (None: 255).
TABLE = {
    'animal': None, 'human.pedestrian.adult': 'pedestrian', 'human.pedestrian.child': 'pedestrian',
    'human.pedestrian.construction_worker': 'pedestrian',
    'human.pedestrian.personal_mobility': None, 'human.pedestrian.police_officer': 'pedestrian',
    'human.pedestrian.stroller': None, 'human.pedestrian.wheelchair': None,
    'movable_object.barrier': 'barrier', 'movable_object.debris': None,
    'movable_object.pushable_pullable': None, 'movable_object.trafficcone': 'traffic_cone',
    'static_object.bicycle_rack': None, 'vehicle.bicycle': 'bicycle', 'vehicle.bus.bendy': 'bus',
    'vehicle.bus.rigid': 'bus', 'vehicle.car': 'car', 'vehicle.construction':
    'construction_vehicle', 'vehicle.emergency.ambulance': None,
    'vehicle.emergency.police': None, 'vehicle.motorcycle': 'motorcycle',
    'vehicle.trailer': 'trailer', 'vehicle.truck': 'truck',
    'flat.driveable_surface': 'driveable_surface', 'vehicle.ego': None}
UNSCORABLE = ['other_flat', 'sidewalk', 'terrain', 'manmade', 'vegetation']


def test_category_table_and_scorable_classes():
    names = nuscenes16().names
    assert sorted(NUIMAGES_CATEGORIES) == sorted(TABLE)
    for category, target in TABLE.items():
        assert category_train_id(category) == (255 if target is None else names.index(target))
    assert list(SCORABLE_CLASSES) == [n for n in names if n not in UNSCORABLE]
    assert len(SCORABLE_CLASSES) == 11
    with pytest.raises(ValueError, match='not a nuImages category'):
        category_train_id('flat.sidewalk')


def test_masks_round_trip_through_the_devkit_decoder():
    rng = np.random.default_rng(0)
    for mask in (rng.random((9, 17)) > 0.6, np.zeros((3, 4), bool), np.ones((5, 2), bool)):
        encoded = encode_mask(mask)
        assert encoded['size'] == list(mask.shape) and isinstance(encoded['counts'], str)
        assert np.array_equal(decode_mask(encoded, mask.shape), mask)
    assert decode_mask(None, (3, 4)) is None
    with pytest.raises(ValueError, match='mask of size'):
        decode_mask(encode_mask(np.ones((3, 4), bool)), (4, 3))


def _rle(mask: np.ndarray) -> dict:
    """The nuImages mask field, written here with pycocotools directly (not encode_mask)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': list(rle['size']), 'counts': base64.b64encode(rle['counts']).decode()}


def _hand_made(root: Path) -> tuple[str, np.ndarray]:
    """A 1-image nuImages dataset (6 x 8 px) and its expected map (training ids, 255)."""
    h, w = 6, 8
    cat = {n: f'cat-{n}' for n in NUIMAGES_CATEGORIES}
    road = np.zeros((h, w), bool)
    road[3:] = True                      # bottom half: driveable surface
    car = np.zeros((h, w), bool)
    car[2:5, 1:4] = True                 # over the road
    person = np.zeros((h, w), bool)
    person[1:4, 3:5] = True              # token 'obj-b' > 'obj-a': drawn over the car
    ambulance = np.zeros((h, w), bool)
    ambulance[4:, 6:] = True             # ignored category over the road
    objects = [('obj-b', 'human.pedestrian.adult', person), ('obj-a', 'vehicle.car', car),
               ('obj-c', 'vehicle.emergency.ambulance', ambulance)]
    tables = {
        'category': [{'token': t, 'name': n, 'description': ''} for n, t in cat.items()],
        'attribute': [], 'log': [{'token': 'log', 'logfile': 'l', 'vehicle': 'v',
                                  'date_captured': '2020-01-01', 'location': 'x'}],
        'sensor': [{'token': 'sensor', 'channel': 'CAM_FRONT', 'modality': 'camera'}],
        'calibrated_sensor': [], 'ego_pose': [],
        'sample': [{'token': 'sample', 'timestamp': 1, 'log_token': 'log',
                    'key_camera_token': 'sd', 'key_lidar_token': ''}],
        'sample_data': [{'token': 'sd', 'sample_token': 'sample', 'ego_pose_token': '',
                         'calibrated_sensor_token': '', 'filename': 'samples/CAM_FRONT/a.jpg',
                         'fileformat': 'jpg', 'width': w, 'height': h, 'timestamp': 1,
                         'is_key_frame': True, 'prev': '', 'next': ''}],
        'surface_ann': [{'token': 'surf', 'sample_data_token': 'sd',
                         'category_token': cat['flat.driveable_surface'], 'mask': _rle(road)}],
        'object_ann': [{'token': t, 'sample_data_token': 'sd', 'category_token': cat[n],
                        'attribute_tokens': [], 'bbox': [0, 0, 1, 1], 'mask': _rle(m)}
                       for t, n, m in objects] + [
            {'token': 'obj-d', 'sample_data_token': 'sd', 'category_token': cat['vehicle.car'],
             'attribute_tokens': [], 'bbox': [0, 0, 1, 1], 'mask': None}]}
    (root / 'v1.0-mini').mkdir(parents=True)
    for name, records in tables.items():
        (root / 'v1.0-mini' / f'{name}.json').write_text(json.dumps(records))
    (root / 'samples' / 'CAM_FRONT').mkdir(parents=True)
    cv2.imwrite(str(root / 'samples' / 'CAM_FRONT' / 'a.jpg'), np.zeros((h, w, 3), np.uint8))
    names = nuscenes16().names
    expected = np.full((h, w), 255, np.uint8)
    expected[road] = names.index('driveable_surface')
    expected[car] = names.index('car')
    expected[person] = names.index('pedestrian')
    expected[ambulance] = 255
    return 'sd', expected


def _devkit_map(reader: NuImagesReader, token: str) -> np.ndarray:
    """The devkit's get_segmentation, its category indices mapped to our training ids."""
    from nuimages.utils.utils import name_to_index_mapping

    semantic, _ = reader.nuim.get_segmentation(token)
    index = {i: name for name, i in name_to_index_mapping(reader.nuim.category).items()}
    table = np.full(32, 255, np.uint8)
    for i, name in index.items():
        table[i] = category_train_id(name)
    return table[semantic]


def test_semantic_map_of_a_hand_made_dataset(tmp_path):
    token, expected = _hand_made(tmp_path / 'nuim')
    reader = NuImagesReader(tmp_path / 'nuim', 'v1.0-mini')
    assert reader.sample_tokens == ['sample'] and reader.key_camera_token('sample') == token
    assert np.array_equal(reader.semantic_map(token), expected)
    assert np.array_equal(_devkit_map(reader, token), expected)
    assert reader.load_image(token).shape == (6, 8, 3)
    with pytest.raises(NuImagesNotFoundError, match=r'v1\.0-val'):
        NuImagesReader(tmp_path / 'nuim', 'v1.0-val')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(world, nuImages root) of the small synthetic world's scene-0103, exported by the CLI."""
    world = small_synthetic_nuscenes(tmp_path_factory)
    out = tmp_path_factory.mktemp('nuimages') / 'nuim'
    assert make_synthetic_nuimages.main(['--world', str(world), '--out', str(out),
                                         '--scene', 'scene-0103']) == 0
    return world, out


def test_export_loads_in_the_devkit_and_matches_the_ground_truth(exported, tmp_path, capsys):
    from nuimages import NuImages

    world, out = exported
    nuim = NuImages(version='v1.0-mini', dataroot=str(out), lazy=False, verbose=False)
    gt = SyntheticGroundTruth(world)
    images = [e for e in gt.index['images'] if e['scene'] == 'scene-0103']
    assert len(nuim.sample) == len(images) == 18 and len(nuim.category) == 25
    assert {o['sample_data_token'] for o in nuim.object_ann} <= {e['sample_data_token']
                                                                 for e in images}
    reader = NuImagesReader(out, 'v1.0-mini')
    scorable = [nuscenes16().index(n) for n in SCORABLE_CLASSES]
    for sample in reader.sample_tokens:
        token = reader.key_camera_token(sample)
        ours, truth = reader.semantic_map(token), gt.load(token).train_labels()
        keep = np.isin(truth, scorable)
        assert keep.any()
        assert np.array_equal(ours[keep], truth[keep])      # the scorable classes, exactly
        assert (ours[~keep] == 255).all()                   # everything else unannotated
        assert np.array_equal(_devkit_map(reader, token), ours)
        assert np.array_equal(reader.load_image(token), cv2.cvtColor(
            cv2.imread(str(world / reader.nuim.get('sample_data', token)['filename'])),
            cv2.COLOR_BGR2RGB))
    again = tmp_path / 'again'
    assert make_synthetic_nuimages.main(['--world', str(world), '--out', str(again),
                                         '--scene', 'scene-0103']) == 0
    for table in sorted((out / 'v1.0-mini').glob('*.json')):
        assert table.read_bytes() == (again / 'v1.0-mini' / table.name).read_bytes()
    with pytest.raises(SystemExit) as exc:
        make_synthetic_nuimages.main(['--world', str(world), '--out', str(out)])
    assert exc.value.code == 2 and 'not empty' in capsys.readouterr().err


def test_steered_network_scores_follow_from_pixel_counts(exported, tmp_path, capsys):
    world, out = exported
    bundle = make_tiny_bundle(tmp_path / 'steered', net2d=True, image_model='deeplabv3_mbv3',
                              steer=steer())  # every pixel: driveable_surface
    assert evaluate.main(['--dataset', 'nuimages', '--bundle', str(bundle), '--dataroot',
                          str(out), '--version', 'v1.0-mini', '--out', str(tmp_path / 'eval'),
                          '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert 'mIoU over the 11 scorable classes only' in printed and 'manmade' in printed
    document = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert document['scorable_classes'] == list(SCORABLE_CLASSES)
    assert document['unscorable_classes'] == UNSCORABLE
    assert document['dataset']['images'] == 18 and 'scorable classes only' in \
        document['protocol']
    # hand computation from the world's ground truth: N_c pixels of each scorable class
    names = nuscenes16().names
    counts = np.zeros(16, np.int64)
    for entry in SyntheticGroundTruth(world).index['images']:
        if entry['scene'] == 'scene-0103':
            labels = SyntheticGroundTruth(world).load(entry['sample_data_token']).train_labels()
            counts += np.bincount(labels[labels < 16], minlength=16)
    counts[[names.index(n) for n in UNSCORABLE]] = 0
    total, road = counts.sum(), counts[names.index('driveable_surface')]
    present = [n for n in SCORABLE_CLASSES if counts[names.index(n)] > 0]
    net = document['net2d']
    assert net['points'] == total and net['accuracy'] == pytest.approx(road / total)
    for name in names:
        iou = net['classes'][name]['iou']
        if name == 'driveable_surface':  # TP = its pixels, FP = every other annotated pixel
            assert iou == pytest.approx(road / total)
        elif name in present:
            assert iou == 0.0
        else:  # absent from the ground truth and never predicted, or not scorable
            assert iou is None
    assert net['miou'] == pytest.approx(road / total / len(present))
    assert net['miou_present'] == pytest.approx(road / total / len(present))
    absent = len(SCORABLE_CLASSES) - len(present)
    assert net['miou_union0_as_1'] == pytest.approx((road / total + absent) / 11)


def test_nuimages_evaluation_refuses_what_it_cannot_do(exported, tmp_path, capsys):
    _, out = exported
    no2d = make_tiny_bundle(tmp_path / 'no2d')
    with2d = make_tiny_bundle(tmp_path / 'with2d', net2d=True, image_model='deeplabv3_mbv3')
    common = ['--dataset', 'nuimages', '--dataroot', str(out), '--version', 'v1.0-mini',
              '--out', str(tmp_path / 'eval')]
    for argv, message in (
            (['--bundle', str(no2d), *common], 'the bundle has none'),
            (['--bundle', str(no2d), *common, '--split', 'mini_val'], 'drop --split'),
            (['--bundle', str(with2d), *common[:-4], '--version', 'v1.0-val', '--out',
              str(tmp_path / 'e')], 'nuImages tables not found')):
        with pytest.raises(SystemExit) as exc:
            evaluate.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err, message
