"""Every shipped config loads and passes validation; a representative, cheap
subset also runs end to end on synthetic data of its dataset's shapes with a
shrunk model (bounded by steps: one epoch of 8 examples per class)."""
import os

import pytest

from clj.config import base_config, list_configs, load_config, validate
from clj.data.sources import PREPARED_SHAPES
from clj.methods import sections

# dataset -> (image shape, number of classes)
SHAPES = {"digits": ((8, 8, 1), 10), "mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10),
          "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "svhn_cropped": ((32, 32, 3), 10),
          "emnist": ((28, 28, 1), 47)}
SHAPES.update(PREPARED_SHAPES)   # tiny_imagenet, imagenet100, imagenet1k, mini_imagenet, fg_imagenet

# Run a few steps of these (MLP-sized; ResNet configs compile for ~30 s on
# 2 CPU cores and are covered by the methods' own tests): the replay family
# on MNIST shapes, the regularisation baseline on Fashion-MNIST shapes (the
# config that once crashed), NISPA's sparse MLP and SERENA's cells.
SMOKE = ("finetune_fashion_mnist", "ewc_fashion_mnist")


def _variants(name):
    # a config file's documented variants (get_config(variant)) are loaded too
    extra = {"serena_digits": ("official", "er", "iid_online", "iid_offline"),
             "akr_digits": ("mixup", "icarl", "none")}
    return [(name, None)] + [(name, v) for v in extra.get(name, ())]


ALL = [nv for n in list_configs() for nv in _variants(n)]


@pytest.mark.parametrize("name,variant", ALL, ids=[f"{n}:{v}" if v else n for n, v in ALL])
def test_config_loads_and_validates(name, variant):
    c = load_config(name, variant)
    validate(c)
    assert c.method and c.dataset


def test_every_config_file_is_covered():
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    files = {f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_")}
    helpers = {f for f in files if f.endswith("_common")}
    assert files - helpers == set(list_configs())


def test_sections_match_the_method_modules():
    """The JAX-free declarations and the constants the method modules use are one set of values."""
    from clj.methods.akr import akr
    from clj.methods.akr.section import AKR
    from clj.methods.cil import common as cil_common
    from clj.methods.cil.section import CIL, EXPAND_MODELS
    from clj.methods.ser import ser
    from clj.methods.ser import section as ser_section
    from clj.methods.ser import targets as ser_targets
    from clj.models import saliency

    assert akr.AKR_DEFAULTS == AKR.defaults
    assert cil_common.CIL_DEFAULTS == CIL.defaults
    assert ser.ser_config().to_dict() == ser_section.SER.defaults
    assert saliency.POOL_MODES == ser_section.SER_POOL_MODES and saliency.NUM_POINTS == ser_section.SER_NUM_POINTS
    assert ser_targets.TARGETS == ser_section.SER_TARGETS
    assert tuple(ser.CLASSIFIERS) == ser_section.SER_CLASSIFIERS
    from clj.methods.serena import serena
    from clj.methods.serena.section import SERENA, SERENA_MODELS
    from clj.models.registry import model_names

    assert model_names("serena") == SERENA_MODELS
    assert model_names(growing=True) == EXPAND_MODELS
    assert serena.default_config().to_dict() == SERENA.defaults
    for s in sections.all_sections().values():  # every field documented
        assert set(s.docs) == set(s.defaults), s.name


def _shrink(c):
    shape, classes = SHAPES[c.dataset]
    c.dataset = "synthetic"
    c.synthetic.image_shape = shape
    c.synthetic.num_classes = classes
    c.synthetic.train_per_class = 8
    c.synthetic.test_per_class = 4
    if "hidden" in c.model:
        c.model.hidden = tuple(min(int(h), 32) for h in c.model.hidden)
    c.num_seeds = 1
    c.train.epochs = 1
    c.train.init_epochs = 0
    c.train.batch_size = min(int(c.train.batch_size), 16)
    c.loop.steps_per_call = 1
    c.loop.unroll = 1
    c.loop.eval_batch_size = 64
    if "replay" in c:
        c.replay.buffer_size = min(int(c.replay.buffer_size), 40)
    if "nispa" in c:
        c.nispa.phase_epochs = 1
        c.nispa.max_phases = 1
    if "reg" in c:
        c.reg.n_fisher = 8
    c.progress = False
    c.plots = False
    return c


@pytest.mark.parametrize("name", SMOKE)
def test_config_runs_a_few_steps(name, tmp_path):
    from clj.train import run

    c = _shrink(load_config(name))
    validate(c)
    out = run(c, str(tmp_path / "run"))
    accs = [v["final_average_accuracy"] for v in out["metrics"].values()]
    assert accs and all(a is None or 0.0 <= (a["mean"] if isinstance(a, dict) else a) <= 1.0 for a in accs)


def test_base_config_fields_documented():
    from clj.config import FIELD_DOCS

    c = base_config()
    leaves = []

    def walk(node, prefix):
        for k in node.keys():
            if hasattr(node[k], "keys"):
                walk(node[k], f"{prefix}{k}.")
            else:
                leaves.append(prefix + k)

    walk(c, "")
    missing = [k for k in leaves if k not in FIELD_DOCS and not k.startswith("replay.")]
    assert not missing


def test_config_files_load_without_jax():
    """Every config file builds its config without importing JAX (the blocks come
    from the JAX-free sections), so --help, --describe and the checks run before
    any accelerator start-up."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys\nfrom clj.config import list_configs, load_config\nbad = []\n"
            "for n in list_configs():\n"
            "    load_config(n)\n"
            "    if 'jax' in sys.modules:\n        bad.append(n)\n        break\n"
            "print('BAD', bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert "BAD []" in out, out
