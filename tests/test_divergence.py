"""The divergence record: the first bad step and what was at fault, read only at ``check``."""

import pytest
import torch

from selfinv.training.divergence import DivergenceMonitor, TrainingDiverged

NAMES = ["loss", "loss term 'sure'", "network weights"]
NAN, INF = float("nan"), float("inf")


def _t(*values):
    return [torch.tensor(v) for v in values]


def test_nothing_wrong_reads_and_passes():
    m = DivergenceMonitor()
    for s in range(5):
        m.record(s, _t(0.1 + s, 0.1))
    m.record_weights(4, _t(1.0, 2.0))
    m.check(NAMES)  # no raise


def test_the_first_bad_step_and_the_term_at_fault_are_named():
    m = DivergenceMonitor()
    m.record(0, _t(0.2, 0.2))
    m.record(1, _t(0.3, INF))
    m.record(2, _t(NAN, NAN))
    with pytest.raises(TrainingDiverged, match=r"at step 1: non-finite \(inf/NaN\) loss term 'sure';"):
        m.check(NAMES)
    with pytest.raises(TrainingDiverged, match=r"at step 1:"):  # the record is kept after the reading
        m.check(NAMES)


def test_an_exploding_loss_is_divergence_even_while_finite():
    m = DivergenceMonitor(growth=1e3)
    m.record(0, _t(0.1))
    m.record(1, _t(50.0))  # 500x: allowed
    m.record(2, _t(-200.0))  # 2000x
    with pytest.raises(TrainingDiverged, match=r"at step 2: the loss exploded to -200 \(from 0.1 at the start, more "
                                               r"than 1e\+03 times\)"):
        m.check(NAMES)


def test_weights_are_blamed_only_when_no_recorded_value_was_bad_before():
    m = DivergenceMonitor()
    m.record(0, _t(0.1, 0.1))
    m.record_weights(0, _t(1.0, INF))
    with pytest.raises(TrainingDiverged, match=r"at step 0: non-finite \(inf/NaN\) network weights;"):
        m.check(NAMES)
    m = DivergenceMonitor()
    m.record(3, _t(NAN, 0.1))
    m.record_weights(3, _t(NAN))
    with pytest.raises(TrainingDiverged, match=r"at step 3: non-finite \(inf/NaN\) loss;"):
        m.check(NAMES)


def test_pending_values_stay_bounded_and_are_read_on_the_way():
    m = DivergenceMonitor(max_pending=4)
    m.record(0, _t(0.1))
    m.record(1, _t(NAN))
    for s in range(2, 10):
        m.record(s, _t(0.1))
        assert len(m._pending) < 4
    with pytest.raises(TrainingDiverged, match=r"at step 1:"):
        m.check(NAMES)


def test_terms_may_change_in_number_and_be_non_scalar():
    m = DivergenceMonitor()
    m.record(0, _t(0.1))
    m.record(1, [torch.tensor(0.2), torch.tensor([0.1, INF])])
    with pytest.raises(TrainingDiverged, match=r"at step 1: non-finite \(inf/NaN\) loss term 'sure';"):
        m.check(NAMES)
