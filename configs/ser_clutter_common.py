"""Shared settings of the SER runs on the cluttered-object benchmark.

Stream: ``clutter_mnist`` (:mod:`clj.data.clutter`: MNIST digits at random
positions and scales on a 32x32 canvas with Fashion-MNIST crops and noise;
10,000 / 1,000 composites, data seed 0), class-IL, 5 tasks of 2 classes,
online (one pass, batch 8, minibatch 8; ``train.epochs=0.2``: 400 of each
task's ~2,000 composites, ~50 steps per task, so that 5 vmapped seeds of
every row run on 2 shared CPU cores), reduced ResNet-18 (width 8), SGD lr 0.1
(at lr 0.03 the first task reached 84 % instead of 93 % in those steps),
buffer 200, DER++ alpha 0.1 beta 0.5, no augmentation.  The generator's
registered default canvas is 48 px; 32 px is what the CPU allowed.

SER's saliency net starts from a checkpoint pretrained on the *disjoint*
Fashion-MNIST composites (32 px) with their ground-truth masks
(``python -m clj.methods.ser.pretrain``, see docs/ser.md); during the stream
its target is that pretrained net's own eval-mode map (``sal_target=teacher``:
the loop's batches carry no per-image maps, so the stream's ground-truth
masks cannot reach the step).  Run the pretraining command first, or point
``ser.sal_init`` elsewhere.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config

SAL_CKPT = "runs/ser_clutter/sal_clutter_fashion_mnist_w8_c32.npz"


def clutter_config(method: str):
    c = base_config()
    c.method = method
    c.dataset = "clutter_mnist"
    # the generator's sizes (clj.data.clutter.ClutterParams; the other fields keep their defaults)
    c.clutter = ml_collections.ConfigDict(dict(canvas=32, num_train=10000, num_test=1000, spurious_patch=0))
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model = dict(name="resnet18", width=8, dtype="float32")
    c.optim.lr = 0.1
    c.augment.normalize = True
    c.train = ml_collections.ConfigDict(dict(epochs=0.2, batch_size=8))  # float epochs: a fraction of each task
    c.replay.buffer_size = 200
    c.replay.minibatch_size = 8
    c.replay.alpha = 0.1
    c.replay.beta = 0.5
    c.loop.eval_batch_size = 500
    c.ser = section_config("ser")
    c.ser.sal_init = "ckpt:" + SAL_CKPT
    c.ser.sal_target = "teacher"
    return c
