"""AKR, its Mixup row and its Base row on Fashion-MNIST class-IL B0 Inc2
(5 phases), issue 15 item 3; 5 seeds vmapped in one program.

    python launch.py --config=configs/akr_fmnist_b0inc2.py --workdir=/tmp/akr_fm      # AKR, memory 200
    python launch.py --config=configs/akr_fmnist_b0inc2.py:mixup --workdir=/tmp/mix   # Mixup row
    python launch.py --config=configs/akr_fmnist_b0inc2.py:none --workdir=/tmp/base   # Base row
    python launch.py --config=configs/akr_fmnist_b0inc2.py:attentive,2000             # memory 2000
    python launch.py --config=configs/akr_fmnist_b0inc2.py:attentive,200,10           # 10 epochs per phase

The variant is ``replay[,memory[,epochs]]``:

* ``replay``: ``attentive`` (AKR), ``mixup`` (Beta(1, 1) weights, no S) or
  ``none`` (the Base row: the same akr module and loss, no blending).
  Every other setting is shared by the three rows.
* ``memory``: 200 (default) or 2000 exemplars in total (iCaRL's fixed
  budget).  The paper keeps 2,000 exemplars of CIFAR-100's 50,000 images
  (20 of 500 per class at the end); here memory 200 uses 5 % of the
  training images (300 per class, as the other Fashion-MNIST B0 Inc2
  configs: 20 of 300 per class at the end) and memory 2000 uses all of them
  (200 of 6,000 per class).
* ``epochs``: per phase (default 30), with a step schedule: lr / 10 after
  70 % and 90 % of the epochs (iCaRL's 49 and 63 of 70) and an attention
  warm-up of 20 % of the epochs (AKR's 20 of 90).

Fixed: the seed-1993 class order; ResNet-8 (the resnet32 family with one
block per stage); SGD momentum 0.9, lr 0.1, weight decay 5e-4 (phase 0) and
2e-4 (later phases), batch 32 new images plus exemplars in proportion to
the memory; crop (pad 2) augmentation; clj's PyCIL-style iCaRL loss (CE on
the mixed label + KD to the old model on the blended image); CNN
prediction; Beta(1, 1) mixup in phase 0 for Mixup and AKR.  AKR's S: a
linear score layer on the frozen old model's features (``trunk_copy`` with
``attn_train="head"``), z-scored drift importance (tau 1), Adam lr 1e-2.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config

REPLAYS = ("attentive", "mixup", "none")
MEMORIES = {200: 0.05, 2000: 1.0}  # memory -> fraction of the training images


def parse_variant(variant: str | None) -> tuple[str, int, int]:
    """``"replay[,memory[,epochs]]"`` -> (replay, memory, epochs); raises ValueError on bad parts."""
    parts = [p.strip() for p in (variant or "").split(",")] if variant else []
    replay = parts[0] if parts and parts[0] else "attentive"
    memory = int(parts[1]) if len(parts) > 1 and parts[1] else 200
    epochs = int(parts[2]) if len(parts) > 2 and parts[2] else 30
    if replay not in REPLAYS:
        raise ValueError(f"replay={replay!r} is unknown; valid: {', '.join(REPLAYS)}.")
    if memory not in MEMORIES:
        raise ValueError(f"memory={memory} is not offered; valid: {', '.join(map(str, MEMORIES))}.")
    if epochs < 1:
        raise ValueError(f"epochs={epochs} is invalid: it must be >= 1.")
    return replay, memory, epochs


def get_config(variant: str | None = None):
    replay, memory, epochs = parse_variant(variant)
    milestones = tuple(sorted({max(1, round(0.7 * epochs)), max(1, round(0.9 * epochs))}))
    milestones = tuple(m for m in milestones if m < epochs)
    c = base_config()
    c.method = "akr"
    c.dataset = "fashion_mnist"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.scenario.train_fraction = MEMORIES[memory]
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=1, dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                        milestones=milestones, gamma=0.1))
    c.augment.crop_pad = 2
    c.train.init_epochs = epochs
    c.train.epochs = epochs
    c.train.batch_size = 32
    c.num_seeds = 5
    c.cil = section_config("cil", budget="fixed", memory_size=memory, update_lr=0.1, update_weight_decay=2e-4,
                       update_milestones=milestones, update_schedule="multistep", predict="cnn")
    c.akr = section_config("akr", replay=replay, attn_arch="trunk_copy", attn_train="head", importance_norm="zscore",
                       importance_tau=1.0, attn_lr=1e-2, warmup_epochs=max(1, round(0.2 * epochs)),
                       beta_alpha=(1.0, 1.0), phase0_mix="random")
    return c
