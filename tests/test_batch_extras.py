"""A method's per-image extras (``Capabilities.batch_extras``): the loop gathers
the maps stored with SER's prepared datasets into every training batch, row
for row with the images, on the device and streamed; SER trains its saliency
branch on them (``ser.sal_target='dataset'``, the paper's target)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from clj.config import ConfigError, validate
from clj.data import prepare as prep
from clj.methods.api import Capabilities, MethodSpec
from clj.train import Runner
from conftest import small_config
from test_prepare_imagenet import SER_FLAT_YML, make_ser


# --- a probe method (this module is its registry entry): counts the batch rows whose
# saliency map is not its image's (make_ser codes each image and its map with one value)
@struct.dataclass
class Probe:
    params: dict
    rows: jax.Array
    misaligned: jax.Array
    seen_labels: jax.Array


def _init(rng, config, scenario):
    C = scenario.num_classes
    return Probe(params={"b": jnp.zeros((C,))}, rows=jnp.int32(0), misaligned=jnp.int32(0),
                 seen_labels=jnp.zeros((C,), jnp.int32))


def _train_step(st, batch, rng):
    img = batch["x_raw"][..., 0].astype(jnp.float32).mean((1, 2))
    sal = batch["saliency"][..., 0].astype(jnp.float32).mean((1, 2))
    bad = jnp.sum(jnp.abs(img - sal) > 3).astype(jnp.int32)
    st = st.replace(rows=st.rows + batch["y"].shape[0], misaligned=st.misaligned + bad,
                    seen_labels=st.seen_labels.at[batch["y"]].add(1))
    return st, {"loss": bad.astype(jnp.float32)}


SPEC = MethodSpec(init=_init, begin_task=lambda s, i: s, train_step=_train_step, end_task=lambda s, d: s,
                  predict=lambda s, x, t=None: jnp.broadcast_to(s.params["b"], (x.shape[0],) + s.params["b"].shape),
                  capabilities=Capabilities(batch_extras=("saliency",)),
                  result_extras=lambda s: {"rows": int(s.rows), "misaligned": int(s.misaligned)})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ser")
    make_ser(root / "src", ["n0a", "n0b", "n0c", "n0d"], n_train=6, n_val=2, side=(8, 8))
    (root / "labels.yml").write_text(SER_FLAT_YML)
    prep.prepare("mini_imagenet", root / "src", root / "data", size="8x8", classes=root / "labels.yml",
                 workers=0, progress=False)
    return root / "data"


def _config(method, data, placement, **over):
    return small_config(method, dataset="mini_imagenet", data_dir=str(data),
                        **{"num_seeds": 2, "data.placement": placement, "scenario.increment": 2, "train.batch_size": 4,
                           "train.epochs": 2, "replay.minibatch_size": 4, "replay.buffer_size": 8,
                           "loop.eval_batch_size": 4, **over})


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_every_batch_row_carries_its_own_images_saliency_map(prepared, placement, tmp_path):
    from clj.methods import register

    register("extras_probe", "test_batch_extras", "probe of the loop's per-image extras")
    r = Runner(_config("extras_probe", prepared, placement), str(tmp_path / placement))
    assert r.placement == placement
    r.run()
    for s in (0, 1):
        ex = json.load(open(tmp_path / placement / f"seed_{s}" / "results.json"))["extra"]
        assert ex["rows"] == 2 * 24  # 2 epochs of the 24 training images (2 tasks x 12), every row checked
        assert ex["misaligned"] == 0


def test_ser_dataset_target_is_the_batch_maps_normalised_to_unit_sum():
    """SER's loader: the grey PNG read into [0, 1], normalised to sum 1 (an all-zero
    map becomes uniform); the offline targets ignore ``given``."""
    from types import SimpleNamespace

    from clj.methods.ser.saliency import saliency_targets

    given = jnp.stack([jnp.arange(12.0).reshape(3, 4), jnp.zeros((3, 4))])
    st = SimpleNamespace(sal_target="dataset")
    t = saliency_targets(st, None, None, None, None, given)
    np.testing.assert_allclose(t[0], np.arange(12.0).reshape(3, 4) / 66.0, rtol=1e-6)
    np.testing.assert_allclose(t[1], np.full((3, 4), 1 / 12.0), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the batch's saliency maps"):
        saliency_targets(st, None, None, None, None, None)


def test_ser_trains_on_the_datasets_maps_end_to_end(prepared, tmp_path):
    """ser_er with sal_target='dataset' (the paper's target) on a prepared
    Mini-ImageNet layout: runs, and records its target."""
    from clj.methods.sections import section_config

    c = _config("ser_er", prepared, "device", **{"num_seeds": 1, "train.epochs": 1})
    c.model = dict(name="resnet18", width=4, dtype="float32")
    c.ser = section_config("ser")
    c.ser.sal_target = "dataset"
    c.ser.sal_init = "scratch"
    validate(c)
    r = Runner(c, str(tmp_path / "ser"))
    assert r.caps.batch_extras == ("saliency",)
    res = r.run()
    assert res["extra"]["ser"]["sal_target"] == "dataset"
    assert np.isfinite(np.asarray(res["accuracy_matrix"]["class_il"], float)).all()


def test_dataset_target_without_saliency_maps_is_one_line():
    c = small_config("ser_er", dataset="cifar10")
    from clj.methods.sections import section_config

    c.ser = section_config("ser")
    c.ser.sal_target = "dataset"
    with pytest.raises(ConfigError, match=r"ser.sal_target='dataset' reads the saliency maps stored with the "
                                          r"images, and dataset='cifar10' has none"):
        validate(c)


def test_extras_the_records_do_not_store_are_refused_before_training(tmp_path):
    from clj.methods import register

    register("extras_probe", "test_batch_extras", "probe of the loop's per-image extras")
    c = small_config("extras_probe")  # digits: not a prepared dataset
    with pytest.raises(ConfigError, match="reads the per-image extras saliency .* not prepared"):
        Runner(c, str(tmp_path / "w"))


def test_memory_figure_counts_the_extras_on_both_placements(prepared):
    from clj.methods import register
    from clj.train.memory import program_memory

    register("extras_probe", "test_batch_extras", "probe of the loop's per-image extras")
    dev = program_memory(_config("extras_probe", prepared, "device"))
    stream = program_memory(_config("extras_probe", prepared, "stream"))
    # the device placement holds the 24 training maps (8x8x1 uint8) beside the images
    plain = program_memory(_config("er", prepared, "device", **{"replay.buffer_size": 8}))
    assert dev.data - plain.data == 24 * 8 * 8 * 1
    assert stream.data < dev.data and stream.chunk_peak > 0
