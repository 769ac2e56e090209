import numpy as np
import pytest

from clj.data import load_dataset
from clj.scenarios import class_split, make_class_order, make_scenario


def test_pycil_splits():
    assert class_split(100, 0, 10) == [10] * 10            # B0 Inc10
    assert class_split(100, 50, 5) == [50] + [5] * 10      # B50 Inc5
    assert class_split(100, 50, 10) == [50] + [10] * 5     # B50 Inc10
    assert class_split(10, 0, 3) == [3, 3, 3, 1]           # remainder task, as PyCIL


def test_seeded_class_order_is_pycil():
    np.random.seed(1993)
    expected = np.random.permutation(100)
    np.testing.assert_array_equal(make_class_order(100, "seeded", 1993), expected)


def test_bad_split_and_order_refused():
    with pytest.raises(ValueError, match="increment=0"):
        class_split(10, 0, 0)
    with pytest.raises(ValueError, match="init_cls=11"):
        class_split(10, 11, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        make_class_order(3, [0, 0, 1], 0)


def test_class_il_split_relabels_and_partitions():
    ds = load_dataset("digits")
    sc = make_scenario(ds, "class_il", increment=2, class_order="seeded", class_order_seed=1993)
    assert sc.num_tasks == 5 and sc.classes_per_task == [2] * 5
    # relabelling: new label k <-> original class class_order[k]
    np.testing.assert_array_equal(sc.class_order[sc.y_train], ds.y_train)
    all_train = np.concatenate([t.train_idx for t in sc.tasks])
    assert sorted(all_train.tolist()) == list(range(len(ds.y_train)))
    for t in sc.tasks:
        assert set(np.unique(sc.y_train[t.train_idx])) == set(t.classes)
        assert set(np.unique(sc.y_test[t.test_idx])) == set(t.classes)
    m = sc.class_task_matrix()
    assert m.sum() == 10 and (m.sum(0) == 1).all()
    np.testing.assert_array_equal(sc.seen_classes(1), np.arange(10) < 4)


def test_domain_il_permute():
    ds = load_dataset("digits")
    sc = make_scenario(ds, "domain_il", domain="permute", num_tasks=3)
    assert sc.num_tasks == 3 and all(len(t.classes) == 10 for t in sc.tasks)
    np.testing.assert_array_equal(sc.domain_params[0], np.arange(64))
    assert sorted(sc.domain_params[2].tolist()) == list(range(64))
    with pytest.raises(ValueError, match="scenario.domain"):
        make_scenario(ds, "domain_il", domain="blur", num_tasks=3)


def test_data_incremental_hides_boundaries():
    ds = load_dataset("digits")
    sc = make_scenario(ds, "data_incremental", increment=2)
    assert not sc.task_boundaries_visible and sc.num_tasks == 5
