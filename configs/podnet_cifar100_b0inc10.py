"""PODNet on CIFAR-100 B0 Inc10 in PyCIL's protocol (``models/podnet.py``;
MEMO's CIFAR-100 rows, docs/memo.md): ResNet-32 (its three residual stages
are POD-spatial's maps), seed-1993 class order, batch 128, crop + flip; every
task: 160 epochs, SGD lr 0.1, momentum 0.9, wd 5e-4, cosine per epoch;
LSC with 10 proxies, NCA (PyCIL's effective form: no margin, no hinge),
lambda_c 5, lambda_f 1; class-balanced finetuning 20 epochs at lr 0.005;
2000 herding exemplars (``cil.budget="fair"`` gives the memory-aligned row),
PyCIL's batching (new data and exemplars shuffled together), NME
evaluation.  Needs CIFAR-100 prepared; a GPU run.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def podnet_config(dataset: str, init_cls: int, increment: int, budget: str = "fixed"):
    c = base_config()
    c.method = "podnet"
    c.dataset = dataset
    c.scenario.kind = "class_il"
    c.scenario.init_cls = init_cls
    c.scenario.increment = increment
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine"))
    if dataset == "cifar100":
        c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=5, dtype="float32"))
        c.augment.crop_pad = 4
        c.augment.flip = True
    else:  # ImageNet-100 (python -m clj.data.prepare imagenet100): PyCIL's ResNet-18 and transform
        c.model = ml_collections.ConfigDict(dict(name="resnet18_imagenet", dtype="float32"))
        c.augment = ml_collections.ConfigDict(dict(preset="pycil_imagenet"))
    c.train.epochs = 160
    c.train.batch_size = 128
    c.cil = section_config("cil", memory_size=2000, budget=budget, base_exemplars=2000, update_lr=0.1,
                           update_weight_decay=5e-4, update_milestones=(), update_schedule="cosine",
                           scheduler="cosine", batching="pycil", predict="nme")
    c.podnet = section_config("podnet")
    return c


def get_config():
    return podnet_config("cifar100", 10, 10)
