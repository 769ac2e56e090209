"""SERENA on the paper's 20-task Split CIFAR-100 (TFDS ``cifar100``, prepared
on disk; clj never downloads), as an online data-incremental stream: 20
concepts of 5 classes in the official per-seed class order
(``np.random.seed(seed); permutation(100)``; ``--config.scenario.class_order_seed=0``
fixes it), batch 10, one pass, the paper's
ResNet-18 (width 64, stateless BN, no biases), SGD lr 0.0005, Nesterov
momentum 0.9, weight decay 5e-4, 5 %-dense ERK cells, W = 10, theta = 0.5
(docs/serena.md, "Official defaults").  Augmentation: random crop (pad 4) + flip (the official
ColorJitter(brightness) is not in the core transform).

    python launch.py --config=configs/serena_cifar100.py:official   # comparable with the paper
    python launch.py --config=configs/serena_cifar100.py            # task-free protocol

On a CPU, the whole 20-concept pipeline on synthetic data (minutes):

    python launch.py --config=configs/serena_cifar100.py:official --config.dataset=synthetic \
      --config.synthetic.num_classes=100 --config.synthetic.image_shape="(16, 16, 3)" \
      --config.synthetic.train_per_class=24 --config.synthetic.test_per_class=4 \
      --config.model.width=4 --config.loop.eval_batch_size=100 --workdir=/tmp/serena_c100_synth
"""
from clj.configs.serena_common import make_config


def get_config(variant: str = "task_free"):
    c = make_config(variant, dataset="cifar100", num_classes=100, increment=5,
                    serena_model=dict(name="serena_resnet18", width=64),
                    baseline_model=dict(name="resnet18"),
                    lr=0.0005, baseline_lr=0.1, er_buffer=1000, offline_epochs=50,
                    augment=dict(crop_pad=4, flip=True))
    c.serena.max_cells = 24          # 20 concepts + 4 spare cells
    c.serena.eval_cell_batch = 4     # cells per vectorised forward at test time
    return c
