"""PyCIL / MEMO protocol on CIFAR-100 (shared by the ``*_cifar100_*.py`` configs).

ResNet-32 (option-A shortcuts), seed-1993 class order, batch 128, SGD momentum
0.9; task 0: 200 epochs, lr 0.1, wd 5e-4, steps at epochs 60/120/170; later
tasks: 170 epochs, lr 0.1, wd 2e-4, steps at 80/120/150 (MEMO/DER; iCaRL
80/120, WA 60/100/140 as PyCIL; Replay 70 epochs with steps at 30/50, PyCIL's
``models/replay.py``); schedules step once per epoch; PyCIL's batching (new
data and memory shuffled together into batches of 128,
``cil.batching="pycil"``: run through ``experiments/memo.py``, whose runner
takes the step counts from the method); crop (pad 4) + flip; memory-aligned budget
(cil.budget="fair": DER's T ResNet-32s + 2000 images, so MEMO gets 3312
exemplars on B0 Inc10, single-backbone methods 7431).  Needs CIFAR-100
prepared for TFDS (``dataset="cifar100"``).  Set ``cil.update_schedule=
"cosine"`` for a cosine schedule of tasks >= 1 only, ``cil.scheduler="cosine"``
for MEMO's ``--scheduler cosine`` (the survey scripts: both phases, T_max =
the phase's epochs, ``cil.t_max`` to override the later phases').
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config

UPDATE_MILESTONES = {"memo": (80, 120, 150), "dynamic_er": (80, 120, 150), "icarl": (80, 120),
                     "wa": (60, 100, 140), "replay": (30, 50)}
UPDATE_EPOCHS = {"memo": 170, "dynamic_er": 170, "icarl": 170, "wa": 170, "replay": 70}


def cifar_config(method: str, init_cls: int, increment: int, train_base: bool):
    c = base_config()
    c.method = method
    c.dataset = "cifar100"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = init_cls
    c.scenario.increment = increment
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=5, dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                        milestones=(60, 120, 170), gamma=0.1))
    c.augment.crop_pad = 4
    c.augment.flip = True
    c.train.init_epochs = 200
    c.train.epochs = UPDATE_EPOCHS[method]
    c.train.batch_size = 128
    c.replay.buffer_size = 2000  # unused by these methods
    c.cil = section_config("cil", budget="fair", base_exemplars=2000, update_lr=0.1, update_weight_decay=2e-4,
                       update_milestones=UPDATE_MILESTONES[method], update_schedule="multistep",
                       train_base=train_base, batching="pycil")
    return c


IMAGENET = {"imagenet100": dict(preset="pycil_imagenet", base_exemplars=2000, update_epochs=170),
            "imagenet1k": dict(preset="memo_imagenet1k", base_exemplars=20000, update_epochs=200)}


def imagenet_config(method: str, dataset: str, init_cls: int, increment: int, budget: str = "fixed"):
    """The PyCIL / MEMO protocol on ImageNet-100 or ImageNet-1k.

    ResNet-18 with the ImageNet stem (``resnet18_imagenet``; MEMO / DER (Yan)
    cut as PyCIL's ``memo_resnet18``), the seed-1993 class order over the
    prepared dataset's (sorted-wnid) labels, batch 128, SGD momentum 0.9, the
    CIFAR protocol's epochs and milestones (200 base epochs; 170 later ones,
    200 on ImageNet-1k as the survey's scripts), RandomResizedCrop(224) + flip
    (+ brightness 63/255 on ImageNet-1k) and resize 256 / centre crop 224 for
    evaluation (``augment.preset``); 2000 exemplars (20,000 on ImageNet-1k),
    ``budget="fair"`` for MEMO's memory-aligned budget.  The generalized
    blocks train after task 0 when the first task has fewer than 50 classes
    (the reference scripts' ``--train_base``).  Needs the dataset prepared
    with ``python -m clj.data.prepare imagenet100|imagenet1k`` in
    ``--config.data_dir``.

    Raises:
      ValueError: an unknown dataset or budget.
    """
    if dataset not in IMAGENET:
        raise ValueError(f"dataset {dataset!r} is invalid; valid: {', '.join(IMAGENET)}.")
    if budget not in ("fixed", "fair"):
        raise ValueError(f"budget {budget!r} is invalid; valid: fixed, fair.")
    spec = IMAGENET[dataset]
    first = init_cls or increment
    c = cifar_config(method, first, increment, train_base=first < 50)
    c.dataset = dataset
    c.model = ml_collections.ConfigDict(dict(name="resnet18_imagenet", dtype="float32"))
    c.augment = ml_collections.ConfigDict(dict(preset=spec["preset"]))
    if dataset == "imagenet1k":
        c.train.epochs = spec["update_epochs"]
    c.cil.base_exemplars = spec["base_exemplars"]
    c.cil.budget = budget
    c.cil.memory_size = spec["base_exemplars"]
    return c


def imagenet_variant(dataset: str, spec: str):
    """The config of ``configs/cil_<dataset>.py:<method>,<init_cls>,<increment>[,fixed|fair]``.

    Raises:
      ValueError: a variant of another form or an unknown method.
    """
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) not in (3, 4) or parts[0] not in UPDATE_EPOCHS:
        raise ValueError(f"cil_{dataset} variant {spec!r} is invalid: give <method>,<init_cls>,<increment>"
                         f"[,fixed|fair] with a method of {', '.join(sorted(UPDATE_EPOCHS))}.")
    return imagenet_config(parts[0], dataset, int(parts[1]), int(parts[2]), parts[3] if len(parts) == 4 else "fixed")
