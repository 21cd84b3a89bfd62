"""The core claim of label-free training, end to end through the real CLIs, under REALISTIC
teachers (issue 11): the reduced version of the synthetic-lab study (benchmarks/bench_ablation.py).

On the synthetic world, with the simulated MaskCLIP set to the `realistic` preset (calibrated
to published MaskCLIP errors, most of them persistent per object across cameras and
keyframes), the study's first row (CNS's 3D student on the MaskCLIP labels of the 24 train
scenes, 200 CPU steps) beats the teacher's own labels of the 6 TEST scenes, scored on the very
same points, by a margin set from the study's measured spread.

The pipeline, the rows and the recipe are in offline_training/study.py.
"""

from __future__ import annotations

import pytest

from offline_training import study

STEPS = 200
NOISE = 'realistic'
#: The study (benchmarks/results/ablation_realistic.json, 3 training seeds, 200 steps) measured
#: this row's gain over the teacher on the test scenes' paired points as mean +- standard
#: deviation, in mIoU and accuracy points; each margin is the mean minus 4 standard deviations,
#: rounded down (this run is seed 0, whose gains were 4.0 and 17.6).
MIOU_GAIN = (4.66, 0.61)
ACCURACY_GAIN = (18.8, 1.04)
MIOU_MARGIN = 2.0
ACCURACY_MARGIN = 14.0


@pytest.mark.slow
@pytest.mark.usefixtures('one_torch_thread')
def test_trained_3d_network_beats_its_realistic_teacher_on_test_scenes(tmp_path, capsys):
    assert MIOU_MARGIN <= MIOU_GAIN[0] - 4 * MIOU_GAIN[1]
    assert ACCURACY_MARGIN <= ACCURACY_GAIN[0] - 4 * ACCURACY_GAIN[1]
    prepared = study.make_world(tmp_path)  # the study's world, val scenes too: the same labels
    for split in ('train', 'test'):
        study.make_cache(prepared, NOISE, False, split)
    row = next(r for r in study.ROWS if r.key == 'cns_clip')
    result = study.run_row(prepared, row, NOISE, STEPS, seed=0, splits=('test',))['test']
    with capsys.disabled():
        print('\ncore claim, realistic teachers, test scenes (%): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in result.items() if isinstance(v, float)))
    # Point for point on the test scenes (same points, same protocol): the network beats the
    # teacher's labels of those very scenes, in mIoU and in accuracy.
    assert result['net3d_paired_miou'] >= result['teacher3d_miou'] + MIOU_MARGIN
    assert result['net3d_paired_accuracy'] >= result['teacher3d_accuracy'] + ACCURACY_MARGIN
