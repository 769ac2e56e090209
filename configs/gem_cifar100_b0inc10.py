"""GEM on CIFAR-100 B0 Inc10 in PyCIL's protocol (MEMO's CIFAR-100 table, the
survey's 2000-exemplar rows; docs/baselines.md): ResNet-32, seed-1993 class
order, SGD momentum 0.9, batch 128, crop + flip; task 0: 200 epochs, lr 0.1,
wd 5e-4, steps at 60/120/170; later tasks: 100 epochs (PyCIL's
``models/gem.py``), one schedule for all tasks (clj's GEM has no per-phase
optimizer: the later tasks keep the task-0 milestones and weight decay);
memory 2000 (200 slots per task); PyCIL's class-IL variant: task-restricted
logits, margin 0, ridge 0.  Needs CIFAR-100 prepared; a GPU run.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def cifar_gem_config(init_cls: int, increment: int):
    c = base_config()
    c.method = "gem"
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
    c.train.epochs = 100
    c.train.batch_size = 128
    c.replay = section_config("replay", buffer_size=2000)
    c.gem = section_config("gem", margin=0.0, eps=0.0, logit_mask="task")
    return c


def get_config():
    return cifar_gem_config(10, 10)
