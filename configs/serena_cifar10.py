"""SERENA on Split CIFAR-10 (TFDS ``cifar10``, prepared
on disk; clj never downloads), as an online data-incremental stream: 5
concepts of 2 classes in the official per-seed class order
(``np.random.seed(seed); permutation(10)``; seed 0: [2, 8, 4, 9, 1, 6, 7, 3, 0, 5];
``--config.scenario.class_order_seed=0`` fixes it), batch 10, one pass, the paper's
ResNet-18 (width 64, stateless BN, no biases), SGD lr 0.0005, Nesterov
momentum 0.9, weight decay 5e-4, 5 %-dense ERK cells, W = 10, theta = 0.5
(docs/serena.md, "Official defaults").  Augmentation: random crop (pad 4) + flip (the official
ColorJitter(brightness) is not in the core transform).

    python launch.py --config=configs/serena_cifar10.py:official   # comparable with the paper
    python launch.py --config=configs/serena_cifar10.py            # task-free protocol

"""
from clj.configs.serena_common import make_config


def get_config(variant: str = "task_free"):
    c = make_config(variant, dataset="cifar10", num_classes=10, increment=2,
                    serena_model=dict(name="serena_resnet18", width=64),
                    baseline_model=dict(name="resnet18"),
                    lr=0.0005, baseline_lr=0.1, er_buffer=500, offline_epochs=50,
                    augment=dict(crop_pad=4, flip=True))
    c.serena.max_cells = 9           # 5 concepts + 4 spare cells
    c.serena.eval_cell_batch = 4     # cells per vectorised forward at test time
    return c
